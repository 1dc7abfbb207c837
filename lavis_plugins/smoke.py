"""The smoke set: what ``configs/minigpt4/cpu_smoke.yaml`` and ``configs/lavis/cpu_smoke.yaml``
train on when nothing else is given, so that ``python train.py --cfg-path $(igpt4 configs
minigpt4/cpu_smoke.yaml)`` runs with no ``--options`` at all.

It is a cc_sbu_align folder of 48 tiny generated pictures with captions, its pool file and a
selector trained on toy labels of that pool (:mod:`selector.synthetic`). Those configs name it
``igpt4:smoke`` (``build_info.storage``, ``selector.checkpoint``, ``selector.pool``); the builder
calls :func:`resolve`, which materialises it on first use under
``<user cache>/smoke/<version>/`` (:func:`selector.paths.user_cache_dir`).

Why materialised and not shipped: it is made by our own code in about a second, so it always
matches the checkpoint and pool formats of the installed version; a shipped copy would be binary
files in the repository and the wheel that every format change would have to rebuild. It is
deterministic (fixed seeds), built in a temporary folder and renamed into place in one step, so
concurrent ranks and a killed build never leave a half-made set behind.

``python -m lavis_plugins.smoke [--out DIR]`` builds it (into DIR, or the cache) and prints where.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

#: the value of build_info.storage / selector.checkpoint / selector.pool that means "the smoke set"
SMOKE = "igpt4:smoke"
#: bump when what :func:`build` makes changes (the cache folder is keyed by it)
FORMAT = 1
SAMPLES = 48
SUBSETS = 8  # of 6 samples each, with toy labels


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("instructiongpt4")
    except Exception:  # noqa: BLE001 - running from a source tree that was never installed
        return "dev"


def default_folder() -> Path:
    from selector.core.paths import user_cache_dir

    return user_cache_dir() / "smoke" / f"{FORMAT}-{_version()}"


def _image(n: int) -> bytes:
    """A 16x16 JPEG: two colours per picture, different for every sample."""
    from PIL import Image

    picture = Image.new("RGB", (16, 16), ((n * 53) % 256, (n * 97) % 256, (n * 31) % 256))
    picture.paste(((n * 17) % 256, 40, 200 - n), (0, 0, 8 + n % 8, 8))
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG")
    return buffer.getvalue()


def build(folder: Path) -> Path:
    """Make the smoke set in ``folder`` (which must not exist yet): ``data/`` (cc_sbu_align),
    ``pool.safetensors``, ``selector/`` (checkpoint), ``subsets.json``, ``labels.json``."""
    from selector.core.atomic import write_bytes
    from selector.selection.commands import train_selector
    from selector.core.jsonio import write_json
    from selector.core.settings import load_settings
    from selector.model.synthetic import make_toy_pool, oracle_labels

    pool, quality, _ = make_toy_pool(SAMPLES, seed=5)
    pool.save(folder / "pool.safetensors")
    size = SAMPLES // SUBSETS
    members = {str(i): pool.ids[i * size:(i + 1) * size] for i in range(SUBSETS)}
    write_json(folder / "subsets.json", members)
    write_json(folder / "labels.json", oracle_labels(members, dict(zip(pool.ids,
                                                                       quality.tolist()))))
    annotations = [{"image_id": sample_id, "caption": f"A small picture, number {sample_id}. "
                    f"It shows a {'bright' if n % 2 else 'dark'} square on a plain background."}
                   for n, sample_id in enumerate(pool.ids)]
    write_json(folder / "data" / "filter_cap.json", {"annotations": annotations})
    for n, sample_id in enumerate(pool.ids):
        write_bytes(folder / "data" / "image" / f"{sample_id}.jpg", _image(n))
    settings = load_settings(None, ["training.epochs=10", "training.cross_validate=false"])
    train_selector(folder / "selector", settings, folder / "pool.safetensors",
                   folder / "subsets.json", folder / "labels.json")
    return folder


def smoke_set(folder: Optional[Path] = None) -> Path:
    """The smoke set's folder, built first when it is not there (all or nothing)."""
    folder = Path(folder) if folder is not None else default_folder()
    if (folder / "selector" / "selector.json").is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    build(tmp)
    try:
        os.rename(tmp, folder)  # atomic; fails when another process finished first
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (folder / "selector" / "selector.json").is_file():
            raise
    return folder


def _is_smoke(value: Any) -> bool:
    return isinstance(value, str) and value.strip() == SMOKE


def resolve(storage: str, options: Dict[str, Any]) -> Tuple[str, Dict[str, Any]]:
    """``build_info.storage`` and the ``selector`` options with ``igpt4:smoke`` replaced by the
    smoke set's paths. The smoke checkpoint and pool only fit the smoke data."""
    from selector.core.errors import InputError

    named = [key for key in ("checkpoint", "pool") if _is_smoke(options.get(key))]
    if not _is_smoke(storage):
        if named:
            raise InputError(f"selector.{named[0]}: {SMOKE} only goes with build_info.storage: "
                             f"{SMOKE} (set selector.checkpoint and selector.pool for your data)")
        return storage, options
    folder = smoke_set()
    resolved = dict(options)
    for key, path in (("checkpoint", folder / "selector"), ("pool", folder / "pool.safetensors")):
        if _is_smoke(resolved.get(key)) or not resolved.get(key):
            resolved[key] = str(path)
    return str(folder / "data"), resolved


def main(argv: Optional[List[str]] = None) -> int:
    from selector.core.errors import run_reporting_errors

    parser = argparse.ArgumentParser(prog="python -m lavis_plugins.smoke",
                                     description="build the smoke set and print where it is")
    parser.add_argument("--out", help=f"folder to build it in (default: {default_folder()})")
    args = parser.parse_args(argv)

    def work() -> int:
        if args.out:
            from selector.core.errors import InputError

            if Path(args.out).exists():  # a new folder only: never built over anything
                raise InputError(f"{args.out}: already exists (give a new folder)")
        folder = smoke_set(Path(args.out) if args.out else None)
        print(json.dumps({"data": str(folder / "data"), "checkpoint": str(folder / "selector"),
                          "pool": str(folder / "pool.safetensors")}))
        return 0

    return run_reporting_errors(work, prog="lavis_plugins.smoke")


if __name__ == "__main__":
    sys.exit(main())
