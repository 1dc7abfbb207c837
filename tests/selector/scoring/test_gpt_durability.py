"""Paid GPT work is never lost, failures are never cached, the key is never persisted or printed.

Against the scripted loopback server (tests/openai_server.py): ``hold_after`` answers exactly N
requests and holds the rest, so a ``kill -9`` lands at an exact moment whatever the machine's
load; ``echo_headers`` sends the request's Authorization header back in every field it can.
"""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Sequence

import pytest

from conftest import REPO, make_cc_sbu_align, make_conversations
from openai_server import FakeOpenAI
from selector.data.samples import Sample, Turn
from selector.scoring.indicators.gpt import GptScore
from selector.core.cache import Failure, Store
from selector.scoring.store import score_cached

SENTINEL = "sk-test-DURABLE-SENTINEL-5e1c"
ENV = {"OPENAI_API_KEY": SENTINEL}


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SENTINEL)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)


def caption(sample_id: str, text: str) -> Sample:
    return Sample(sample_id, Path(f"/nowhere/{sample_id}.jpg"), (Turn("gpt", text),),
                  f"image/{sample_id}.jpg")


def gpt(server: FakeOpenAI, **settings: Any) -> GptScore:
    defaults: Dict[str, Any] = dict(progress=False, max_retries=0, timeout=10.0,
                                    poll_seconds=0.02, base_url=server.base_url)
    defaults.update(settings)
    return GptScore(**defaults)


def score_args(data: Path, work: Path, server: Any, *extra: str) -> List[str]:
    """``igpt4 score`` of the GPT indicator against ``server`` (a FakeOpenAI or a URL)."""
    url = server if isinstance(server, str) else server.base_url
    return ["score", "--data", str(data), "--work", str(work), "--indicators", "gpt",
            "--set", f"indicators.gpt.base_url={url}",
            "--set", "indicators.gpt.max_retries=0", "--set", "indicators.gpt.concurrency=4",
            "--set", "indicators.gpt.poll_seconds=0.05", *extra]


def stored_rows(work: Path, indicator: str) -> int:
    """Rows committed so far, read from outside the scoring process (0 before the file exists)."""
    path = work / "cache.sqlite"
    if not path.is_file():
        return 0
    try:
        connection = sqlite3.connect(str(path), timeout=5)
        try:
            return connection.execute("SELECT COUNT(*) FROM indicator_values WHERE indicator = ?",
                                      (indicator,)).fetchone()[0]
        finally:
            connection.close()
    except sqlite3.OperationalError:  # the schema is not there yet
        return 0


def table(path: Path) -> Dict[str, Dict[str, Any]]:
    return {row["id"]: row for row in map(json.loads, path.read_text().splitlines())}


def kill_when(child: subprocess.Popen, condition, what: str, limit: float = 180) -> None:
    """SIGKILL ``child`` once ``condition()`` holds (generous limit: a busy machine starts the
    interpreter slowly; the hold keeps the run from finishing meanwhile)."""
    deadline = time.time() + limit
    try:
        while not condition():
            assert child.poll() is None, f"the run ended before {what}"
            assert time.time() < deadline, f"never reached: {what}"
            time.sleep(0.05)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        if child.poll() is None and not condition():
            child.kill()
        child.wait(60)
    assert child.returncode == -signal.SIGKILL


def popen_cli(args: Sequence[str]) -> subprocess.Popen:
    """``igpt4 ARGS`` in its own process (to be killed); its output goes to a temporary file
    (a pipe nobody reads could fill and stall it), read back with :func:`output_of`."""
    log = tempfile.TemporaryFile()
    child = subprocess.Popen([sys.executable, "-m", "selector.app.cli", *args], cwd=str(REPO),
                             env={**os.environ, **ENV}, stdout=log, stderr=log)
    child.log = log  # type: ignore[attr-defined]
    return child


