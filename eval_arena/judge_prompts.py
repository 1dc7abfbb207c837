"""The judge's prompts and the parsing of its replies (LLaVA-Bench's GPT review, multi-round).

The single-round layout and rules follow LLaVA's ``llava/eval/eval_gpt_review_bench.py`` and
``table/rule.json`` (Apache-2.0; the ``llava_bench_*`` rule is reproduced word for word so that our
relative scores are comparable with published LLaVA-Bench numbers): a system message, then one
user message with ``[Context]`` (a description of the image; GPT-4 does not see the image),
``[Question]``, the reference answer as ``[Assistant 1]``, the model's answer as ``[Assistant 2]``
and ``[System]`` with the rule. The judge is not told which assistant is the reference.

Without a context the ``[Context]`` block and the rule's sentence about it are left out (our
variant: LLaVA always has a caption). A later round of a conversation is shown as each assistant's
own conversation up to that round (``[Assistant 1's conversation]`` with the reference answers,
``[Assistant 2's conversation]`` with the model's), because each answer was written after its own
earlier answers (as MT-Bench shows multi-turn answers); the rule asks for scores of the last
round only.

Replies: LLaVA takes the first line, turns commas into spaces and needs exactly two numbers (it
records ``[-1, -1]`` otherwise and averages them in). We take the first non-empty line, split it on
commas and whitespace, and need exactly two numbers within 1..10; anything else is *flagged* with
the reason and kept out of the means, never defaulted.

:data:`PROMPT_VERSION` is part of every cache key, and so is a hash of the texts below: editing a
prompt never reuses judgements made with the old one.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

from selector.core.fingerprint import text_fingerprint

PROMPT_VERSION = "igpt4-judge/1"
SCALE = (1.0, 10.0)

SYSTEM_PROMPT = "You are a helpful and precise assistant for checking the quality of the answer."

_RATING = (
    "Please rate the helpfulness, relevance, accuracy, level of details of their responses. Each "
    "assistant receives an overall score on a scale of 1 to 10, where a higher score indicates "
    "better overall performance.\nPlease first output a single line containing only two values "
    "indicating the scores for Assistant 1 and 2, respectively. The two scores are separated by a "
    "space.\nIn the subsequent line, please provide a comprehensive explanation of your "
    "evaluation, avoiding any potential bias and ensuring that the order in which the responses "
    "were presented does not affect your judgment.")

# LLaVA's llava_bench_conv / _detail / _complex rule (identical texts), word for word
RULE_WITH_CONTEXT = (
    "We would like to request your feedback on the performance of two AI assistants in response "
    "to the user question displayed above. The user asks the question on observing an image. For "
    "your reference, the visual content in the image is represented with a few sentences "
    "describing the image. \n" + _RATING)

RULE_WITHOUT_CONTEXT = (
    "We would like to request your feedback on the performance of two AI assistants in response "
    "to the user question displayed above. The user asks the question on observing an image, "
    "which is not shown to you.\n" + _RATING)

_LATER_ROUND = (
    "We would like to request your feedback on the performance of two AI assistants in a "
    "multi-round conversation with a user, displayed above: each assistant's conversation is "
    "shown separately, with its own earlier answers. The user asks the questions on observing an "
    "image{context}. Judge only the two answers to the last user question (round {round}); use "
    "the earlier rounds as context.\n" + _RATING)

_CONTEXT_NOTE = (", which is not shown to you; for your reference, the visual content in the "
                 "image is represented with a few sentences describing the image")
_NO_CONTEXT_NOTE = ", which is not shown to you"

PROMPT_SHA256 = text_fingerprint("\n\x00".join(
    (PROMPT_VERSION, SYSTEM_PROMPT, RULE_WITH_CONTEXT, RULE_WITHOUT_CONTEXT, _LATER_ROUND,
     _CONTEXT_NOTE, _NO_CONTEXT_NOTE)), length=16)


def later_round_rule(round_number: int, with_context: bool) -> str:
    return _LATER_ROUND.format(round=round_number,
                               context=_CONTEXT_NOTE if with_context else _NO_CONTEXT_NOTE)


def _transcript(name: str, questions: Sequence[str], answers: Sequence[str]) -> str:
    lines = [f"[{name}'s conversation]"]
    for question, answer in zip(questions, answers):
        lines += [f"[User]\n{question}\n", f"[{name}]\n{answer}\n"]
    lines.append(f"[End of {name}'s conversation]\n\n")
    return "\n".join(lines)


def review_messages(questions: Sequence[str], references: Sequence[str], answers: Sequence[str],
                    context: Optional[str] = None) -> Tuple[Tuple[str, str], ...]:
    """The chat messages judging the last round of ``questions`` (one per round so far):
    ``references[i]`` and ``answers[i]`` answer ``questions[i]``."""
    if not (len(questions) == len(references) == len(answers)) or not questions:
        raise ValueError("one reference and one answer per question, at least one round")
    content = f"[Context]\n{context}\n\n" if context else ""
    if len(questions) == 1:
        rule = RULE_WITH_CONTEXT if context else RULE_WITHOUT_CONTEXT
        content += (f"[Question]\n{questions[0]}\n\n"
                    f"[Assistant 1]\n{references[0]}\n\n[End of Assistant 1]\n\n"
                    f"[Assistant 2]\n{answers[0]}\n\n[End of Assistant 2]\n\n")
    else:
        rule = later_round_rule(len(questions), bool(context))
        content += (_transcript("Assistant 1", questions, references)
                    + _transcript("Assistant 2", questions, answers))
    content += f"[System]\n{rule}\n\n"
    return (("system", SYSTEM_PROMPT), ("user", content))


@dataclass(frozen=True)
class ScorePair:
    reference: Optional[float]  # Assistant 1
    model: Optional[float]  # Assistant 2
    problem: Optional[str] = None  # why the reply is flagged

    @property
    def ok(self) -> bool:
        return self.problem is None


_SEPARATORS = re.compile(r"[,\s]+")


def parse_pair(reply: Optional[str], scale: Tuple[float, float] = SCALE) -> ScorePair:
    """The two scores of a review reply's first non-empty line, or why there are none."""
    if not isinstance(reply, str) or not reply.strip():
        return ScorePair(None, None, "empty reply")
    line = next(line for line in reply.splitlines() if line.strip()).strip()
    shown = line if len(line) <= 60 else line[:57] + "..."
    parts = [part for part in _SEPARATORS.split(line) if part]
    if len(parts) != 2:
        return ScorePair(None, None, f"first line {shown!r} is not two scores")
    try:
        values = [float(part) for part in parts]
    except ValueError:
        return ScorePair(None, None, f"first line {shown!r} is not two numbers")
    low, high = scale
    for value, part in zip(values, parts):
        if not math.isfinite(value) or not low <= value <= high:
            return ScorePair(None, None, f"score {part} is outside {low:g}..{high:g}")
    return ScorePair(values[0], values[1])
