"""The result cache: one embedded SQLite file (WAL) per work dir, shared by every paid or slow step.

A row per (sample content hash, indicator, settings hash), as HF ``datasets`` fingerprints its
``map`` results: an unchanged sample with unchanged settings is never recomputed, a changed setting
recomputes only that indicator, an edited caption or image only that sample (the sample hash and
the chunked scoring loop are :mod:`selector.scoring.store`; this module knows only hashes). Values
are written in one transaction per chunk, so a run killed at any moment (even ``kill -9``) keeps
every finished chunk, duplicates nothing, and a rerun ends with the same table as an uninterrupted
run. Work that is paid per request (GPT replies, the evaluation judge's judgements) is committed
per reply instead (:class:`ReplyStore`: one row per request, committed the moment the reply
arrives), so a kill loses only the requests in flight.

A failure is not a value. A problem is either a property of the sample (an empty answer, an image
whose bytes do not decode, a reply that was delivered but has no usable score: we paid for it) and
is cached like a value, or a :class:`Failure` of the computation (HTTP 5xx, 429 after the SDK's
retries, a timeout, a connection error, an image the OS could not read): that is never stored, so
the next run computes it again and ``--dry-run`` counts it as "to compute".

Everything stored goes through :func:`selector.core.redaction.redact` first: a secret (the API
key) that a server echoed back in a reply or an error never reaches the file (nor its WAL).

Arrays (embeddings) live in ``.npy`` shards under ``WORK/arrays/<kind>-<settings hash>/``, one per
chunk, indexed from the ``array_rows`` table (shard file and row per sample). A shard is written
completely (temporary name, then rename) before its rows are committed, so a kill leaves at worst
an unreferenced shard, never a row pointing at a missing or partial file. numpy is imported only
when arrays are read or written (the judge and the indicator registry import this module).
"""
from __future__ import annotations

import json
import re
import sqlite3
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from selector.core.atomic import atomic_open
from selector.core.errors import InputError
from selector.core.jsonio import PathLike
from selector.core.redaction import redact

if TYPE_CHECKING:
    import numpy as np

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


#: how a problem that means "this indicator does not apply to this sample" begins (the CLIP score
#: of a text-only sample): cached like a value, counted apart from problems, never a failure
NOT_APPLICABLE = "not applicable: "


@dataclass(frozen=True)
class IndicatorValue:
    """One sample's result: a value, or the reason there is none (``problem``; a
    :class:`Failure` when the computation failed rather than the sample; starting with
    :data:`NOT_APPLICABLE` when the indicator does not apply to this kind of sample), and what
    else is worth keeping (``detail``: a raw reply, per-round scores)."""
    sample_id: str
    value: Optional[float]
    problem: Optional[str] = None
    detail: Dict[str, Any] = field(default_factory=dict)

    @property
    def not_applicable(self) -> bool:
        return is_not_applicable(self.problem)


def is_not_applicable(problem: Optional[str]) -> bool:
    """Whether ``problem`` (an indicator's or an embedding's) says it does not apply."""
    return problem is not None and problem.startswith(NOT_APPLICABLE)


class Failure(str):
    """A problem that says the computation failed, not that the sample is bad (HTTP 5xx, a
    timeout, a connection error, an OS error reading a file). It reads as the problem text, but
    the store never caches it: the next run tries again. Build it where the failure is known;
    string operations return plain ``str``, so wrap a derived message again."""

    __slots__ = ()


def is_failure(problem: Optional[str]) -> bool:
    return isinstance(problem, Failure)


def settings_hash(indicator: str, settings: Dict[str, Any]) -> str:
    from selector.core.fingerprint import fingerprint

    return fingerprint({"indicator": indicator, "settings": settings}, length=16)