def output_of(child: subprocess.Popen) -> str:
    child.log.seek(0)  # type: ignore[attr-defined]
    return child.log.read().decode("utf-8", "replace")  # type: ignore[attr-defined]


class Igpt4:
    """``igpt4 ARGS`` in this process (no interpreter start-up, which takes seconds on a busy
    machine): exit status and the captured output; everything printed is kept in ``printed``."""

    def __init__(self, capsys) -> None:
        self.capsys = capsys
        self.printed: List[str] = []

    def __call__(self, *args: str, expect: int = 0) -> subprocess.CompletedProcess:
        from selector.app.cli import main

        self.capsys.readouterr()
        status = main([str(arg) for arg in args])
        out, err = self.capsys.readouterr()
        self.printed.append(out + err)
        assert status == expect, err
        return subprocess.CompletedProcess(args, status, out, err)


@pytest.fixture
def igpt4(capsys) -> Igpt4:
    return Igpt4(capsys)


# ------------------------------------------------------------------ kill -9 at exact moments

CAPTIONS = {str(n): f"Caption number {n}: a scene with {n} objects." for n in range(40)}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Dict[str, Any]:
    """The 40-sample table of a run nobody interrupted."""
    root = tmp_path_factory.mktemp("clean")
    data = make_cc_sbu_align(root / "cc", CAPTIONS, images=False)
    from selector.app.cli import main

    with FakeOpenAI() as server, pytest.MonkeyPatch.context() as patch:
        patch.setenv("OPENAI_API_KEY", SENTINEL)
        assert main(score_args(data, root / "work", server, "--out", str(root / "t.jsonl"))) == 0
        assert len(server.chat_requests) == 40
    return {"table": (root / "t.jsonl").read_bytes()}


@pytest.mark.parametrize("answered", [6, 20, 34])
def test_kill_9_mid_scoring_keeps_every_reply_and_the_rerun_pays_only_the_rest(
        tmp_path, uninterrupted, igpt4, answered):
    data = make_cc_sbu_align(tmp_path / "cc", CAPTIONS, images=False)
    work, out = tmp_path / "work", tmp_path / "t.jsonl"
    with FakeOpenAI(hold_after=answered) as server:
        child = popen_cli(score_args(data, work, server, "--out", str(out)))
        kill_when(child, lambda: stored_rows(work, "gpt:request") >= answered
                  and server.in_flight > 0, f"{answered} replies stored")
        assert stored_rows(work, "gpt:request") == answered  # each reply was committed
        assert stored_rows(work, "gpt") == 0 and not out.exists()  # the chunk was not done
        first_contents = {r.json()["messages"][0]["content"] for r in server.chat_requests}
        server.release()
        sent_before = len(server.chat_requests)
        answered_contents = first_contents - {  # the held ones got no reply
            r.json()["messages"][0]["content"] for r in server.chat_requests[answered:]}

        igpt4(*score_args(data, work, server, "--out", str(out)))
        resent = [r.json()["messages"][0]["content"] for r in server.chat_requests[sent_before:]]
    assert len(resent) == 40 - answered  # exactly the unanswered ones
    assert not set(resent) & answered_contents and len(set(resent)) == len(resent)
    assert out.read_bytes() == uninterrupted["table"]


