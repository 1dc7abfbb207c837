"""File content hashing, in one place: the pipeline's stage fingerprints, the evaluation run's
fingerprint and the selection's record of its pool all hash a file's bytes the same way."""
from __future__ import annotations

import hashlib
import os
from typing import Any, Union

PathLike = Union[str, "os.PathLike[str]"]


def update_with_file(digest: Any, path: PathLike) -> Any:
    """Feed a file's bytes into ``digest`` (a hashlib object), streamed in 1 MiB blocks (a
    checkpoint or a pool can be gigabytes); return ``digest``."""
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest


def file_sha256(path: PathLike) -> str:
    """sha256 (hex) of a file's bytes."""
    return update_with_file(hashlib.sha256(), path).hexdigest()
