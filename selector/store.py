"""The indicator cache: one embedded SQLite file (WAL) per work dir.

A row per (sample content hash, indicator, settings hash), as HF ``datasets`` fingerprints its
``map`` results: an unchanged sample with unchanged settings is never recomputed, a changed setting
recomputes only that indicator, an edited caption or image only that sample. Values are written
in one transaction per chunk, so a run killed at any moment (even ``kill -9``) keeps every finished
chunk, duplicates nothing, and a rerun ends with the same table as an uninterrupted run.

Arrays (embeddings) live in ``.npy`` shards under ``WORK/arrays/<kind>-<settings hash>/``, one per
chunk, indexed from the ``array_rows`` table (shard file and row per sample). A shard is written
completely (temporary name, then rename) before its rows are committed, so a kill leaves at worst
an unreferenced shard, never a row pointing at a missing or partial file.
"""
from __future__ import annotations

import hashlib
import json
import sqlite3
import os
import time
import uuid
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from .data import Sample
from .distributed import Ranks
from .indicators import Indicator, IndicatorValue
from .jsonio import PathLike

SCHEMA = """
CREATE TABLE IF NOT EXISTS indicator_values (
    sample_hash   TEXT NOT NULL,
    indicator     TEXT NOT NULL,
    settings_hash TEXT NOT NULL,
    sample_id     TEXT NOT NULL,
    value         REAL,
    problem       TEXT,
    detail        TEXT NOT NULL DEFAULT '{}',
    created       REAL NOT NULL,
    PRIMARY KEY (sample_hash, indicator, settings_hash)
);
CREATE TABLE IF NOT EXISTS array_rows (
    sample_hash   TEXT NOT NULL,
    kind          TEXT NOT NULL,
    settings_hash TEXT NOT NULL,
    sample_id     TEXT NOT NULL,
    shard         TEXT,
    row           INTEGER,
    problem       TEXT,
    created       REAL NOT NULL,
    PRIMARY KEY (sample_hash, kind, settings_hash)
);
CREATE TABLE IF NOT EXISTS settings (
    settings_hash TEXT PRIMARY KEY,
    indicator     TEXT NOT NULL,
    settings      TEXT NOT NULL
);
"""