def test_conversation_rounds_answered_before_a_kill_are_not_paid_again(tmp_path, igpt4):
    records = [{"id": f"c{n}", "image": f"imgs/c{n}.jpg", "conversations": [
        {"from": "human", "value": f"<image>\nQuestion one about {n}?"},
        {"from": "gpt", "value": f"Answer one about {n}."},
        {"from": "human", "value": f"Question two about {n}?"},
        {"from": "gpt", "value": f"Answer two about {n}."},
        {"from": "human", "value": f"Question three about {n}?"},
        {"from": "gpt", "value": f"Answer three about {n}."}]} for n in range(8)]
    data = make_conversations(tmp_path / "conv", records)
    with FakeOpenAI() as clean_server:
        igpt4(*score_args(data, tmp_path / "clean", clean_server, "--out",
                          str(tmp_path / "clean.jsonl")))
    work, out = tmp_path / "work", tmp_path / "t.jsonl"
    with FakeOpenAI(hold_after=13) as server:  # 13 of 24 rounds: samples left half-answered
        child = popen_cli(score_args(data, work, server, "--out", str(out)))
        kill_when(child, lambda: stored_rows(work, "gpt:request") >= 13 and server.in_flight > 0,
                  "13 rounds stored")
        assert stored_rows(work, "gpt:request") == 13
        server.release()
        sent_before = len(server.chat_requests)
        igpt4(*score_args(data, work, server, "--out", str(out)))
        assert len(server.chat_requests) - sent_before == 24 - 13
    assert out.read_bytes() == (tmp_path / "clean.jsonl").read_bytes()
    rows = table(out)
    assert all(len(json.loads(row["gpt_detail"])["per_turn"]) == 3 for row in rows.values())


# ------------------------------------------------------------------- failures are not values

def test_failures_are_retried_by_the_next_run_and_shown_as_to_compute(tmp_path, igpt4):
    data = make_cc_sbu_align(tmp_path / "cc", {
        "500": "Server error once. [[500x1]]", "429": "Rate limited once. [[429x1]]",
        "slow": "Times out once. [[slowx1]]", "zero": "Worth nothing. [[score=0]]",
        "fine": "A fine caption. [[score=55]]", "garbage": "No number. [[garbage]]",
        "negative": "Below the scale. [[score=-40]]"}, images=False)
    work, out = tmp_path / "work", tmp_path / "t.jsonl"
    with FakeOpenAI(slow_seconds=120) as server:
        args = score_args(data, work, server, "--set", "indicators.gpt.timeout=5")
        igpt4(*args, "--out", str(out))
        rows = table(out)
        assert rows["500"]["gpt"] is None and rows["500"]["gpt_problem"].startswith("HTTP 500")
        assert rows["429"]["gpt"] is None and rows["429"]["gpt_problem"].startswith("HTTP 429")
        assert rows["slow"]["gpt"] is None and "timed out" in rows["slow"]["gpt_problem"]
        assert rows["zero"]["gpt"] == 0 and rows["zero"]["gpt_problem"] is None  # 0 is a score
        assert rows["fine"]["gpt"] == 55
        assert rows["garbage"]["gpt_problem"] == "reply contains no score"  # paid: kept, flagged
        assert rows["negative"]["gpt"] is None and "-40" in rows["negative"]["gpt_problem"]
        with Store(work) as store:
            assert store.count("gpt") == 4 and store.count("gpt:request") == 4

        plan = igpt4(*args, "--dry-run")
        assert "4 cached" in plan.stdout and "3 to compute" in plan.stdout, plan.stdout
        assert "requests 3" in plan.stdout  # the estimate counts only the failed requests

        sent = len(server.chat_requests)
        igpt4(*args, "--out", str(out))
        retried = [r.json()["messages"][0]["content"] for r in server.chat_requests[sent:]]
        assert len(retried) == 3 and all(any(marker in c for marker in (
            "[[500x1]]", "[[429x1]]", "[[slowx1]]")) for c in retried)
        rows = table(out)
        assert all(rows[name]["gpt"] is not None for name in ("500", "429", "slow", "zero"))
        replan = igpt4(*args, "--dry-run")
        assert "7 cached" in replan.stdout and "0 to compute" in replan.stdout


