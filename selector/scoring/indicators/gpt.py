"""GPT score: an OpenAI-compatible chat model rates each (instruction, answer) round 0..100.

The paper's judge prompt (:data:`JUDGE_PROMPT`, verbatim) is sent once per round as a single user
message with ``[Instruction]`` and ``[Caption]`` filled in; the score is the first number of the
reply (:func:`selector.scoring.gpt_reply.parse_reply`). A conversation's value is the mean over its
rounds. ``detail`` keeps the raw reply (``{"reply": ...}``, or ``{"replies": [...], "per_turn":
[...]}`` for several rounds). The run goes on past a bad sample; two kinds of problem are kept
apart:

* a *delivered* reply without a usable score (no number, a negative or out-of-range number, empty
  content) was paid for: it is cached with its reply and the problem (*flagged*), like a value;
* *no reply* (an HTTP error that persists after the SDK's retries, a timeout, a connection error,
  a batch that expired before reaching the request) is a :class:`~selector.core.cache.Failure`:
  never cached, so the next run sends the request again and ``--dry-run`` counts it "to compute".

The client side (settings, key, concurrency, retries, error handling, the Batch API, the cost
estimate) is :class:`selector.core.chat.OpenAIChat`, which :class:`GptScore` extends; see there
for ``mode="online"`` / ``"batch"`` and how the key is kept secret. The default concurrency, 32,
scores ~27x as many samples per second as the original one-request-at-a-time loop when replies
take 100 ms (``benchmarks/gpt_throughput.py``); lower it for accounts with tight rate limits. In
batch mode ``chunk_size`` is ``batch_max_requests`` (the API's 50,000 per batch), so the cache
layer hands over one big chunk.

Durability: every reply is committed to the work dir's cache the moment it arrives, one row per
request (:class:`~selector.core.cache.ReplyStore`, the sink :meth:`OpenAIChat.send` calls before
handing a reply on). A sample's value is stored once all its rounds have a reply; a ``kill -9``
loses only the requests in flight, and a rerun sends only the requests that have no stored reply
(for a conversation, only its missing rounds). Identical requests (two samples with the same
content) are sent once.

Costs (:meth:`GptScore.estimate`, ``igpt4 score --dry-run``): requests x tokens x price. Default
prices are gpt-4's public list prices, $30 per 1M input and $60 per 1M output tokens (8k context
model); set ``input_price_per_1m`` / ``output_price_per_1m`` for other models. Batch mode halves
the cost.
"""
from __future__ import annotations

import logging
import re
from typing import Any, Dict, List, Optional, Sequence, Tuple

from selector.core.cache import Failure, IndicatorValue, ReplyStore
from selector.core.chat import ChatOutcome, ChatRequest, OpenAIChat
from selector.core.chat_batch import BATCH_MAX_REQUESTS
from selector.core.fingerprint import text_fingerprint
from selector.data.samples import Sample
from selector.scoring.gpt_reply import parse_reply
from selector.scoring.indicators import Indicator, register

log = logging.getLogger(__name__)

JUDGE_PROMPT = (
    "\nWe would like to request your feedback on the performance of an AI assistant. The "
    "assistant provides a caption based on an image and an instruction. Please rate according to "
    "the quality and variety of the caption to the instruction. Each assistant receives a score on "
    "a scale of 0 to 100, where a higher score indicates higher level of the quality and variety. "
    "Please first output a single line containing the value indicating the scores. In the "
    "subsequent line, please provide a comprehensive explanation of your evaluation, avoiding any "
    "potential bias. The instruction and caption are displayed following without image.\n\n"
    "Instruction: [Instruction]\nCaption: [Caption]\n"
)
_PLACEHOLDER = re.compile(r"\[(Instruction|Caption)\]")
# problems of requests that got no reply, as versions before per-reply storage cached them
_LEGACY_FAILURE = re.compile(
    r"(^|; )(round \d+: )?(HTTP \d{3}\b|request timed out|connection error|"
    r"batch \S+ (failed|expired|cancelled|completed)\b|batch_(expired|cancelled)|"
    r"[A-Za-z]+Error: )")


def fill_prompt(template: str, instruction: str, caption: str) -> str:
    """The template with ``[Instruction]`` and ``[Caption]`` replaced (in one pass, so a caption
    that itself contains ``[Instruction]`` is left alone)."""
    values = {"Instruction": instruction, "Caption": caption}
    return _PLACEHOLDER.sub(lambda match: values[match.group(1)], template)


