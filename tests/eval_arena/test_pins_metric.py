"""Pins for eval_arena.metric that the golden files leave open (found by tests/mutation_score.py).

Each case is a behaviour of the Arena/VQA normalisation or of the dataset accuracy that a small
edit of the code would change without any other test noticing.
"""
from __future__ import annotations

import pytest

from eval_arena.metric import accuracy, arena_score, get_metric, process_punctuation, vqa_score
from selector.core.errors import InputError


@pytest.mark.parametrize("prediction, expected", [
    ("a-b\n-c", 1),   # the newline is a space first, so "-" touches a space and is deleted: "ab c"
    ("a-b\t-c", 1),   # the same for a tab
    ("a-b -c", 1),
    ("a-b-c", 0),     # no space anywhere: "-" becomes a space, "a b c"
])
def test_whitespace_is_flattened_before_the_punctuation_rule(prediction, expected):
    assert arena_score(prediction, "ab") == expected


def test_a_mark_after_a_space_is_deleted_everywhere():
    assert process_punctuation("a;b ;c") == "ab c"
    assert process_punctuation("a;b; c") == "ab c"
    assert arena_score("a;b ;c", "ab") == 1


def test_vqa_whitespace_and_empty_answers():
    assert vqa_score("  yes\n", ["yes", "yes", "yes", "yes"]) == 1.0  # stripped, then exact
    assert vqa_score("yes", []) == 0.0


def test_error_messages_name_the_problem():
    with pytest.raises(TypeError, match=r"ground truth must be a string or a list of strings, "
                                        r"got \[1, 2\]"):
        arena_score("x", [1, 2])
    with pytest.raises(InputError, match=r"unknown metric 'bleu'; choose one of arena, vqa$"):
        get_metric("bleu")
    with pytest.raises(ValueError, match=r"^accuracy of an empty prediction list$"):
        accuracy([])


def test_accuracy_defaults_to_the_arena_metric_and_takes_one_record():
    records = [{"answer": "Yes, two dogs", "gt_answers": ["2"]}]
    assert accuracy(records) == 1.0  # arena: a word match; vqa would say 0
    assert accuracy(records, "vqa") == 0.0
    assert accuracy(iter([{"answer": "no", "gt_answers": "yes"}])) == 0.0
