"""The work behind the ``igpt4`` sub-commands, as functions (the CLI only parses arguments)."""
from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from selector.core.atomic import publish_folder, write_text
from selector.core.errors import InputError
from selector.core.jsonio import PathLike, write_json


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def package_versions(names: Sequence[str] = ("instructiongpt4", "torch", "numpy", "scikit-learn",
                                             "safetensors")) -> Dict[str, str]:
    from importlib import metadata

    versions = {"python": sys.version.split()[0]}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def _settings_file(args: Any) -> Optional[str]:
    """The ``--config`` a command reads, as a path when it is one (a shipped name is no user file)."""
    value = getattr(args, "config", None)
    return value if value and Path(value).expanduser().exists() else None


def refuse_command_overlap(args: Any) -> None:
    """Before a command writes anything: refuse an output that is, contains or lies inside one of
    its inputs (:func:`selector.overlap.refuse_overlap`), for every ``igpt4`` command that writes.
    ``args`` is the parsed command line; ``eval`` checks its own (:mod:`eval_arena.cli`)."""
    from selector.core.overlap import refuse_overlap

    command = args.command
    config = _settings_file(args)
    if command == "reference-select":
        refuse_overlap({"--out": args.out}, {"--repo": args.repo, "--data": args.data})
    elif command == "train-selector":
        refuse_overlap({"--out": args.out}, {"--pool": args.pool, "--subsets": args.subsets,
                                             "--labels": args.labels, "--repo": args.repo,
                                             "--config": config})
    elif command == "select":
        refuse_overlap({"--out": args.out}, {
            "--pool": args.pool, "--checkpoint": args.checkpoint, "--clusters": args.clusters,
            "--data": args.data, "--captions": args.captions, "--config": config})
    elif command == "score":
        refuse_overlap({"--out": args.out, "--pool-out": args.pool_out, "--work": args.work},
                       {"--data": args.data, "--image-root": args.image_root,
                        "--pca-from": args.pca_from, "--config": config})
    elif command == "validate":
        refuse_overlap({"--report": args.report}, {"data": args.data,
                                                   "--image-root": args.image_root})
    elif command == "parse-gpt":
        refuse_overlap({"--out": args.out}, {"replies": args.replies})
    elif command == "split":
        refuse_overlap({"--out": args.out}, {"--pool": args.pool, "--subsets": args.subsets,
                                             "--data": args.data, "--template": args.template})
    elif command == "labels":
        refuse_overlap({"--out": args.out}, {"PATH": list(args.paths)})


#: what ``igpt4 select`` writes into its --out (and ``igpt4 report`` beside it, by default)
SELECTION_FILES = ("filter_cap.json", "image", "selected.txt", "skipped.json", "manifest.json")
_REPORT_FILE = re.compile(r".+\.html?|.+_data\.json|"
                          r".+_(indicators|correlations|clusters|cross_validation)\.png")
_LEFT_BY_A_KILLED_WRITE = re.compile(r"\..+\.(tmp|link)")  # selector.atomic's temporary names


def _is_selection(folder: Path) -> bool:
    """Whether ``folder`` holds a selection this project wrote (its manifest.json)."""
    from selector.core.jsonio import read_json

    if not (folder / "manifest.json").is_file():
        return False
    try:
        manifest, _ = read_json(folder / "manifest.json")
    except InputError:
        return False
    return (isinstance(manifest, dict) and isinstance(manifest.get("samples"), list)
            and isinstance(manifest.get("settings"), dict)
            and manifest["settings"].get("command") in ("select", "reference-select"))


def check_reusable_out(out: Path) -> None:
    """A selection's --out must end up holding exactly the new selection. An absent or empty
    folder, or a previous selection (whose files, and a report made into it, are replaced as a
    whole), may be reused; a file, a non-empty folder that is no selection, or a previous selection
    that also holds files we did not write, is refused: replacing it would delete them."""
    from selector.core.atomic import os_error_line

    if not out.exists() and not out.is_symlink():
        return
    if not out.is_dir():
        raise InputError(f"{out}: --out exists and is not a folder")
    try:
        entries = sorted(entry.name for entry in out.iterdir())
    except OSError as exc:
        raise os_error_line(out, exc, "cannot read") from None
    if not entries:
        return
    if not _is_selection(out):
        raise InputError(f"{out}: --out is a non-empty folder that holds no selection "
                         "(manifest.json of igpt4 select); give a new or empty folder")
    foreign = [name for name in entries if name not in SELECTION_FILES
               and not _REPORT_FILE.fullmatch(name) and not _LEFT_BY_A_KILLED_WRITE.fullmatch(name)]
    if foreign:
        raise InputError(f"{out / foreign[0]}: --out holds a previous selection and this, which "
                         "igpt4 select did not write (it would be deleted); move it or give "
                         "another --out")