@register("gpt")
class GptScore(OpenAIChat, Indicator):
    """The paper's GPT score (see the module docstring); the client side is :class:`OpenAIChat`."""

    def __init__(self, model: str = "gpt-4", temperature: float = 1.0,
                 max_tokens: Optional[int] = None, base_url: Optional[str] = None,
                 prompt: Optional[str] = None, mode: str = "online", concurrency: int = 32,
                 timeout: float = 60.0, max_retries: int = 6,
                 api_key_env: str = "OPENAI_API_KEY", poll_seconds: float = 30.0,
                 batch_max_requests: int = BATCH_MAX_REQUESTS,
                 expected_output_tokens: int = 150, input_price_per_1m: float = 30.0,
                 output_price_per_1m: float = 60.0, progress: bool = True) -> None:
        super().__init__(model=model, temperature=temperature, max_tokens=max_tokens,
                         base_url=base_url, mode=mode, concurrency=concurrency, timeout=timeout,
                         max_retries=max_retries, api_key_env=api_key_env,
                         poll_seconds=poll_seconds, batch_max_requests=batch_max_requests,
                         expected_output_tokens=expected_output_tokens,
                         input_price_per_1m=input_price_per_1m,
                         output_price_per_1m=output_price_per_1m, progress=progress)
        self.prompt = JUDGE_PROMPT if prompt is None else str(prompt)
        self.chunk_size = self.batch_max_requests if mode == "batch" else None
        self._replies: Optional[ReplyStore] = None

    def settings(self) -> Dict[str, Any]:
        return {**self.chat_settings(),
                "prompt_sha256": text_fingerprint(self.prompt, length=16),
                "mode": self.mode}

    def attach_store(self, store: Any) -> None:
        """Commit every reply to ``store`` as it arrives, one row per request (column
        ``gpt:request``), and reuse stored replies instead of sending them again. Failures that
        versions before per-reply storage cached as values are deleted first, so they are
        retried (new failures are never stored: nothing else matches)."""
        forgotten = store.forget(self.name, _LEGACY_FAILURE)
        if forgotten:
            log.warning("gpt indicator: %d cached failures of an earlier version removed from the "
                        "cache; they are asked again", forgotten)
        self._replies = ReplyStore(store, f"{self.name}:request", self.settings(),
                                   _request_value)

    def _requests(self, samples: Sequence[Sample]
                  ) -> Tuple[List[ChatRequest], Dict[int, List[str]], Dict[int, str]]:
        """(the distinct requests, each sample's request keys in round order, samples with
        nothing to rate and why). Identical requests (two samples with the same content, or a
        sample listed twice) are one request, so one reply is paid for; custom ids are
        ``<sample id>#<round>`` of the first sample asking, made unique with ``~n`` when two
        different requests would get the same id."""
        requests: Dict[str, ChatRequest] = {}
        used_ids: Dict[str, int] = {}
        rounds_of: Dict[int, List[str]] = {}
        problems: Dict[int, str] = {}
        for index, sample in enumerate(samples):
            rounds = sample.rounds
            if not rounds or not any(answer.strip() for _, answer in rounds):
                problems[index] = "empty answer"
                continue
            keys = []
            for number, (instruction, answer) in enumerate(rounds):
                messages = (("user", fill_prompt(self.prompt, instruction, answer)),)
                request = ChatRequest("", messages)
                if request.key not in requests:
                    custom_id = f"{sample.id}#{number}"
                    if custom_id in used_ids:
                        used_ids[custom_id] += 1
                        custom_id = f"{custom_id}~{used_ids[custom_id]}"
                    used_ids.setdefault(custom_id, 0)
                    requests[request.key] = ChatRequest(custom_id, messages)
                keys.append(request.key)
            rounds_of[index] = keys
        return list(requests.values()), rounds_of, problems

    def _stored(self, requests: Sequence[ChatRequest]) -> Dict[str, IndicatorValue]:
        if self._replies is None:
            return {}
        return self._replies.get([r.key for r in requests])

    def score(self, samples: Sequence[Sample]) -> List[IndicatorValue]:
        requests, rounds_of, problems = self._requests(samples)
        results = self._stored(requests)  # replies paid for by an earlier (killed) run
        todo = [request for request in requests if request.key not in results]
        sink = self._replies.keep if self._replies is not None else None
        for request, outcome in self.send(todo, desc="gpt score", sink=sink):
            if outcome.failed:
                results[request.key] = IndicatorValue(request.custom_id, None,
                                                      Failure(outcome.problem or "no reply"))
            else:
                results[request.key] = _request_value(request, outcome)
        values = []
        for index, sample in enumerate(samples):
            if index in problems:
                values.append(IndicatorValue(sample.id, None, problems[index]))
            else:
                values.append(_combine(sample.id, [results[key] for key in rounds_of[index]]))
        return values

    def estimate(self, samples: Sequence[Sample]) -> Dict[str, Any]:
        """The cost of the requests that have no stored reply yet."""
        requests, _, _ = self._requests(samples)
        stored = self._stored(requests)
        return {"samples": len(samples),
                **self.cost_estimate([r for r in requests if r.key not in stored])}


# ---------------------------------------------------------------------------------- helpers

def _request_value(request: ChatRequest, outcome: ChatOutcome) -> IndicatorValue:
    """What is stored of one delivered reply: its score (or why it has none) and the reply."""
    if outcome.problem is not None:  # delivered, but empty
        return IndicatorValue(request.custom_id, None, outcome.problem, {"reply": outcome.reply})
    parsed = parse_reply(outcome.reply)
    score = None if parsed.score is None else float(parsed.score)  # as the store gives it back
    return IndicatorValue(request.custom_id, score, parsed.problem, {"reply": outcome.reply})


def _combine(sample_id: str, rounds: List[IndicatorValue]) -> IndicatorValue:
    """One sample's value from its rounds' results: the mean, or the reasons there is none. A
    round without a reply makes the sample a :class:`~selector.core.cache.Failure` (not cached; the
    rounds that have their reply are, per request, so the rerun asks only for the missing
    ones); a delivered reply without a score makes it flagged (cached)."""
    replies = [r.detail.get("reply") for r in rounds]
    scores = [r.value for r in rounds]
    problems = [r.problem if len(rounds) == 1 else f"round {number + 1}: {r.problem}"
                for number, r in enumerate(rounds) if r.problem is not None]
    detail: Dict[str, Any] = {"reply": replies[0]} if len(rounds) == 1 else \
        {"replies": replies, "per_turn": scores}
    if any(isinstance(r.problem, Failure) for r in rounds):
        return IndicatorValue(sample_id, None, Failure("; ".join(problems)), detail)
    if problems:
        return IndicatorValue(sample_id, None, "; ".join(problems), detail)
    numbers = [float(score) for score in scores if score is not None]
    return IndicatorValue(sample_id, sum(numbers) / len(numbers), None, detail)
