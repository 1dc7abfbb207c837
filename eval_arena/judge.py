"""Open-ended evaluation by a GPT judge (LLaVA-Bench style), single- and multi-round.

Closed-form VQA accuracy says nothing about how a model converses. Here a judge model (GPT-4
through the OpenAI SDK) compares each answer of the model with a reference answer and gives both a
score on 1..10 (:mod:`eval_arena.judge_prompts`: LLaVA's review prompt, each later round of a
conversation judged with the preceding rounds as context). The metric is LLaVA's *relative score*:
``mean(model scores) / mean(reference scores) x 100``, overall, per category and per round.

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

Every judgement is cached in ``CACHE/cache.sqlite`` (:class:`selector.store.Store`; ``CACHE`` is
OUT unless ``cache_dir`` says otherwise) as soon as its reply arrives, keyed by a hash of the
exact messages (question, context, earlier rounds, reference, answer) and of the judge settings
(model, temperature, max_tokens, server, prompt version and prompt text hash). A rerun sends
nothing already judged; ``kill -9`` loses at most the requests in flight (the store is
:class:`selector.store.ReplyStore`, the same per-reply sink the GPT score uses). Delivered
replies without usable scores (unparseable, out of range, empty) are cached with the reply (they
were paid for) and *flagged*: excluded from the means and counted; ``retry_flagged`` asks again.
Requests that got no reply (HTTP errors after the SDK's retries, timeouts, connection errors) are
not cached: they count as *failed* and a rerun retries them. The API key is redacted from
everything written (:mod:`selector.redaction`), whatever field a server echoed it in.

Outputs: ``OUT/reviews.jsonl`` (one row per judged round: ids, category, status, both scores,
the raw reply, the problem) and ``OUT/summary.json``.
"""
from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from selector.data.samples import IMAGE_TOKEN
from selector.core.errors import InputError
from selector.scoring.indicators import IndicatorValue
from selector.scoring.indicators.gpt import ChatOutcome, ChatRequest, OpenAIChat
from selector.core.jsonio import PathLike, read_json, read_text, write_json
from selector.core.redaction import redact, redact_text
from selector.scoring.store import ReplyStore, Store

from .datasets import json_line
from .judge_prompts import PROMPT_SHA256, PROMPT_VERSION, parse_pair, review_messages

CACHE_NAME = "gpt-judge"  # the store's indicator column for judgements
REVIEWS_FILE = "reviews.jsonl"
SUMMARY_FILE = "summary.json"
DEFAULT_CATEGORY = "default"
STATUSES = ("judged", "flagged", "failed", "missing")
_HUMAN_ROLES = ("human", "user")
_ASSISTANT_ROLES = ("gpt", "assistant")

RoundKey = Tuple[str, int]  # (question id as text, round counted from 1)


class GptJudge(OpenAIChat):
    """The judge's client: :class:`~selector.indicators.gpt.OpenAIChat` (key from the environment,
    concurrency, SDK retries, Batch API, cost estimate) with LLaVA's review settings as defaults
    (``gpt-4-0613``; temperature 0.2 and up to 1024 reply tokens, as LLaVA's review scripts)."""

    label = "gpt judge"

    def __init__(self, model: str = "gpt-4-0613", temperature: float = 0.2,
                 max_tokens: Optional[int] = 1024, concurrency: int = 16,
                 expected_output_tokens: int = 200, **settings: Any) -> None:
        super().__init__(model=model, temperature=temperature, max_tokens=max_tokens,
                         concurrency=concurrency, expected_output_tokens=expected_output_tokens,
                         **settings)

    def settings(self) -> Dict[str, Any]:
        """What changes a judgement (online and batch replies are interchangeable)."""
        return {**self.chat_settings(), "prompt_version": PROMPT_VERSION,
                "prompt_sha256": PROMPT_SHA256}


# ------------------------------------------------------------------------------------ inputs

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
                inputs.missing.append(_row(question.question_id, number, question.category,
                                           "missing", problem=gone))
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


# ------------------------------------------------------------------------------------ judging