def test_connection_errors_are_not_cached(tmp_path, igpt4):
    data = make_cc_sbu_align(tmp_path / "cc", {str(n): f"Caption {n}." for n in range(3)},
                             images=False)
    with FakeOpenAI() as gone:
        port, url = gone.port, gone.base_url  # nothing listens there after this block
    args = score_args(data, tmp_path / "work", url)
    igpt4(*args, "--out", str(tmp_path / "t.jsonl"))
    assert all(row["gpt_problem"].startswith("connection error")
               for row in table(tmp_path / "t.jsonl").values())
    with Store(tmp_path / "work") as store:
        assert store.count() == 0
    assert "3 to compute" in igpt4(*args, "--dry-run").stdout
    with FakeOpenAI(port=port) as server:
        igpt4(*args, "--out", str(tmp_path / "t.jsonl"))
        assert len(server.chat_requests) == 3
    assert all(row["gpt"] is not None for row in table(tmp_path / "t.jsonl").values())


def test_batch_requests_without_a_result_are_submitted_again(tmp_path):
    samples = [caption(str(n), f"Batch caption {n}. [[score={10 + n}]]") for n in range(4)]
    with FakeOpenAI(batch_final_status="expired") as server:
        with Store(tmp_path) as store:
            first = gpt(server, mode="batch")
            first.bind(tmp_path)
            values = score_cached(store, first, samples, chunk_size=first.chunk_size)
            assert [v.value for v in values] == [10, 11, None, None]
            assert all(isinstance(v.problem, Failure) for v in values[2:])
            assert store.count("gpt") == 2 and store.count("gpt:request") == 2
            server.batch_final_status = "completed"
            second = gpt(server, mode="batch")
            second.bind(tmp_path)
            values = score_cached(store, second, samples, chunk_size=second.chunk_size)
        assert [v.value for v in values] == [10, 11, 12, 13]
        assert server.batch_creations == 2
        resubmitted = server.files[server.batches["batch-" + str(max(
            int(b.split("-")[1]) for b in server.batches))]["input_file_id"]]["data"]
        assert [json.loads(line)["custom_id"] for line in resubmitted.decode().splitlines()] == \
            ["2#0", "3#0"]  # only the two without a result


def test_a_failure_on_one_round_keeps_the_others(tmp_path):
    sample = Sample("c", Path("/nowhere/c.jpg"), (
        Turn("human", "<image>\nFirst? [[score=30]]"), Turn("gpt", "One."),
        Turn("human", "Second? [[500x1]]"), Turn("gpt", "Two.")), "c.jpg")
    with FakeOpenAI() as server, Store(tmp_path) as store:
        [value] = score_cached(store, gpt(server), [sample])
        assert value.value is None and value.problem.startswith("round 2: HTTP 500")
        assert isinstance(value.problem, Failure)
        assert store.count("gpt") == 0 and store.count("gpt:request") == 1
        [value] = score_cached(store, gpt(server), [sample])
        assert len(server.chat_requests) == 3  # round 1 was not asked again
        assert value.problem is None and value.detail["per_turn"][0] == 30
        assert store.count("gpt") == 1


# ------------------------------------------------------------------------ duplicate custom ids

@pytest.mark.parametrize("mode", ["online", "batch"])
def test_identical_samples_are_one_request_and_ids_stay_unique(tmp_path, mode):
    samples = [caption("a", "Same words. [[score=42]]"), caption("b", "Same words. [[score=42]]"),
               caption("x", "First x. [[score=7]]"), caption("x", "Second x. [[score=8]]"),
               caption("a", "Same words. [[score=42]]")]
    with FakeOpenAI() as server, Store(tmp_path) as store:
        indicator = gpt(server, mode=mode)
        indicator.bind(tmp_path)
        values = score_cached(store, indicator, samples, chunk_size=indicator.chunk_size or 256)
        assert [v.value for v in values] == [42, 42, 7, 8, 42]
        assert [v.sample_id for v in values] == ["a", "b", "x", "x", "a"]
        if mode == "batch":
            [upload] = [f for f in server.files.values() if f["purpose"] == "batch"]
            ids = [json.loads(line)["custom_id"] for line in upload["data"].decode().splitlines()]
            assert ids == ["a#0", "x#0", "x#0~1"]  # unique, and the same request only once
        else:
            assert len(server.chat_requests) == 3
        assert store.count("gpt:request") == 3


