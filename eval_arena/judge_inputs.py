"""The judge's inputs: questions, reference answers and model answers, read into rounds to judge.

Every file is refused with one line naming the file, the line or item and the field at fault.
:func:`load_inputs` returns one :class:`Item` per round that has everything it needs (its review
messages, :func:`eval_arena.judge_prompts.review_messages`, and the cache key they hash to) and a
``missing`` review row for each round that cannot be judged; :mod:`eval_arena.judge` sends them.

Inputs (UTF-8 or GB18030; JSONL, or a JSON list):

* questions: one record per question: ``question_id``, ``image`` (optional), ``category``
  (optional, default ``"default"``), and either ``text`` (or ``question``: one round), ``rounds``
  (the user's questions, in order) or LLaVA-style ``conversations`` (``[{"from": "human"|"gpt",
  "value"}]``; its ``gpt`` turns serve as references when no references file is given). An optional
  ``context`` (or ``caption``/``captions``) describes the image for the judge; ``--context`` reads
  these from a LLaVA-Bench ``context.jsonl`` (``{"image", "caption"}``) instead;
* references and answers: ``{"question_id", "round", "text"}`` per line (``round`` counts from 1
  and may be left out for single-round questions; ``answer`` is accepted for ``text``), as a tester
  writes them and as LLaVA's answer files are; or the Arena's answers JSON (``[{"question",
  "answer", "gt_answers", "image_path", "model_name"}]``), matched to single-round questions by
  question text and image file name.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from eval_arena.records import json_line
from eval_arena.judge_prompts import review_messages
from selector.core.chat import ChatRequest
from selector.core.errors import InputError
from selector.core.jsonio import PathLike, read_json, read_text
from selector.data.samples import IMAGE_TOKEN

DEFAULT_CATEGORY = "default"
_HUMAN_ROLES = ("human", "user")
_ASSISTANT_ROLES = ("gpt", "assistant")

RoundKey = Tuple[str, int]  # (question id as text, round counted from 1)


@dataclass(frozen=True)
class Question:
    question_id: Any  # as the questions file has it (LLaVA's are integers)
    questions: Tuple[str, ...]  # the user's question of each round
    category: str
    image: Optional[str] = None
    context: Optional[str] = None

    @property
    def id(self) -> str:
        return str(self.question_id)


@dataclass(frozen=True)
class Item:
    """One round to judge: the messages sent and their cache key."""
    question_id: Any
    round: int
    category: str
    messages: Tuple[Tuple[str, str], ...]

    @property
    def key(self) -> str:
        """The cache key: the content hash of the request it sends (``ChatRequest.key``)."""
        return ChatRequest("", self.messages).key


@dataclass
class Inputs:
    items: List[Item]
    missing: List[Dict[str, Any]] = field(default_factory=list)  # review rows: nothing to judge
    order: Dict[str, int] = field(default_factory=dict)  # question id -> position in its file
    unmatched_answers: int = 0  # answers to questions not in the questions file

    def sort(self, rows: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
        """Rows in the questions file's order, rounds in order."""
        return sorted(rows, key=lambda row: (self.order[str(row["question_id"])], row["round"]))


def _records(path: PathLike, encoding: Optional[str] = None) -> List[Tuple[str, Any]]:
    """``(where, record)`` of a JSONL file or a JSON list; ``where`` names the line or item.

    ``encoding="utf-8"`` for model answers: generated text may hold U+FFFD (a model cut off in
    the middle of a character) and must be read as written, not refused as mojibake."""
    text, _ = read_text(path, encoding)
    if text.lstrip().startswith("["):
        value, _ = read_json(path, encoding)
        return [(f"item #{index}", record) for index, record in enumerate(value)]
    records = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            records.append((f"line {number}", json_line(
                path, number, line, "; expected one JSON object per line, or a JSON list")))
    return records


def _text_field(path: PathLike, where: str, value: Any, name: str) -> str:
    if isinstance(value, list) and all(isinstance(part, str) for part in value):
        value = "\n".join(value)
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"{path}: {where}: {name!r} must be non-empty text")
    return value.strip()


def _user_text(value: str) -> str:
    return value.replace(IMAGE_TOKEN, "").strip()