def _row(question_id: Any, number: int, category: str, status: str,
         scores: Tuple[Optional[float], Optional[float]] = (None, None),
         reply: Optional[str] = None, problem: Optional[str] = None,
         key: Optional[str] = None) -> Dict[str, Any]:
    return {"question_id": question_id, "round": number, "category": category,
            "status": status, "reference_score": scores[0], "model_score": scores[1],
            "reply": reply, "problem": problem, "key": key}


def _judgement(item: Item, outcome: ChatOutcome) -> IndicatorValue:
    """What the store keeps of a reply: the model's score as ``value``, both in ``detail``."""
    pair = parse_pair(outcome.reply)
    return IndicatorValue(f"{item.question_id}#{item.round}", pair.model, pair.problem,
                          {"reply": outcome.reply, "scores": [pair.reference, pair.model]
                           if pair.ok else None})


def _review(item: Item, stored: Optional[IndicatorValue], failure: Optional[str]
            ) -> Dict[str, Any]:
    if stored is None:
        return _row(item.question_id, item.round, item.category, "failed",
                    problem=failure or "not judged", key=item.key)
    scores = stored.detail.get("scores") or (None, None)
    return _row(item.question_id, item.round, item.category,
                "flagged" if stored.problem else "judged", tuple(scores),
                stored.detail.get("reply"), stored.problem, item.key)


