"""The smoke set's contents: a cc_sbu_align folder of 48 tiny generated pictures with captions,
its pool file, and a selector trained on synthetic labels of that pool
(:mod:`selector.model.synthetic`): what a training run selects from when its config names
``igpt4:smoke`` (see :mod:`lavis_plugins.smoke`, which resolves that name).

Why materialised and not shipped: it is made by our own code in about a second, so it always
matches the checkpoint and pool formats of the installed version; a shipped copy would be binary
files in the repository and the wheel that every format change would have to rebuild. It is
deterministic (fixed seeds), built in a temporary folder and renamed into place in one step, so
concurrent ranks and a killed build never leave a half-made set behind.
"""
from __future__ import annotations

import io
import os
import shutil
from pathlib import Path
from typing import Optional

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
    from selector.model.fit import train_selector
    from selector.core.jsonio import write_json
    from selector.core.settings import load_settings
    from selector.model.synthetic import synthetic_feature_pool, synthetic_labels

    pool, quality, _ = synthetic_feature_pool(SAMPLES, seed=5)
    pool.save(folder / "pool.safetensors")
    size = SAMPLES // SUBSETS
    members = {str(i): pool.ids[i * size:(i + 1) * size] for i in range(SUBSETS)}
    write_json(folder / "subsets.json", members)
    write_json(folder / "labels.json", synthetic_labels(members, dict(zip(pool.ids,
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


