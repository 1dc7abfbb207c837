"""One question as the Arena gives it, and the checked reading of the records it comes from.

Every reader of the Arena's files (the dataset layouts, the judge's inputs, the scripted
tester's answers) checks each record the same way, so that a malformed one is one
:class:`InputError` naming the file and the item or line, never a traceback.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

from selector.core.errors import InputError
from selector.core.jsonio import PathLike, read_json, read_text

GroundTruth = Union[str, List[str]]


@dataclass(frozen=True)
class VQAItem:
    """One question. ``source`` says where it came from (file and item) for error messages."""

    image_path: str
    question: str
    gt_answers: GroundTruth
    source: str = ""

    def as_arena(self) -> Dict[str, Any]:
        """The dict the Arena's datasets return."""
        return {"image_path": self.image_path, "question": self.question,
                "gt_answers": self.gt_answers}


def item_where(path: PathLike, item: Any) -> str:
    return f"{path}: item {item}"


def line_where(path: PathLike, number: int) -> str:
    return f"{path}: line {number}"


def field_of(record: Any, key: str, kind: Union[type, Tuple[type, ...]], where: str) -> Any:
    if not isinstance(record, dict):
        raise InputError(f"{where}: expected an object, got {type(record).__name__}")
    if key not in record:
        raise InputError(f"{where}: missing {key!r}")
    value = record[key]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is int:
        expected = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise InputError(f"{where}: {key!r} must be {expected}, got {value!r}"[:300])
    return value


def answers_of(value: Any, where: str, key: str = "answers") -> GroundTruth:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and all(isinstance(a, str) for a in value):
        return list(value)
    raise InputError(f"{where}: {key!r} must be a string or a non-empty list of strings, "
                     f"got {value!r}"[:300])


def load_json(path: Path) -> Any:
    return read_json(path)[0]


def json_part(value: Any, path: Path, key: Optional[str] = None, kind: type = dict) -> Any:
    if key is not None:
        if not isinstance(value, dict) or key not in value:
            raise InputError(f"{path}: expected a JSON object with {key!r}")
        value = value[key]
    if not isinstance(value, kind):
        raise InputError(f"{path}: expected a JSON {'object' if kind is dict else 'list'}"
                         + (f" under {key!r}" if key else ""))
    return value


def json_line(path: PathLike, number: int, line: str, hint: str = "") -> Any:
    """One JSONL line parsed, or one :class:`InputError` naming the file and line: malformed
    JSON and JSON nested too deeply for Python's parser (a RecursionError) are bad input, not
    crashes. ``hint`` is appended to the malformed-JSON message."""
    try:
        return json.loads(line)
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: line {number}: malformed JSON ({exc.msg}){hint}") from None
    except RecursionError:
        raise InputError(f"{path}: line {number}: JSON nested too deeply to read") from None


def jsonl_records(path: Path) -> List[Tuple[int, Any]]:
    return [(number, json_line(path, number, line))
            for number, line in enumerate(read_text(path)[0].splitlines(), 1) if line.strip()]
