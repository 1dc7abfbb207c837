"""selector.core.chat_batch's pieces that the end-to-end batch tests (tests/selector/scoring/
test_gpt_indicator.py, against the scripted server) cannot reach cheaply: the byte limit per
batch, the JSONL line format, and masking a secret before a problem text is cut."""
from __future__ import annotations

import json

from selector.core import chat_batch
from selector.core.chat import ChatRequest, OpenAIChat
from selector.core.chat_batch import BATCH_ENDPOINT, BatchRun, one_line, request_line
from selector.core.redaction import register_secret


def _run(max_requests: int) -> BatchRun:
    return BatchRun(client=None, server=None, record={}, state_dir=None, poll_seconds=0,
                    max_requests=max_requests, problem_of=str, progress=False)


def test_a_request_line_is_one_json_post_to_the_chat_endpoint():
    body = OpenAIChat(model="m", max_tokens=5)._body([("user", "caf\u00e9")])
    line = request_line("s1#0", body)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert "caf\u00e9".encode("utf-8") in line  # not \u-escaped: the bytes counted are the bytes sent
    assert json.loads(line) == {"custom_id": "s1#0", "method": "POST", "url": BATCH_ENDPOINT,
                                "body": {"model": "m", "temperature": 1.0, "max_tokens": 5,
                                         "messages": [{"role": "user", "content": "caf\u00e9"}]}}


def test_batches_are_cut_at_the_request_limit_and_at_the_byte_limit(monkeypatch):
    lines = [(f"id{n}", b"x" * 40 + b"\n") for n in range(5)]
    assert [len(group) for group in _run(2).group(lines)] == [2, 2, 1]
    monkeypatch.setattr(chat_batch, "BATCH_MAX_BYTES", 100)  # two 41-byte lines fit, three do not
    assert [len(group) for group in _run(10).group(lines)] == [2, 2, 1]
    monkeypatch.setattr(chat_batch, "BATCH_MAX_BYTES", 10)  # a line over the limit still goes
    assert [[cid for cid, _ in group] for group in _run(10).group(lines[:2])] == [["id0"], ["id1"]]


def test_a_secret_is_masked_before_the_text_is_cut():
    secret = "sk-chat-test-7c1e0d9b"
    register_secret(secret)
    text = one_line("x" * 190 + "\n" + secret + " and more")
    assert secret[:8] not in text and "\n" not in text and len(text) <= 200


def test_the_request_key_ignores_the_custom_id():
    messages = (("user", "hello"),)
    assert ChatRequest("a", messages).key == ChatRequest("b", messages).key
    assert ChatRequest("a", messages).key != ChatRequest("a", (("user", "hello!"),)).key
