"""JSON reading that names the file, the encoding and the position of any problem.

The released InstructionGPT-4 files mix UTF-8 and GB18030 (the GPT-4 reply files are GB18030), so
every reader tries UTF-8 first and GB18030 second and reports which one it used.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Tuple, Union

from .errors import InputError

PathLike = Union[str, "os.PathLike[str]"]
ENCODINGS = ("utf-8-sig", "gb18030")


def read_text(path: PathLike) -> Tuple[str, str]:
    """Return ``(text, encoding)``; ``encoding`` is ``"utf-8"`` or ``"gb18030"``."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a folder, expected a file") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror})") from None
    first_error = None
    for encoding in ENCODINGS:
        try:
            return raw.decode(encoding), encoding.replace("-sig", "")
        except UnicodeDecodeError as exc:
            first_error = first_error or exc
    raise InputError(
        f"{path}: neither UTF-8 nor GB18030 text (first bad byte at offset {first_error.start})")


def read_json(path: PathLike) -> Tuple[Any, str]:
    """Parse a JSON file; return ``(value, encoding)``."""
    text, encoding = read_text(path)
    try:
        return json.loads(text), encoding
    except json.JSONDecodeError as exc:
        raise InputError(
            f"{path}: malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None


def write_json(path: PathLike, value: Any, indent: int = 2) -> None:
    """Write UTF-8 JSON atomically (a crash never leaves a half-written file behind)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(value, handle, indent=indent, ensure_ascii=False)
        handle.write("\n")
    os.replace(tmp, path)
