"""A TOY judge behind an OpenAI-compatible endpoint, so ``igpt4 eval judge`` runs end to end
offline (``igpt4 demo --kind conversations``): it is a scripted rule, NOT a language model, and it
says so in the ``model`` it reports and in every reply.

    with ToyJudgeServer() as server:   # 127.0.0.1, a free port
        igpt4 eval judge ... --base-url server.base_url --model TOY_JUDGE_MODEL

(``OPENAI_API_KEY`` must be set for the client; any value is accepted and none is recorded.)

What it understands: the review prompts of :mod:`eval_arena.judge_prompts` (single-round
``[Question]`` / ``[Assistant 1]`` / ``[Assistant 2]`` blocks, and the two per-assistant
transcripts of a later round, of which it reads the last round). The ``[Context]`` and the earlier
rounds are ignored. A prompt it cannot read gets a reply without scores, which the judge *flags*
(never a made-up score).

The rule (:func:`toy_scores`), on the toy world's key words (the colours of
:data:`.world.COLOURS`, the shapes of :data:`.world.SHAPES`, plurals folded, and
:data:`.world.COUNT_WORDS`):

* the *target* is the reference's key words that the question does not already hold ("red" for
  "What colour is the circle?" / "The circle is red."; every key word of the caption for a
  describe question); the answer's *given* words are its key words not in the question;
* score = 1 + 9 x (target words given / target words) - 3 x (given words not in the target:
  contradicting words, e.g. "blue" for a red circle);
* minus 3 when the answer repeats itself (a sentence twice, or under half of its word 3-grams
  distinct: a generation loop), minus 2 when it stops without final punctuation (cut off);
* clamped to 1..10 and rounded. The reference (Assistant 1) always scores 10.

So an answer holding exactly the right word scores 10, a wrong word or none scores 1.
"""
from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, Optional, Set, Tuple

from selector.app.toy.world import COLOURS, COUNT_WORDS, SHAPES

TOY_JUDGE_MODEL = "igpt4-toy-judge-scripted"
_KEY = re.compile(r"\b(%s|%s|(?:%s)s?)\b" % ("|".join(COLOURS), "|".join(COUNT_WORDS),
                                               "|".join(SHAPES)), re.IGNORECASE)
_SINGLE = re.compile(r"\[Question\]\n(.*?)\n\n\[Assistant 1\]\n(.*?)\n\n\[End of Assistant 1\]"
                     r"\n\n\[Assistant 2\]\n(.*?)\n\n\[End of Assistant 2\]", re.DOTALL)


def key_words(text: str) -> Set[str]:
    """The toy world's colour, shape (singular) and count words in ``text``."""
    words = set()
    for word in _KEY.findall(text):
        word = word.lower()
        if word not in COLOURS and word not in COUNT_WORDS and word.endswith("s"):
            word = word[:-1]  # circles -> circle (no colour or count word ends in s)
        words.add(word)
    return words


def repeats_itself(text: str) -> bool:
    """A sentence said twice, or a word loop (under half of the word 3-grams distinct)."""
    sentences = [s.strip().lower() for s in re.split(r"(?<=[.!?])\s+", text) if s.strip()]
    if len(sentences) != len(set(sentences)):
        return True
    words = text.lower().split()
    grams = [tuple(words[i:i + 3]) for i in range(len(words) - 2)]
    return len(grams) >= 4 and len(set(grams)) < 0.5 * len(grams)


def toy_scores(question: str, reference: str, answer: str) -> Tuple[int, int, str]:
    """(reference score, model score, explanation) by the rule in the module docstring."""
    asked = key_words(question)
    target = key_words(reference) - asked
    given = key_words(answer) - asked
    matched, extra = target & given, given - target
    recall = len(matched) / len(target) if target else 1.0
    score = 1 + 9 * recall - 3 * len(extra)
    notes = [f"{len(matched)} of {len(target)} key words ({', '.join(sorted(target)) or '-'})"]
    if extra:
        notes.append(f"contradicting: {', '.join(sorted(extra))}")
    if repeats_itself(answer):
        score -= 3
        notes.append("repeats itself")
    if answer.strip() and not answer.rstrip().endswith((".", "!", "?")):
        score -= 2
        notes.append("cut off")
    model = int(min(10, max(1, round(score))))
    return 10, model, "; ".join(notes)


