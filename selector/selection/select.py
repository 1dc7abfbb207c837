"""``igpt4 select``: score a pool with a trained selector (or a baseline), cluster, keep a diverse
top-k, write the selection."""
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
           skip_invalid: bool = False, model_keys: Optional[Sequence[str]] = None) -> List[str]:
    """Score the pool with a trained selector (or a baseline), cluster, and write the selection.

    ``model_keys``: the ``model.*`` keys the user set (:func:`model_keys_set`); scoring-time ones
    (score_rounds, score_seed) are applied, learned ones must match the checkpoint, and the
    manifest records the values used."""
    from selector.selection.clustering import diversity_clusters, read_clusters
    from selector.core.jsonio import text_encoding
    from selector.model.network import check_pool_fits, load_checkpoint, score_features
    from selector.scoring.pool import FeaturePool
    from selector.selection.rule import random_k, select_diverse_top_k, select_diverse_top_k_labels, top_k_by

    from selector.data.samples import check_sample_ids

    pool = FeaturePool.load(pool_path)
    check_sample_ids(pool.ids, f"{pool_path}: ids")  # a newline in an id would break selected.txt
    requested = requested_model_settings(settings, model_keys)
    used_model: Optional[Dict[str, Any]] = None
    if baseline is not None and requested and model_keys is not None:  # the user's --set
        key = next(iter(requested))
        raise InputError(f"model.{key}={requested[key]!r}: model settings apply to a trained "
                         "selector (--checkpoint), not to --baseline")
    chosen_settings = dict(settings["selection"])
    k = chosen_settings["num_samples"]
    if isinstance(k, str) and k.strip().lstrip("-").isdigit():
        k = int(k)
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:  # 0 is not "the default"
        raise InputError(f"selection.num_samples must be a whole number >= 1, not {k!r}")
    if k > len(pool):
        raise InputError(f"{pool_path}: cannot select {k} samples from a pool of {len(pool)}")
    details: Dict[str, Any] = {}
    cluster_of: Optional[Dict[str, str]] = None
    if baseline == "random":
        scores = np.zeros(len(pool))
        selected = random_k(pool.ids, k, int(chosen_settings.get("cluster_seed", 0)))
    elif baseline is not None and baseline.startswith("top:"):
        scores = pool.indicator(baseline[4:]).astype(np.float64)
        selected = top_k_by(pool.ids, scores, k)
    elif baseline is not None:
        raise InputError(f"unknown baseline {baseline!r} (random, or top:<indicator>)")
    else:
        if checkpoint is None:
            raise InputError("select needs --checkpoint (or --baseline)")
        with text_encoding(None):  # the checkpoint is ours (UTF-8), whatever --encoding says
            model = load_checkpoint(checkpoint)
        used_model = apply_model_settings(model, requested, checkpoint)
        check_pool_fits(model, pool.image.shape[1], pool.text.shape[1], pool.indicator_names,
                        str(pool_path))
        scores = score_features(model, pool.features, progress=True)
        truncate = model.config.mode == "reference"  # the original rule, unfilled
        rule = dict(k=k, quota_total=chosen_settings.get("quota_total"), truncate_scores=truncate,
                    fill_to_k=not truncate)
        if clusters_path is not None:
            clusters = read_clusters(clusters_path, pool.ids, k if not truncate else None)
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
        if len(selected) < k:  # the original rule (reference mode) does not fill up to k
            log(f"warning: selected {len(selected)} of the {k} samples asked: the reference "
                "rule's truncated cluster quotas left no more candidates")
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
