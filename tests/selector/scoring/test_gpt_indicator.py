"""selector.scoring.indicators.gpt (and its client, selector.core.chat) against the scripted
loopback OpenAI server (tests/openai_server.py)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Optional, Sequence

import pytest

from openai_server import FakeOpenAI, default_score
from selector.data.samples import DEFAULT_INSTRUCTION, Sample, Turn
from selector.core.errors import InputError
from selector.scoring.indicators import create
from selector.core.cache import Store
from selector.core.chat_batch import BATCH_MAX_REQUESTS
from selector.scoring.indicators.gpt import JUDGE_PROMPT, GptScore, fill_prompt
from selector.scoring.store import score_cached

SENTINEL = "sk-test-SENTINEL-4f9a"
REPO = Path(__file__).resolve().parents[3]
# what a script run in a subprocess needs on sys.path: this folder and tests/ (openai_server)
SCRIPT_PATHS = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[2])]


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SENTINEL)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)


@pytest.fixture
def server():
    with FakeOpenAI(slow_seconds=2.0) as fake:
        yield fake


def caption(sample_id: str, text: str) -> Sample:
    """A cc_sbu_align-style sample: one answer, the default instruction."""
    return Sample(sample_id, Path(f"/nowhere/{sample_id}.jpg"), (Turn("gpt", text),),
                  f"image/{sample_id}.jpg")


def conversation(sample_id: str, rounds: Sequence[tuple]) -> Sample:
    turns: List[Turn] = []
    for number, (question, answer) in enumerate(rounds):
        turns += [Turn("human", ("<image>\n" if number == 0 else "") + question),
                  Turn("gpt", answer)]
    return Sample(sample_id, Path(f"/nowhere/{sample_id}.jpg"), tuple(turns), f"{sample_id}.jpg")


def gpt(server: Optional[FakeOpenAI] = None, **settings) -> GptScore:
    defaults = dict(progress=False, max_retries=2, timeout=5.0, poll_seconds=0.02)
    if server is not None:
        defaults["base_url"] = server.base_url
    defaults.update(settings)
    return GptScore(**defaults)


def cache_bytes(work: Path) -> bytes:
    return b"".join(path.read_bytes() for path in sorted(work.rglob("*")) if path.is_file())


# ------------------------------------------------------------------------------ online mode

def test_prompt_is_the_papers_verbatim():
    assert JUDGE_PROMPT.startswith("\nWe would like to request your feedback on the performance")
    assert JUDGE_PROMPT.endswith("displayed following without image.\n\n"
                                 "Instruction: [Instruction]\nCaption: [Caption]\n")
    filled = fill_prompt(JUDGE_PROMPT, "Describe it.", "A cat says [Instruction].")
    assert filled.endswith("\n\nInstruction: Describe it.\nCaption: A cat says [Instruction].\n")


def test_scores_and_raw_replies(server):
    samples = [caption("a", "A red bus. [[score=73]]"), caption("b", "A dog. [[score=12.5]]"),
               caption("c", "A plain caption.")]
    values = gpt(server).score(samples)
    assert [v.sample_id for v in values] == ["a", "b", "c"]
    assert [v.value for v in values] == [73, 12.5, default_score(
        fill_prompt(JUDGE_PROMPT, DEFAULT_INSTRUCTION, "A plain caption."))]
    assert all(v.problem is None for v in values)
    assert values[0].detail == {"reply": "73\nThe caption describes the image with reasonable "
                                         "detail."}
    bodies = [r.json() for r in server.chat_requests]
    assert len(bodies) == 3
    first = next(b for b in bodies if "[[score=73]]" in b["messages"][0]["content"])
    assert first["model"] == "gpt-4" and first["temperature"] == 1 and "max_tokens" not in first
    assert first["messages"] == [{"role": "user", "content": fill_prompt(
        JUDGE_PROMPT, "Describe this image in detail.", "A red bus. [[score=73]]")}]
    assert {r.headers["authorization"] for r in server.chat_requests} == {f"Bearer {SENTINEL}"}


def test_429_twice_is_retried_by_the_sdk(server):
    [value] = gpt(server, progress=True).score([caption("a", "Busy. [[429x2]] [[score=64]]")])
    assert value.value == 64 and value.problem is None
    assert len(server.chat_requests) == 3


def test_persistent_500_is_recorded_and_the_others_are_scored(server):
    values = gpt(server).score([caption("a", "[[score=40]]"), caption("b", "[[500]]"),
                                caption("c", "[[score=90]]")])
    assert [v.value for v in values] == [40, None, 90]
    assert values[1].problem.startswith("HTTP 500 after 2 retries")
    assert "\n" not in values[1].problem
    assert len(server.chat_requests) == 2 + 3


def test_timeout_is_recorded(server):
    values = gpt(server, timeout=0.3, max_retries=0).score(
        [caption("a", "[[slow]]"), caption("b", "[[score=5]]")])
    assert values[0].value is None and "timed out" in values[0].problem
    assert values[1].value == 5


INTERRUPTED_RUN = """
import sys
sys.path[:0] = {paths!r}
from test_gpt_indicator import caption, gpt
gpt(base_url=sys.argv[1], timeout=3600, max_retries=0).score([caption(str(n), "[[slow]] %d" % n)
                                                              for n in range(4)])
