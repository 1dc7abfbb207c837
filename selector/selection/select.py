"""``igpt4 select``: score a pool with a trained selector (or a baseline), cluster, keep a diverse
top ``num_samples``, write the selection."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from selector.core.errors import InputError
from selector.core.jsonio import PathLike
from selector.core.provenance import log
from selector.model.fit import apply_model_settings, requested_model_settings
from selector.selection.write import write_selection


def select(out: PathLike, settings: Dict[str, Any], pool_path: PathLike,
           checkpoint: Optional[PathLike] = None, clusters_path: Optional[PathLike] = None,
           baseline: Optional[str] = None, data_dir: Optional[PathLike] = None,
           captions_path: Optional[PathLike] = None, image_mode: str = "link",
           skip_invalid: bool = False, model_keys: Optional[Sequence[str]] = None,
           loaded_pool: Any = None, loaded_model: Any = None) -> List[str]:
    """Score the pool with a trained selector (or a baseline), cluster, and write the selection.

    ``model_keys``: the ``model.*`` keys the user set (:func:`model_keys_set`); scoring-time ones
    (score_rounds, score_seed) are applied, learned ones must match the checkpoint, and the
    manifest records the values used. ``loaded_pool`` / ``loaded_model``: the pool file and the
    checkpoint (a :class:`~selector.model.training.Selector`) already read by the caller (the
    run selection), so neither is read twice."""
    from selector.selection.clustering import diversity_clusters, read_clusters
    from selector.core.jsonio import text_encoding
    from selector.model.training import Selector
    from selector.scoring.pool import FeaturePool
    from selector.selection.rule import (random_k, select_diverse_top_k,
                                         select_diverse_top_k_labels, top_k_by)

    from selector.data.samples import check_sample_ids

    pool = loaded_pool if loaded_pool is not None else FeaturePool.load(pool_path)
    check_sample_ids(pool.ids, f"{pool_path}: ids")  # a newline in an id would break selected.txt
    requested = requested_model_settings(settings, model_keys)
    used_model: Optional[Dict[str, Any]] = None
    if baseline is not None and requested and model_keys is not None:  # the user's --set
        key = next(iter(requested))
        raise InputError(f"model.{key}={requested[key]!r}: model settings apply to a trained "
                         "selector (--checkpoint), not to --baseline")
    chosen_settings = dict(settings["selection"])
    num_samples = chosen_settings["num_samples"]
    if isinstance(num_samples, str) and num_samples.strip().lstrip("-").isdigit():
        num_samples = int(num_samples)
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        # 0 is not "the default"
        raise InputError(f"selection.num_samples must be a whole number >= 1, not {num_samples!r}")
    if num_samples > len(pool):
        raise InputError(f"{pool_path}: cannot select {num_samples} samples from a pool of "
                         f"{len(pool)}")
    details: Dict[str, Any] = {}
    cluster_of: Optional[Dict[str, str]] = None
    if baseline == "random":
        scores = np.zeros(len(pool))
        selected = random_k(pool.ids, num_samples, int(chosen_settings["cluster_seed"]))
    elif baseline is not None and baseline.startswith("top:"):
        scores = pool.indicator(baseline[4:]).astype(np.float64)
        selected = top_k_by(pool.ids, scores, num_samples)
    elif baseline is not None:
        raise InputError(f"unknown baseline {baseline!r} (random, or top:<indicator>)")
    else:
        if checkpoint is None:
            raise InputError("select needs --checkpoint (or --baseline)")
        selector = loaded_model
        if selector is None:
            with text_encoding(None):  # the checkpoint is ours (UTF-8), whatever --encoding says
                selector = Selector.load(checkpoint)
        used_model = apply_model_settings(selector, requested, checkpoint)
        selector.check_fits(pool.image.shape[1], pool.text.shape[1], pool.indicator_names,
                            str(pool_path))
        scores = selector.predict(pool.features, progress=True)
        truncate = selector.mode == "reference"  # the original rule, unfilled
        rule = dict(num_samples=num_samples, quota_total=chosen_settings["quota_total"],
                    truncate_scores=truncate, fill_up=not truncate)
        if clusters_path is not None:
            clusters = read_clusters(clusters_path, pool.ids,
                                     num_samples if not truncate else None)
            selection = select_diverse_top_k(pool.ids, scores, clusters, **rule)
            clustering = None
        else:  # exact spectral clustering, or its scalable approximation on large pools
            found = diversity_clusters(pool.image, chosen_settings)
            selection = select_diverse_top_k_labels(pool.ids, scores, found.labels, **rule)
            clustering = found.info
        selected, cluster_of = selection.selected, selection.cluster_of
        details = {"quotas": selection.quotas, "rule": selection.rule, "clustering": clustering}
        if selection.unclustered:
            log(f"warning: {len(selection.unclustered)} samples are in no cluster and were not "
                "eligible")
        if len(selected) < num_samples:  # the original rule (reference mode) does not fill up
            log(f"warning: selected {len(selected)} of the {num_samples} samples asked: the "
                "reference rule's truncated cluster quotas left no more candidates")
    captions = None
    if captions_path is not None:
        from selector.data.samples import read_cc_sbu_align

        captions = {s.id: s.answer for s in
                    read_cc_sbu_align(Path(captions_path), check_images=False).samples}
        uncaptioned = [i for i in selected if i not in captions]
        if uncaptioned and data_dir is None:  # named here, where the folder is known
            raise InputError(f"{captions_path}: no caption for selected sample "
                             f"{uncaptioned[0]!r} ({len(uncaptioned)} of the {len(selected)} "
                             "selected have none)")
    write_selection(out, pool.ids, scores, selected,
                    {"command": "select", "pool": str(pool_path),
                     "pool_sha256": pool.content_digest(), "checkpoint": str(checkpoint),
                     "baseline": baseline, "clusters": str(clusters_path) if clusters_path else
                     "spectral", **settings, "model": used_model},
                    cluster_of, captions=captions if data_dir is None else None,
                    data_dir=data_dir, image_mode=image_mode, skip_invalid=skip_invalid,
                    details=details)
    return selected
