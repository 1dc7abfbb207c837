"""The OpenAI Batch API as a transport: JSONL request lines in, a result row per ``custom_id`` out.

:class:`selector.core.chat.OpenAIChat` in ``mode="batch"`` builds the lines (:func:`request_line`)
and turns the rows into replies; this module knows nothing of what the requests mean, only how
the Batch API takes and gives them back (half the price of online requests, results within 24 h):

* the lines are grouped into batches within the API's limits (:data:`BATCH_MAX_REQUESTS`
  requests, :data:`BATCH_MAX_BYTES` bytes per input file), uploaded (``purpose="batch"``) and
  submitted to :data:`BATCH_ENDPOINT`;
* resumable: before polling, each batch id is stored in ``<state dir>/<request hash>.json`` (the
  hash covers the server URL and the JSONL bytes), so a rerun after ``kill -9`` or Ctrl-C
  re-attaches to the running batch instead of paying twice; a run killed between the upload and
  storing the id finds its batch by the hash in the batch's metadata;
* every batch is polled every ``poll_seconds`` until all are done, then each batch's output and
  error files are downloaded and parsed per ``custom_id``. A completed batch's state file is kept
  (a rerun whose cache lost the replies downloads them again for free); one that ended
  ``failed``, ``expired`` or ``cancelled`` is removed, so the next run submits a new batch. Such a
  batch is never resubmitted automatically (a rejected input would fail again, and a silent
  resubmission could double the bill).
"""
from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from selector.core.errors import InputError
from selector.core.fingerprint import Fingerprint
from selector.core.jsonio import write_json
from selector.core.redaction import redact, redact_text

log = logging.getLogger(__name__)

BATCH_ENDPOINT = "/v1/chat/completions"
BATCH_STATE_DIR = "gpt_batches"
BATCH_MAX_REQUESTS = 50_000  # the Batch API's limit per batch
BATCH_MAX_BYTES = 190 * 2 ** 20  # the Batch API takes input files up to 200 MB
_TERMINAL = ("completed", "failed", "expired", "cancelled")

Line = Tuple[str, bytes]  # (custom id, its JSONL line)
Result = Tuple[Optional[Dict[str, Any]], Optional[str]]  # a result row, or why there is none


def request_line(custom_id: str, body: Dict[str, Any]) -> bytes:
    """One line of a batch's input file: a chat completion ``body`` under its ``custom_id``."""
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": BATCH_ENDPOINT,
                       "body": body}, ensure_ascii=False).encode("utf-8") + b"\n"


def one_line(text: Any) -> str:
    """One line, at most 200 characters, with secrets (should a server echo the key) masked
    before it is cut (a cut key would not be recognised)."""
    return redact_text(" ".join(str(text).split()))[:200]


@dataclass
class BatchJob:
    digest: str
    state_path: Optional[Path]
    custom_ids: List[str]
    batch: Any  # the latest openai Batch object


