"""``igpt4 select``: score a pool with a selection method (the trained selector, a baseline, or
any method of :mod:`selector.selection.methods`), keep the budget through the one keep step
(diversity clusters and per-cluster quotas when on), write the selection."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from selector.core.errors import InputError
from selector.core.jsonio import PathLike
from selector.core.provenance import log
from selector.selection.write import write_selection


def _num_samples(settings: Dict[str, Any]) -> int:
    num_samples = settings["selection"]["num_samples"]
    if isinstance(num_samples, str) and num_samples.strip().lstrip("-").isdigit():
        num_samples = int(num_samples)
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        # 0 is not "the default"
        raise InputError(f"selection.num_samples must be a whole number >= 1, not {num_samples!r}")
    return num_samples


def method_spec(method: Optional[str], baseline: Optional[str]) -> Tuple[str, bool]:
    """The method spec to run and whether it came from ``--baseline`` (whose draws stay those of
    the releases before --method: ``random_k`` seeded by ``selection.cluster_seed``, and
    ``top_k_by``)."""
    if method is not None and baseline is not None:
        raise InputError("give --method or --baseline, not both")
    if baseline is not None:
        if baseline != "random" and not (baseline.startswith("top:") and baseline[4:].strip()):
            raise InputError(f"unknown baseline {baseline!r} (random, or top:<indicator>)")
        return baseline, True
    return (method if method is not None else "selector"), False


def method_block(settings: Dict[str, Any], name: str) -> Dict[str, Any]:
    """``methods.<name>`` of the settings (``-`` written ``_``), empty when absent."""
    block = (settings.get("methods") or {}).get(name.replace("-", "_"))
    return dict(block) if isinstance(block, dict) else {}


def select(out: PathLike, settings: Dict[str, Any], pool_path: PathLike,
           checkpoint: Optional[PathLike] = None, clusters_path: Optional[PathLike] = None,
           baseline: Optional[str] = None, data_dir: Optional[PathLike] = None,
           captions_path: Optional[PathLike] = None, image_mode: str = "link",
           skip_invalid: bool = False, model_keys: Optional[Sequence[str]] = None,
           loaded_pool: Any = None, loaded_model: Any = None, *,
           method: Optional[str] = None, seed: Optional[int] = None,
           subsets_path: Optional[PathLike] = None, labels_path: Optional[PathLike] = None,
           work: Optional[PathLike] = None, diversity: Optional[bool] = None,
           loaded_data: Any = None, image_root: Optional[PathLike] = None) -> List[str]:
    """Score the pool with a selection method, keep ``selection.num_samples``, write the selection.

    ``method``: a spec of :mod:`selector.selection.methods` (``random``, ``top:clip``, ...); None
    is the trained selector (``--checkpoint``), or the ``--baseline`` (random | top:<indicator>).
    ``seed``: for the methods that draw at random (default 0). ``diversity``: the per-cluster
    quota step on or off (default: ``methods.<name>.diversity``). ``model_keys``: the ``model.*``
    keys the user set (:func:`model_keys_set`); scoring-time ones (score_rounds, score_seed) are
    applied, learned ones must match the checkpoint, and the manifest records the values used.
    ``loaded_pool`` / ``loaded_model`` / ``loaded_data``: the pool file, the checkpoint (a
    :class:`~selector.model.training.Selector`) and the samples already read by the caller, so
    none is read twice."""
    from selector.data.samples import check_sample_ids
    from selector.model.fit import requested_model_settings
    from selector.scoring.pool import FeaturePool
    from selector.selection import methods
    from selector.selection.clustering import read_clusters

    spec, from_baseline = method_spec(method, baseline)
    if from_baseline and diversity is not None:
        raise InputError("--diversity/--no-diversity apply to --method; --baseline keeps the "
                         "draws of earlier releases (use --method random or --method top:X)")
    chosen_method, argument = methods.create(spec)
    name = chosen_method.name
    pool = loaded_pool if loaded_pool is not None else FeaturePool.load(pool_path)
    check_sample_ids(pool.ids, f"{pool_path}: ids")  # a newline in an id would break selected.txt
    requested = requested_model_settings(settings, model_keys)
    if name != "selector" and requested and model_keys is not None:  # the user's --set
        key = next(iter(requested))
        where = "--baseline" if from_baseline else f"--method {spec}"
        raise InputError(f"model.{key}={requested[key]!r}: model settings apply to a trained "
                         f"selector (--checkpoint), not to {where}")
    chosen_settings = dict(settings["selection"])
    num_samples = _num_samples(settings)
    if num_samples > len(pool):
        raise InputError(f"{pool_path}: cannot select {num_samples} samples from a pool of "
                         f"{len(pool)}")
    block = method_block(settings, name)
    if seed is None:
        seed = int(chosen_settings["cluster_seed"]) if from_baseline else 0
    if int(seed) < 0:  # numpy's generators take no negative seed
        raise InputError(f"--seed must be a whole number >= 0, not {seed}")
    data = loaded_data
    if data is None and data_dir is not None and name in NEEDS_DATA:
        from selector.data.samples import read_pool

        data = read_pool(Path(data_dir), image_root, skip_invalid=skip_invalid, check_images=False)
    inputs = methods.MethodInputs(
        pool=pool, num_samples=num_samples, seed=int(seed), settings=block, argument=argument,
        data=data, work=Path(work) if work is not None else None,
        subsets=Path(subsets_path) if subsets_path is not None else None,
        labels=Path(labels_path) if labels_path is not None else None,
        checkpoint=Path(checkpoint) if checkpoint is not None else None,
        loaded_model=loaded_model, selection=chosen_settings, pool_path=str(pool_path),
        model_keys=model_keys, all_settings=settings)
    details: Dict[str, Any] = {}
    cluster_of: Optional[Dict[str, str]] = None
    used_model: Optional[Dict[str, Any]] = None
    if from_baseline and name == "random":  # the release's draw, so old selections reproduce
        from selector.selection.rule import random_k

        use_diversity, uses_seed, method_details = False, True, {}
        scores = np.zeros(len(pool))
        selected = random_k(pool.ids, num_samples, int(seed))
    else:
        scored = chosen_method.score(inputs)
        if from_baseline:  # top:<indicator> as released: the plain top cut
            use_diversity = False
        elif diversity is None:
            use_diversity = bool(block.get("diversity", chosen_method.diversity))
        else:
            use_diversity = bool(diversity)
        if clusters_path is not None and not use_diversity and not from_baseline:
            raise InputError(f"--clusters: --method {spec} runs without the diversity step, "
                             "which the clusters are for (add --diversity, or leave --clusters "
                             "out)")
        method_details = dict(scored.details)
        uses_seed = bool(method_details.pop("uses_seed", chosen_method.uses_seed))
        used_model = method_details.pop("model", None)
        clusters = None
        if use_diversity and clusters_path is not None:
            clusters = read_clusters(clusters_path, pool.ids,
                                     None if scored.reference_rule else num_samples)
        selection = methods.choose(scored, inputs, use_diversity, clusters, method=spec)
        scores = np.asarray(scored.scores, dtype=np.float64)
        selected = selection.selected
        if use_diversity:
            cluster_of = selection.cluster_of
            details = {"quotas": selection.quotas, "rule": selection.rule,
                       "clustering": None if clusters is not None
                       else scored.details.get("clustering")}
            if selection.unclustered:
                log(f"warning: {len(selection.unclustered)} samples are in no cluster and were "
                    "not eligible")
        else:
            details = {"rule": selection.rule}
        if len(selected) < num_samples:  # the original rule (reference mode) does not fill up
            log(f"warning: selected {len(selected)} of the {num_samples} samples asked: the "
                "reference rule's truncated cluster quotas left no more candidates")
    details["method"] = {"name": name, "argument": argument,
                         "seed": int(seed) if uses_seed else None, "diversity": use_diversity,
                         "settings": block, **method_details}
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
    recorded = {key: value for key, value in settings.items() if key != "methods"}
    write_selection(out, pool.ids, scores, selected,
                    {"command": "select", "pool": str(pool_path),
                     "pool_sha256": pool.content_digest(), "checkpoint": str(checkpoint),
                     "baseline": baseline, "method": spec, "seed": details["method"]["seed"],
                     "diversity": use_diversity,
                     "clusters": str(clusters_path) if clusters_path else "spectral",
                     **recorded, "model": used_model},
                    cluster_of, captions=captions if data_dir is None else None,
                    data_dir=data_dir, image_mode=image_mode, skip_invalid=skip_invalid,
                    details=details, image_root=image_root)
    return selected


#: methods that read the samples' text (--data)
NEEDS_DATA = ("length", "perplexity", "ifd", "semdedup")
