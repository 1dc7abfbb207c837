"""The split and collect steps as whole operations (inputs read, outputs written, progress logged):
what `igpt4 split`, `igpt4 labels collect` (:mod:`selector.labels.commands`) and the pipeline run."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from selector.core.errors import InputError
from selector.core.jsonio import PathLike
from selector.labels.collect import collect_labels, label_noise_summary
from selector.labels.jobs import ARENA_DATASETS, SplitLayout, write_subsets
from selector.labels.split import balance_clusters, kmeans_clusters


def _log(message: str) -> None:
    from selector.core.provenance import log

    log(message)


def moved_samples(raw: Dict[str, List[str]], balanced: Dict[str, List[str]]) -> int:
    """How many samples balancing took out of their k-means cluster (dropped ones included)."""
    return sum(len(set(members) - set(balanced.get(name, []))) for name, members in raw.items())


def split_command(out: PathLike, data: PathLike, pool: Optional[PathLike] = None,
                  k: Optional[int] = None, seed: Optional[int] = None,
                  template: Optional[PathLike] = None,
                  slurm: bool = False, subsets: Optional[PathLike] = None,
                  drop_remainder: bool = False, image_mode: str = "link",
                  image_root: Optional[PathLike] = None) -> SplitLayout:
    """Balanced k-means++ subsets of the pool's image features (or the subsets of ``subsets``,
    e.g. the released ``cluster/kmeans++/modified.json``), exported for fine-tuning (``data`` a
    cc_sbu_align folder, or a conversation JSON with its ``image_root``). ``k`` and
    ``seed`` left out: ``split.k`` / ``split.seed`` of the shipped ``pipeline/base.yaml``."""
    from selector.core.provenance import package_versions
    from selector.core.settings import shipped

    if k is None and pool is not None:
        k = shipped("pipeline/base.yaml", "split", "k")
    if seed is None:
        seed = shipped("pipeline/base.yaml", "split", "seed")
    from selector.scoring.pool import FeaturePool, read_subsets

    from selector.core.schema import SEED_LIMIT

    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < SEED_LIMIT:
        raise InputError(f"--seed {seed}: must be an integer >= 0 and < {SEED_LIMIT} (2**32)")
    if (pool is None) == (subsets is None):
        raise InputError("split needs either --pool (k-means++ on its image features) or "
                         "--subsets (a ready {subset: [ids]} file)")
    from selector.labels.jobs import load_template, resolve_template

    load_template(resolve_template(template))  # a bad template fails now, not after k-means
    settings: Dict[str, Any] = {"command": "split", "versions": package_versions()}
    if subsets is not None:
        chosen = read_subsets(subsets)
        settings.update({"method": "given", "subsets_from": str(Path(subsets).resolve())})
    else:
        features = FeaturePool.load(pool)
        raw = kmeans_clusters(features.ids, features.image, k, seed)
        chosen = balance_clusters(raw, drop_remainder)
        moved = moved_samples(raw, chosen)
        dropped = len(features) - sum(len(m) for m in chosen.values())
        settings.update({
            "method": "k-means++ (scikit-learn KMeans, n_init=10) + balancing as the original "
                      "cluster/kmeans++/average.py",
            "pool": str(Path(pool).resolve()),
            "features": f"pool image PCA ({features.image.shape[1]} dims)",
            "k": k, "seed": seed, "drop_remainder": drop_remainder,
            "kmeans_sizes": {name: len(m) for name, m in raw.items()},
            "moved_by_balancing": moved, "dropped": dropped})
        _log(f"k-means++: {len(features)} samples in {k} clusters of "
             f"{min(len(m) for m in raw.values())}..{max(len(m) for m in raw.values())}; "
             f"balancing moved {moved - dropped} and dropped {dropped}")
    layout = write_subsets(chosen, data, out, template, image_mode, slurm, ARENA_DATASETS,
                           settings, image_root=image_root)
    sizes = [len(m) for m in chosen.values()]
    _log(f"{len(sizes)} subsets of {min(sizes)}..{max(sizes)} samples -> {layout.out_dir} "
         f"(subsets: {layout.subsets_file})")
    _log(f"run them: MINIGPT4_DIR=... ARENA_DATA=... bash {layout.launcher}"
         + (f"  (or sbatch {layout.slurm})" if layout.slurm else ""))
    return layout


def labels_table(document: Dict[str, Any]) -> str:
    rows = ["subset  label    std     runs"]
    for name, value in document["labels"].items():
        std = document.get("label_std", {}).get(name)
        runs = document.get("n_runs", {}).get(name)
        rows.append(f"{name:<7} {value:7.3f}  {'-' if std is None else f'{std:6.3f}':>6}  "
                    f"{'-' if runs is None else runs}")
    return "\n".join(rows)


def labels_collect_command(paths: Sequence[PathLike], out: PathLike,
                           datasets: Optional[Sequence[str]] = None,
                           allow_missing: bool = False,
                           model: Optional[str] = None) -> Dict[str, Any]:
    """Collect subset labels into ``out`` and print them with their noise; ``model`` picks the
    runs of one model (``answers/{model}/...``) where subsets hold several; ``datasets`` left
    out: ``labels.datasets`` of the shipped ``pipeline/base.yaml``."""
    if datasets is None:
        from selector.core.settings import shipped

        datasets = shipped("pipeline/base.yaml", "labels", "datasets")
    document = collect_labels(paths, datasets, allow_missing, out, model)
    _log(labels_table(document))
    for name, missing in document.get("missing_datasets", {}).items():
        _log(f"warning: subset {name}: no {', '.join(missing)}; its label averages the others")
    if document.get("unevaluated"):
        names = document["unevaluated"]
        _log(f"warning: {len(names)} subsets have no result.json yet: {', '.join(names[:10])}"
             + (" ..." if len(names) > 10 else ""))
    noise, spread = label_noise_summary(document)
    if noise is not None:
        # labels can only teach the selector what differs between subsets by more than this
        _log(f"evaluation noise (pooled std of repeated runs) {noise:.3f} vs spread of the labels "
             f"across subsets {spread:.3f}")
    _log(f"{len(document['labels'])} labels -> {out}")
    return document
