"""eval_arena.metric: the Multi-Modality-Arena metric, bit for bit, and the official VQA accuracy.

The golden files hold the outputs of the Arena's own VQAEval and of GT-Vision-Lab's vqaEval.py on
the same inputs (tests/data/README.md says how they were made); the hand-checked cases below were
worked out from the rules, not by running any code.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from eval_arena.metric import (accuracy, arena_score, get_metric, normalize_answer,
                               process_punctuation, vqa_score)
from selector.core.errors import InputError

DATA = Path(__file__).resolve().parents[1] / "data"


def _golden(name: str) -> dict:
    return json.loads((DATA / name).read_text(encoding="utf-8"))


def test_arena_metric_equals_the_arena_on_every_golden_pair():
    golden = _golden("arena_vqaeval_golden.json")
    cases = golden["cases"]
    assert len(cases) >= 500 and 0.3 < sum(c["score"] for c in cases) / len(cases) < 0.7
    wrong = [c for c in cases if arena_score(c["prediction"], c["gt_answers"]) != c["score"]]
    assert not wrong, f"{len(wrong)} of {len(cases)} differ, e.g. {wrong[:3]}"


def test_vqa_accuracy_equals_the_official_code_on_every_golden_pair():
    cases = [c for c in _golden("arena_official_vqa_golden.json")["cases"] if len(c["gt_answers"]) > 1]
    assert len(cases) >= 300 and len({c["accuracy"] for c in cases}) >= 5
    wrong = [c for c in cases if vqa_score(c["prediction"], c["gt_answers"]) != c["accuracy"]]
    assert not wrong, f"{len(wrong)} of {len(cases)} differ, e.g. {wrong[:3]}"


@pytest.mark.parametrize("prediction, gt, expected", [
    ("Yes, it is.", "yes", 1),                 # punctuation and case
    ("There are two.", "2", 1),                # number words become digits
    ("2", "two", 1),
    ("eleven", "11", 0),                       # only zero..ten are mapped
    ("category", "cat", 0),                    # whole words only
    ("The cat is black", "black cat", 0),      # a phrase must appear in order
    ("a black cat", "black cat", 1),
    ("1.5 meters", "1.5", 1),                  # a period before a digit stays
    ("1.5 meters", "15", 0),
    ("It is 3.", "3", 1),                      # a trailing period goes
    ("3.x", "3x", 1),                          # ... even between a digit and a letter (look-behind typo)
    ("1,000", "1000", 1),                      # comma between digits: marks are deleted, not spaced
    ("red,blue", "red blue", 1),               # otherwise a mark not touching a space becomes a space
    ("red, blue", "redblue", 0),               # a mark touching a space is deleted: "red blue"
    ("red,blue 1,5", "redblue", 1),            # a digit comma anywhere deletes every mark
    ("red,blue 1, 5", "redblue", 1),           # a mark touching a space anywhere is deleted everywhere
    ("red,blue 1;5", "redblue", 0),
    ("The answer is the beach", "beach", 1),   # articles dropped
    ("dont know", "don't know", 1),            # contraction table
    ("Im here", "I'm", 0),                     # capitalised keys never match after lower-casing
    ("cat", "the", 1),                         # a ground truth that normalises to "" matches any word
    ("", "the", 0),                            # ... but not an empty prediction
    ("$5", "$5", 0),                           # \b before "$" needs a word character before it
    ("costs$5", "$5", 1),
    ("no", ["yes", "no"], 1),                  # any ground truth of a list
    ("maybe", [], 0),
    ("a." * 32 + "b", "a" * 32 + "b", 1),      # 32 periods are removed ...
    ("a." * 33 + "b", "a" * 33 + "b", 0),      # ... but not a 33rd (re.UNICODE passed as count)
    ("yes\nno", "yes no", 1),                  # newlines and tabs are spaces
    ("ＹＥＳ", "ｙｅｓ", 1),                      # Unicode lower-casing and word boundaries
])
def test_arena_metric_hand_checked(prediction, gt, expected):
    assert arena_score(prediction, gt) == expected


def test_normalisation_hand_checked():
    assert process_punctuation("a;b") == "a b"
    assert process_punctuation("a; b") == "a b"
    assert process_punctuation("a;b 1,2") == "ab 12"
    assert process_punctuation("end. 2.5.") == "end 2.5"
    assert normalize_answer("  The TWO dogs, didnt they?\t") == "2 dogs didn't they"


def test_arena_metric_leaves_its_input_alone():
    """The Arena's evaluate rewrites the ground-truth list in place; ours must not."""
    gts = ["The Dog!", "two"]
    arena_score("nothing", gts)
    assert gts == ["The Dog!", "two"]


@pytest.mark.parametrize("prediction, gts, expected", [
    ("yes", ["yes"] * 10, 1.0),                # 9 others agree: min(1, 9/3)
    ("Yes", ["yes"] * 10, 0.0),                # unanimous answers: no normalisation at all
    ("Yes", ["yes"] * 9 + ["no"], 1.0),        # disagreement: both sides normalised
    ("yes", ["yes"] * 2 + ["no"] * 8, 0.6),    # (2 * 1/3 + 8 * 2/3) / 10
    ("yes", ["yes"] * 3 + ["no"] * 7, 0.9),    # (3 * 2/3 + 7 * 1) / 10
    ("maybe", ["yes"] * 5 + ["no"] * 5, 0.0),
    ("the dogs", ["dogs", "dog", "dogs", "dogs"], 0.75),  # (3 * 2/3 + 1 * 1) / 4
    ("Yes.", "yes", 1.0),                      # one ground truth: normalised exact match
    ("yes it is", "yes", 0.0),                 # ... exact, not a word match
])
def test_vqa_accuracy_hand_checked(prediction, gts, expected):
    assert vqa_score(prediction, gts) == pytest.approx(expected)


def test_dataset_accuracy_and_metric_names():
    records = [{"answer": "yes", "gt_answers": "yes"}, {"answer": "no", "gt_answers": ["yes"]},
               {"answer": "two", "gt_answers": ["2"] * 10}, {"answer": "cat", "gt_answers": "dog"}]
    assert accuracy(records, "arena") == 2 / 4
    assert accuracy(records, "vqa") == pytest.approx((1 + 0 + 0 + 0) / 4)  # unanimous "2": exact
    assert get_metric("vqa") is vqa_score
    with pytest.raises(InputError, match="unknown metric 'bleu'"):
        get_metric("bleu")
    with pytest.raises(TypeError):
        arena_score("x", [1, 2])