# ------------------------------------------------------------------------------ redaction

def _grep_tree(root: Path) -> List[str]:
    """Every file under ``root`` (the SQLite file and its -wal included) holding the key."""
    return [str(path) for path in root.rglob("*") if path.is_file()
            and (SENTINEL.encode() in path.read_bytes()
                 or SENTINEL.encode("utf-16-le") in path.read_bytes())]


def _judge_files(root: Path) -> Dict[str, Path]:
    root.mkdir(parents=True, exist_ok=True)
    questions = root / "questions.jsonl"
    questions.write_text("".join(json.dumps({"question_id": n, "text": f"What is {n}?"}) + "\n"
                                 for n in range(3)))
    references = root / "references.jsonl"
    references.write_text("".join(json.dumps({"question_id": n, "text": f"Ref {n}."}) + "\n"
                                  for n in range(3)))
    answers = root / "answers.jsonl"
    answers.write_text("".join(json.dumps({"question_id": n, "text": text}) + "\n" for n, text in
                               enumerate(["Good. [[score=8 7]]", "[[garbage]]", "[[500]]"])))
    return {"questions": questions, "references": references, "answers": answers}


def test_a_server_echoing_the_key_everywhere_leaves_no_trace(tmp_path, igpt4):
    data = make_cc_sbu_align(tmp_path / "cc", {
        "1": "A cat. [[score=81]]", "2": "A dog. [[garbage]]", "3": "A bird. [[500]]",
        "4": "A fish. [[score=-40]]", "5": "A tree. [[score=0]]"}, images=False)
    cli = igpt4

    judge = _judge_files(tmp_path / "bench")
    with FakeOpenAI(echo_headers=True) as server:
        online = score_args(data, tmp_path / "online", server)
        cli(*online, "--out", str(tmp_path / "exports" / "online.jsonl"))
        cli(*online, "--out", str(tmp_path / "exports" / "online.csv"))
        cli(*online, "--dry-run")
        batch = score_args(data, tmp_path / "batch", server, "--set", "indicators.gpt.mode=batch")
        cli(*batch, "--out", str(tmp_path / "exports" / "batch.jsonl"))
        server.batch_final_status = "failed"  # its errors list echoes the key too
        failed = score_args(data, tmp_path / "failed", server, "--set",
                            "indicators.gpt.mode=batch")
        cli(*failed, "--out", str(tmp_path / "exports" / "failed.jsonl"))
        server.batch_final_status = "completed"
        for mode in ("online", "batch"):
            cli("eval", "judge", "--questions", str(judge["questions"]), "--references",
                str(judge["references"]), "--answers", str(judge["answers"]), "--out",
                str(tmp_path / f"judge-{mode}"), "--base-url", server.base_url, "--mode", mode,
                "--max-retries", "0", "--poll-seconds", "0.05")
        rejected = make_cc_sbu_align(tmp_path / "cc401", {"1": "[[401]]"}, images=False)
        cli(*score_args(rejected, tmp_path / "rejected", server), "--out",
            str(tmp_path / "exports" / "rejected.jsonl"), expect=2)
        from selector.core.errors import InputError

        with pytest.raises(InputError) as error:  # --debug: the traceback's message
            cli("--debug", *score_args(rejected, tmp_path / "rejected", server), "--out",
                str(tmp_path / "exports" / "rejected.jsonl"))
        assert SENTINEL not in str(error.value) and "Bearer ***" in str(error.value)

        held = FakeOpenAI(echo_headers=True, hold_after=3).start()  # a kill leaves the -wal
        try:
            many = make_cc_sbu_align(tmp_path / "cc-many", {str(n): f"Caption {n}. [[garbage]]"
                                                            for n in range(8)}, images=False)
            child = popen_cli(score_args(many, tmp_path / "killed", held, "--out",
                                         str(tmp_path / "exports" / "killed.jsonl")))
            kill_when(child, lambda: stored_rows(tmp_path / "killed", "gpt:request") >= 3,
                      "3 replies stored")
            igpt4.printed.append(output_of(child))
        finally:
            held.stop()
        assert (tmp_path / "killed" / "cache.sqlite-wal").is_file()
    # the server echoed the key back in replies, error bodies and batch rows...
    exported = (tmp_path / "exports" / "online.jsonl").read_text()
    assert "Authorization: Bearer ***" in exported  # ...and it arrived masked
    assert "Authorization: Bearer ***" in (tmp_path / "exports" / "batch.jsonl").read_text()
    assert "Bearer ***" in (tmp_path / "judge-online" / "reviews.jsonl").read_text()
    # ...and is nowhere: not in a cache, its WAL, an export, a review, a batch state file
    assert _grep_tree(tmp_path) == []
    assert all(SENTINEL not in text for text in igpt4.printed)
    assert any("Bearer ***" in text for text in igpt4.printed)  # the 401 line, masked