def _conversation(path: PathLike, where: str, turns: Any
                  ) -> Tuple[List[str], List[Optional[str]]]:
    """(questions, the assistant's answer after each question or None) of LLaVA-style turns."""
    if not isinstance(turns, list) or not turns:
        raise InputError(f"{path}: {where}: 'conversations' must be a non-empty list")
    questions: List[str] = []
    answers: List[Optional[str]] = []
    for number, turn in enumerate(turns):
        role = turn.get("from", turn.get("role")) if isinstance(turn, dict) else None
        value = turn.get("value", turn.get("content")) if isinstance(turn, dict) else None
        if role not in _HUMAN_ROLES + _ASSISTANT_ROLES or not isinstance(value, str):
            raise InputError(f"{path}: {where}: turn {number + 1} is not "
                             "{\"from\": \"human\"|\"gpt\", \"value\": text}")
        if role in _HUMAN_ROLES:
            if questions and answers[-1] is None:
                raise InputError(f"{path}: {where}: two user turns in a row (turn {number + 1})")
            questions.append(_user_text(value))
            answers.append(None)
        else:
            if not questions or answers[-1] is not None:
                raise InputError(f"{path}: {where}: an assistant turn without a question "
                                 f"(turn {number + 1})")
            answers[-1] = value.strip()
    return questions, answers


def read_contexts(path: PathLike) -> Dict[str, str]:
    """LLaVA-Bench ``context.jsonl``: ``{"image", "caption" (text or list)}`` -> {image: text}."""
    contexts: Dict[str, str] = {}
    for where, record in _records(path):
        if not isinstance(record, dict) or not isinstance(record.get("image"), str):
            raise InputError(f"{path}: {where}: expected {{\"image\": ..., \"caption\": ...}}")
        name = "caption" if "caption" in record else "captions"
        contexts[record["image"]] = _text_field(path, where, record.get(name), name)
    return contexts


def read_questions(path: PathLike, contexts: Optional[Dict[str, str]] = None
                   ) -> Tuple[List[Question], Dict[RoundKey, str]]:
    """The questions and the reference answers some of them carry (``conversations``)."""
    questions: List[Question] = []
    embedded: Dict[RoundKey, str] = {}
    seen: Dict[str, str] = {}
    for where, record in _records(path):
        if not isinstance(record, dict):
            raise InputError(f"{path}: {where}: expected a JSON object")
        if "question_id" not in record and "id" not in record:
            raise InputError(f"{path}: {where}: no 'question_id'")
        question_id = record.get("question_id", record.get("id"))
        if not isinstance(question_id, (str, int)) or isinstance(question_id, bool):
            raise InputError(f"{path}: {where}: 'question_id' must be text or an integer")
        qid = str(question_id)
        if qid in seen:
            raise InputError(f"{path}: {where}: question {qid} again (first at {seen[qid]})")
        seen[qid] = where
        if "conversations" in record:
            texts, answers = _conversation(path, where, record["conversations"])
            embedded.update(((qid, number + 1), answer) for number, answer in enumerate(answers)
                            if answer)
        elif "rounds" in record:
            rounds = record["rounds"]
            if not isinstance(rounds, list) or not rounds:
                raise InputError(f"{path}: {where}: 'rounds' must be a non-empty list of questions")
            texts = [_user_text(_text_field(path, where, text, f"rounds[{number}]"))
                     for number, text in enumerate(rounds)]
        else:
            name = "text" if "text" in record else "question"
            texts = [_user_text(_text_field(path, where, record.get(name), name))]
        if not all(texts):
            raise InputError(f"{path}: {where}: a question is empty")
        category = record.get("category", DEFAULT_CATEGORY)
        if not isinstance(category, str) or not category:
            raise InputError(f"{path}: {where}: 'category' must be text")
        image = record.get("image") if isinstance(record.get("image"), str) else None
        context = None
        for name in ("context", "caption", "captions"):
            if record.get(name) is not None:
                context = _text_field(path, where, record[name], name)
                break
        if contexts is not None:
            if image is None or image not in contexts:
                raise InputError(f"{path}: {where}: question {qid}: image {image!r} has no "
                                 "entry in the context file")
            context = contexts[image]
        questions.append(Question(question_id, tuple(texts), category, image, context))
    if not questions:
        raise InputError(f"{path}: no questions")
    return questions, embedded


def _squash(text: str) -> str:
    return " ".join(text.split())


class _ArenaIndex:
    """Finds the single-round question an Arena answer record (no question id) belongs to: by
    question text and image file name, or by question text alone when that is unique."""

    def __init__(self, questions: Sequence[Question]) -> None:
        self.by_image: Dict[Tuple[str, str], List[str]] = {}
        self.by_text: Dict[str, List[str]] = {}
        for question in questions:
            if len(question.questions) != 1:
                continue
            text = _squash(question.questions[0])
            self.by_text.setdefault(text, []).append(question.id)
            if question.image:
                self.by_image.setdefault((text, os.path.basename(question.image)), []).append(
                    question.id)

    def find(self, path: PathLike, where: str, record: Dict[str, Any]) -> Optional[str]:
        text = _squash(_user_text(str(record.get("question", ""))))
        image = record.get("image_path") or record.get("image")
        found = self.by_image.get((text, os.path.basename(image))) \
            if isinstance(image, str) else None
        found = found or self.by_text.get(text)
        if found and len(found) > 1:
            raise InputError(f"{path}: {where}: question {text[:60]!r} matches questions "
                             f"{', '.join(found[:3])}: add 'question_id' to the answers")
        return found[0] if found else None