def _last_round(section: str, name: str) -> Optional[Tuple[str, str]]:
    """(last question, last answer) of one assistant's transcript in a later-round prompt."""
    start = section.find(f"[{name}'s conversation]\n")
    end = section.find(f"[End of {name}'s conversation]", start)
    if start < 0 or end < 0:
        return None
    found = re.findall(r"\[User\]\n(.*?)\n\n\[%s\]\n(.*?)\n\n(?=\[User\]\n|\[End of )"
                       % re.escape(name), section[start:end] + "[End of ", re.DOTALL)
    return found[-1] if found else None


def judged_round(content: str) -> Optional[Tuple[str, str, str]]:
    """(question, reference answer, model answer) of the round a review prompt judges."""
    single = _SINGLE.search(content)
    if single:
        return single.group(1), single.group(2), single.group(3)
    first, second = _last_round(content, "Assistant 1"), _last_round(content, "Assistant 2")
    if first is None or second is None:
        return None
    return first[0], first[1], second[1]


def review_reply(content: str) -> str:
    """The toy judge's reply to one review prompt, in the layout ``parse_pair`` reads."""
    found = judged_round(content)
    if found is None:
        return ("The toy judge (a scripted rule) could not find the judged round in this prompt; "
                "no scores.")
    reference, model, why = toy_scores(*found)
    return f"{reference} {model}\nToy judge (scripted rule, not a language model): {why}."


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    owner: "ToyJudgeServer"

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that hung up; nothing to report, nothing of the request is logged


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass  # never log requests: their headers carry the client's API key

    def _send(self, status: int, payload: Dict[str, Any]) -> None:
        data = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        try:
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _error(self, status: int, message: str) -> None:
        self._send(status, {"error": {"message": message, "type": "invalid_request_error",
                                      "param": None, "code": None}})

    def do_GET(self) -> None:
        if self.path.split("?", 1)[0] == "/v1/models":
            self._send(200, {"object": "list", "data": [{"id": TOY_JUDGE_MODEL,
                                                          "object": "model", "created": 0,
                                                          "owned_by": "igpt4-toy"}]})
        else:
            self._error(404, "the toy judge serves POST /v1/chat/completions only")

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.path.split("?", 1)[0] != "/v1/chat/completions":
            self._error(404, "the toy judge serves POST /v1/chat/completions only")
            return
        try:
            request = json.loads(body.decode("utf-8"))
            content = str(request["messages"][-1]["content"])
        except (ValueError, KeyError, IndexError, TypeError):
            self._error(400, "expected a chat completion request with messages")
            return
        reply = review_reply(content)
        self._send(200, self.server.owner._completion(reply))


class ToyJudgeServer:
    """The toy judge (a scripted rule, :func:`toy_scores`) as an OpenAI-compatible chat server on
    127.0.0.1 (stdlib ``http.server`` in a daemon thread; port 0: a free one). Any API key is
    accepted; requests are not logged or kept. ``replies`` counts the replies sent."""

    model = TOY_JUDGE_MODEL

    def __init__(self, port: int = 0) -> None:
        self._httpd = _Server(("127.0.0.1", port), _Handler)
        self._httpd.owner = self
        self._thread: Optional[threading.Thread] = None
        self._lock = threading.Lock()
        self.replies = 0

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def _completion(self, reply: str) -> Dict[str, Any]:
        with self._lock:
            self.replies += 1
            number = self.replies
        return {"id": f"toyjudge-{number}", "object": "chat.completion",
                "created": int(time.time()), "model": TOY_JUDGE_MODEL,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": reply},
                             "finish_reason": "stop", "logprobs": None}],
                "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}}

    def start(self) -> "ToyJudgeServer":
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True,
                                        name="toy-judge")
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> "ToyJudgeServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
