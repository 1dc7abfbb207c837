"""The OpenAI-compatible chat client every paid-API part of the package shares.

:class:`OpenAIChat` holds the settings that change a reply (model, temperature, max_tokens,
server: :meth:`~OpenAIChat.chat_settings`, part of every cache key), the key (from the
environment only), one ``openai.OpenAI`` client, the SDK's retries, one-line problems per request
and the errors that stop a run. Its users give it :class:`ChatRequest` objects and get a
:class:`ChatOutcome` back for each: the GPT score (:mod:`selector.scoring.indicators.gpt`) and
the open-ended evaluation judge (:mod:`eval_arena.judge`), each with its own prompts and parsing.

* ``mode="online"`` (default): ``concurrency`` requests in flight at once (daemon worker threads
  over one client, so Ctrl-C returns at once). Rate limits and server errors are retried by the
  SDK itself only (``max_retries``, exponential back-off honouring ``retry-after`` /
  ``retry-after-ms``); ``timeout`` is per attempt.
* ``mode="batch"``: the OpenAI Batch API (:mod:`selector.core.chat_batch`: half the price,
  results within 24 h, resumable after ``kill -9`` through ``<work dir>/gpt_batches/``).

An outcome is one of three: a delivered reply; a delivered reply without usable content (empty:
paid for, so a caller caches it *flagged*); or *no reply* (``failed``: an HTTP error that persists
after the SDK's retries: 5xx, 429, 400; a timeout; a connection error; a batch that did not run
the request): never cached, so the next run asks again. Authentication, permission and
unknown-model errors (HTTP 401, 403, 404) concern the whole run: they stop it with an
:class:`~selector.core.errors.InputError`. :meth:`OpenAIChat.send` hands every delivered reply to
a sink (:meth:`selector.core.cache.ReplyStore.keep`) before handing it on, so a ``kill -9`` loses
only the requests in flight.

The API key is read only from the environment variable named by ``api_key_env`` (default
``OPENAI_API_KEY``). With ``base_url`` set (a local vLLM or any OpenAI-compatible server) and the
variable unset, the dummy key ``EMPTY`` is sent. The key is never part of the settings (hence of
any cache). It is registered with :mod:`selector.core.redaction` when read, and every reply,
problem and error text is redacted when it comes in (a server may echo the key anywhere).
``base_url=None`` means the SDK's default, which honours ``OPENAI_BASE_URL``.

Costs (:meth:`OpenAIChat.cost_estimate`): requests x tokens x price; batch mode halves it. Input
tokens are counted with ``tiktoken`` when it is installed and its encoding is already cached
locally (no download is attempted), else estimated as characters / 4.
"""
from __future__ import annotations

import json
import math
import os
import queue
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple
from urllib.parse import urlsplit, urlunsplit

from selector.core.chat_batch import (BATCH_MAX_REQUESTS, BATCH_STATE_DIR, BatchRun, Result,
                                      one_line, request_line)
from selector.core.errors import InputError
from selector.core.fingerprint import text_fingerprint
from selector.core.redaction import redact, register_secret

DUMMY_KEY = "EMPTY"
MESSAGE_OVERHEAD_TOKENS = 7  # chat framing per request: role, separators, reply priming
MODES = ("online", "batch")


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
        return text_fingerprint(canonical, length=32)


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


def _is_loopback(base_url: Optional[str]) -> bool:
    """``base_url`` names this machine (127.0.0.1, ::1, localhost): the user's HTTP(S)/SOCKS
    proxy settings must not route it elsewhere."""
    if not base_url:
        return False
    from urllib.parse import urlparse

    host = (urlparse(base_url).hostname or "").lower()
    return host in ("localhost", "::1") or host.startswith("127.")


class OpenAIChat:
    """The client side shared by every GPT-calling part of the package (the GPT score, the
    open-ended evaluation judge): settings, the key from the environment only, one
    ``openai.OpenAI`` client, ``concurrency`` daemon worker threads (online) or the Batch API
    (batch), the SDK's retries, one-line problems per request, and run-stopping errors (401, 403,
    404) as :class:`~selector.core.errors.InputError`. ``label`` prefixes every message, so a user
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
            base_url = self.effective_base_url()
            extra: Dict[str, Any] = {}
            if _is_loopback(base_url):  # a server on this machine: never through a proxy
                import httpx

                extra["http_client"] = httpx.Client(trust_env=False, timeout=self.timeout)
            self._client_obj = openai.OpenAI(api_key=key, base_url=base_url,
                                             timeout=self.timeout, max_retries=self.max_retries,
                                             **extra)
        return self._client_obj

    def _redact(self, text: Any) -> str:
        """One line, at most 200 characters, the key masked (:func:`.chat_batch.one_line`)."""
        return one_line(text)

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
        it is done. ``sink`` (e.g. :meth:`selector.core.cache.ReplyStore.keep`) is given every
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

    def _score_batch(self, requests: List[ChatRequest], sink: Optional[ReplySink]
                     ) -> List[Tuple[ChatRequest, ChatOutcome]]:
        """Every request's outcome; each batch's delivered replies go to ``sink`` (one
        transaction) as soon as that batch is collected."""
        run = BatchRun(self.client(), self.effective_base_url(),
                       {"model": self.model,
                        "base_url": _without_userinfo(self.effective_base_url())},
                       self.state_dir, self.poll_seconds, self.batch_max_requests,
                       self._error_problem, self.progress)
        lines = [(r.custom_id, request_line(r.custom_id, self._body(r.messages)))
                 for r in requests]
        jobs = [run.attach_or_submit(group) for group in run.group(lines)]
        run.wait(jobs)
        by_id = {request.custom_id: request for request in requests}
        pairs: List[Tuple[ChatRequest, ChatOutcome]] = []
        for job in jobs:
            collected = [(by_id[custom_id], self._result_outcome(result).redacted())
                         for custom_id, result in run.collect(job).items()]
            if sink is not None:
                sink([(request, outcome) for request, outcome in collected if not outcome.failed])
            pairs += collected
        order = {request.custom_id: n for n, request in enumerate(requests)}
        return sorted(pairs, key=lambda pair: order[pair[0].custom_id])

    def _result_outcome(self, result: Result) -> ChatOutcome:
        row, problem = result
        return ChatOutcome(None, problem, failed=True) if row is None else self._row_outcome(row)

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


# ---------------------------------------------------------------------------------- helpers

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
