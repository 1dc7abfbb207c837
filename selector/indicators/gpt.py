"""GPT score: an OpenAI-compatible chat model rates each (instruction, answer) round 0..100.

The paper's judge prompt (:data:`JUDGE_PROMPT`, verbatim) is sent once per round as a single user
message with ``[Instruction]`` and ``[Caption]`` filled in; the score is the first number of the
reply (:func:`selector.gpt_reply.parse_reply`). A conversation's value is the mean over its rounds.
``detail`` keeps the raw reply (``{"reply": ...}``, or ``{"replies": [...], "per_turn": [...]}``
for several rounds). A reply without a usable score, an HTTP error that persists after the SDK's
retries, a timeout or a connection error gives ``value=None`` and a one-line ``problem`` for that
sample only; the run goes on. Authentication, permission and unknown-model errors (HTTP 401, 403,
404) concern the whole run: they stop it with an :class:`~selector.errors.InputError`, so that
fixing the key does not leave thousands of cached failures behind.

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
  split into several batches, each with its own state file). A completed batch's state file is
  kept (a rerun whose cache lost the values downloads them again for free); delete the folder to
  force a new submission. A batch that ends ``expired`` or ``cancelled`` yields the results it has
  and a problem for each missing request; one that ends ``failed`` (its input was rejected) yields
  a problem per sample with the server's reason. Neither is resubmitted automatically (a rejected
  input would fail again, and a silent resubmission could double the bill); their state file is
  removed, so the next run that scores those samples submits a new batch.

The client side (settings, key, concurrency, retries, error handling, Batch API, cost estimate)
is :class:`OpenAIChat`, which :class:`GptScore` extends and ``eval_arena.judge`` reuses for its
own prompts (:meth:`OpenAIChat.send` yields each reply as soon as it is in, so a caller can store
it at once).

The API key is read only from the environment variable named by ``api_key_env`` (default
``OPENAI_API_KEY``). With ``base_url`` set (a local vLLM or any OpenAI-compatible server) and the
variable unset, the dummy key ``EMPTY`` is sent. The key is never part of the settings (hence of
the cache), of problems or of errors. ``base_url=None`` means the SDK's default, which honours
``OPENAI_BASE_URL``.

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
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple
from urllib.parse import urlsplit, urlunsplit

from ..data import Sample
from ..errors import InputError
from ..gpt_reply import parse_reply
from . import Indicator, IndicatorValue, register

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


@dataclass(frozen=True)
class _Request(ChatRequest):
    sample: int = 0  # index in the scored samples
    round: int = 0


@dataclass(frozen=True)
class ChatOutcome:
    reply: Optional[str]  # the raw reply text, when the server gave one
    problem: Optional[str] = None  # why there is no reply (HTTP error, timeout, empty reply)


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
                raise InputError(f"{self.label}: the openai package is not installed "
                                 "(pip install 'openai>=1.0')") from None
            self._key = key
            self._client_obj = openai.OpenAI(api_key=key, base_url=self.effective_base_url(),
                                             timeout=self.timeout, max_retries=self.max_retries)
        return self._client_obj

    def _redact(self, text: Any) -> str:
        """One line, at most 200 characters, with the key (should a server echo it) masked."""
        line = " ".join(str(text).split())
        if self._key and self._key != DUMMY_KEY:
            line = line.replace(self._key, "***")
        return line[:200]

    def _body(self, messages: Sequence[Tuple[str, str]]) -> Dict[str, Any]:
        body: Dict[str, Any] = {"model": self.model,
                                "messages": [{"role": role, "content": content}
                                             for role, content in messages],
                                "temperature": self.temperature}
        if self.max_tokens is not None:
            body["max_tokens"] = self.max_tokens
        return body

    def send(self, requests: Sequence[ChatRequest], desc: str = "gpt"
             ) -> Iterator[Tuple[ChatRequest, ChatOutcome]]:
        """``(request, outcome)`` for every request. Online, each pair comes as soon as its reply
        is in (so a caller can store it at once: a ``kill -9`` then loses only the requests in
        flight); in batch mode, all of them once the batches are done. A missing key, a rejected
        key, a forbidden or unknown model raise :class:`InputError` (one line)."""
        if not requests:
            return
        self.client()  # a missing key fails here, before anything is sent
        if self.mode == "batch":
            outcomes = self._score_batch(list(requests))
            for request in requests:
                yield request, outcomes[request.custom_id]
        else:
            yield from self._stream_online(list(requests), desc)

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
        except openai.APIError as exc:
            return ChatOutcome(None, self._error_problem(exc))
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
                                                    f"{self._redact(error)}")
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

    def _score_batch(self, requests: List[ChatRequest]) -> Dict[str, ChatOutcome]:
        jobs = [self._attach_or_submit(group) for group in self._batch_lines(requests)]
        self._wait(jobs)
        outcomes: Dict[str, ChatOutcome] = {}
        for job in jobs:
            outcomes.update(self._collect(job))
        return outcomes

    def _write_state(self, path: Optional[Path], state: Dict[str, Any]) -> None:
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(path.name + ".tmp")
        with open(temporary, "w", encoding="utf-8") as handle:
            json.dump(state, handle, indent=2)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)

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
            outcomes = {custom_id: ChatOutcome(None, problem) for custom_id in job.custom_ids}
        else:
            for row in self._download(batch.output_file_id) + self._download(batch.error_file_id):
                custom_id = row.get("custom_id")
                if custom_id in wanted and custom_id not in outcomes:
                    outcomes[custom_id] = self._row_outcome(row)
            missing = ChatOutcome(None, f"batch {batch.id} {batch.status} without a result "
                                        "for this request")
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
            return ChatOutcome(None, self._redact(f"{code or 'error'}: {message}"))
        status = response.get("status_code")
        body = response.get("body")
        if status != 200:
            message = _error_message(body)
            reason = f": {self._redact(message)}" if message else ""
            return ChatOutcome(None, f"HTTP {status}{reason}")
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

    def settings(self) -> Dict[str, Any]:
        return {**self.chat_settings(),
                "prompt_sha256": hashlib.sha256(self.prompt.encode("utf-8")).hexdigest()[:16],
                "mode": self.mode}

    def _requests(self, samples: Sequence[Sample]) -> Tuple[List[_Request], Dict[int, str]]:
        """One request per round; samples with nothing to rate get a problem instead."""
        requests: List[_Request] = []
        problems: Dict[int, str] = {}
        seen: Dict[str, int] = {}
        for index, sample in enumerate(samples):
            rounds = sample.rounds
            if not rounds or not any(answer.strip() for _, answer in rounds):
                problems[index] = "empty answer"
                continue
            for number, (instruction, answer) in enumerate(rounds):
                custom_id = f"{sample.id}#{number}"
                if custom_id in seen:  # the same sample id twice in one call: keep ids unique
                    seen[custom_id] += 1
                    custom_id = f"{custom_id}~{seen[custom_id]}"
                seen.setdefault(custom_id, 0)
                prompt = fill_prompt(self.prompt, instruction, answer)
                requests.append(_Request(custom_id, (("user", prompt),), index, number))
        return requests, problems

    def score(self, samples: Sequence[Sample]) -> List[IndicatorValue]:
        requests, problems = self._requests(samples)
        outcomes = {request.custom_id: outcome
                    for request, outcome in self.send(requests, desc="gpt score")}
        per_sample: Dict[int, List[ChatOutcome]] = {}
        for request in requests:
            per_sample.setdefault(request.sample, []).append(outcomes[request.custom_id])
        values = []
        for index, sample in enumerate(samples):
            if index in problems:
                values.append(IndicatorValue(sample.id, None, problems[index]))
            else:
                values.append(_combine(sample.id, per_sample[index]))
        return values

    def estimate(self, samples: Sequence[Sample]) -> Dict[str, Any]:
        requests, _ = self._requests(samples)
        return {"samples": len(samples), **self.cost_estimate(requests)}


# ---------------------------------------------------------------------------------- helpers

def _combine(sample_id: str, outcomes: List[ChatOutcome]) -> IndicatorValue:
    """One sample's value from its rounds' replies: the mean, or the first reasons there is none."""
    replies = [o.reply for o in outcomes]
    scores: List[Optional[float]] = []
    problems: List[str] = []
    for number, outcome in enumerate(outcomes):
        problem = outcome.problem
        if problem is None:
            parsed = parse_reply(outcome.reply)
            scores.append(parsed.score)
            problem = parsed.problem
        else:
            scores.append(None)
        if problem is not None:
            problems.append(problem if len(outcomes) == 1 else f"round {number + 1}: {problem}")
    detail: Dict[str, Any] = {"reply": replies[0]} if len(outcomes) == 1 else \
        {"replies": replies, "per_turn": scores}
    if problems:
        return IndicatorValue(sample_id, None, "; ".join(problems), detail)
    numbers = [float(s) for s in scores if s is not None]
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
