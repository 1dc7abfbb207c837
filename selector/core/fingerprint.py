"""The one fingerprint hasher: what a result was computed from, as a short sha256 hex string.

As HF ``datasets`` fingerprints a ``map``: the settings a function ran with and the identity of
its inputs (file contents, the fingerprints of the stages before it) go into one hash, so the
same inputs find the same cached result and any changed one misses it. Every cache key, stage
fingerprint and recorded digest of this project is built here (the scoring store's settings and
sample keys, the pipeline's stage fingerprints, the run selection's cache key, the pool's content
digest, the evaluation run's fingerprint), so they all hash a value and a file the same way.

The byte streams each site feeds are part of existing users' caches (``cache.sqlite`` keys,
``pipeline_state.json``, ``run.json``, ``selections/<key>/``): a site keeps its exact sequence of
updates; ``tests/selector/core/test_fingerprint.py`` pins every one against plain hashlib.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterable, Optional, Union

PathLike = Union[str, "os.PathLike[str]"]
BLOCK = 1 << 20  # a checkpoint or a pool can be gigabytes: files are streamed in 1 MiB blocks


def canonical_json(value: Any) -> str:
    """The text a value is hashed as: JSON with sorted keys, ASCII-escaped, anything that JSON
    lacks (a path, a numpy scalar) by its ``str``."""
    return json.dumps(value, sort_keys=True, default=str)


class Fingerprint:
    """A sha256 fed in order; every ``update*`` returns ``self`` so updates chain::

        Fingerprint().update({"settings": settings}).update_file(path).hexdigest(20)
    """

    def __init__(self) -> None:
        self._digest = hashlib.sha256()

    def update(self, value: Any) -> "Fingerprint":
        """A JSON-able value (settings, ids, upstream fingerprints), as :func:`canonical_json`."""
        return self.update_text(canonical_json(value))

    def update_text(self, text: str) -> "Fingerprint":
        """A string as its UTF-8 bytes (a caller's own canonical text, a path, a prompt)."""
        return self.update_bytes(text.encode("utf-8"))

    def update_bytes(self, data: bytes) -> "Fingerprint":
        self._digest.update(data)
        return self

    def update_file(self, path: PathLike) -> "Fingerprint":
        """A file's bytes (not its name), streamed."""
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(BLOCK), b""):
                self._digest.update(block)
        return self

    def update_files(self, paths: Iterable[PathLike]) -> "Fingerprint":
        """Each path's file name and bytes, in the order given; a folder stands for every file
        under it (sorted by path). Names, not folders: the same files moved elsewhere keep the
        fingerprint."""
        for path in map(Path, paths):
            files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
            for file in files:
                self.update_text(file.name).update_file(file)
        return self

    def hexdigest(self, length: Optional[int] = None) -> str:
        """The hex digest, cut to its first ``length`` characters when given."""
        text = self._digest.hexdigest()
        return text if length is None else text[:length]


def fingerprint(*values: Any, length: Optional[int] = None) -> str:
    """The fingerprint of JSON-able values (each as :func:`canonical_json`, in order)."""
    digest = Fingerprint()
    for value in values:
        digest.update(value)
    return digest.hexdigest(length)


def text_fingerprint(text: str, length: Optional[int] = None) -> str:
    """The fingerprint of a string's UTF-8 bytes (a path, a prompt, a caller's own JSON)."""
    return Fingerprint().update_text(text).hexdigest(length)


def file_sha256(path: PathLike) -> str:
    """sha256 (hex) of a file's bytes."""
    return Fingerprint().update_file(path).hexdigest()

