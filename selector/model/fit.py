"""``igpt4 train-selector``: fit the selector on labelled subsets (with cross-validation), and the
rules for which model settings a trained checkpoint fixes and which a scoring run may change."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from selector.core.errors import InputError
from selector.core.jsonio import PathLike, write_json
from selector.core.provenance import log, package_versions


def load_training_data(pool_path: Optional[PathLike],
                       subsets_path: Optional[PathLike], labels_path: Optional[PathLike],
                       repo: Optional[PathLike]):
    """The labelled subsets (a :class:`~selector.model.training.SubsetData`, with the pool's
    feature layout) from our files or the original layout."""
    from selector.scoring.reference import REFERENCE_INDICATORS
    from selector.scoring.pool import FeaturePool
    from selector.model.training import SubsetData

    if repo is not None:
        from selector.scoring.reference import ReferenceRepo

        reference = ReferenceRepo(Path(repo))
        sets = reference.fitting_sets()
        labels = reference.fitting_labels()
        return SubsetData.from_lists(list(sets), labels, [str(i) for i in range(len(labels))],
                                     6, 6, list(REFERENCE_INDICATORS))
    if not (pool_path and subsets_path and labels_path):
        raise InputError("train-selector needs --pool, --subsets and --labels (or --repo)")
    return labelled_subsets(FeaturePool.load(pool_path), subsets_path, labels_path)


def labelled_subsets(pool: Any, subsets_path: PathLike, labels_path: PathLike):
    """The labelled subsets of a loaded pool (:class:`~selector.scoring.pool.FeaturePool`): what
    train-selector fits and cross-validates on, and what the ``linear`` selection method fits
    to (one reading, so both see the same data and refuse the same files)."""
    from selector.scoring.pool import match_labels, read_labels, read_subsets
    from selector.model.training import SubsetData, check_labels_vary

    subsets, by_subset = read_subsets(subsets_path), read_labels(labels_path)
    unlabelled = [name for name in subsets if name not in by_subset]
    if unlabelled:  # dropping them without a word would train on part of the split
        raise InputError(f"{labels_path}: subset {unlabelled[0]!r} of {subsets_path} has no label "
                         f"({len(unlabelled)} of {len(subsets)} unlabelled); label every subset, "
                         "or give a subsets file without the unlabelled ones")
    names, members, labels = match_labels(subsets, by_subset, str(labels_path))
    check_labels_vary(labels, names, str(labels_path))
    return SubsetData.from_pool(pool, members, labels, names, str(subsets_path))


def train_selector(out: PathLike, settings: Dict[str, Any], pool: Optional[PathLike] = None,
                   subsets: Optional[PathLike] = None, labels: Optional[PathLike] = None,
                   repo: Optional[PathLike] = None) -> Dict[str, Any]:
    """Fit a :class:`~selector.model.training.Selector` of ``settings`` (its context size is
    learned: the largest subset), cross-validate it unless ``training.cross_validate`` is false,
    and write its checkpoint and ``training_report.json`` into ``out``."""
    from selector.model.training import Selector, cross_validate

    data = load_training_data(pool, subsets, labels, repo)
    selector = Selector.from_settings(settings)
    started = time.time()
    selector.fit(data, progress=True)
    report: Dict[str, Any] = {"subsets": len(data), "samples_per_subset": selector.context_size_,
                              **selector.training_metadata(),
                              "fit_seconds": round(time.time() - started, 2)}
    if settings["training"]["cross_validate"]:
        cv = cross_validate(data, selector, settings=settings)
        report["cross_validation"] = cv.to_dict()
        log(cv.table())
        for line in (cv.warning(), cv.advice()):
            if line:
                log(line)
    selector.save(out, {**report, "inputs": {
        "pool": str(pool) if pool else None, "subsets": str(subsets) if subsets else None,
        "labels": str(labels) if labels else None, "repo": str(repo) if repo else None},
        "versions": package_versions()})
    write_json(Path(out) / "training_report.json", report)
    return report


#: model settings a selector learns (or is built with) at train-selector time: its checkpoint fixes them
LEARNED_MODEL_KEYS = ("mode", "n_heads", "n_layers", "residual", "context_size")


#: how a trained selector scores a pool: the checkpoint's values unless this run sets them
SCORING_MODEL_KEYS = ("score_rounds", "score_seed")


def model_keys_set(layers: Sequence[Any]) -> List[str]:
    """The ``model.*`` keys the user's ``--config`` file or ``--set`` overrides set (their
    :func:`selector.settings.user_layers`, not the shipped defaults): what a select run asks
    for."""
    keys: List[str] = []
    for layer in layers:
        block = layer.get(("model",))
        if isinstance(block, dict):
            keys += [str(key) for key in block if str(key) not in keys]
    return keys


def requested_model_settings(settings: Dict[str, Any],
                             keys: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """The ``model.*`` values a select run asks for: those of ``keys`` (:func:`model_keys_set`),
    or, when the caller does not know them (a library call with merged settings), those that
    differ from the shipped defaults: a value equal to the shipped default then means "the
    checkpoint's"."""
    values = settings.get("model") or {}
    if keys is not None:
        return {key: values[key] for key in keys if key in values}
    from selector.core.settings import load_settings

    shipped = load_settings(None, [])["model"]
    missing = object()
    return {key: value for key, value in values.items()
            if shipped.get(key, missing) != value or type(shipped.get(key)) is not type(value)}


def apply_model_settings(selector: Any, requested: Dict[str, Any],
                         checkpoint: Any) -> Dict[str, Any]:
    """Apply the scoring-time settings a run asks for to the loaded
    :class:`~selector.model.training.Selector`; refuse a learned one that differs from the
    checkpoint's. Returns the model settings actually used (recorded)."""
    import dataclasses

    config = selector.config_
    for key in LEARNED_MODEL_KEYS:
        if key in requested and requested[key] != getattr(config, key):
            raise InputError(f"model.{key}={requested[key]!r}: {key} is learned by train-selector "
                             f"({checkpoint} has {getattr(config, key)!r}); retrain to change it")
    scoring = {key: requested[key] for key in SCORING_MODEL_KEYS if key in requested}
    if scoring and config.mode == "reference":
        key = next(iter(scoring))
        raise InputError(f"model.{key}={scoring[key]!r}: {checkpoint} is a reference-mode "
                         "selector, which scores the whole pool at once (no rounds, no seed)")
    config = dataclasses.replace(config, **scoring)  # checked before the selector takes them
    for key, value in scoring.items():
        setattr(selector, key, value)
    used = {key: getattr(config, key) for key in LEARNED_MODEL_KEYS + SCORING_MODEL_KEYS}
    if config.mode == "reference":
        used.update(score_rounds=None, score_seed=None)  # not used by a reference-mode selector
    return used