"""


def test_ctrl_c_stops_online_scoring_at_once(server):
    """Robust on a busy machine: the requests in flight would take 10 minutes, so a run that
    waited for them cannot pass, while the limits on start-up and on exiting are generous."""
    server.slow_seconds = 600
    child = subprocess.Popen([sys.executable, "-c", INTERRUPTED_RUN.format(paths=SCRIPT_PATHS),
                              server.base_url], cwd=str(REPO), stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 180  # interpreter start and imports, however slow
        while server.in_flight < 4 and time.time() < deadline and child.poll() is None:
            time.sleep(0.05)
        assert server.in_flight == 4, child.poll()
        child.send_signal(signal.SIGINT)
        _, stderr = child.communicate(timeout=120)  # far below the 600 s the requests need
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode != 0 and b"KeyboardInterrupt" in stderr


def test_connection_error_is_recorded():
    with FakeOpenAI() as fake:
        url = fake.base_url  # the server is gone after this block
    [value] = gpt(base_url=url, max_retries=0).score([caption("a", "text")])
    assert value.value is None and value.problem.startswith("connection error")


def test_unparseable_and_empty_replies_are_flagged_with_the_raw_reply(server):
    garbage, empty = gpt(server).score([caption("a", "[[garbage]]"), caption("b", "[[empty]]")])
    assert garbage.value is None and garbage.problem == "reply contains no score"
    assert garbage.detail["reply"].startswith("I am unable to rate")
    assert empty.value is None and empty.problem.startswith("empty reply")


def test_out_of_scale_score_is_flagged(server):
    [value] = gpt(server).score([caption("a", "[[score=450]]")])
    assert value.value is None and "outside 0..100" in value.problem
    assert value.detail["reply"].startswith("450")


def test_requests_run_concurrently_and_bounded(server):
    server.latency = 0.05
    samples = [caption(str(n), f"caption {n}") for n in range(40)]
    started = time.perf_counter()
    values = gpt(server, concurrency=8).score(samples)
    elapsed = time.perf_counter() - started
    assert all(v.value is not None for v in values)
    assert 1 < server.max_in_flight <= 8
    assert elapsed < 40 * 0.05 / 2  # far from sequential


def test_conversation_is_the_mean_over_rounds(server):
    sample = conversation("c1", [("What is it? [[score=60]]", "A cat."),
                                 ("What colour? [[score=81]]", "Black.")])
    broken = conversation("c2", [("Q? [[score=50]]", "A."), ("Q2?", "B. [[garbage]]")])
    whole, partial = gpt(server).score([sample, broken])
    assert whole.value == pytest.approx(70.5) and whole.problem is None
    assert whole.detail["per_turn"] == [60, 81] and len(whole.detail["replies"]) == 2
    contents = sorted(r.json()["messages"][0]["content"] for r in server.chat_requests)
    assert any("Instruction: What colour? [[score=81]]\nCaption: Black.\n" in c for c in contents)
    assert any("Instruction: What is it? [[score=60]]\nCaption: A cat.\n" in c for c in contents)
    assert partial.value is None and partial.problem == "round 2: reply contains no score"
    assert partial.detail["per_turn"] == [50, None]


def test_empty_answer_sends_nothing(server):
    [value] = gpt(server).score([caption("a", "   ")])
    assert value.value is None and value.problem == "empty answer"
    assert server.chat_requests == []


def test_settings_exclude_the_key_and_follow_what_changes_values():
    base = gpt(base_url="http://user:pw@127.0.0.1:9/v1")
    settings = base.settings()
    assert set(settings) == {"model", "temperature", "max_tokens", "base_url", "prompt_sha256",
                             "mode"}
    assert SENTINEL not in json.dumps(settings) and "pw" not in settings["base_url"]
    assert settings["base_url"] == "http://127.0.0.1:9/v1"
    for change in [dict(model="gpt-4o"), dict(temperature=0), dict(max_tokens=50),
                   dict(prompt="Rate: [Caption]"), dict(mode="batch")]:
        assert gpt(base_url="http://user:pw@127.0.0.1:9/v1", **change).settings() != settings
    for same in [dict(concurrency=3), dict(timeout=9), dict(max_retries=0), dict(progress=True),
                 dict(poll_seconds=5), dict(api_key_env="OTHER_KEY")]:
        assert gpt(base_url="http://user:pw@127.0.0.1:9/v1", **same).settings() == settings


def test_key_never_reaches_cache_or_problems(server, tmp_path):
    samples = [caption("a", "[[score=70]]"), caption("b", "[[500]]"), caption("c", "[[echo]]"),
               caption("d", "[[garbage]]")]
    with Store(tmp_path) as store:
        online = gpt(server, max_retries=0)
        values = score_cached(store, online, samples)
        batch = gpt(server, mode="batch")
        batch.bind(tmp_path)
        values += score_cached(store, batch, samples, chunk_size=batch.chunk_size)
    assert [v.value for v in values] == [70, None, None, None] * 2
    assert "bad request from Bearer ***" in values[2].problem  # a server echoing the key
    assert all(SENTINEL not in (v.problem or "") + json.dumps(v.detail) for v in values)
    assert {r.headers["authorization"] for r in server.requests} == {f"Bearer {SENTINEL}"}
    assert (tmp_path / "cache.sqlite").is_file() and list((tmp_path / "gpt_batches").iterdir())
    stored = cache_bytes(tmp_path)
    assert SENTINEL.encode() not in stored and b"SENTINEL" not in stored


def test_missing_key_without_base_url_is_an_input_error(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY")
    indicator = gpt()
    assert indicator.estimate([caption("a", "x")])["requests"] == 1  # a dry run needs no key
    with pytest.raises(InputError) as error:
        indicator.score([caption("a", "x")])
    assert "OPENAI_API_KEY" in str(error.value) and "\n" not in str(error.value)


def test_local_server_without_key_gets_a_dummy_key(server, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY")
    monkeypatch.setenv("MY_KEY", "sk-other")
    gpt(server).score([caption("a", "[[score=1]]")])
    gpt(server, api_key_env="MY_KEY").score([caption("a", "[[score=1]]")])
    assert [r.headers["authorization"] for r in server.chat_requests] == \
        ["Bearer EMPTY", "Bearer sk-other"]


def test_rejected_key_stops_the_run(server):
    with pytest.raises(InputError) as error:
        gpt(server).score([caption("a", "[[401]]")] + [caption(str(n), "x") for n in range(5)])
    assert "HTTP 401" in str(error.value) and SENTINEL not in str(error.value)


def test_registry_and_bad_settings():
    assert isinstance(create("gpt", progress=False), GptScore)
    with pytest.raises(InputError):
        create("gpt", mode="offline")
    with pytest.raises(InputError):
        create("gpt", concurrency=0)


# ------------------------------------------------------------------------------- batch mode

def test_batch_mode_end_to_end(server, tmp_path):
    samples = [caption("a", "[[score=70]]"), caption("b", "[[500]]"), caption("c", "[[garbage]]"),
               conversation("d", [("Q1 [[score=20]]", "A1"), ("Q2 [[score=40]]", "A2")])]
    indicator = gpt(server, mode="batch")
    assert indicator.chunk_size == BATCH_MAX_REQUESTS
    indicator.bind(tmp_path)
    values = indicator.score(samples)
    assert [v.value for v in values] == [70, None, None, 30]
    assert values[0].detail["reply"].startswith("70\n")
    assert values[1].problem.startswith("HTTP 500")
    assert values[2].problem == "reply contains no score" and values[2].detail["reply"]
    assert values[3].detail["per_turn"] == [20, 40]
    assert server.chat_requests == [] and server.batch_creations == 1
    [upload] = [r for r in server.requests if r.path == "/v1/files"]
    assert b'name="purpose"' in upload.body and b"batch" in upload.body
    [create_request] = [r.json() for r in server.requests
                        if r.method == "POST" and r.path == "/v1/batches"]
    assert create_request["endpoint"] == "/v1/chat/completions"
    assert create_request["completion_window"] == "24h"
    lines = [json.loads(line) for line in
             next(iter(server.files.values()))["data"].decode().splitlines()]
    assert [line["custom_id"] for line in lines] == ["a#0", "b#0", "c#0", "d#0", "d#1"]
    assert lines[0]["body"]["messages"][0]["content"] == fill_prompt(
        JUDGE_PROMPT, DEFAULT_INSTRUCTION, "[[score=70]]")
    [state_file] = (tmp_path / "gpt_batches").iterdir()
    state = json.loads(state_file.read_text())
    assert state["status"] == "completed" and state["batch_id"].startswith("batch")
    assert state_file.stem == state["request_hash"]

    again = gpt(server, mode="batch", progress=True)  # the results again, without paying twice
    again.bind(tmp_path)
    assert [v.value for v in again.score(samples)] == [70, None, None, 30]
    assert server.batch_creations == 1


KILLED_RUN = """
import sys
from pathlib import Path
sys.path[:0] = {paths!r}
from test_gpt_indicator import caption, gpt
from selector.core.cache import Store
from selector.scoring.store import score_cached
from selector.scoring.indicators.gpt import GptScore