def write_selection(out: PathLike, ids: List[str], scores: np.ndarray, selected: List[str],
                    settings: Dict[str, Any], cluster_of: Optional[Dict[str, str]] = None,
                    captions: Optional[Dict[str, str]] = None, data_dir: Optional[PathLike] = None,
                    image_mode: str = "link", skip_invalid: bool = False,
                    details: Optional[Dict[str, Any]] = None) -> Path:
    """``OUT/filter_cap.json`` (+ ``OUT/image/`` when the data folder is given) and
    ``OUT/manifest.json`` with every sample's score, cluster and whether it was selected.

    The selection is written into a temporary folder beside ``out`` and swapped in when complete:
    ``out`` then holds exactly this selection (no file of a previous one, see
    :func:`check_reusable_out`), and a failed or killed run leaves the previous one as it was."""
    import shutil

    from selector.core.atomic import os_error_line
    from selector.core.overlap import refuse_overlap

    out = Path(out)
    refuse_overlap({"--out": out}, {"--data": data_dir})  # also when called as a library
    check_reusable_out(out)
    staging = out.with_name(f".{out.name}.{os.getpid()}.new")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
    except OSError as exc:
        raise os_error_line(out, exc) from None
    try:
        _write_selection_files(staging, out, ids, scores, selected, settings, cluster_of,
                               captions, data_dir, image_mode, skip_invalid, details)
        publish_folder(staging, out)
    except InputError as exc:  # name the folder the user gave, not the hidden staging one
        raise InputError(str(exc).replace(str(staging), str(out))) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def _write_selection_files(out: Path, final: Path, ids: List[str], scores: np.ndarray,
                           selected: List[str], settings: Dict[str, Any],
                           cluster_of: Optional[Dict[str, str]],
                           captions: Optional[Dict[str, str]], data_dir: Optional[PathLike],
                           image_mode: str, skip_invalid: bool,
                           details: Optional[Dict[str, Any]]) -> None:
    """The files of :func:`write_selection`, into ``out`` (the staging folder; ``final`` is where
    they will be, named in messages)."""
    from selector.data.samples import read_cc_sbu_align, write_cc_sbu_align

    if data_dir is not None:
        pool = read_cc_sbu_align(data_dir, skip_invalid=skip_invalid)
        replaced = os.path.realpath(final)  # the previous selection there goes when this is done
        for sample in pool.samples:
            image = os.path.realpath(sample.image)
            if os.path.commonpath([replaced, image]) == replaced:
                raise InputError(f"{final / 'image' / Path(image).name}: is the source image "
                                 f"{sample.image} itself (the data links into the --out that "
                                 "would be replaced); write the selection elsewhere")
        if pool.skipped:
            pool.write_skip_report(out / "skipped.json")
            log(f"skipped {len(pool.skipped)} invalid samples of {data_dir} "
                f"(report: {final / 'skipped.json'})")
        known = set(pool.ids)
        missing = [i for i in selected if i not in known]
        if missing:
            raise InputError(f"{pool.source}: selected sample {missing[0]!r} is not in the data "
                             f"({len(missing)} missing)")
        write_cc_sbu_align(pool.subset(selected).samples, out, image_mode)
    elif captions is not None:
        missing = [i for i in selected if i not in captions]
        if missing:
            raise InputError(f"no caption for selected sample {missing[0]!r}")
        write_json(out / "filter_cap.json",
                   {"annotations": [{"image_id": i, "caption": captions[i]} for i in selected]},
                   indent=4)
    else:
        log("no data folder or captions given: wrote the selected ids only (selected.txt)")
    from selector.data.samples import check_sample_ids

    check_sample_ids(selected, "selection")  # one id per line: no id may hold a line break
    write_text(out / "selected.txt", "".join(f"{i}\n" for i in selected))
    chosen = set(selected)
    cluster_of = cluster_of or {}
    write_json(out / "manifest.json", {
        "settings": settings,
        "versions": package_versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "num_selected": len(selected),
        "selected": selected,
        **(details or {}),
        "samples": [{"id": sample_id, "score": float(score), "cluster": cluster_of.get(sample_id),
                     "selected": sample_id in chosen}
                    for sample_id, score in zip(ids, scores)],
    })


def reference_select(repo: PathLike, out: PathLike, data_dir: Optional[PathLike] = None,
                     num_samples: int = 200, image_mode: str = "link",
                     skip_invalid: bool = False) -> List[str]:
    """The released InstructionGPT-4 selection, recomputed from a checkout of the original data
    layout: released checkpoint (reference mode), released spectral clusters, int-truncated ranking."""
    from selector.selection.clustering import read_clusters
    from selector.model.network import load_reference_checkpoint, score_features
    from selector.model.reference import SPECTRAL, ReferenceRepo
    from selector.selection.rule import select_diverse_top_k

    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise InputError(f"--num must be a whole number >= 1, not {num_samples!r}")
    reference = ReferenceRepo(Path(repo))
    pool = reference.pool()
    if num_samples > len(pool):
        raise InputError(f"{repo}: cannot select {num_samples} samples from a pool of {len(pool)}")
    clusters = read_clusters(reference.path(SPECTRAL), pool.ids)  # ids it lacks: an error
    model = load_reference_checkpoint(reference.checkpoint())
    scores = score_features(model, pool.features)
    selection = select_diverse_top_k(pool.ids, scores, clusters, num_samples,
                                     truncate_scores=True, fill_to_k=False)
    if len(selection.selected) < num_samples:  # the original rule does not fill up to k
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


