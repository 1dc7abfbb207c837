"""Ctrl-C stops every command: exit 130, one line, finished work kept, and a rerun does the rest.

The bug this pins: with DataLoader workers, a SIGINT that lands while Python runs an at-fork hook
(logging's, as workers are forked) or a destructor (a DataLoader iterator's worker shutdown) was
printed as "Exception ignored" and dropped, and ``igpt4 score`` ran on to exit 0.
``selector.errors.run_reporting_errors`` hands such an interrupt back to the main thread.

Timing here is generous on purpose (a busy 2-core machine takes seconds just to import torch):
no assertion depends on how fast anything is, only on whether the command stopped.
"""
from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

from conftest import REPO, make_cc_sbu_align

EXIT_DEADLINE = 120  # seconds from SIGINT to exit: far above a loaded machine's teardown
START_DEADLINE = 300  # interpreter start, imports and the first chunk, however slow


def _stopped(process: subprocess.Popen, sig: int = signal.SIGINT, group: bool = False
             ) -> Tuple[int, str]:
    """Send ``sig`` (to the process group when ``group``: what a terminal's Ctrl-C does) and
    wait for the exit; (status, stderr)."""
    if group:
        os.killpg(process.pid, sig)
    else:
        process.send_signal(sig)
    try:
        _, err = process.communicate(timeout=EXIT_DEADLINE)
    except subprocess.TimeoutExpired:
        process.kill()
        _, err = process.communicate()
        pytest.fail(f"still running {EXIT_DEADLINE} s after Ctrl-C: {err[-2000:]!r}")
    return process.returncode, err.decode("utf-8", "replace")


def _assert_interrupted(status: int, err: str) -> None:
    assert status == 130, err[-3000:]
    assert "Traceback" not in err and "Exception ignored" not in err, err[-3000:]
    pieces = re.split(r"[\r\n]", err)  # a progress bar's last state ends with a carriage return
    assert [p for p in pieces if "igpt4:" in p] == ["igpt4: interrupted"] or \
        [p.split("igpt4:")[-1] for p in pieces if "igpt4:" in p] == [" interrupted"], err[-3000:]


# ----------------------------------------------------------------------------- the mechanism
LOST_INTERRUPT = """
import os, sys, time
from selector.core.errors import run_reporting_errors

def interrupt(*_):
    raise KeyboardInterrupt

class Doomed:
    def __del__(self):
        interrupt()

def work():
    if sys.argv[1] == "fork":  # as when DataLoader workers are forked
        os.register_at_fork(after_in_parent=interrupt)
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
    else:  # as in a DataLoader iterator's __del__
        Doomed()
    for _ in range(600):  # a minute of further work that must not happen
        time.sleep(0.1)
    print("finished")
    return 0

sys.exit(run_reporting_errors(work))
"""


@pytest.mark.parametrize("where", ["fork", "destructor"])
def test_an_interrupt_python_would_drop_still_stops_the_command(where):
    started = time.time()
    result = subprocess.run([sys.executable, "-c", LOST_INTERRUPT, where], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    _assert_interrupted(result.returncode, result.stderr)
    assert "finished" not in result.stdout
    assert time.time() - started < 55  # it did not sit out the minute of work


def test_the_unraisable_hook_is_restored_and_other_errors_still_reported(monkeypatch):
    from selector.core.errors import interrupts_propagate, run_reporting_errors

    seen = []
    monkeypatch.setattr(sys, "unraisablehook", lambda unraisable: seen.append(unraisable.exc_value))
    before = sys.unraisablehook

    class Broken:
        def __del__(self):
            raise ValueError("not an interrupt")

    def work() -> int:
        Broken()  # handed to the previous hook as usual, and the command goes on
        return 0

    assert run_reporting_errors(work) == 0
    assert [str(e) for e in seen] == ["not an interrupt"]
    assert sys.unraisablehook is before
    with pytest.raises(KeyError):
        with interrupts_propagate():
            raise KeyError("x")
    assert sys.unraisablehook is before


# ------------------------------------------------------------------------------- igpt4 score
def _count(db: Path) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as connection:
            return connection.execute("SELECT COUNT(*) FROM indicator_values").fetchone()[0]
    except sqlite3.Error:  # not created yet
        return 0


def _rows(db: Path) -> Dict[str, float]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as connection:
        return dict(connection.execute("SELECT sample_hash, created FROM indicator_values"))


def test_ctrl_c_stops_igpt4_score_with_image_workers_and_a_rerun_does_the_rest(tiny_clip_files,
                                                                                tmp_path):
    """The issue's case: tiny CLIP, the default 2 image-loading workers, SIGINT just after a
    chunk is stored and at other moments, to the process and to its whole group."""
    config, checkpoint = tiny_clip_files
    # enough samples that no run can finish between a chunk landing and the signal, even on a
    # quiet machine where the tiny CLIP scores about a thousand samples a second
    total, chunk = 2400, 20
    data = make_cc_sbu_align(tmp_path / "data", {f"s{i:03d}": f"A picture {i}. Shapes."
                                                 for i in range(total)})
    work = tmp_path / "work"
    db = work / "cache.sqlite"
    command = [sys.executable, "-m", "selector.app.cli", "score", "--data", str(data), "--work",
               str(work), "--indicators", "clip", "--out", str(tmp_path / "scores.jsonl"),
               "--set", f"indicators.clip.model={config.stem}",
               "--set", f"indicators.clip.pretrained={checkpoint}",
               "--set", f"indicators.clip.model_config={config}",
               "--set", "indicators.clip.batch_size=4", "--set", f"chunk_size={chunk}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # (chunks to wait for beyond what is cached, delay after it, signal the whole group)
    for wait_chunks, delay, group in ((1, 0.0, False), (1, 0.3, False), (1, 0.0, True)):
        start = _count(db)
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, start_new_session=True)
        deadline = time.time() + START_DEADLINE
        while _count(db) < start + wait_chunks * chunk and process.poll() is None \
                and time.time() < deadline:
            time.sleep(0.01)
        assert process.poll() is None, process.communicate()[1][-3000:]
        time.sleep(delay)
        before = _count(db)
        status, err = _stopped(process, group=group)
        _assert_interrupted(status, err)
        kept = _count(db)
        assert before <= kept < total, (before, kept)  # finished chunks kept; not run to the end
        assert kept % chunk == 0  # whole chunks only
        assert not (tmp_path / "scores.jsonl").exists()
    finished = _rows(db)
    rerun = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                           timeout=900)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    rows = _rows(db)
    assert len(rows) == total
    assert {h: rows[h] for h in finished} == finished  # nothing finished was computed again
    assert len((tmp_path / "scores.jsonl").read_text().splitlines()) == total