def test_redaction_masks_every_field_and_shape(monkeypatch):
    from selector.core.redaction import MASK, redact, register_secret

    monkeypatch.setenv("SOME_SERVICE_TOKEN", "tok-abcdefgh-1234")
    register_secret("custom-key-from-MY_KEY")
    register_secret("EMPTY")  # the dummy key: too short to be a secret
    value = {"reply": f"x {SENTINEL} y", SENTINEL: [("tok-abcdefgh-1234", 3),
                                                    b"custom-key-from-MY_KEY"],
             "n": 1.5, "none": None, "EMPTY": "EMPTY"}
    assert redact(value) == {"reply": f"x {MASK} y", MASK: [(MASK, 3), MASK.encode()],
                             "n": 1.5, "none": None, "EMPTY": "EMPTY"}


def test_the_key_read_from_a_custom_variable_is_masked_too(tmp_path, monkeypatch):
    monkeypatch.setenv("MY_ACCOUNT", "sk-custom-variable-9d8c7b")
    with FakeOpenAI(echo_headers=True) as server, Store(tmp_path) as store:
        values = score_cached(store, gpt(server, api_key_env="MY_ACCOUNT"),
                              [caption("a", "[[score=12]]"), caption("b", "[[500]]")])
        assert values[0].value == 12 and "Bearer ***" in values[0].detail["reply"]
        assert "sk-custom-variable" not in values[1].problem
    assert not [p for p in tmp_path.rglob("*")
                if p.is_file() and b"sk-custom-variable" in p.read_bytes()]


def test_failures_cached_by_an_earlier_version_are_retried(tmp_path):
    from selector.core.cache import IndicatorValue, settings_hash
    from selector.scoring.store import sample_hash

    samples = [caption("old500", "Was a 500. [[score=31]]"), caption("oldtimeout", "Timed out."),
               caption("flagged", "Paid, no score. [[garbage]]"), caption("ok", "[[score=9]]")]
    with FakeOpenAI() as server, Store(tmp_path) as store:
        indicator = gpt(server)
        key = settings_hash("gpt", indicator.settings())
        store.put("gpt", key, indicator.settings(), [  # as the old version left them
            (sample_hash(samples[0]), IndicatorValue("old500", None, "HTTP 500 after 6 retries")),
            (sample_hash(samples[1]), IndicatorValue("oldtimeout", None,
                                                     "request timed out (60 s)")),
            (sample_hash(samples[2]), IndicatorValue("flagged", None, "reply contains no score",
                                                     {"reply": "I cannot."})),
            (sample_hash(samples[3]), IndicatorValue("ok", 9.0, None, {"reply": "9"}))])
        values = score_cached(store, indicator, samples)
        assert len(server.chat_requests) == 2  # the two failures, not the paid replies
        assert values[0].value == 31 and values[1].value is not None
        assert values[2].problem == "reply contains no score" and values[3].value == 9