def _group(rows: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    """Relative score (LLaVA's summarize_gpt_review): mean model / mean reference x 100."""
    import numpy as np

    judged = [row for row in rows if row["status"] == "judged"]
    summary: Dict[str, Any] = {"relative_score": None, "reference_mean": None,
                               "model_mean": None, "items": len(rows)}
    summary.update((status, sum(row["status"] == status for row in rows)) for status in STATUSES)
    if judged:
        reference = float(np.mean([row["reference_score"] for row in judged]))
        model = float(np.mean([row["model_score"] for row in judged]))
        summary.update(reference_mean=reference, model_mean=model,
                       relative_score=model / reference * 100)
    return summary


def summarise(rows: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    """Overall, per category and per round (1 = the first question of each conversation)."""
    categories: Dict[str, List[Dict[str, Any]]] = {}
    rounds: Dict[int, List[Dict[str, Any]]] = {}
    for row in rows:
        categories.setdefault(row["category"], []).append(row)
        rounds.setdefault(row["round"], []).append(row)
    return {**_group(rows),
            "categories": {name: _group(group) for name, group in sorted(categories.items())},
            "rounds": {str(number): _group(group) for number, group in sorted(rounds.items())}}


def _write_jsonl(path: Path, rows: Iterable[Dict[str, Any]]) -> None:
    """Atomically (:mod:`selector.atomic`: never half a file), secrets redacted."""
    from selector.core.atomic import atomic_open

    with atomic_open(path) as handle:
        handle.writelines(json.dumps(redact(row), ensure_ascii=False) + "\n" for row in rows)


def _log(message: str) -> None:
    print(redact_text(message), file=sys.stderr, flush=True)


def judge(questions: PathLike, answers: PathLike, out: PathLike,
          references: Optional[PathLike] = None, context: Optional[PathLike] = None,
          judge_model: Optional[GptJudge] = None, cache_dir: Optional[PathLike] = None,
          allow_missing: bool = False, retry_flagged: bool = False,
          dry_run: bool = False) -> Dict[str, Any]:
    """Judge every round of ``answers`` against ``references``; write OUT/reviews.jsonl and
    OUT/summary.json and return the summary. With ``dry_run``, only count what would be sent and
    estimate its cost (no key needed; nothing sent, nothing written)."""
    gpt = judge_model or GptJudge()
    inputs = load_inputs(questions, answers, references, context)
    if inputs.missing and not allow_missing:
        first = inputs.missing[0]
        raise InputError(f"{answers}: {len(inputs.missing)} round(s) cannot be judged, first: "
                         f"question {first['question_id']}: {first['problem']} (allow_missing / "
                         "--allow-missing judges the others)")
    if inputs.unmatched_answers:
        _log(f"gpt judge: {inputs.unmatched_answers} answer(s) in {answers} match no question "
             f"of {questions}; ignored")
    settings = gpt.settings()
    cache = Path(cache_dir if cache_dir is not None else out)
    cache_flag = "--cache"  # the flag that moves the cache, whether or not it was given
    keys = list(dict.fromkeys(item.key for item in inputs.items))
    first_item = {}
    for item in inputs.items:
        first_item.setdefault(item.key, item)

    def to_send(stored: Dict[str, IndicatorValue]) -> List[ChatRequest]:
        return [ChatRequest(key, first_item[key].messages) for key in keys
                if key not in stored or (retry_flagged and stored[key].problem is not None)]

    def judgements(store: Store) -> ReplyStore:
        return ReplyStore(store, CACHE_NAME, settings,
                          lambda request, outcome: _judgement(first_item[request.key], outcome))

    if dry_run:
        stored: Dict[str, IndicatorValue] = {}
        if (cache / "cache.sqlite").is_file():
            with Store(cache, cache_flag) as store:
                stored = judgements(store).get(keys)
        requests = to_send(stored)
        return {"dry_run": True, "items": len(inputs.items), "missing": len(inputs.missing),
                "cached": len(keys) - len(requests), **gpt.cost_estimate(requests)}

    failures: Dict[str, str] = {}
    with Store(cache, cache_flag) as store:
        gpt.bind(cache)  # batch mode: submitted batches are remembered under CACHE/gpt_batches
        replies = judgements(store)
        stored = replies.get(keys)
        requests = to_send(stored)
        if len(requests) < len(keys):
            _log(f"gpt judge: {len(keys) - len(requests)} of {len(keys)} judgements cached; "
                 f"sending {len(requests)}")
        # each delivered reply is committed by the sink as it arrives; a failure is not cached
        for request, outcome in gpt.send(requests, desc="gpt judge", sink=replies.keep):
            if outcome.failed:
                failures[request.key] = outcome.problem or "no reply"
        stored = replies.get(keys)

    rows = inputs.sort([_review(item, stored.get(item.key), failures.get(item.key))
                        for item in inputs.items] + inputs.missing)
    out = Path(out)
    _write_jsonl(out / REVIEWS_FILE, rows)
    summary = {"questions": len(inputs.order), **summarise(rows),
               "complete": not any(row["status"] in ("failed", "missing") for row in rows),
               "judge": settings,
               "inputs": {"questions": str(questions), "references": None if references is None
                          else str(references), "answers": str(answers),
                          "context": None if context is None else str(context),
                          "unmatched_answers": inputs.unmatched_answers}}
    write_json(out / SUMMARY_FILE, redact(summary))
    _report_problems(rows)
    return summary


def _report_problems(rows: Sequence[Dict[str, Any]]) -> None:
    for status, advice in (("flagged", "excluded from the scores; --retry-flagged asks again"),
                           ("failed", "rerun to retry them"),
                           ("missing", "nothing to judge")):
        bad = [row for row in rows if row["status"] == status]
        if bad:
            _log(f"gpt judge: {len(bad)} round(s) {status} ({advice}); first: question "
                 f"{bad[0]['question_id']} round {bad[0]['round']}: {bad[0]['problem']}")


def describe(summary: Dict[str, Any]) -> str:
    """A few lines for the terminal: the relative score overall, per category and per round."""
    def line(name: str, group: Dict[str, Any]) -> str:
        if group["relative_score"] is None:
            return f"  {name:<16} {'-':>8}  (no round judged of {group['items']})"
        return (f"  {name:<16} {group['relative_score']:8.1f}  reference "
                f"{group['reference_mean']:.2f}  model {group['model_mean']:.2f}  "
                f"({group['judged']} judged, {group['flagged']} flagged, {group['failed']} "
                f"failed, {group['missing']} missing)")

    lines = ["relative score (model / reference x 100):", line("overall", summary)]
    lines += [line(name, group) for name, group in summary["categories"].items()]
    if len(summary["rounds"]) > 1:
        lines += [line(f"round {number}", group) for number, group in summary["rounds"].items()]
    return "\n".join(lines)