# -------------------------------------------------------------------------------- igpt4 eval
def test_ctrl_c_stops_igpt4_eval_and_keeps_the_answers(tmp_path):
    from test_eval_runner import _answers_file, _jsonl_set

    n = 30
    data = _jsonl_set(tmp_path / "data", n)
    answers = _answers_file(tmp_path, n)
    out = tmp_path / "answers"
    command = [sys.executable, "-m", "selector.app.cli", "eval", "--tester", "scripted",
               "--tester-arg", f"answers={answers}", "--tester-arg", "delay=0.2",
               "--datasets", f"jsonl:{data}", "--out", str(out), "--run-name", "r",
               "--no-progress"]
    log = out / "scripted" / "r" / ".igpt4" / "mine.jsonl"

    def saved() -> List[str]:
        return log.read_text(encoding="utf-8").splitlines() if log.is_file() else []

    for wait in (2, 5):
        process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE)
        deadline = time.time() + START_DEADLINE
        while len(saved()) < wait and process.poll() is None and time.time() < deadline:
            time.sleep(0.01)
        assert process.poll() is None
        before = saved()
        status, err = _stopped(process)
        _assert_interrupted(status, err)
        assert saved()[:len(before)] == before and len(saved()) < n
        assert not (out / "scripted" / "r" / "mine.json").exists()
    kept = saved()
    rerun = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    lines = saved()
    assert lines[:len(kept)] == kept and len(lines) == n  # only the missing ones were asked
    assert sorted(json.loads(line)["index"] for line in lines) == list(range(n))


# ------------------------------------------------------------------------------ igpt4 select
INTERRUPTED_SELECT = """
import os, signal, sys, threading, time
import selector.selection.clustering as clustering
from selector.app.cli import main

original = clustering.diversity_clusters

def clusters(*args, **kwargs):  # Ctrl-C while the clustering runs
    threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGINT)).start()
    found = original(*args, **kwargs)
    time.sleep(60)  # a slow clustering: the interrupt must not wait for its end
    return found

clustering.diversity_clusters = clusters
sys.exit(main(sys.argv[1:]))
"""


def test_ctrl_c_stops_igpt4_select(selected_data, tmp_path):
    root, _ = selected_data
    out = tmp_path / "selection"
    started = time.time()
    result = subprocess.run([sys.executable, "-c", INTERRUPTED_SELECT, "select", "--pool",
                             str(root / "pool.safetensors"), "--checkpoint", str(root / "ckpt"),
                             "--num", "10", "--out", str(out)],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    _assert_interrupted(result.returncode, result.stderr)
    assert time.time() - started < 240
    assert not (out / "selected.txt").exists() and not (out / "filter_cap.json").exists()


def test_image_workers_say_nothing_about_a_main_process_that_went_away():
    """What a worker's fd-sharing thread reports when Ctrl-C cut the hand-over short is
    silenced; anything else is still reported."""
    probe = ("import sys; from selector.scoring.indicators.clip import quiet_worker; quiet_worker(0); "
             "[sys.excepthook(type(e), e, None) for e in (EOFError('gone'), "
             "ConnectionResetError('reset'), ValueError('a real bug'))]")
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "a real bug" in result.stderr
    assert "gone" not in result.stderr and "reset" not in result.stderr
