"""Parsing GPT judge replies into scores.

The paper's judge answers with a 0..100 score and a justification ("88\\n\\nThe AI assistant ...",
"Score: 92\\n..."). The score is the first number in the reply: that reproduces all 3439 released
final scores from the released raw replies. A reply with no number, or a first number outside the
scale, is flagged with the reason and never defaulted. The first number keeps its sign: a minus
sign right before it ("-40", "Score: -5", "score: − 5") makes it negative, hence flagged, never
read as 40 or 5; a hyphen after a word or a number ("GPT-4", "0-100") is not a sign. 0 and 100 are
on the scale.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from selector.core.errors import InputError
from selector.core.jsonio import PathLike, read_json

# a minus sign (ASCII, U+2212 minus, en dash) counts when no letter, digit or dot is right before
# it, and at most one space separates it from the digits
_NUMBER = re.compile(r"(?:(?<![\w.])[-\u2212\u2013] ?)?\d+(?:\.\d+)?")


@dataclass(frozen=True)
class ParsedReply:
    score: Optional[float]
    problem: Optional[str] = None  # why there is no score

    @property
    def ok(self) -> bool:
        return self.problem is None


def parse_reply(reply: Any, low: float = 0, high: float = 100) -> ParsedReply:
    if not isinstance(reply, str):
        return ParsedReply(None, f"reply is {type(reply).__name__}, not text")
    match = _NUMBER.search(reply)
    if match is None:
        return ParsedReply(None, "reply contains no score")
    text = match.group()
    negative = not text[0].isdigit()
    value = float(text.lstrip("-\u2212\u2013 "))
    if negative:
        value = -value
    if not low <= value <= high:
        return ParsedReply(None, f"first number {text} is outside {low:g}..{high:g}")
    return ParsedReply(int(value) if value.is_integer() else value)


def parse_reply_file(path: PathLike, reply_key: str = "gpt_score"
                     ) -> Tuple[List[Dict[str, Any]], List[Dict[str, str]]]:
    """Parse ``{"annotations": [{image_id, caption, <reply_key>: reply}]}`` (UTF-8 or GB18030).

    Returns (annotations with the parsed score in ``reply_key``, flagged replies). Flagged samples
    are kept out of the first list.
    """
    document, _ = read_json(path)
    records = document.get("annotations") if isinstance(document, dict) else document
    if not isinstance(records, list):
        raise InputError(f"{path}: expected {{\"annotations\": [...]}} or a list of replies")
    parsed, flagged = [], []
    for index, record in enumerate(records):
        if not isinstance(record, dict) or reply_key not in record:
            raise InputError(f"{path}: sample #{index}: no {reply_key!r} field")
        sample = str(record.get("image_id", record.get("id", index)))
        result = parse_reply(record[reply_key])
        if result.ok:
            parsed.append({**record, reply_key: result.score})
        else:
            flagged.append({"sample": sample, "problem": result.problem,
                            "reply": str(record[reply_key])[:200]})
    return parsed, flagged
