"""A small scripted OpenAI-compatible server on 127.0.0.1 for offline tests and benchmarks.

    with FakeOpenAI(latency=0.1) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="x")

Chat completions (``POST /v1/chat/completions``) behave according to markers in the last message:

* ``[[score=73]]``: the reply is ``"73\\n<explanation>"``;
* ``[[429x2]]``: HTTP 429 for the first 2 attempts of this exact message, then a normal reply;
* ``[[500]]``: always HTTP 500; ``[[500x1]]``: HTTP 500 for the first attempt only (a rerun
  succeeds; counted across processes' runs against this server, online and in batches);
* ``[[slowx1]]``: slow (see ``[[slow]]``) on the first attempt only;
* ``[[garbage]]``: a reply without any number;
* ``[[empty]]``: a reply whose content is null;
* ``[[slow]]``: sleeps ``slow_seconds`` (past a short client timeout) before replying;
* ``[[401]]``: HTTP 401 (a rejected key); ``[[echo]]``: HTTP 400 whose error message repeats the
  request's Authorization header (a careless server; the key must still not leak);
* otherwise the score is a stable hash of the message, 0..100 (:func:`default_score`).

429 and 500 responses carry ``retry-after-ms: 1`` so the SDK's retries are fast. Every request is
recorded (method, path, headers, body) and the number of chat requests in flight at once is
tracked (``max_in_flight``); ``replies_sent`` counts chat replies handed back. ``latency`` seconds
are added to every chat reply.

``hold_after=N``: the first N chat requests are answered, every later one waits until
:meth:`FakeOpenAI.release` (a test kills its client at an exact moment: N replies delivered,
the rest unanswered).

``echo_headers=True``: a careless server that sends the request's ``Authorization`` header back
everywhere: appended to every reply's text (after the score, so it still parses), to every error
message, as a response header, and into batch output and error rows and a failed batch's errors
(with the header of the request that created the batch). The key must reach no file and no
stream anyway.

The Batch API: ``POST /v1/files`` (multipart), ``POST /v1/batches``, ``GET /v1/batches`` (list),
``GET /v1/batches/{id}`` (the status moves ``validating`` -> ``in_progress`` ->
``batch_final_status`` after ``batch_polls`` retrievals; the markers above decide each request's
result, ``[[500]]`` going to the error file) and ``GET /v1/files/{id}/content``.
``batch_final_status`` may be ``completed``, ``expired`` (the first half of the requests done, the
rest in the error file), ``cancelled`` (likewise) or ``failed`` (no files, an ``errors`` list).

Run as a script (``python tests/openai_server.py --latency 0.1``) it prints its base URL and
serves until killed; the throughput benchmark uses it that way, in its own process.
"""
from __future__ import annotations

import argparse
import email.parser
import email.policy
import hashlib
import json
import re
import socket
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, List, Optional, Tuple

_MARKER = re.compile(r"\[\[([^\[\]]+)\]\]")


def default_score(content: str) -> int:
    """The score the server gives a message without a ``[[score=N]]`` marker."""
    return int(hashlib.sha256(content.encode("utf-8")).hexdigest(), 16) % 101


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    headers: Dict[str, str]  # lower-case names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body.decode("utf-8"))


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 256  # 32+ clients connecting at once must not hit a full backlog
    fake: "FakeOpenAI"

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that timed out and hung up is part of the script


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real servers
    disable_nagle_algorithm = True  # headers and body go out at once (no 40 ms delayed-ACK stall)
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, payload: Any, headers: Optional[Dict[str, str]] = None,
              raw: Optional[bytes] = None) -> None:
        data = raw if raw is not None else json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream" if raw is not None
                         else "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        try:
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError, socket.timeout):
            pass

    def _handle(self, method: str) -> None:
        fake = self.server.fake
        body = self._body() if method == "POST" else b""
        path = self.path.split("?", 1)[0]
        fake._record(Recorded(method, path, {k.lower(): v for k, v in self.headers.items()}, body))
        authorization = self.headers.get("Authorization", "")
        status, payload, headers, raw = fake._dispatch(
            method, path, body, self.headers.get("Content-Type", ""), authorization)
        if fake.echo_headers:
            headers = {**(headers or {}), "x-echo-authorization": authorization}
        self._send(status, payload, headers, raw)
        if path.endswith("/chat/completions"):
            with fake._lock:
                fake.replies_sent += 1

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")


