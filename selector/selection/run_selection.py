"""The selection a training run uses, made (or reused) when its dataset is built.

The LAVIS / MiniGPT-4 builder calls :func:`selection_for_run` with the dataset's ``selector``
block. The inputs (the data file, the pool file, the checkpoint, the selection settings) are
hashed; a selection made from the same inputs before is read back from the cache folder instead
of being recomputed, so every rank of a ``torchrun`` job, and every rerun, trains on the same
samples. With ``compute_missing`` the pool file is first brought up to date with ``igpt4 score``'s
code (indicators and embeddings through the cache, PCA reused from ``pca_from`` when given).
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

from selector.core.errors import InputError
from selector.core.atomic import publish_folder
from selector.core.fingerprint import Fingerprint, text_fingerprint
from selector.core.jsonio import PathLike

MODES = ("default", "reference")
#: the shipped file, and the key in it, that holds the ``selector`` block's defaults
DEFAULTS_FILE = ("datasets/cc_sbu_align_selected/defaults.yaml", "datasets",
                 "cc_sbu_align_selected", "selector")


@dataclass(frozen=True)
class RunSelectionOptions:
    """A dataset config's ``selector`` block, typed: what the builder hands down instead of
    strings. The keys and their defaults are those of the shipped
    ``configs/datasets/cc_sbu_align_selected/defaults.yaml`` (:data:`DEFAULTS_FILE`, the one
    place they live; :meth:`from_block` fills what a block leaves out from there). Unknown keys
    are ignored, as the hosts' configs may carry their own; a null value means the default."""

    checkpoint: Optional[str]  # selector folder (igpt4 train-selector) or released .pth
    mode: str  # default | reference: must match the checkpoint
    num_samples: Optional[int]  # null: selection.num_samples of selector/default.yaml
    pool: Optional[str]  # null: <cache_dir>/pool.safetensors
    cache_dir: Optional[str]  # null: :func:`default_cache_dir`
    clusters: Optional[str]  # null: spectral clusters of the image features
    compute_missing: bool
    pca_from: Optional[str]
    indicators: Dict[str, Any]  # indicators/default.yaml overrides
    selection: Dict[str, Any]  # selection settings overrides
    image_root: Optional[str] = None  # a conversation JSON's images (build_info.image_root; no setting)

    @classmethod
    def from_block(cls, block: Mapping[str, Any]) -> "RunSelectionOptions":
        """The options of a plain mapping (the dataset config's block, as a dict)."""
        from selector.core.settings import shipped

        names = {spec.name for spec in fields(cls)}
        given = {key: value for key, value in dict(block).items()
                 if key in names and value is not None}
        values = {**shipped(*DEFAULTS_FILE), **given}
        if values.get("num_samples") is not None:
            try:
                values["num_samples"] = int(values["num_samples"])
            except (TypeError, ValueError):
                raise InputError(f"selector.num_samples must be a whole number (got "
                                 f"{values['num_samples']!r})") from None
        for key in ("indicators", "selection"):
            if not isinstance(values.get(key, {}), Mapping):
                raise InputError(f"selector.{key} must be a mapping (got {values[key]!r})")
            values[key] = dict(values.get(key) or {})
        for key in ("checkpoint", "pool", "cache_dir", "clusters", "pca_from", "image_root"):
            if values.get(key) is not None:
                values[key] = str(values[key])
        return cls(**values)

    def selector_settings(self) -> Dict[str, Any]:
        """``configs/selector/default.yaml`` with ``num_samples``, then each ``selection`` key
        (which wins), validated: each value a settings layer of its own, labelled as an
        override, so an error line names the key and its value."""
        items = [*([("num_samples", self.num_samples)] if self.num_samples is not None else []),
                 *self.selection.items()]
        return _validated("selector/default.yaml", [(("selection", str(key)), value)
                                                   for key, value in items])

    def indicator_settings(self) -> Dict[str, Any]:
        """``configs/indicators/default.yaml`` under the ``indicators`` overrides, validated
        (each leaf a layer of its own, as :meth:`selector_settings`)."""
        return _validated("indicators/default.yaml", _leaves(self.indicators))


