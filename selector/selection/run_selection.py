"""The selection a training run uses, made (or reused) when its dataset is built.

The LAVIS / MiniGPT-4 builder calls :func:`selection_for_run` with the dataset's ``selector``
block. The inputs (the data file, the pool file, the checkpoint, the selection settings) are
hashed; a selection made from the same inputs before is read back from the cache folder instead
of being recomputed, so every rank of a ``torchrun`` job, and every rerun, trains on the same
samples. With ``compute_missing`` the pool file is first brought up to date with ``igpt4 score``'s
code (indicators and embeddings through the cache, PCA reused from ``pca_from`` when given).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

from selector.core.errors import InputError
from selector.core.atomic import publish_folder
from selector.core.fingerprint import update_with_file
from selector.core.jsonio import PathLike

MODES = ("default", "reference")


@dataclass
class RunSelection:
    ids: List[str]
    folder: Path  # holds filter_cap.json, selected.txt and manifest.json
    reused: bool
    digest: str


def _digest_files(digest: "hashlib._Hash", paths: List[Path]) -> None:
    for path in paths:
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            digest.update(str(file.name).encode())
            update_with_file(digest, file)


def _digest_pool(digest: "hashlib._Hash", pool_path: Path) -> None:
    """The pool file by content (ids, names, arrays), not bytes: safetensors writes its metadata
    keys in a different order in every process, so an unchanged rewritten pool file would
    otherwise look new and discard the cached selection."""
    from selector.scoring.pool import FeaturePool

    digest.update(FeaturePool.load(pool_path).content_digest().encode())


def default_cache_dir(annotations: PathLike) -> Path:
    """``<user cache>/datasets/<hash of the data file's real path>``: the scores, pool and
    selections of one data set, kept out of the data folder (which may be read-only or shared)."""
    from selector.core.paths import user_cache_dir

    real = os.path.realpath(os.path.abspath(str(annotations)))
    return user_cache_dir() / "datasets" / hashlib.sha256(real.encode("utf-8")).hexdigest()[:16]


def selection_for_run(storage: PathLike, options: Dict[str, Any],
                      output_dir: Optional[PathLike] = None) -> RunSelection:
    """The ids to train on, from a cc_sbu_align folder (or a conversation JSON, then with
    ``image_root`` among the options) and the dataset's ``selector`` options:

    ``checkpoint`` (selector folder or released .pth), ``pool`` (pool file; default
    ``<cache_dir>/pool.safetensors``), ``cache_dir`` (default :func:`default_cache_dir`: in the
    user cache, never in the data folder),
    ``num_samples`` (200), ``mode`` (default | reference: must match the checkpoint),
    ``clusters`` (null: spectral clustering of the image features; or a clusters file),
    ``compute_missing`` (score what the pool file lacks), ``indicators`` (indicator settings for
    that), ``selection`` (overrides of the selection settings). Copies the selection's manifest
    into ``output_dir`` when given.
    """
    from selector.selection.select import select
    from selector.model.network import load_checkpoint
    from selector.core.settings import load_settings

    storage = Path(storage)
    is_cc_sbu_align = storage.is_dir()
    annotations = storage / "filter_cap.json" if is_cc_sbu_align else storage
    if not annotations.is_file():
        raise InputError(f"{annotations}: not found (build_info.storage must be a cc_sbu_align "
                         "folder with filter_cap.json and image/, or a conversation JSON)")
    if not options.get("checkpoint"):
        raise InputError("datasets.<name>.selector.checkpoint is not set (a selector checkpoint "
                         "folder from igpt4 train-selector, or the released .pth)")
    checkpoint = Path(options["checkpoint"])
    cache_dir = Path(options.get("cache_dir") or default_cache_dir(annotations))
    pool_path = Path(options.get("pool") or cache_dir / "pool.safetensors")
    if options.get("compute_missing"):
        _on_first_rank(lambda: _update_pool(storage, cache_dir, pool_path, options,
                                            options.get("image_root")))
    if not pool_path.is_file():
        raise InputError(f"{pool_path}: no pool file; run `igpt4 score --data {storage} "
                         f"--pool-out {pool_path}` first, or set selector.compute_missing: true")
    model = load_checkpoint(checkpoint)
    mode = options.get("mode", "default")
    if mode not in MODES:
        raise InputError(f"selector.mode must be one of {', '.join(MODES)} (got {mode!r})")
    if model.config.mode != mode:
        raise InputError(f"{checkpoint}: a {model.config.mode}-mode checkpoint, but selector.mode "
                         f"is {mode!r}")
    overrides = [f"selection.num_samples={int(options.get('num_samples', 200))}"]
    overrides += [f"selection.{k}={v}" for k, v in (options.get("selection") or {}).items()]
    settings = load_settings(None, overrides)
    clusters = options.get("clusters")

    digest = hashlib.sha256(json.dumps({"settings": settings, "mode": mode,
                                        "clusters": bool(clusters)}, sort_keys=True).encode())
    _digest_files(digest, [annotations, checkpoint] + ([Path(clusters)] if clusters else []))
    _digest_pool(digest, pool_path)
    key = digest.hexdigest()[:20]
    folder = cache_dir / "selections" / key
    reused = (folder / "selected.txt").is_file()
    if not reused:
        tmp = folder.with_name(f".{key}.{os.getpid()}.tmp")
        select(tmp, settings, pool_path, checkpoint, clusters, None, None,
               storage if is_cc_sbu_align else None)
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


def _update_pool(storage: Path, cache_dir: Path, pool_path: Path, options: Dict[str, Any],
                 image_root: Optional[str] = None) -> None:
    from selector.core.distributed import Ranks
    from selector.scoring.score import score
    from selector.core.settings import load_settings

    overrides = [f"{key}={json.dumps(value) if isinstance(value, (list, dict)) else value}"
                 for key, value in _flatten(options.get("indicators") or {})]
    settings = load_settings(None, overrides, base="indicators/default.yaml")
    names = list(settings["pool"]["indicators"])
    score(storage, cache_dir, None, names, settings, image_root, pool_out=pool_path,
          pca_from=options.get("pca_from"), ranks=Ranks(launched=False))


def _flatten(tree: Dict[str, Any], prefix: str = "") -> List[tuple]:
    items = []
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            items += _flatten(value, f"{name}.")
        else:
            items.append((name, value))
    return items