def _error(status: int, message: str, kind: str) -> Dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


class FakeOpenAI:
    def __init__(self, latency: float = 0.0, slow_seconds: float = 3.0, batch_polls: int = 3,
                 batch_final_status: str = "completed", port: int = 0,
                 echo_headers: bool = False, hold_after: Optional[int] = None) -> None:
        self.latency = latency
        self.echo_headers = echo_headers
        self.hold_after = hold_after
        self.replies_sent = 0
        self._answered = 0  # chat requests let through the hold
        self._release = threading.Event()
        self.slow_seconds = slow_seconds
        self.batch_polls = batch_polls  # retrievals before a batch reaches its final status
        self.batch_final_status = batch_final_status
        self.requests: List[Recorded] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.batch_creations = 0
        self.batches: Dict[str, Dict[str, Any]] = {}
        self.files: Dict[str, Dict[str, Any]] = {}
        self._attempts: Dict[str, int] = {}
        self._lock = threading.Lock()
        self._counter = 0
        self._httpd = _Server(("127.0.0.1", port), _Handler)
        self._httpd.fake = self
        self._thread: Optional[threading.Thread] = None

    # ------------------------------------------------------------------------ lifecycle

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> "FakeOpenAI":
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={
            "poll_interval": 0.05}, daemon=True, name="fake-openai")
        self._thread.start()
        return self

    def release(self) -> None:
        """Let every held request (``hold_after``) through, now and from now on."""
        self._release.set()

    def stop(self) -> None:
        self._release.set()
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> "FakeOpenAI":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # ------------------------------------------------------------------------ inspection

    def _record(self, request: Recorded) -> None:
        with self._lock:
            self.requests.append(request)

    @property
    def chat_requests(self) -> List[Recorded]:
        with self._lock:
            return [r for r in self.requests if r.path.endswith("/chat/completions")]

    def batch_retrievals(self) -> int:
        with self._lock:
            return sum(b["polls"] for b in self.batches.values())

    def _next_id(self, prefix: str) -> str:
        with self._lock:
            self._counter += 1
            return f"{prefix}-{self._counter}"

    # ------------------------------------------------------------------------ behaviour

    def _dispatch(self, method: str, path: str, body: bytes, content_type: str,
                  authorization: str = "") -> Tuple[int, Any, Optional[Dict[str, str]],
                                                    Optional[bytes]]:
        if not path.startswith("/v1/"):
            return 404, _error(404, f"unknown path {path}", "invalid_request_error"), None, None
        route = path[len("/v1"):]
        if method == "POST" and route == "/chat/completions":
            return self._chat(json.loads(body.decode("utf-8")), authorization)
        if method == "POST" and route == "/files":
            return self._upload(body, content_type)
        if method == "GET" and route.startswith("/files/") and route.endswith("/content"):
            found = self.files.get(route[len("/files/"):-len("/content")])
            if found is None:
                return 404, _error(404, "no such file", "invalid_request_error"), None, None
            return 200, None, None, found["data"]
        if method == "POST" and route == "/batches":
            return self._create_batch(json.loads(body.decode("utf-8")), authorization)
        if method == "GET" and route == "/batches":
            with self._lock:
                data = [self._batch_object(b) for b in self.batches.values()][::-1]
            return 200, {"object": "list", "data": data, "has_more": False,
                         "first_id": data[0]["id"] if data else None,
                         "last_id": data[-1]["id"] if data else None}, None, None
        if method == "GET" and route.startswith("/batches/"):
            return self._retrieve_batch(route[len("/batches/"):])
        return 404, _error(404, f"unknown route {method} {path}", "invalid_request_error"), \
            None, None

    def reply_for(self, content: str, count_attempt: bool = True
                  ) -> Tuple[int, Optional[str], float]:
        """(HTTP status, reply text, delay) for a message, following its markers."""
        markers = _MARKER.findall(content)
        delay = 0.0
        attempt: Optional[int] = None
        for marker in markers:
            counted = re.fullmatch(r"(429|500|slow)x(\d+)", marker)
            if counted and (count_attempt or counted.group(1) != "429"):
                if attempt is None:
                    with self._lock:
                        attempt = self._attempts.get(content, 0)
                        self._attempts[content] = attempt + 1
                if attempt < int(counted.group(2)):
                    if counted.group(1) == "slow":
                        delay = self.slow_seconds
                    else:
                        return int(counted.group(1)), None, 0.0
            elif marker in ("500", "401"):
                return int(marker), None, 0.0
            elif marker == "echo":
                return 400, None, 0.0
            elif marker == "slow":
                delay = self.slow_seconds
        if "garbage" in markers:
            return 200, "I am unable to rate this caption without seeing the image.", delay
        if "empty" in markers:
            return 200, None, delay
        score = next((m[len("score="):] for m in markers if m.startswith("score=")), None)
        if score is None:
            score = str(default_score(content))
        return 200, f"{score}\nThe caption describes the image with reasonable detail.", delay

    def _completion(self, model: str, reply: Optional[str]) -> Dict[str, Any]:
        return {"id": self._next_id("chatcmpl"), "object": "chat.completion",
                "created": int(time.time()), "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": reply},
                             "finish_reason": "stop", "logprobs": None}],
                "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120}}

    def _echo(self, text: Optional[str], authorization: str) -> Optional[str]:
        if not self.echo_headers or text is None:
            return text
        return f"{text} (request headers: Authorization: {authorization})"

    def _chat(self, request: Dict[str, Any], authorization: str = ""):
        content = str(request["messages"][-1]["content"])
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            held = self.hold_after is not None and self._answered >= self.hold_after
            if not held:
                self._answered += 1
        try:
            if held:
                self._release.wait()
            status, reply, delay = self.reply_for(content)
            time.sleep(self.latency + delay)
        finally:
            with self._lock:
                self.in_flight -= 1
        echo = lambda message: self._echo(message, authorization)  # noqa: E731
        if status == 429:
            return 429, _error(429, echo("Rate limit reached (scripted)"), "rate_limit_error"), \
                {"retry-after-ms": "1"}, None
        if status == 500:
            return 500, _error(500, echo("The server had an error (scripted)"), "server_error"), \
                {"retry-after-ms": "1"}, None
        if status == 401:
            return 401, _error(401, echo("Incorrect API key provided (scripted)"),
                               "invalid_request_error"), None, None
        if status == 400:
            return 400, _error(400, f"bad request from {authorization}", "invalid_request_error"), \
                None, None
        return 200, self._completion(request.get("model", "?"), echo(reply)), None, None

    # ------------------------------------------------------------------------ batch API

    def _upload(self, body: bytes, content_type: str):
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            f"Content-Type: {content_type}\r\n\r\n".encode("latin-1") + body)
        fields: Dict[str, Any] = {}
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            fields[name] = (part.get_filename(), part.get_payload(decode=True))
        if "file" not in fields:
            return 400, _error(400, "no file", "invalid_request_error"), None, None
        filename, data = fields["file"]
        purpose = (fields.get("purpose") or (None, b""))[1].decode("utf-8")
        file_id = self._next_id("file")
        record = {"id": file_id, "object": "file", "bytes": len(data),
                  "created_at": int(time.time()), "filename": filename or "upload",
                  "purpose": purpose, "status": "processed"}
        with self._lock:
            self.files[file_id] = {**record, "data": data}
        return 200, record, None, None

    def _create_batch(self, request: Dict[str, Any], authorization: str = ""):
        if request.get("input_file_id") not in self.files:
            return 400, _error(400, "unknown input_file_id", "invalid_request_error"), None, None
        batch_id = self._next_id("batch")
        batch = {"id": batch_id, "object": "batch", "endpoint": request.get("endpoint"),
                 "completion_window": request.get("completion_window"),
                 "input_file_id": request["input_file_id"], "metadata": request.get("metadata"),
                 "created_at": int(time.time()), "status": "validating", "polls": 0,
                 "output_file_id": None, "error_file_id": None, "errors": None,
                 "request_counts": {"total": 0, "completed": 0, "failed": 0},
                 "authorization": authorization}
        with self._lock:
            self.batches[batch_id] = batch
            self.batch_creations += 1
        return 200, self._batch_object(batch), None, None

    @staticmethod
    def _batch_object(batch: Dict[str, Any]) -> Dict[str, Any]:
        return {k: v for k, v in batch.items() if k not in ("polls", "authorization")}

    def _retrieve_batch(self, batch_id: str):
        with self._lock:
            batch = self.batches.get(batch_id)
            if batch is None:
                return 404, _error(404, "no such batch", "invalid_request_error"), None, None
            batch["polls"] += 1
            final = batch["status"] in ("completed", "failed", "expired", "cancelled")
            ready = not final and batch["polls"] >= self.batch_polls
            if not final and not ready:
                batch["status"] = "in_progress"
        if ready:
            self._finish_batch(batch)
        with self._lock:
            return 200, self._batch_object(batch), None, None

    def _finish_batch(self, batch: Dict[str, Any]) -> None:
        status = self.batch_final_status
        echo = lambda message: self._echo(message, batch["authorization"])  # noqa: E731
        lines = [json.loads(line) for line in
                 self.files[batch["input_file_id"]]["data"].decode("utf-8").splitlines()
                 if line.strip()]
        bad = [n + 1 for n, line in enumerate(lines)
               if line.get("method") != "POST" or line.get("url") != batch["endpoint"]
               or "custom_id" not in line or "body" not in line]
        if status == "failed" or bad or batch["endpoint"] != "/v1/chat/completions":
            with self._lock:
                batch.update(status="failed", errors={"object": "list", "data": [
                    {"code": "invalid_request", "line": bad[0] if bad else None,
                     "message": echo("scripted failure" if not bad
                                     else "malformed request line"),
                     "param": None}]})
            return
        done = len(lines) if status == "completed" else len(lines) // 2
        output, errors = [], []
        for number, line in enumerate(lines):
            custom_id = line["custom_id"]
            if number >= done:
                errors.append({"id": self._next_id("batch_req"), "custom_id": custom_id,
                               "response": None, "error": {
                                   "code": "batch_expired" if status == "expired"
                                   else "batch_cancelled",
                                   "message": echo("This request was not executed "
                                                   f"(batch {status}).")}})
                continue
            content = str(line["body"]["messages"][-1]["content"])
            code, reply, _ = self.reply_for(content, count_attempt=False)
            if code != 200:
                errors.append({"id": self._next_id("batch_req"), "custom_id": custom_id,
                               "response": {"status_code": code, "request_id": "req",
                                            "body": _error(code, echo("scripted error"),
                                                           "server_error")},
                               "error": None})
            else:
                output.append({"id": self._next_id("batch_req"), "custom_id": custom_id,
                               "response": {"status_code": 200, "request_id": "req",
                                            "body": self._completion(line["body"]["model"],
                                                                     echo(reply))},
                               "error": None})
        output_id = self._store_file(output, "batch_output") if output else None
        error_id = self._store_file(errors, "batch_error") if errors else None
        with self._lock:
            batch.update(status=status, output_file_id=output_id, error_file_id=error_id,
                         request_counts={"total": len(lines), "completed": len(output),
                                         "failed": len(lines) - len(output)})

    def _store_file(self, rows: List[Dict[str, Any]], purpose: str) -> str:
        data = "".join(json.dumps(row) + "\n" for row in rows).encode("utf-8")
        file_id = self._next_id("file")
        with self._lock:
            self.files[file_id] = {"id": file_id, "object": "file", "bytes": len(data),
                                   "created_at": int(time.time()), "filename": f"{purpose}.jsonl",
                                   "purpose": purpose, "status": "processed", "data": data}
        return file_id


def main() -> None:
    parser = argparse.ArgumentParser(description="scripted OpenAI-compatible server")
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    with FakeOpenAI(latency=args.latency, port=args.port) as server:
        print(server.base_url, flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