def settings_hash(indicator: str, settings: Dict[str, Any]) -> str:
    canonical = json.dumps({"indicator": indicator, "settings": settings}, sort_keys=True,
                           default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


def sample_hash(sample: Sample, image_bytes: bool = True) -> str:
    """Content hash of a sample: its turns and (by default) its image file's bytes."""
    digest = hashlib.sha256()
    digest.update(json.dumps([[t.role, t.text] for t in sample.turns]).encode("utf-8"))
    if image_bytes and sample.image.is_file():
        with open(sample.image, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    else:
        digest.update(str(sample.image_ref).encode("utf-8"))
    return digest.hexdigest()[:32]


class Store:
    def __init__(self, work_dir: PathLike) -> None:
        self.path = Path(work_dir) / "cache.sqlite"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.connection = sqlite3.connect(str(self.path), timeout=60)
        self.connection.execute("PRAGMA journal_mode=WAL")
        self.connection.execute("PRAGMA synchronous=NORMAL")
        self.connection.executescript(SCHEMA)

    def close(self) -> None:
        self.connection.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _rows_for(self, columns: str, table: str, name_column: str, name: str, settings_key: str,
                  hashes: Sequence[str]) -> Iterable[tuple]:
        """``SELECT columns`` for these sample hashes, in chunks under SQLite's parameter limit."""
        for start in range(0, len(hashes), 500):
            chunk = list(hashes[start:start + 500])
            marks = ",".join("?" * len(chunk))
            yield from self.connection.execute(
                f"SELECT {columns} FROM {table} WHERE {name_column} = ? AND settings_hash = ? "
                f"AND sample_hash IN ({marks})", [name, settings_key, *chunk])

    def _remember_settings(self, settings_key: str, name: str, settings: Dict[str, Any]) -> None:
        self.connection.execute(
            "INSERT OR IGNORE INTO settings VALUES (?, ?, ?)",
            (settings_key, name, json.dumps(settings, sort_keys=True, default=str)))

    def get(self, indicator: str, settings: str, hashes: Sequence[str]
            ) -> Dict[str, IndicatorValue]:
        return {digest: IndicatorValue(sample_id, value, problem, json.loads(detail))
                for digest, sample_id, value, problem, detail in self._rows_for(
                    "sample_hash, sample_id, value, problem, detail", "indicator_values",
                    "indicator", indicator, settings, hashes)}

    def put(self, indicator: str, settings_key: str, settings: Dict[str, Any],
            rows: Iterable[tuple]) -> None:
        """Insert ``(sample_hash, IndicatorValue)`` rows in one transaction."""
        now = time.time()
        with self.connection:
            self._remember_settings(settings_key, indicator, settings)
            self.connection.executemany(
                "INSERT OR REPLACE INTO indicator_values VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(digest, indicator, settings_key, value.sample_id, value.value, value.problem,
                  json.dumps(value.detail), now) for digest, value in rows])

    def put_arrays(self, kind: str, settings_key: str, settings: Dict[str, Any],
                   hashes: Sequence[str], ids: Sequence[str], vectors: np.ndarray,
                   problems: Sequence[Optional[str]]) -> None:
        """Store one chunk of vectors (row i for ``hashes[i]``; rows with a problem are not kept)."""
        good = [i for i, problem in enumerate(problems) if problem is None]
        shard = None
        if good:
            folder = self.path.parent / "arrays" / f"{kind}-{settings_key}"
            folder.mkdir(parents=True, exist_ok=True)
            shard = f"{kind}-{settings_key}/{uuid.uuid4().hex}.npy"
            target = self.path.parent / "arrays" / shard
            tmp = target.with_name(f".{target.name}.tmp")
            with open(tmp, "wb") as handle:
                np.save(handle, np.ascontiguousarray(vectors[good], dtype=np.float32))
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, target)
        row_of = {i: n for n, i in enumerate(good)}
        now = time.time()
        with self.connection:
            self._remember_settings(settings_key, kind, settings)
            self.connection.executemany(
                "INSERT OR REPLACE INTO array_rows VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(hashes[i], kind, settings_key, ids[i], shard if i in row_of else None,
                  row_of.get(i), problems[i], now) for i in range(len(hashes))])

    def get_arrays(self, kind: str, settings_key: str, hashes: Sequence[str]
                   ) -> Dict[str, Tuple[Optional[np.ndarray], Optional[str]]]:
        """``{sample_hash: (vector or None, problem)}`` for the hashes that are stored."""
        found: Dict[str, Tuple[Optional[np.ndarray], Optional[str]]] = {}
        by_shard: Dict[str, List[Tuple[str, int]]] = {}
        for digest, shard, row, problem in self._rows_for(
                "sample_hash, shard, row, problem", "array_rows", "kind", kind, settings_key,
                hashes):
            if shard is None:
                found[digest] = (None, problem)
            else:
                by_shard.setdefault(shard, []).append((digest, row))
        for shard, rows in by_shard.items():
            matrix = np.load(self.path.parent / "arrays" / shard, mmap_mode="r")
            for digest, row in rows:
                found[digest] = (np.array(matrix[row]), None)
        return found

    def count(self, indicator: Optional[str] = None) -> int:
        if indicator is None:
            return self.connection.execute("SELECT COUNT(*) FROM indicator_values").fetchone()[0]
        return self.connection.execute("SELECT COUNT(*) FROM indicator_values WHERE indicator = ?",
                                       (indicator,)).fetchone()[0]


def score_cached(store: Store, indicator: Indicator, samples: Sequence[Sample],
                 chunk_size: int = 256, hashes: Optional[Sequence[str]] = None,
                 ranks: Optional[Ranks] = None) -> List[IndicatorValue]:
    """Values for every sample, computing only those missing from the store, chunk by chunk.

    Under a launcher (``ranks``) each process computes its share of the missing samples and all
    of them return the merged values once every share is stored."""
    settings = indicator.settings()
    key = settings_hash(indicator.name, settings)
    hashes = list(hashes) if hashes is not None else [sample_hash(s) for s in samples]
    ranks = ranks or Ranks(launched=False)
    cached = ranks.read_together(lambda: store.get(indicator.name, key, hashes))
    todo = ranks.mine([i for i, digest in enumerate(hashes) if digest not in cached])
    chunk_size = indicator.chunk_size or chunk_size
    for start in range(0, len(todo), chunk_size):
        rows = todo[start:start + chunk_size]
        values = indicator.score([samples[i] for i in rows])
        store.put(indicator.name, key, settings, [(hashes[i], v) for i, v in zip(rows, values)])
        cached.update((hashes[i], v) for i, v in zip(rows, values))
    if ranks.world_size > 1:
        ranks.wait()
        cached = store.get(indicator.name, key, hashes)
    return [IndicatorValue(s.id, cached[d].value, cached[d].problem, cached[d].detail)
            for s, d in zip(samples, hashes)]
