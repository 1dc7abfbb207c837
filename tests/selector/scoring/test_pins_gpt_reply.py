"""Pins for selector.gpt_reply (found by tests/mutation_score.py): the scale's ends, the reasons a
reply is flagged, signs, and the flagged-reply records that ``parse-gpt`` prints and exports."""
from __future__ import annotations

import json

import pytest

from selector.core.errors import InputError
from selector.scoring.gpt_reply import ParsedReply, parse_reply, parse_reply_file


@pytest.mark.parametrize("reply, score", [
    ("0", 0), ("100", 100), ("Score: 0\nPoor.", 0), ("92.0 points", 92), ("87.5", 87.5),
    ("12abc 50", 12), ("GPT-4 gets 80", 4), ("x 3.25.7", 3.25),
])
def test_scores_on_the_scale(reply, score):
    result = parse_reply(reply)
    assert result == ParsedReply(score) and result.ok and result.problem is None
    assert type(result.score) is type(score)  # whole numbers come back as int


@pytest.mark.parametrize("reply, problem", [
    (None, "reply is NoneType, not text"),
    (88, "reply is int, not text"),
    (b"88", "reply is bytes, not text"),
    ("", "reply contains no score"),
    ("no digits at all", "reply contains no score"),
    ("100.5", "first number 100.5 is outside 0..100"),
    ("101 of 100", "first number 101 is outside 0..100"),
    ("-40", "first number -40 is outside 0..100"),
    ("Score: -5", "first number -5 is outside 0..100"),
    ("Score: \u22125", "first number \u22125 is outside 0..100"),
    ("Score: \u2013 5", "first number \u2013 5 is outside 0..100"),
])
def test_flagged_replies_say_why(reply, problem):
    result = parse_reply(reply)
    assert result.score is None and result.problem == problem and not result.ok


def test_a_custom_scale_is_inclusive_and_named_in_the_reason():
    assert parse_reply("1", low=1, high=5).score == 1
    assert parse_reply("5", low=1, high=5).score == 5
    assert parse_reply("7", low=1, high=5).problem == "first number 7 is outside 1..5"
    assert parse_reply("0.5", low=1, high=5).problem == "first number 0.5 is outside 1..5"
    assert parse_reply("2.5", low=0.5, high=2.5).score == 2.5


def _write(tmp_path, document, name="replies.json"):
    path = tmp_path / name
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


def test_file_records_keep_their_fields_and_flagged_ones_name_the_sample(tmp_path):
    long_reply = "no score " * 40
    path = _write(tmp_path, {"annotations": [
        {"image_id": "7", "caption": "c", "gpt_score": "80 ok"},
        {"image_id": "8", "gpt_score": long_reply},
        {"id": "conv-1", "gpt_score": None},
        {"gpt_score": "-3"},
    ]})
    parsed, flagged = parse_reply_file(path)
    assert parsed == [{"image_id": "7", "caption": "c", "gpt_score": 80}]
    assert flagged == [
        {"sample": "8", "problem": "reply contains no score", "reply": long_reply[:200]},
        {"sample": "conv-1", "problem": "reply is NoneType, not text", "reply": "None"},
        {"sample": "3", "problem": "first number -3 is outside 0..100", "reply": "-3"},
    ]


def test_a_bare_list_and_another_reply_key(tmp_path):
    path = _write(tmp_path, [{"id": "a", "judge": "Score: 55"}, {"id": "b", "judge": "66"}])
    parsed, flagged = parse_reply_file(path, reply_key="judge")
    assert parsed == [{"id": "a", "judge": 55}, {"id": "b", "judge": 66}] and flagged == []


@pytest.mark.parametrize("document, message", [
    ({"replies": []}, r"replies\.json: expected \{\"annotations\": \[\.\.\.\]\} or a list of replies$"),
    ("text", r"replies\.json: expected \{\"annotations\": \[\.\.\.\]\} or a list of replies$"),
    ([{"gpt_score": "1"}, "x"], r"replies\.json: sample #1: no 'gpt_score' field$"),
    ([{"gpt_score": "1"}, {"score": "2"}], r"replies\.json: sample #1: no 'gpt_score' field$"),
])
def test_malformed_files_are_one_line_errors(tmp_path, document, message):
    with pytest.raises(InputError, match=message):
        parse_reply_file(_write(tmp_path, document))