def _leaves(tree: Mapping[str, Any], prefix: Tuple[str, ...] = ()) -> List[Tuple[Tuple[str, ...], Any]]:
    items: List[Tuple[Tuple[str, ...], Any]] = []
    for key, value in tree.items():
        if isinstance(value, Mapping):
            items += _leaves(value, prefix + (str(key),))
        else:
            items.append((prefix + (str(key),), value))
    return items


def _validated(base: str, leaves: List[Tuple[Tuple[str, ...], Any]]) -> Dict[str, Any]:
    """``base`` under one :class:`~selector.core.settings.Layer` per ``(key path, value)``,
    merged and validated; each layer labelled ``--set KEY=VALUE`` as the overrides it stands for
    (the labels the error lines have always named). A value is taken as it is, except a string,
    which is read as a YAML value as it always was (``"0"`` is 0, ``"[clip,length]"`` a list)."""
    import json

    from selector.core.settings import Layer, _show_override, override_layers, settings_from_layers

    layers = []
    for key, value in leaves:
        dotted = ".".join(key)
        if isinstance(value, str):
            layers += override_layers([f"{dotted}={value}"])
            continue
        nested: Any = value
        for part in reversed(key):
            nested = {part: nested}
        shown = json.dumps(value) if isinstance(value, (list, dict)) else value
        layers.append(Layer(f"--set {_show_override(f'{dotted}={shown}')}", nested))
    return settings_from_layers(base, layers)


@dataclass
class RunSelection:
    ids: List[str]
    folder: Path  # holds filter_cap.json, selected.txt and manifest.json
    reused: bool
    digest: str


def default_cache_dir(annotations: PathLike) -> Path:
    """``<user cache>/datasets/<hash of the data file's real path>``: the scores, pool and
    selections of one data set, kept out of the data folder (which may be read-only or shared)."""
    from selector.core.paths import user_cache_dir

    real = os.path.realpath(os.path.abspath(str(annotations)))
    return user_cache_dir() / "datasets" / text_fingerprint(real, length=16)


def selection_key(settings: Dict[str, Any], mode: str, annotations: Path, checkpoint: Path,
                  clusters: Optional[PathLike], pool_digest: str) -> str:
    """The cached selection's key (the folder name under ``<cache_dir>/selections/``): the
    selection settings and mode, whether a clusters file is given, the annotations, checkpoint
    (every file of a folder) and clusters file by name and bytes, and the pool by its content
    digest -- not its bytes: safetensors writes its metadata keys in a different order in every
    process, so an unchanged rewritten pool file would otherwise look new."""
    # the ``methods`` section (igpt4 select --method) plays no part in a run's selection; left
    # out so that keys made before it existed stay valid
    settings = {key: value for key, value in settings.items() if key != "methods"}
    digest = Fingerprint().update({"settings": settings, "mode": mode,
                                   "clusters": bool(clusters)})
    digest.update_files([annotations, checkpoint] + ([Path(clusters)] if clusters else []))
    return digest.update_text(pool_digest).hexdigest(20)


