"""Whether an image file can be used: fully decoded, never a traceback.

Kept apart from :mod:`selector.data.samples` (the readers call :func:`image_problem` for every
sample that has an image; text-only conversation samples have none to check)."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Optional


def image_problem(path: Path) -> Optional[str]:
    """Why this image cannot be used, or None when it fully decodes.

    ``verify()`` alone reads only the header and checksums, so a truncated JPEG passed it: the
    image is decoded too (JPEG in draft mode, at 1/8 scale: every byte is still read, in a
    fraction of the time). Pillow's decompression-bomb warning is an error here: an image of more
    than ``Image.MAX_IMAGE_PIXELS`` pixels is refused before it is decoded."""
    from PIL import Image, ImageFile

    # LAVIS (and other hosts) set ImageFile.LOAD_TRUNCATED_IMAGES = True at import, which makes
    # Pillow pad a truncated file with grey instead of failing: check with it off, then restore
    tolerant, ImageFile.LOAD_TRUNCATED_IMAGES = ImageFile.LOAD_TRUNCATED_IMAGES, False
    try:
        return _decode_problem(path, Image)
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = tolerant


def _decode_problem(path: Path, Image: Any) -> Optional[str]:
    try:
        if not path.is_file():
            return f"image {path} is missing"
        if path.stat().st_size == 0:
            return f"image {path} is empty (0 bytes)"
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                image.verify()
            with Image.open(path) as image:
                if image.format == "JPEG":
                    image.draft(image.mode, (max(1, image.width // 8), max(1, image.height // 8)))
                image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        return (f"image {path} is too large to decode safely (a possible decompression bomb: "
                f"{' '.join(str(exc).split())[:160]})")
    except OSError as exc:
        if exc.errno is not None and exc.strerror:  # the file system's error, not Pillow's
            return f"image {path} cannot be read ({exc.strerror})"
        return f"image {path} is corrupt ({type(exc).__name__}: {' '.join(str(exc).split())[:120]})"
    except MemoryError:
        return f"image {path} is too large to decode in memory"
    except Exception as exc:  # Pillow's decoders raise many types on malformed files
        return f"image {path} is corrupt ({type(exc).__name__}: {' '.join(str(exc).split())[:120]})"
    return None
