"""Open-ended evaluation by a GPT judge (LLaVA-Bench style), single- and multi-round.

Closed-form VQA accuracy says nothing about how a model converses. Here a judge model (GPT-4
through the OpenAI SDK) compares each answer of the model with a reference answer and gives both a
score on 1..10 (:mod:`eval_arena.judge_prompts`: LLaVA's review prompt, each later round of a
conversation judged with the preceding rounds as context). The metric is LLaVA's *relative score*:
``mean(model scores) / mean(reference scores) x 100``, overall, per category and per round.

Inputs: :mod:`eval_arena.judge_inputs` (questions, references and answers, in the formats
LLaVA and the Arena write them).

Every judgement is cached in ``CACHE/cache.sqlite`` (:class:`selector.core.cache.Store`;
``CACHE`` is OUT unless ``cache_dir`` says otherwise) as soon as its reply arrives, keyed by a
hash of the exact messages (question, context, earlier rounds, reference, answer) and of the
judge settings (model, temperature, max_tokens, server, prompt version and prompt text hash). A
rerun sends nothing already judged; ``kill -9`` loses at most the requests in flight (the store
is :class:`selector.core.cache.ReplyStore`, the same per-reply sink the GPT score uses).
Delivered replies without usable scores (unparseable, out of range, empty) are cached with the
reply (they were paid for) and *flagged*: excluded from the means and counted; ``retry_flagged``
asks again. Requests that got no reply (HTTP errors after the SDK's retries, timeouts, connection
errors) are not cached: they count as *failed* and a rerun retries them. The API key is redacted
from everything written (:mod:`selector.core.redaction`), whatever field a server echoed it in.

Outputs: ``OUT/reviews.jsonl`` (one row per judged round: ids, category, status, both scores,
the raw reply, the problem) and ``OUT/summary.json``.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence

from eval_arena.judge_inputs import Item, load_inputs, review_row
from eval_arena.judge_prompts import PROMPT_SHA256, PROMPT_VERSION, parse_pair
from selector.core.cache import IndicatorValue, ReplyStore, Store
from selector.core.chat import ChatOutcome, ChatRequest, OpenAIChat
from selector.core.errors import InputError
from selector.core.jsonio import PathLike, write_json
from selector.core.redaction import redact, redact_text

CACHE_NAME = "gpt-judge"  # the store's indicator column for judgements
REVIEWS_FILE = "reviews.jsonl"
SUMMARY_FILE = "summary.json"
STATUSES = ("judged", "flagged", "failed", "missing")


class GptJudge(OpenAIChat):
    """The judge's client: :class:`~selector.core.chat.OpenAIChat` (key from the environment,
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


# ------------------------------------------------------------------------------------ judging

def _judgement(item: Item, outcome: ChatOutcome) -> IndicatorValue:
    """What the store keeps of a reply: the model's score as ``value``, both in ``detail``."""
    pair = parse_pair(outcome.reply)
    return IndicatorValue(f"{item.question_id}#{item.round}", pair.model, pair.problem,
                          {"reply": outcome.reply, "scores": [pair.reference, pair.model]
                           if pair.ok else None})


def _review(item: Item, stored: Optional[IndicatorValue], failure: Optional[str]
            ) -> Dict[str, Any]:
    if stored is None:
        return review_row(item.question_id, item.round, item.category, "failed",
                          problem=failure or "not judged", key=item.key)
    scores = stored.detail.get("scores") or (None, None)
    return review_row(item.question_id, item.round, item.category,
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
    """Atomically (:mod:`selector.core.atomic`: never half a file), secrets redacted."""
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