def selection_for_run(storage: PathLike,
                      options: Union[RunSelectionOptions, Mapping[str, Any]],
                      output_dir: Optional[PathLike] = None) -> RunSelection:
    """The ids to train on, from a cc_sbu_align folder (or a conversation JSON, then with
    ``image_root`` among the options) and the dataset's ``selector`` options
    (:class:`RunSelectionOptions`, or the block as a mapping):

    ``checkpoint`` (selector folder or released .pth), ``pool`` (pool file; default
    ``<cache_dir>/pool.safetensors``), ``cache_dir`` (default :func:`default_cache_dir`: in the
    user cache, never in the data folder),
    ``num_samples`` (200), ``mode`` (default | reference: must match the checkpoint),
    ``clusters`` (null: spectral clustering of the image features; or a clusters file),
    ``compute_missing`` (score what the pool file lacks), ``indicators`` (indicator settings for
    that), ``selection`` (overrides of the selection settings). Copies the selection's manifest
    into ``output_dir`` when given. The pool file and the checkpoint are each read once.
    """
    from selector.model.training import Selector
    from selector.scoring.pool import FeaturePool
    from selector.selection.select import select

    if not isinstance(options, RunSelectionOptions):
        options = RunSelectionOptions.from_block(options)
    storage = Path(storage)
    is_cc_sbu_align = storage.is_dir()
    annotations = storage / "filter_cap.json" if is_cc_sbu_align else storage
    if not annotations.is_file():
        raise InputError(f"{annotations}: not found (build_info.storage must be a cc_sbu_align "
                         "folder with filter_cap.json and image/, or a conversation JSON)")
    if not options.checkpoint:
        raise InputError("datasets.<name>.selector.checkpoint is not set (a selector checkpoint "
                         "folder from igpt4 train-selector, or the released .pth)")
    checkpoint = Path(options.checkpoint)
    cache_dir = Path(options.cache_dir or default_cache_dir(annotations))
    pool_path = Path(options.pool or cache_dir / "pool.safetensors")
    if options.compute_missing:
        _on_first_rank(lambda: _update_pool(storage, cache_dir, pool_path, options))
    if not pool_path.is_file():
        raise InputError(f"{pool_path}: no pool file; run `igpt4 score --data {storage} "
                         f"--pool-out {pool_path}` first, or set selector.compute_missing: true")
    fitted = Selector.load(checkpoint)
    mode = options.mode
    if mode not in MODES:
        raise InputError(f"selector.mode must be one of {', '.join(MODES)} (got {mode!r})")
    if fitted.mode != mode:
        raise InputError(f"{checkpoint}: a {fitted.mode}-mode checkpoint, but selector.mode "
                         f"is {mode!r}")
    settings = options.selector_settings()
    clusters = options.clusters
    pool = FeaturePool.load(pool_path)
    key = selection_key(settings, mode, annotations, checkpoint, clusters, pool.content_digest())
    folder = cache_dir / "selections" / key
    reused = (folder / "selected.txt").is_file()
    if not reused:
        tmp = folder.with_name(f".{key}.{os.getpid()}.tmp")
        select(tmp, settings, pool_path, checkpoint, clusters, None, None,
               storage if is_cc_sbu_align else None, loaded_pool=pool, loaded_model=fitted)
        if (folder / "selected.txt").is_file():  # another process finished the same selection
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            publish_folder(tmp, folder)  # all or nothing: a killed selection is never taken as done
    ids = (folder / "selected.txt").read_text(encoding="utf-8").split()
    if output_dir is not None:
        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        from selector.core.atomic import copy_file

        for name in ("manifest.json", "filter_cap.json", "selected.txt"):
            if (folder / name).is_file():
                copy_file(folder / name, out / f"igpt4_{name}")
    return RunSelection(ids, folder, reused, key)


def _on_first_rank(work) -> None:
    """Run ``work`` once: on rank 0 while the others wait, when the host's training job has
    started torch.distributed (MiniGPT-4 / LAVIS builds datasets on every rank)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        if dist.get_rank() == 0:
            work()
        dist.barrier()
    else:
        work()


def _update_pool(storage: Path, cache_dir: Path, pool_path: Path,
                 options: RunSelectionOptions) -> None:
    from selector.core.distributed import Ranks
    from selector.scoring.score import score

    settings = options.indicator_settings()
    names = list(settings["pool"]["indicators"])
    score(storage, cache_dir, None, names, settings, options.image_root, pool_out=pool_path,
          pca_from=options.pca_from, ranks=Ranks(launched=False))