indicator = GptScore(base_url=sys.argv[1], mode="batch", poll_seconds=0.02, progress=False)
indicator.bind(Path(sys.argv[2]))
samples = [caption(str(n), "[[score=%d]]" % n) for n in range(6)]
with Store(sys.argv[2]) as store:
    score_cached(store, indicator, samples, chunk_size=indicator.chunk_size)
"""


def test_batch_resumes_after_kill_9(server, tmp_path):
    server.batch_polls = 10 ** 9  # the batch stays in progress while the first run polls
    child = subprocess.Popen([sys.executable, "-c", KILLED_RUN.format(paths=SCRIPT_PATHS),
                              server.base_url, str(tmp_path)], cwd=str(REPO))
    try:
        deadline = time.time() + 20
        while server.batch_retrievals() < 3 and time.time() < deadline and child.poll() is None:
            time.sleep(0.02)
        assert server.batch_creations == 1 and server.batch_retrievals() >= 3, child.poll()
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(10)
    assert child.returncode == -signal.SIGKILL

    server.batch_polls = server.batch_retrievals() + 2
    indicator = gpt(server, mode="batch")
    indicator.bind(tmp_path)
    samples = [caption(str(n), "[[score=%d]]" % n) for n in range(6)]
    with Store(tmp_path) as store:
        values = score_cached(store, indicator, samples, chunk_size=indicator.chunk_size)
        assert store.count("gpt") == 6
    assert [v.value for v in values] == [0, 1, 2, 3, 4, 5]
    assert server.batch_creations == 1
    assert len([r for r in server.requests if r.path == "/v1/files"]) == 1


def test_batch_killed_between_upload_and_storing_its_id_is_adopted(server, tmp_path):
    samples = [caption("a", "[[score=11]]"), caption("b", "[[score=22]]")]
    first = gpt(server, mode="batch")
    first.bind(tmp_path)
    first.score(samples)
    [state_file] = (tmp_path / "gpt_batches").iterdir()
    state = json.loads(state_file.read_text())
    state_file.write_text(json.dumps({k: v for k, v in state.items()
                                      if k in ("request_hash", "input_file_id")}))
    again = gpt(server, mode="batch")
    again.bind(tmp_path)
    assert [v.value for v in again.score(samples)] == [11, 22]
    assert server.batch_creations == 1  # found by its request-hash metadata
    assert json.loads(state_file.read_text())["batch_id"] == state["batch_id"]


@pytest.mark.parametrize("status", ["expired", "cancelled"])
def test_expired_batch_keeps_its_results_and_flags_the_rest(server, tmp_path, status):
    server.batch_final_status = status
    indicator = gpt(server, mode="batch")
    indicator.bind(tmp_path)
    values = indicator.score([caption(str(n), "[[score=%d]]" % n) for n in range(4)])
    assert [v.value for v in values[:2]] == [0, 1]
    assert all(v.value is None and f"batch_{status}" in v.problem for v in values[2:])
    assert list((tmp_path / "gpt_batches").iterdir()) == []  # the next run submits anew


def test_failed_batch_gives_a_problem_per_sample(server, tmp_path):
    server.batch_final_status = "failed"
    indicator = gpt(server, mode="batch")
    indicator.bind(tmp_path)
    values = indicator.score([caption("a", "x"), caption("b", "y")])
    assert all(v.value is None and "failed: invalid_request: scripted failure" in v.problem
               for v in values)
    assert list((tmp_path / "gpt_batches").iterdir()) == []


def test_batch_groups_respect_the_request_limit(server, tmp_path):
    indicator = gpt(server, mode="batch", batch_max_requests=2)
    indicator.bind(tmp_path)
    values = indicator.score([caption(str(n), "[[score=%d]]" % n) for n in range(5)])
    assert [v.value for v in values] == [0, 1, 2, 3, 4]
    assert server.batch_creations == 3 and len(list((tmp_path / "gpt_batches").iterdir())) == 3


# -------------------------------------------------------------------------------- estimates

def test_estimate_counts_requests_tokens_and_cost(monkeypatch):
    monkeypatch.setitem(sys.modules, "tiktoken", None)  # the chars/4 path, whatever is installed
    samples = [caption("a", "x" * 400), conversation("c", [("Q1", "A1"), ("Q2", "A2")])]
    online = gpt().estimate(samples)
    prompts = [fill_prompt(JUDGE_PROMPT, DEFAULT_INSTRUCTION, "x" * 400),
               fill_prompt(JUDGE_PROMPT, "Q1", "A1"), fill_prompt(JUDGE_PROMPT, "Q2", "A2")]
    tokens = sum(-(-len(p) // 4) + 7 for p in prompts)
    assert online["requests"] == 3 and online["mode"] == "online"
    assert online["token_count_method"] == "chars/4"
    assert online["input_tokens"] == tokens and online["output_tokens"] == 3 * 150
    assert online["cost_usd"] == pytest.approx(round((tokens * 30 + 450 * 60) / 1e6, 4))
    batch = gpt(mode="batch", expected_output_tokens=100, input_price_per_1m=2.5,
                output_price_per_1m=10).estimate(samples)
    assert batch["mode"] == "batch" and batch["output_tokens"] == 300
    assert batch["cost_usd"] == pytest.approx(round((tokens * 2.5 + 300 * 10) / 1e6 / 2, 4))
    assert gpt(max_tokens=20).estimate(samples)["output_tokens"] == 60


def _fake_tiktoken(monkeypatch, cached: bool):
    """A stand-in tiktoken: one token per word when its encoding is 'cached', else a download."""
    import types

    package, load = types.ModuleType("tiktoken"), types.ModuleType("tiktoken.load")

    def download(blobpath):
        raise AssertionError(f"download attempted: {blobpath}")

    class Encoding:
        name = "cl100k_base"

        def encode(self, text, disallowed_special=()):
            return text.split()

    def encoding_for_model(model):
        if not cached:
            load.read_file("https://example.invalid/cl100k_base.tiktoken")  # a cache miss
        return Encoding()

    load.read_file = download
    package.load = load
    package.encoding_for_model = encoding_for_model
    monkeypatch.setitem(sys.modules, "tiktoken", package)
    monkeypatch.setitem(sys.modules, "tiktoken.load", load)
    return load, download


@pytest.mark.parametrize("cached", [True, False])
def test_estimate_uses_tiktoken_only_when_its_encoding_is_local(monkeypatch, cached):
    load, download = _fake_tiktoken(monkeypatch, cached)
    samples = [caption("a", "A red bus.")]
    estimate = gpt().estimate(samples)
    prompt = fill_prompt(JUDGE_PROMPT, DEFAULT_INSTRUCTION, "A red bus.")
    if cached:
        assert estimate["token_count_method"] == "tiktoken:cl100k_base"
        assert estimate["input_tokens"] == len(prompt.split()) + 7
    else:
        assert estimate["token_count_method"] == "chars/4"
        assert estimate["input_tokens"] == -(-len(prompt) // 4) + 7
    assert load.read_file is download  # restored
