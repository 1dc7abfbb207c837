"""``igpt4 reference-select``: the released InstructionGPT-4 selection, recomputed."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

from selector.core.errors import InputError
from selector.core.jsonio import PathLike
from selector.core.provenance import log
from selector.selection.write import write_selection


def reference_select(repo: PathLike, out: PathLike, data_dir: Optional[PathLike] = None,
                     num_samples: Optional[int] = None, image_mode: str = "link",
                     skip_invalid: bool = False) -> List[str]:
    """The released InstructionGPT-4 selection, recomputed from a checkout of the original data
    layout: released checkpoint (reference mode), released spectral clusters, int-truncated ranking.
    ``num_samples`` left out: ``selection.num_samples`` of ``selector/default.yaml`` (200)."""
    from selector.selection.clustering import read_clusters
    from selector.model.network import load_reference_checkpoint
    from selector.model.training import Selector
    from selector.scoring.reference import SPECTRAL, ReferenceRepo
    from selector.selection.rule import select_diverse_top_k

    if num_samples is None:
        from selector.core.settings import shipped

        num_samples = shipped("selector/default.yaml", "selection", "num_samples")
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise InputError(f"--num must be a whole number >= 1, not {num_samples!r}")
    reference = ReferenceRepo(Path(repo))
    pool = reference.pool()
    if num_samples > len(pool):
        raise InputError(f"{repo}: cannot select {num_samples} samples from a pool of {len(pool)}")
    clusters = read_clusters(reference.path(SPECTRAL), pool.ids)  # ids it lacks: an error
    selector = Selector.from_network(load_reference_checkpoint(reference.checkpoint()))
    scores = selector.predict(pool.features)
    selection = select_diverse_top_k(pool.ids, scores, clusters, num_samples,
                                     truncate_scores=True, fill_up=False)
    if len(selection.selected) < num_samples:  # the original rule does not fill up
        log(f"warning: selected {len(selection.selected)} of the {num_samples} samples asked: "
            "the original rule's truncated cluster quotas left no more candidates")
    settings = {"command": "reference-select", "repo": str(Path(repo).resolve()),
                "pool_sha256": pool.content_digest(),
                "checkpoint": str(reference.checkpoint()), "mode": "reference",
                "clusters": str(reference.path("cluster/spectral/clustering_results.json")),
                "data": str(data_dir) if data_dir else None, **selection.rule}
    write_selection(out, pool.ids, scores, selection.selected, settings, selection.cluster_of,
                    captions=None if data_dir else reference.captions(), data_dir=data_dir,
                    image_mode=image_mode, skip_invalid=skip_invalid,
                    details={"quotas": selection.quotas})
    return selection.selected