def load_training_data(pool_path: Optional[PathLike],
                       subsets_path: Optional[PathLike], labels_path: Optional[PathLike],
                       repo: Optional[PathLike]):
    """(SubsetData, image_dim, text_dim, indicator_names) from our files or the original layout."""
    from selector.model.network import REFERENCE_INDICATORS
    from selector.scoring.pool import FeaturePool, match_labels, read_labels, read_subsets
    from selector.model.training import SubsetData

    if repo is not None:
        from selector.model.reference import ReferenceRepo

        reference = ReferenceRepo(Path(repo))
        sets = reference.fitting_sets()
        labels = reference.fitting_labels()
        data = SubsetData.from_lists(list(sets), labels, [str(i) for i in range(len(labels))])
        return data, 6, 6, list(REFERENCE_INDICATORS)
    if not (pool_path and subsets_path and labels_path):
        raise InputError("train-selector needs --pool, --subsets and --labels (or --repo)")
    from selector.model.training import check_labels_vary

    pool = FeaturePool.load(pool_path)
    subsets, by_subset = read_subsets(subsets_path), read_labels(labels_path)
    unlabelled = [name for name in subsets if name not in by_subset]
    if unlabelled:  # dropping them without a word would train on part of the split
        raise InputError(f"{labels_path}: subset {unlabelled[0]!r} of {subsets_path} has no label "
                         f"({len(unlabelled)} of {len(subsets)} unlabelled); label every subset, "
                         "or give a subsets file without the unlabelled ones")
    names, members, labels = match_labels(subsets, by_subset, str(labels_path))
    check_labels_vary(labels, names, str(labels_path))
    data = SubsetData.from_pool(pool, members, labels, names)
    return data, pool.image.shape[1], pool.text.shape[1], pool.indicator_names


def train_selector(out: PathLike, settings: Dict[str, Any], pool: Optional[PathLike] = None,
                   subsets: Optional[PathLike] = None, labels: Optional[PathLike] = None,
                   repo: Optional[PathLike] = None) -> Dict[str, Any]:
    from selector.model.network import SelectorConfig, save_checkpoint
    from selector.model.training import TrainConfig, cross_validate, fit, training_metadata

    data, image_dim, text_dim, names = load_training_data(pool, subsets, labels, repo)
    model_settings = dict(settings["model"])
    if model_settings.get("mode", "default") == "default" and "context_size" in model_settings:
        model_settings["context_size"] = int(data.mask.sum(axis=1).max())
    config = SelectorConfig.from_dict({**model_settings, "image_dim": image_dim,
                                       "text_dim": text_dim, "indicator_names": list(names)})
    train_settings = dict(settings["training"])
    run_cv = bool(train_settings.pop("cross_validate", True))
    train = TrainConfig.from_dict(train_settings)
    started = time.time()
    result = fit(data, config, train, progress=True)
    report: Dict[str, Any] = {"subsets": len(data), "samples_per_subset": int(data.mask.sum(1).max()),
                              **training_metadata(result, train),
                              "fit_seconds": round(time.time() - started, 2)}
    if run_cv:
        cv = cross_validate(data, config, train)
        report["cross_validation"] = cv.to_dict()
        log(cv.table())
        if cv.warning():
            log(cv.warning())
    save_checkpoint(result.model, out, {**report, "inputs": {
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


def apply_model_settings(model: Any, requested: Dict[str, Any], checkpoint: Any) -> Dict[str, Any]:
    """Apply the scoring-time settings a run asks for to the loaded selector; refuse a learned one
    that differs from the checkpoint's. Returns the model settings actually used (recorded)."""
    import dataclasses

    config = model.config
    for key in LEARNED_MODEL_KEYS:
        if key in requested and requested[key] != getattr(config, key):
            raise InputError(f"model.{key}={requested[key]!r}: {key} is learned by train-selector "
                             f"({checkpoint} has {getattr(config, key)!r}); retrain to change it")
    scoring = {key: requested[key] for key in SCORING_MODEL_KEYS if key in requested}
    if scoring and config.mode == "reference":
        key = next(iter(scoring))
        raise InputError(f"model.{key}={scoring[key]!r}: {checkpoint} is a reference-mode "
                         "selector, which scores the whole pool at once (no rounds, no seed)")
    if scoring:
        model.config = dataclasses.replace(config, **scoring)
    used = {key: getattr(model.config, key) for key in LEARNED_MODEL_KEYS + SCORING_MODEL_KEYS}
    if model.config.mode == "reference":
        used.update(score_rounds=None, score_seed=None)  # not used by a reference-mode selector
    return used


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