class BatchRun:
    """The batches of one send. ``client`` is an ``openai.OpenAI``; ``server`` the URL requests
    go to (None: OpenAI itself), part of the request hash; ``record`` what a state file notes of
    the settings (model, server without credentials); ``state_dir`` where batch ids are kept
    (None: not resumable); ``problem_of(exc)`` the one-line problem of an ``openai.APIError``."""

    def __init__(self, client: Any, server: Optional[str], record: Dict[str, Any],
                 state_dir: Optional[Path], poll_seconds: float, max_requests: int,
                 problem_of: Callable[[BaseException], str], progress: bool = True) -> None:
        self.client = client
        self.server = server
        self.record = record
        self.state_dir = state_dir
        self.poll_seconds = poll_seconds
        self.max_requests = max_requests
        self.problem_of = problem_of
        self.progress = progress

    def _note(self, message: str) -> None:
        log.info(message)
        if self.progress:
            from tqdm.auto import tqdm

            tqdm.write(f"gpt batch: {message}", file=sys.stderr)

    def group(self, lines: Sequence[Line]) -> List[List[Line]]:
        """The lines grouped into batches within the API's limits (requests and bytes)."""
        groups: List[List[Line]] = [[]]
        size = 0
        for custom_id, line in lines:
            if groups[-1] and (len(groups[-1]) >= self.max_requests
                               or size + len(line) > BATCH_MAX_BYTES):
                groups.append([])
                size = 0
            groups[-1].append((custom_id, line))
            size += len(line)
        return groups

    def _write_state(self, path: Optional[Path], state: Dict[str, Any]) -> None:
        if path is not None:
            write_json(path, redact(state))  # atomic (selector.core.atomic), secrets masked

    def _submission_error(self, what: str, exc: Exception) -> InputError:
        import openai

        reason = self.problem_of(exc) if isinstance(exc, openai.APIError) \
            else f"{type(exc).__name__}: {one_line(exc)}"
        return InputError(f"gpt batch: {what} failed at "
                          f"{self.server or 'api.openai.com'}: {reason}")

    def attach_or_submit(self, group: List[Line]) -> BatchJob:
        """The running (or finished) batch of these lines if a state file names one, else a new
        one, its id stored before this returns."""
        import openai

        client = self.client
        payload = b"".join(line for _, line in group)
        digest = Fingerprint().update_text(self.server or "").update_bytes(b"\n" + payload
                                                                      ).hexdigest(24)
        path = self.state_dir / f"{digest}.json" if self.state_dir is not None else None
        custom_ids = [custom_id for custom_id, _ in group]
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
                    return BatchJob(digest, path, custom_ids, batch)
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
                    return BatchJob(digest, path, custom_ids, adopted)
            uploaded = client.files.create(file=(f"igpt4-gpt-{digest}.jsonl", payload),
                                           purpose="batch")
            state = {"request_hash": digest, "input_file_id": uploaded.id,
                     "requests": len(group), **self.record, "created": time.time()}
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
        return BatchJob(digest, path, custom_ids, batch)

    def _find_batch(self, digest: str) -> Any:
        """A batch created for this request hash (by a run killed before storing its id)."""
        import openai

        try:
            for batch in self.client.batches.list(limit=100).data:
                metadata = batch.metadata or {}
                if metadata.get("igpt4_request_hash") == digest and \
                        batch.status not in ("failed", "expired", "cancelled", "cancelling"):
                    return batch
        except openai.APIError:  # listing is optional for OpenAI-compatible servers
            return None
        return None

    def wait(self, jobs: List[BatchJob]) -> None:
        """Poll until every batch has ended (a Ctrl-C leaves them running on the server)."""
        import openai
        from tqdm.auto import tqdm

        def counted(job: BatchJob) -> int:
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
                            job.batch = self.client.batches.retrieve(job.batch.id)
                        except (openai.APIConnectionError, openai.RateLimitError,
                                openai.InternalServerError) as exc:
                            log.warning("gpt batch %s: polling failed (%s); trying again",
                                        job.batch.id, self.problem_of(exc))
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
            text = self.client.files.content(file_id).text
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

    def collect(self, job: BatchJob) -> Dict[str, Result]:
        """``{custom_id: (row, None)}`` for each request the batch's output or error file has a
        row for (the first one), ``(None, problem)`` for the others; a finished batch's state
        file is kept, one that did not complete is removed (the next run submits again)."""
        batch = job.batch
        wanted = set(job.custom_ids)
        results: Dict[str, Result] = {}
        if batch.status == "failed":
            errors = getattr(getattr(batch, "errors", None), "data", None) or []
            reason = "; ".join(f"{e.code}: {e.message}" + (f" (line {e.line})" if e.line else "")
                               for e in errors[:3]) or "no reason given"
            problem = f"batch {batch.id} failed: {one_line(reason)}"
            results = {custom_id: (None, problem) for custom_id in job.custom_ids}
        else:
            for row in self._download(batch.output_file_id) + self._download(batch.error_file_id):
                custom_id = row.get("custom_id")
                if custom_id in wanted and custom_id not in results:
                    results[custom_id] = (row, None)
            missing = f"batch {batch.id} {batch.status} without a result for this request"
            for custom_id in job.custom_ids:
                results.setdefault(custom_id, (None, missing))
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
        return results
