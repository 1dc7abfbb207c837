"""GPT score: an OpenAI-compatible chat model rates each (instruction, answer) round 0..100.

The paper's judge prompt (:data:`JUDGE_PROMPT`, verbatim) is sent once per round as a single user
message with ``[Instruction]`` and ``[Caption]`` filled in; the score is the first number of the
reply (:func:`selector.gpt_reply.parse_reply`). A conversation's value is the mean over its rounds.
``detail`` keeps the raw reply (``{"reply": ...}``, or ``{"replies": [...], "per_turn": [...]}``
for several rounds). The run goes on past a bad sample; two kinds of problem are kept apart:

* a *delivered* reply without a usable score (no number, a negative or out-of-range number, empty
  content) was paid for: it is cached with its reply and the problem (*flagged*), like a value;
* *no reply* (an HTTP error that persists after the SDK's retries: 5xx, 429, 400; a timeout; a
  connection error; a batch that expired before reaching the request) is a
  :class:`~selector.store.Failure`: never cached, so the next run sends the request again and
  ``--dry-run`` counts it "to compute".

Authentication, permission and unknown-model errors (HTTP 401, 403, 404) concern the whole run:
they stop it with an :class:`~selector.errors.InputError`.

Durability: every reply is committed to the work dir's cache the moment it arrives, one row per
request (:class:`~selector.store.ReplyStore`, the sink :meth:`OpenAIChat.send` calls before
handing a reply on; the open-ended evaluation judge uses the same one). A sample's value is
stored once all its rounds have a reply; a ``kill -9`` loses only the requests in flight, and a
rerun sends only the requests that have no stored reply (for a conversation, only its missing
rounds). Identical requests (two samples with the same content) are sent once.

Two ways to call the model:

* ``mode="online"`` (default): ``concurrency`` requests in flight at once (daemon worker threads
  over one ``openai.OpenAI`` client, so Ctrl-C returns at once). The default, 32, scores ~27x as
  many samples per second as the original one-request-at-a-time loop when replies take 100 ms
  (``benchmarks/gpt_throughput.py``); lower it for accounts with tight rate limits. Rate limits and
  server errors are retried by the SDK itself only (``max_retries``, exponential back-off honouring
  ``retry-after`` / ``retry-after-ms``); ``timeout`` is per attempt.
* ``mode="batch"``: the OpenAI Batch API, half the price, results within 24 h. The requests of a
  chunk (up to ``batch_max_requests`` = 50,000, the API's limit per batch; ``chunk_size`` is set to
  that so the cache layer hands over one big chunk) are written as JSONL, uploaded
  (``purpose="batch"``) and submitted to ``/v1/chat/completions``; the batch is polled every
  ``poll_seconds`` and its output and error files are parsed per ``custom_id``
  (``<sample id>#<round>``). Resumable: before polling, the batch id is stored in
  ``<work dir>/gpt_batches/<request hash>.json`` (the hash covers the server URL and the JSONL
  bytes), so a rerun after ``kill -9`` or Ctrl-C re-attaches to the running batch instead of
  paying twice (a chunk with more requests than one batch takes, e.g. multi-round samples, is
  split into several batches, each with its own state file). Each finished batch's replies are
  committed to the cache as soon as it is downloaded. A completed batch's state file is
  kept (a rerun whose cache lost the values downloads them again for free); delete the folder to
  force a new submission. A batch that ends ``expired`` or ``cancelled`` yields the results it has
  and a problem for each missing request; one that ends ``failed`` (its input was rejected) yields
  a problem per sample with the server's reason. Neither is resubmitted automatically (a rejected
  input would fail again, and a silent resubmission could double the bill); their state file is
  removed, so the next run that scores those samples submits a new batch.

The client side (settings, key, concurrency, retries, error handling, Batch API, cost estimate)
is :class:`OpenAIChat`, which :class:`GptScore` extends and ``eval_arena.judge`` reuses for its
own prompts (:meth:`OpenAIChat.send` hands each delivered reply to a sink, the shared
:class:`~selector.store.ReplyStore`, the moment it is in).

The API key is read only from the environment variable named by ``api_key_env`` (default
``OPENAI_API_KEY``). With ``base_url`` set (a local vLLM or any OpenAI-compatible server) and the
variable unset, the dummy key ``EMPTY`` is sent. The key is never part of the settings (hence of
the cache). It is registered with :mod:`selector.redaction` when read, and every reply, problem
and error text is redacted when it comes in (a server may echo the key anywhere); the store, the
exports and the CLI's output streams redact again at their boundaries. ``base_url=None`` means
the SDK's default, which honours ``OPENAI_BASE_URL``.

Costs (:meth:`GptScore.estimate`, ``igpt4 score --dry-run``): requests x tokens x price. Default
prices are gpt-4's public list prices, $30 per 1M input and $60 per 1M output tokens (8k context
model); set ``input_price_per_1m`` / ``output_price_per_1m`` for other models. Batch mode halves
the cost. Input tokens are counted with ``tiktoken`` when it is installed and its encoding is
already cached locally (no download is attempted), else estimated as characters / 4.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import queue
import re
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple
from urllib.parse import urlsplit, urlunsplit

from selector.data.samples import Sample
from selector.core.errors import InputError
from selector.scoring.gpt_reply import parse_reply
from selector.core.jsonio import write_json
from selector.core.redaction import redact, redact_text, register_secret
from selector.scoring.store import Failure, ReplyStore
from selector.scoring.indicators import Indicator, IndicatorValue, register

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
DUMMY_KEY = "EMPTY"
BATCH_ENDPOINT = "/v1/chat/completions"
BATCH_STATE_DIR = "gpt_batches"
BATCH_MAX_REQUESTS = 50_000  # the Batch API's limit per batch
BATCH_MAX_BYTES = 190 * 2 ** 20  # the Batch API takes input files up to 200 MB
MESSAGE_OVERHEAD_TOKENS = 7  # chat framing per request: role, separators, reply priming
MODES = ("online", "batch")
_TERMINAL = ("completed", "failed", "expired", "cancelled")
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


@dataclass(frozen=True)
class ChatRequest:
    """One chat completion to ask for: ``messages`` are ``(role, content)`` pairs, in order;
    ``custom_id`` names the request (unique within one :meth:`OpenAIChat.send` call; the Batch
    API's ``custom_id``)."""
    custom_id: str
    messages: Tuple[Tuple[str, str], ...]

    @property
    def key(self) -> str:
        """The request's content hash: what a stored reply is found by (same messages, same
        key, whatever the custom id)."""
        canonical = json.dumps(self.messages, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:32]


@dataclass(frozen=True)
class ChatOutcome:
    """What came back for one request. ``failed``: no reply was delivered (HTTP error after the
    SDK's retries, timeout, connection error, a batch that did not run the request): not a
    value, never cached. Otherwise a reply was delivered (and paid for), possibly with a
    ``problem`` of its content (empty)."""
    reply: Optional[str]  # the raw reply text, when the server gave one
    problem: Optional[str] = None  # why there is no usable reply
    failed: bool = False

    def redacted(self) -> "ChatOutcome":
        return ChatOutcome(redact(self.reply), redact(self.problem), self.failed)


ReplySink = Callable[[List[Tuple[ChatRequest, ChatOutcome]]], None]


class _RunError(Exception):
    """An error that concerns every request (bad key, unknown model): stops the run."""


@dataclass
class _BatchJob:
    digest: str
    state_path: Optional[Path]
    custom_ids: List[str]
    batch: Any  # the latest openai Batch object


class OpenAIChat:
    """The client side shared by every GPT-calling part of the package (the GPT score, the
    open-ended evaluation judge): settings, the key from the environment only, one
    ``openai.OpenAI`` client, ``concurrency`` daemon worker threads (online) or the Batch API
    (batch), the SDK's retries, one-line problems per request, and run-stopping errors (401, 403,
    404) as :class:`~selector.errors.InputError`. ``label`` prefixes every message, so a user
    knows which part of a run spoke."""

    label = "gpt indicator"

    def __init__(self, model: str = "gpt-4", temperature: float = 1.0,
                 max_tokens: Optional[int] = None, base_url: Optional[str] = None,
                 mode: str = "online", concurrency: int = 32,
                 timeout: float = 60.0, max_retries: int = 6,
                 api_key_env: str = "OPENAI_API_KEY", poll_seconds: float = 30.0,
                 batch_max_requests: int = BATCH_MAX_REQUESTS,
                 expected_output_tokens: int = 150, input_price_per_1m: float = 30.0,
                 output_price_per_1m: float = 60.0, progress: bool = True) -> None:
        if mode not in MODES:
            raise InputError(f"{self.label}: mode must be one of {', '.join(MODES)}, "
                             f"not {mode!r}")
        if int(concurrency) < 1 or int(max_retries) < 0 or float(timeout) <= 0:
            raise InputError(f"{self.label}: concurrency must be >= 1, max_retries >= 0 and "
                             "timeout > 0")
        if not 1 <= int(batch_max_requests) <= BATCH_MAX_REQUESTS:
            raise InputError(f"{self.label}: batch_max_requests must be 1..{BATCH_MAX_REQUESTS}")
        self.model = str(model)
        self.temperature = float(temperature)
        self.max_tokens = None if max_tokens is None else int(max_tokens)
        self.base_url = base_url or None
        self.mode = mode
        self.concurrency = int(concurrency)
        self.timeout = float(timeout)
        self.max_retries = int(max_retries)
        self.api_key_env = str(api_key_env)
        self.poll_seconds = float(poll_seconds)
        self.batch_max_requests = int(batch_max_requests)
        self.expected_output_tokens = int(expected_output_tokens)
        self.input_price_per_1m = float(input_price_per_1m)
        self.output_price_per_1m = float(output_price_per_1m)
        self.progress = progress
        self.state_dir: Optional[Path] = None
        self._client_obj: Any = None
        self._key: Optional[str] = None

    # ----------------------------------------------------------------------------- settings

    def effective_base_url(self) -> Optional[str]:
        """The server the requests go to: ``base_url``, else ``$OPENAI_BASE_URL``, else None
        (OpenAI itself)."""
        return self.base_url or os.environ.get("OPENAI_BASE_URL") or None

    def chat_settings(self) -> Dict[str, Any]:
        """What changes the replies (and nothing secret): part of every cache key."""
        return {"model": self.model, "temperature": self.temperature,
                "max_tokens": self.max_tokens,
                "base_url": _without_userinfo(self.effective_base_url())}

    def bind(self, work_dir: Path) -> None:
        self.state_dir = Path(work_dir) / BATCH_STATE_DIR

    # ------------------------------------------------------------------------------ client

    def _api_key(self) -> str:
        key = os.environ.get(self.api_key_env, "").strip()
        if key:
            return key
        if self.effective_base_url():
            return DUMMY_KEY  # local OpenAI-compatible servers (vLLM) accept any key
        raise InputError(f"{self.label}: no API key: set the environment variable "
                         f"{self.api_key_env} (or base_url, for a local OpenAI-compatible server)")

    def client(self) -> Any:
        """The ``openai.OpenAI`` client, created once (raises InputError without a key)."""
        if self._client_obj is None:
            key = self._api_key()
            try:
                import openai
            except ImportError:
                raise InputError(f"{self.label}: the openai package is not installed: needs "
                                 "the [gpt] extra (pip install 'instructiongpt4[gpt]')") from None
            self._key = key
            register_secret(key)  # masked wherever it shows up from now on
            self._client_obj = openai.OpenAI(api_key=key, base_url=self.effective_base_url(),
                                             timeout=self.timeout, max_retries=self.max_retries)
        return self._client_obj

    def _redact(self, text: Any) -> str:
        """One line, at most 200 characters, with the key (should a server echo it) masked
        before it is cut (a cut key would not be recognised)."""
        return redact_text(" ".join(str(text).split()))[:200]

    def _body(self, messages: Sequence[Tuple[str, str]]) -> Dict[str, Any]:
        body: Dict[str, Any] = {"model": self.model,
                                "messages": [{"role": role, "content": content}
                                             for role, content in messages],
                                "temperature": self.temperature}
        if self.max_tokens is not None:
            body["max_tokens"] = self.max_tokens
        return body

    def send(self, requests: Sequence[ChatRequest], desc: str = "gpt",
             sink: Optional[ReplySink] = None) -> Iterator[Tuple[ChatRequest, ChatOutcome]]:
        """``(request, outcome)`` for every request (custom ids unique), outcomes redacted.
        Online, each pair comes as soon as its reply is in; in batch mode, a batch's pairs once
        it is done. ``sink`` (e.g. :meth:`selector.store.ReplyStore.keep`) is given every
        delivered reply before it is handed on, so it is committed even if the caller never
        gets to it: a ``kill -9`` loses only the requests in flight. A missing key, a rejected
        key, a forbidden or unknown model raise :class:`InputError` (one line)."""
        if not requests:
            return
        self.client()  # a missing key fails here, before anything is sent
        if self.mode == "batch":
            pairs = self._score_batch(list(requests), sink)
        else:
            pairs = self._online_pairs(list(requests), desc, sink)
        yield from pairs

    def _online_pairs(self, requests: List[ChatRequest], desc: str,
                      sink: Optional[ReplySink]) -> Iterator[Tuple[ChatRequest, ChatOutcome]]:
        for request, outcome in self._stream_online(requests, desc):
            outcome = outcome.redacted()
            if sink is not None and not outcome.failed:
                sink([(request, outcome)])
            yield request, outcome

    # -------------------------------------------------------------------------- online mode

    def _ask(self, request: ChatRequest) -> ChatOutcome:
        import openai

        try:
            response = self.client().chat.completions.create(**self._body(request.messages))
        except (openai.AuthenticationError, openai.PermissionDeniedError,
                openai.NotFoundError) as exc:
            raise _RunError(f"{self.label}: {self._status_problem(exc)} from "
                            f"{self.effective_base_url() or 'api.openai.com'} (check the key in "
                            f"${self.api_key_env}, the model name and base_url)") from None
        except openai.APIError as exc:  # 5xx / 429 after the SDK's retries, timeouts, ...
            return ChatOutcome(None, self._error_problem(exc), failed=True)
        return self._reply_outcome(_reply_from_completion(response))

    def _reply_outcome(self, found: Tuple[Optional[str], Optional[str]]) -> ChatOutcome:
        text, finish = found
        if text is None or not text.strip():
            reason = finish if finish == "no choices" else f"finish_reason={finish}"
            return ChatOutcome(text, f"empty reply ({reason})")
        return ChatOutcome(text)

    def _status_problem(self, exc: Any) -> str:
        message = _error_message(getattr(exc, "body", None)) or ""
        retries = _retries_taken(exc)
        text = f"HTTP {exc.status_code}" + (f" after {retries} retries" if retries else "")
        return text + (f": {self._redact(message)}" if message else "")

    def _error_problem(self, exc: Any) -> str:
        import openai

        if isinstance(exc, openai.APIStatusError):
            return self._status_problem(exc)
        retries = _retries_taken(exc)
        after = f" after {retries} retries" if retries else ""
        if isinstance(exc, openai.APITimeoutError):
            return f"request timed out ({self.timeout:g} s){after}"
        if isinstance(exc, openai.APIConnectionError):
            cause = exc.__cause__ or exc.__context__
            reason = f": {self._redact(cause)}" if cause and str(cause) else ""
            return f"connection error{after}{reason}"
        return f"{type(exc).__name__}: {self._redact(exc)}"

    def _stream_online(self, requests: List[ChatRequest], desc: str = "gpt score"
                       ) -> Iterator[Tuple[ChatRequest, ChatOutcome]]:
        """``concurrency`` daemon worker threads over one client, each outcome yielded as it
        comes (a Ctrl-C, or a caller that stops iterating, returns at once: the requests in
        flight are abandoned, not waited for)."""
        from tqdm.auto import tqdm

        todo: "queue.Queue[ChatRequest]" = queue.Queue()
        for request in requests:
            todo.put(request)
        done: "queue.Queue[Tuple[ChatRequest, Optional[ChatOutcome], Optional[BaseException]]]" \
            = queue.Queue()
        stop = threading.Event()

        def work() -> None:
            while not stop.is_set():
                try:
                    request = todo.get_nowait()
                except queue.Empty:
                    return
                try:
                    done.put((request, self._ask(request), None))
                except BaseException as exc:  # handed to the main thread
                    done.put((request, None, exc))

        for number in range(min(self.concurrency, len(requests))):
            threading.Thread(target=work, name=f"gpt-{number}", daemon=True).start()
        try:
            with tqdm(total=len(requests), desc=desc, unit="request",
                      disable=not self.progress) as bar:
                for _ in range(len(requests)):
                    request, outcome, error = done.get()
                    if isinstance(error, _RunError):
                        raise InputError(str(error))
                    if error is not None:  # our bug or the SDK's: recorded, the run goes on
                        outcome = ChatOutcome(None, f"{type(error).__name__}: "
                                                    f"{self._redact(error)}", failed=True)
                    bar.update(1)
                    yield request, outcome  # type: ignore[misc]
        finally:  # Ctrl-C, a run-level error or a caller gone: the workers take nothing more
            stop.set()

    # --------------------------------------------------------------------------- batch mode

    def _note(self, message: str) -> None:
        log.info(message)
        if self.progress:
            from tqdm.auto import tqdm

            tqdm.write(f"gpt batch: {message}", file=sys.stderr)

    def _batch_lines(self, requests: List[ChatRequest]) -> List[List[Tuple[ChatRequest, bytes]]]:
        """JSONL lines grouped into batches within the API's limits (requests and bytes)."""
        groups: List[List[Tuple[ChatRequest, bytes]]] = [[]]
        size = 0
        for request in requests:
            line = json.dumps({"custom_id": request.custom_id, "method": "POST",
                               "url": BATCH_ENDPOINT, "body": self._body(request.messages)},
                              ensure_ascii=False).encode("utf-8") + b"\n"
            if groups[-1] and (len(groups[-1]) >= self.batch_max_requests
                               or size + len(line) > BATCH_MAX_BYTES):
                groups.append([])
                size = 0
            groups[-1].append((request, line))
            size += len(line)
        return groups

    def _score_batch(self, requests: List[ChatRequest], sink: Optional[ReplySink]
                     ) -> List[Tuple[ChatRequest, ChatOutcome]]:
        """Every request's outcome; each batch's delivered replies go to ``sink`` (one
        transaction) as soon as that batch is collected."""
        jobs = [self._attach_or_submit(group) for group in self._batch_lines(requests)]
        self._wait(jobs)
        by_id = {request.custom_id: request for request in requests}
        pairs: List[Tuple[ChatRequest, ChatOutcome]] = []
        for job in jobs:
            collected = [(by_id[custom_id], outcome.redacted())
                         for custom_id, outcome in self._collect(job).items()]
            if sink is not None:
                sink([(request, outcome) for request, outcome in collected if not outcome.failed])
            pairs += collected
        order = {request.custom_id: n for n, request in enumerate(requests)}
        return sorted(pairs, key=lambda pair: order[pair[0].custom_id])

    def _write_state(self, path: Optional[Path], state: Dict[str, Any]) -> None:
        if path is not None:
            write_json(path, redact(state))  # atomic (selector.atomic), secrets masked

    def _submission_error(self, what: str, exc: Exception) -> InputError:
        import openai

        reason = self._error_problem(exc) if isinstance(exc, openai.APIError) \
            else f"{type(exc).__name__}: {self._redact(exc)}"
        return InputError(f"gpt batch: {what} failed at "
                          f"{self.effective_base_url() or 'api.openai.com'}: {reason}")

    def _attach_or_submit(self, group: List[Tuple[ChatRequest, bytes]]) -> _BatchJob:
        import openai

        client = self.client()
        payload = b"".join(line for _, line in group)
        digest = hashlib.sha256((self.effective_base_url() or "").encode("utf-8") + b"\n"
                                + payload).hexdigest()[:24]
        path = self.state_dir / f"{digest}.json" if self.state_dir is not None else None
        custom_ids = [request.custom_id for request, _ in group]
        state: Dict[str, Any] = {}
        if path is not None and path.is_file():
            try:
                state = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                state = {}
        try:
            if state.get("batch_id"):
                try:
                    batch = client.batches.retrieve(state["batch_id"])
                    self._note(f"re-attached to batch {batch.id} ({batch.status}, "
                               f"{len(group)} requests; state {path})")
                    return _BatchJob(digest, path, custom_ids, batch)
                except openai.NotFoundError:
                    self._note(f"batch {state['batch_id']} is unknown to the server; submitting "
                               "again")
                    state = {}
            if state.get("input_file_id"):  # uploaded, then killed before the batch id was stored
                adopted = self._find_batch(digest)
                if adopted is not None:
                    state["batch_id"] = adopted.id
                    self._write_state(path, state)
                    self._note(f"re-attached to batch {adopted.id} ({adopted.status})")
                    return _BatchJob(digest, path, custom_ids, adopted)
            uploaded = client.files.create(file=(f"igpt4-gpt-{digest}.jsonl", payload),
                                           purpose="batch")
            state = {"request_hash": digest, "input_file_id": uploaded.id,
                     "requests": len(group), "model": self.model,
                     "base_url": _without_userinfo(self.effective_base_url()),
                     "created": time.time()}
            self._write_state(path, state)
            batch = client.batches.create(input_file_id=uploaded.id, endpoint=BATCH_ENDPOINT,
                                          completion_window="24h",
                                          metadata={"igpt4_request_hash": digest})
        except openai.APIError as exc:
            raise self._submission_error("submitting the batch", exc) from None
        state.update({"batch_id": batch.id, "status": batch.status, "submitted": time.time()})
        self._write_state(path, state)  # before polling: a rerun re-attaches to this batch
        self._note(f"submitted batch {batch.id} ({len(group)} requests"
                   + (f"; state {path})" if path else "; not resumable: no work dir bound)"))
        return _BatchJob(digest, path, custom_ids, batch)

    def _find_batch(self, digest: str) -> Any:
        """A batch created for this request hash (by a run killed before storing its id)."""
        import openai

        try:
            for batch in self.client().batches.list(limit=100).data:
                metadata = batch.metadata or {}
                if metadata.get("igpt4_request_hash") == digest and \
                        batch.status not in ("failed", "expired", "cancelled", "cancelling"):
                    return batch
        except openai.APIError:  # listing is optional for OpenAI-compatible servers
            return None
        return None

    def _wait(self, jobs: List[_BatchJob]) -> None:
        import openai
        from tqdm.auto import tqdm

        def counted(job: _BatchJob) -> int:
            counts = getattr(job.batch, "request_counts", None)
            return (counts.completed + counts.failed) if counts else 0

        total = sum(len(job.custom_ids) for job in jobs)
        seen = {job.batch.id: job.batch.status for job in jobs}
        with tqdm(total=total, desc="gpt batch", unit="request", disable=not self.progress) as bar:
            try:
                while True:
                    bar.n = min(total, sum(counted(job) for job in jobs))
                    bar.set_postfix_str(", ".join(sorted({job.batch.status for job in jobs})))
                    if all(job.batch.status in _TERMINAL for job in jobs):
                        break
                    time.sleep(self.poll_seconds)
                    for job in jobs:
                        if job.batch.status in _TERMINAL:
                            continue
                        try:
                            job.batch = self.client().batches.retrieve(job.batch.id)
                        except (openai.APIConnectionError, openai.RateLimitError,
                                openai.InternalServerError) as exc:
                            log.warning("gpt batch %s: polling failed (%s); trying again",
                                        job.batch.id, self._error_problem(exc))
                            continue
                        if job.batch.status != seen[job.batch.id]:
                            seen[job.batch.id] = job.batch.status
                            log.info("gpt batch %s: %s", job.batch.id, job.batch.status)
            except KeyboardInterrupt:
                running = ", ".join(job.batch.id for job in jobs
                                    if job.batch.status not in _TERMINAL)
                log.warning("gpt batch: interrupted; batch(es) %s keep running on the server; "
                            "rerun the same command to re-attach", running)
                raise

    def _download(self, file_id: Optional[str]) -> List[Dict[str, Any]]:
        if not file_id:
            return []
        try:
            text = self.client().files.content(file_id).text
        except Exception as exc:
            raise self._submission_error(f"downloading batch file {file_id} (rerun to retry; the "
                                         "batch is not submitted again)", exc) from None
        rows = []
        for line in text.splitlines():
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except ValueError:
                    log.warning("gpt batch: unreadable line in file %s", file_id)
        return rows

    def _collect(self, job: _BatchJob) -> Dict[str, ChatOutcome]:
        batch = job.batch
        wanted = set(job.custom_ids)
        outcomes: Dict[str, ChatOutcome] = {}
        if batch.status == "failed":
            errors = getattr(getattr(batch, "errors", None), "data", None) or []
            reason = "; ".join(f"{e.code}: {e.message}" + (f" (line {e.line})" if e.line else "")
                               for e in errors[:3]) or "no reason given"
            problem = f"batch {batch.id} failed: {self._redact(reason)}"
            outcomes = {custom_id: ChatOutcome(None, problem, failed=True)
                        for custom_id in job.custom_ids}
        else:
            for row in self._download(batch.output_file_id) + self._download(batch.error_file_id):
                custom_id = row.get("custom_id")
                if custom_id in wanted and custom_id not in outcomes:
                    outcomes[custom_id] = self._row_outcome(row)
            missing = ChatOutcome(None, f"batch {batch.id} {batch.status} without a result "
                                        "for this request", failed=True)
            for custom_id in job.custom_ids:
                outcomes.setdefault(custom_id, missing)
        if job.state_path is not None:
            if batch.status == "completed":
                state = {}
                try:
                    state = json.loads(job.state_path.read_text(encoding="utf-8"))
                except (OSError, ValueError):
                    pass
                state.update({"batch_id": batch.id, "status": batch.status,
                              "output_file_id": batch.output_file_id,
                              "error_file_id": batch.error_file_id})
                self._write_state(job.state_path, state)
            else:  # failed, expired, cancelled: the next run submits a new batch
                try:
                    job.state_path.unlink()
                except OSError:
                    pass
        return outcomes

    def _row_outcome(self, row: Dict[str, Any]) -> ChatOutcome:
        error = row.get("error")
        response = row.get("response") or {}
        if error:
            code = error.get("code") if isinstance(error, dict) else None
            message = error.get("message") if isinstance(error, dict) else error
            return ChatOutcome(None, self._redact(f"{code or 'error'}: {message}"), failed=True)
        status = response.get("status_code")
        body = response.get("body")
        if status != 200:
            message = _error_message(body)
            reason = f": {self._redact(message)}" if message else ""
            return ChatOutcome(None, f"HTTP {status}{reason}", failed=True)
        return self._reply_outcome(_reply_from_body(body))

    # ------------------------------------------------------------------------------ estimate

    def _token_counter(self) -> Tuple[Any, str]:
        """(count(text) -> int, method): tiktoken when its encoding is cached locally."""
        try:
            import tiktoken
            import tiktoken.load as tiktoken_load
        except Exception:
            return (lambda text: math.ceil(len(text) / 4)), "chars/4"
        if not hasattr(tiktoken_load, "read_file"):
            return (lambda text: math.ceil(len(text) / 4)), "chars/4"

        def offline(blobpath: str) -> bytes:
            raise OSError(f"not cached: {blobpath}")

        original = tiktoken_load.read_file
        tiktoken_load.read_file = offline  # a cache miss fails instead of downloading
        try:
            try:
                encoding = tiktoken.encoding_for_model(self.model)
            except KeyError:  # not an OpenAI model name
                encoding = tiktoken.get_encoding("cl100k_base")
        except Exception:
            return (lambda text: math.ceil(len(text) / 4)), "chars/4"
        finally:
            tiktoken_load.read_file = original
        return (lambda text: len(encoding.encode(text, disallowed_special=()))), \
            f"tiktoken:{encoding.name}"

    def request_tokens(self, requests: Sequence[ChatRequest]) -> Tuple[int, str]:
        """(input tokens of these requests, how they were counted): the messages' text plus the
        chat framing (:data:`MESSAGE_OVERHEAD_TOKENS` per request, 4 more per extra message)."""
        count, method = self._token_counter()
        total = sum(sum(count(content) for _, content in r.messages) + MESSAGE_OVERHEAD_TOKENS
                    + 4 * (len(r.messages) - 1) for r in requests)
        return total, method

    def cost_estimate(self, requests: Sequence[ChatRequest]) -> Dict[str, Any]:
        """Requests x tokens x price (batch mode halves it); sends nothing, needs no key."""
        input_tokens, method = self.request_tokens(requests)
        per_reply = self.expected_output_tokens if self.max_tokens is None \
            else min(self.expected_output_tokens, self.max_tokens)
        output_tokens = per_reply * len(requests)
        cost = (input_tokens * self.input_price_per_1m
                + output_tokens * self.output_price_per_1m) / 1e6
        if self.mode == "batch":
            cost /= 2
        return {"requests": len(requests), "model": self.model,
                "mode": self.mode, "input_tokens": input_tokens, "output_tokens": output_tokens,
                "token_count_method": method, "input_price_per_1m": self.input_price_per_1m,
                "output_price_per_1m": self.output_price_per_1m,
                "batch_discount": 0.5 if self.mode == "batch" else 1.0,
                "cost_usd": round(cost, 4)}


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
                "prompt_sha256": hashlib.sha256(self.prompt.encode("utf-8")).hexdigest()[:16],
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
    round without a reply makes the sample a :class:`~selector.store.Failure` (not cached; the
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


def _reply_from_completion(response: Any) -> Tuple[Optional[str], Optional[str]]:
    """(reply text, finish reason) of a ChatCompletion object."""
    choices = getattr(response, "choices", None) or []
    if not choices:
        return None, "no choices"
    message = getattr(choices[0], "message", None)
    return getattr(message, "content", None), getattr(choices[0], "finish_reason", None)


def _reply_from_body(body: Any) -> Tuple[Optional[str], Optional[str]]:
    """(reply text, finish reason) of a chat completion as JSON (a Batch API output line)."""
    choices = body.get("choices") if isinstance(body, dict) else None
    if not choices or not isinstance(choices[0], dict):
        return None, "no choices"
    message = choices[0].get("message") or {}
    content = message.get("content") if isinstance(message, dict) else None
    return (content if isinstance(content, str) else None), choices[0].get("finish_reason")


def _error_message(body: Any) -> Optional[str]:
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        if isinstance(error, str):
            return error
    return None


def _retries_taken(exc: Any) -> int:
    """How many retries the SDK made before giving up (its ``x-stainless-retry-count`` header)."""
    request = getattr(exc, "request", None)
    try:
        return int(request.headers.get("x-stainless-retry-count", 0))
    except (AttributeError, TypeError, ValueError):
        return 0


def _without_userinfo(url: Optional[str]) -> Optional[str]:
    """A URL without ``user:password@`` (credentials never go into settings or the cache)."""
    if not url:
        return None
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
