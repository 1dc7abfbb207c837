"""Questions a drawing answers: colours, counts and shapes, each with its one-word answer.

The toy VQA set (:mod:`.vqa`), the stage-1 pretraining (:mod:`.minigpt4`) and the toy
conversations (:mod:`.conversations`) all ask these, so a question's wording and answer come from
one place. Every question is answerable from the image alone and has exactly one right word:
a colour is asked for only of a shape that has one colour in the drawing, a shape only of a colour
that has one shape. Counts are asked of shapes that are there and, less often, of one that is not
("zero"), so "zero" is not the answer to most count questions.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping

from selector.app.toy.world import COUNT_WORDS, SHAPES, groups_of, plural

#: the kinds of question, in the order :func:`questions_of` returns them
QUESTION_KINDS = ("colour", "count", "shape")


@dataclass(frozen=True)
class Question:
    kind: str      # one of QUESTION_KINDS
    text: str      # "What colour is the circle?"
    answer: str    # "red": one word, what the Arena's word match looks for


def questions_of(truth: Mapping[str, Any], rng: random.Random) -> List[Question]:
    """Every question of each kind the drawing ``truth`` answers unambiguously; one count
    question about a shape that is absent, chosen with ``rng``."""
    groups = groups_of(truth["shapes"])
    by_shape: Dict[str, List[Dict[str, Any]]] = {}
    by_colour: Dict[str, List[Dict[str, Any]]] = {}
    for group in groups:
        by_shape.setdefault(group["shape"], []).append(group)
        by_colour.setdefault(group["colour"], []).append(group)
    asked: List[Question] = []
    for shape, shape_groups in by_shape.items():
        if len(shape_groups) == 1:
            many = shape_groups[0]["count"] > 1
            text = (f"What colour are the {plural(shape, 2)}?" if many
                    else f"What colour is the {shape}?")
            asked.append(Question("colour", text, shape_groups[0]["colour"]))
    for shape, shape_groups in by_shape.items():
        count = sum(group["count"] for group in shape_groups)
        asked.append(Question("count", f"How many {plural(shape, 2)} are there?",
                              COUNT_WORDS[count]))
    absent = [shape for shape in SHAPES if shape not in by_shape]
    if absent:
        shape = rng.choice(absent)
        asked.append(Question("count", f"How many {plural(shape, 2)} are there?", COUNT_WORDS[0]))
    for colour, colour_groups in by_colour.items():
        if len(colour_groups) == 1:
            many = colour_groups[0]["count"] > 1
            text = (f"What shape are the {colour} objects?" if many
                    else f"What shape is the {colour} object?")
            asked.append(Question("shape", text, colour_groups[0]["shape"]))
    return asked