def read_answers(path: PathLike, questions: Sequence[Question]
                 ) -> Tuple[Dict[RoundKey, str], int]:
    """``{(question id, round): text}`` and how many records answer unknown questions."""
    rounds_of = {question.id: len(question.questions) for question in questions}
    arena: Optional[_ArenaIndex] = None
    answers: Dict[RoundKey, str] = {}
    origin: Dict[RoundKey, str] = {}
    unmatched = 0
    for where, record in _records(path, encoding="utf-8"):
        if not isinstance(record, dict):
            raise InputError(f"{path}: {where}: expected a JSON object")
        name = "text" if "text" in record else "answer"
        text = record.get(name)
        if not isinstance(text, str):
            raise InputError(f"{path}: {where}: no answer text ('text' or 'answer')")
        if "question_id" in record:
            qid = str(record["question_id"])
            number = record.get("round", 1)
            if isinstance(number, bool) or not isinstance(number, int) or number < 1:
                raise InputError(f"{path}: {where}: 'round' must be an integer >= 1 (rounds "
                                 f"count from 1), not {number!r}")
        elif "question" in record:  # the Arena's answers JSON
            arena = arena or _ArenaIndex(questions)
            found = arena.find(path, where, record)
            if found is None:
                unmatched += 1
                continue
            qid, number = found, 1
        else:
            raise InputError(f"{path}: {where}: no 'question_id' (or Arena 'question')")
        if qid not in rounds_of:
            unmatched += 1
            continue
        if number > rounds_of[qid]:
            raise InputError(f"{path}: {where}: question {qid} has {rounds_of[qid]} round(s), "
                             f"not {number}")
        if (qid, number) in answers:
            raise InputError(f"{path}: {where}: question {qid} round {number} answered twice "
                             f"(first at {origin[(qid, number)]})")
        answers[(qid, number)] = text.strip()
        origin[(qid, number)] = where
    return answers, unmatched


def build_items(questions: Sequence[Question], references: Dict[RoundKey, str],
                answers: Dict[RoundKey, str]) -> Inputs:
    """One item per round whose reference and answer (and those of the earlier rounds) exist;
    a review row with status ``missing`` for each other round."""
    inputs = Inputs([], order={question.id: n for n, question in enumerate(questions)})
    for question in questions:
        gone: Optional[str] = None
        for number in range(1, len(question.questions) + 1):
            key = (question.id, number)
            if gone is None:
                lacking = [what for what, table in (("reference", references),
                                                    ("answer", answers)) if key not in table]
                if lacking:
                    gone = f"no {' and no '.join(lacking)} for round {number}"
            if gone is not None:  # a later round cannot be judged without this one's context
                inputs.missing.append(review_row(question.question_id, number,
                                                 question.category, "missing", problem=gone))
                continue
            rounds = range(1, number + 1)
            messages = review_messages(question.questions[:number],
                                       [references[(question.id, n)] for n in rounds],
                                       [answers[(question.id, n)] for n in rounds],
                                       question.context)
            inputs.items.append(Item(question.question_id, number, question.category, messages))
    return inputs


def load_inputs(questions: PathLike, answers: PathLike, references: Optional[PathLike] = None,
                context: Optional[PathLike] = None) -> Inputs:
    contexts = read_contexts(context) if context is not None else None
    parsed, embedded = read_questions(questions, contexts)
    if references is not None:
        reference_answers, _ = read_answers(references, parsed)
    elif embedded:
        reference_answers = embedded
    else:
        raise InputError(f"{questions}: the questions carry no reference answers "
                         "('conversations' with gpt turns): give a references file")
    for (qid, number), text in reference_answers.items():
        if not text:
            raise InputError(f"{references or questions}: question {qid} round {number}: empty "
                             "reference answer")
    model_answers, unmatched = read_answers(answers, parsed)
    if not model_answers:
        raise InputError(f"{answers}: answers none of the questions in {questions}")
    inputs = build_items(parsed, reference_answers, model_answers)
    inputs.unmatched_answers = unmatched
    return inputs


def review_row(question_id: Any, number: int, category: str, status: str,
               scores: Tuple[Optional[float], Optional[float]] = (None, None),
               reply: Optional[str] = None, problem: Optional[str] = None,
               key: Optional[str] = None) -> Dict[str, Any]:
    """One row of ``reviews.jsonl`` (also of a round with nothing to judge: ``missing``)."""
    return {"question_id": question_id, "round": number, "category": category,
            "status": status, "reference_score": scores[0], "model_score": scores[1],
            "reply": reply, "problem": problem, "key": key}