class Store:
    def __init__(self, work_dir: PathLike, flag: str = "--work") -> None:
        """Open (or create) ``work_dir/cache.sqlite``. ``flag`` is the option that named the
        folder (``--work``, or the judge's ``--cache``), so the error line names what to change."""
        self.path = Path(work_dir) / "cache.sqlite"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.connection = sqlite3.connect(str(self.path), timeout=60)
            self.connection.execute("PRAGMA journal_mode=WAL")
            self.connection.execute("PRAGMA synchronous=NORMAL")
            self.connection.executescript(SCHEMA)
        except OSError as exc:
            raise InputError(f"{self.path.parent}: cannot use as the {flag} folder "
                             f"({exc.strerror or exc})") from None
        except sqlite3.DatabaseError as exc:  # unwritable folder, a damaged or foreign file
            raise InputError(f"{self.path}: cannot open the cache ({exc}); use another {flag} "
                             "folder or move this file aside") from None

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
            (settings_key, name, json.dumps(redact(settings), sort_keys=True, default=str)))

    def get(self, indicator: str, settings: str, hashes: Sequence[str]
            ) -> Dict[str, IndicatorValue]:
        return {digest: IndicatorValue(sample_id, value, problem, json.loads(detail))
                for digest, sample_id, value, problem, detail in self._rows_for(
                    "sample_hash, sample_id, value, problem, detail", "indicator_values",
                    "indicator", indicator, settings, hashes)}

    def put(self, indicator: str, settings_key: str, settings: Dict[str, Any],
            rows: Iterable[tuple]) -> int:
        """Insert ``(sample_hash, IndicatorValue)`` rows in one transaction (committed when this
        returns), secrets redacted. Rows whose problem is a :class:`Failure` are left out (a
        failure is not a value). Returns how many rows were stored."""
        now = time.time()
        kept = [(digest, value) for digest, value in rows if not is_failure(value.problem)]
        if not kept:
            return 0
        with self.connection:
            self._remember_settings(settings_key, indicator, settings)
            self.connection.executemany(
                "INSERT OR REPLACE INTO indicator_values VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                redact([(digest, indicator, settings_key, value.sample_id, value.value,
                         value.problem, json.dumps(value.detail), now)
                        for digest, value in kept]))  # one pass over the chunk
        return len(kept)

    def put_one(self, indicator: str, settings_key: str, settings: Dict[str, Any],
                digest: str, value: IndicatorValue) -> bool:
        """One row, committed at once (a kill right after loses nothing); False for a
        :class:`Failure`, which is not stored."""
        return self.put(indicator, settings_key, settings, [(digest, value)]) == 1

    def forget(self, indicator: str, problem: "re.Pattern[str]") -> int:
        """Delete the rows of ``indicator`` that have no value and a problem matching
        ``problem`` (failures that an earlier version cached as values); returns how many."""
        doomed = [(digest, key) for digest, key, text in self.connection.execute(
            "SELECT sample_hash, settings_hash, problem FROM indicator_values WHERE indicator = ? "
            "AND value IS NULL AND problem IS NOT NULL", (indicator,)) if problem.search(text)]
        if doomed:
            with self.connection:
                self.connection.executemany(
                    "DELETE FROM indicator_values WHERE sample_hash = ? AND indicator = ? "
                    "AND settings_hash = ?", [(digest, indicator, key) for digest, key in doomed])
        return len(doomed)

    def put_arrays(self, kind: str, settings_key: str, settings: Dict[str, Any],
                   hashes: Sequence[str], ids: Sequence[str], vectors: np.ndarray,
                   problems: Sequence[Optional[str]]) -> None:
        """Store one chunk of vectors (row i for ``hashes[i]``; rows with a problem keep only the
        problem; rows with a :class:`Failure` are not stored at all: the next run retries them)."""
        import numpy as np

        good = [i for i, problem in enumerate(problems) if problem is None]
        stored = [i for i, problem in enumerate(problems) if not is_failure(problem)]
        shard = None
        if good:
            folder = self.path.parent / "arrays" / f"{kind}-{settings_key}"
            folder.mkdir(parents=True, exist_ok=True)
            shard = f"{kind}-{settings_key}/{uuid.uuid4().hex}.npy"
            target = self.path.parent / "arrays" / shard
            with atomic_open(target, "wb") as handle:
                np.save(handle, np.ascontiguousarray(vectors[good], dtype=np.float32))
        row_of = {i: n for n, i in enumerate(good)}
        now = time.time()
        with self.connection:
            self._remember_settings(settings_key, kind, settings)
            self.connection.executemany(
                "INSERT OR REPLACE INTO array_rows VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                redact([(hashes[i], kind, settings_key, ids[i], shard if i in row_of else None,
                         row_of.get(i), problems[i], now) for i in stored]))

    def get_arrays(self, kind: str, settings_key: str, hashes: Sequence[str]
                   ) -> Dict[str, Tuple[Optional[np.ndarray], Optional[str]]]:
        """``{sample_hash: (vector or None, problem)}`` for the hashes that are stored."""
        import numpy as np

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
            shard_path = self.path.parent / "arrays" / shard
            matrix = np.load(shard_path, mmap_mode="r", allow_pickle=False)
            for digest, row in rows:
                found[digest] = (np.array(matrix[row]), None)
        return found

    def count(self, indicator: Optional[str] = None) -> int:
        if indicator is None:
            return self.connection.execute("SELECT COUNT(*) FROM indicator_values").fetchone()[0]
        return self.connection.execute("SELECT COUNT(*) FROM indicator_values WHERE indicator = ?",
                                       (indicator,)).fetchone()[0]


class ReplyStore:
    """Per-request results of paid requests (GPT replies), shared by the GPT score and the GPT
    judge: one row per request under its own column name, keyed by the request's content hash
    (``request.key``), committed the moment its reply arrives (``keep`` is the sink that
    :meth:`selector.core.chat.OpenAIChat.send` calls before handing the reply on). Only
    delivered replies are kept (a reply without a usable score is kept *flagged*: it was paid
    for); requests that got no reply are not, so the next run sends exactly those again.

    ``value_of(request, outcome)`` turns a delivered reply into what is stored (the caller's
    parsing: a 0..100 score, a judge's score pair)."""

    def __init__(self, store: "Store", name: str, settings: Dict[str, Any],
                 value_of: Callable[[Any, Any], IndicatorValue]) -> None:
        self.store = store
        self.name = name
        self.settings = settings
        self.settings_key = settings_hash(name, settings)
        self.value_of = value_of

    def get(self, keys: Sequence[str]) -> Dict[str, IndicatorValue]:
        return self.store.get(self.name, self.settings_key, list(keys))

    def keep(self, delivered: Sequence[Tuple[Any, Any]]) -> None:
        """Commit these ``(request, outcome)`` pairs (one transaction: one reply online, one
        finished batch in batch mode)."""
        rows = [(request.key, self.value_of(request, outcome)) for request, outcome in delivered]
        if rows:
            self.store.put(self.name, self.settings_key, self.settings, rows)
