"""Hostile inputs to ``igpt4 eval``: each is refused with one line naming the flag, the file or
the line (exit 2, no traceback), and nothing finished is changed.

Covers: two evals at once on one run folder (a lock refuses the second; the first's answers stay
intact), seeds out of range (``--sample-seed``, ``--tester-arg seed=``), ``--max-new-tokens`` below
1 or not below the model's maximum length, a negative or non-finite scripted ``delay``, JSONL lines
nested too deeply for Python's parser (datasets, judge questions and answers, scripted answers),
run and model names that cannot name exactly one folder, and the judge's damaged-cache line naming
``--cache`` (its flag), not ``--work``.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

import pytest

from selector.app import cli
from test_eval_runner import _answers_file, _jsonl_set

ROOT = Path(__file__).resolve().parents[2]
DEEP = "[" * 5000 + "]" * 5000  # beyond Python's recursion limit when parsed


def _tree(folder: Path) -> Dict[str, bytes]:
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def _one_line(capsys, argv: List[str], *fragments: str) -> str:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("igpt4: error: ")]
    assert len(errors) == 1, err
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


@pytest.fixture()
def world(tmp_path):
    return {"data": _jsonl_set(tmp_path / "data", 4), "answers": _answers_file(tmp_path, 4),
            "out": tmp_path / "out", "tmp": tmp_path}


def _argv(world, *extra: str, tester: str = "scripted") -> List[str]:
    tester_args = ["--tester-arg", f"answers={world['answers']}"] if tester == "scripted" else []
    return ["eval", "--tester", tester, *tester_args, "--datasets", f"jsonl:{world['data']}",
            "--out", str(world["out"]), "--run-name", "r1", "--no-progress", *extra]


# --------------------------------------------------------------------------- concurrent runs
def _eval_process(world, answers: Path, *extra: str) -> subprocess.Popen:
    argv = [sys.executable, "-m", "selector.app.cli", "eval", "--tester", "scripted",
            "--tester-arg", f"answers={answers}", "--tester-arg", "delay=0.5",
            "--datasets", f"jsonl:{world['data']}", "--out", str(world["out"]),
            "--run-name", "same", "--no-progress", *extra]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_a_second_eval_on_a_running_run_folder_is_refused(world):
    """Two runs on one run name at once: the second is refused with one line naming the folder
    and the first's pid, and writes nothing; the first finishes with only its own answers."""
    wrong = world["tmp"] / "wrong.json"
    wrong.write_text("{}", encoding="utf-8")
    first = _eval_process(world, world["answers"])
    journal = world["out"] / "scripted" / "same" / ".igpt4" / "mine.jsonl"
    deadline = time.monotonic() + 120
    while not journal.is_file():  # the first holds the lock once it has written an answer
        assert first.poll() is None, first.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    second = _eval_process(world, wrong, "--tester-arg", "default=WRONG")
    out, err = second.communicate(timeout=120)
    assert second.returncode == 2, err
    assert "Traceback" not in err
    [line] = [line for line in err.splitlines() if line.strip()]
    assert "is in use by another igpt4 eval" in line
    assert f"pid {first.pid}" in line
    assert str(world["out"] / "scripted" / "same") in line
    first_out, first_err = first.communicate(timeout=120)
    assert first.returncode == 0, first_err
    answers = [json.loads(x) for x in journal.read_text(encoding="utf-8").splitlines()]
    assert len(answers) == 4 and all(a["answer"] != "WRONG" for a in answers)
    assert sorted(a["index"] for a in answers) == [0, 1, 2, 3]


def test_the_lock_is_released_when_a_run_ends_even_by_kill(world, capsys):
    """A run killed with SIGKILL leaves no lock behind: the next run resumes it."""
    proc = _eval_process(world, world["answers"])
    journal = world["out"] / "scripted" / "same" / ".igpt4" / "mine.jsonl"
    deadline = time.monotonic() + 120
    while not journal.is_file():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.kill()
    proc.communicate(timeout=60)
    argv = ["eval", "--tester", "scripted", "--tester-arg", f"answers={world['answers']}",
            "--datasets", f"jsonl:{world['data']}", "--out", str(world["out"]),
            "--run-name", "same", "--no-progress"]
    assert cli.main(argv) == 0
    lines = journal.read_text(encoding="utf-8").splitlines()
    assert sorted(json.loads(x)["index"] for x in lines) == [0, 1, 2, 3]


def test_run_lock_in_process(tmp_path):
    """The lock refuses a second holder in one process too, and frees on exit."""
    from eval_arena.runner import RunLock
    from selector.core.errors import InputError

    with RunLock(tmp_path / "run"):
        with pytest.raises(InputError, match=r"in use by another igpt4 eval \(pid \d+\)"):
            with RunLock(tmp_path / "run"):
                pass
    with RunLock(tmp_path / "run"):  # released
        pass
    assert (tmp_path / "run" / ".igpt4" / "lock").read_bytes() == b""  # never rewritten


# ------------------------------------------------------------------------ settings out of range
@pytest.mark.parametrize("extra, fragment", [
    (["--sample-num", "2", "--sample-seed", "-1"], "--sample-seed -1"),
    (["--sample-num", "2", "--sample-seed", str(2 ** 32)], f"--sample-seed {2 ** 32}"),
    (["--sample-num", "2", "--sample-seed", "99999999999999999999"], "--sample-seed"),
    (["--sample-num", "0"], "--sample-num 0"),
    (["--sample-num", "-3"], "--sample-num -3"),
    (["--max-new-tokens", "0"], "--max-new-tokens 0"),
    (["--max-new-tokens", "-1"], "--max-new-tokens -1"),
    (["--tester-arg", "delay=-1"], "delay"),
    (["--tester-arg", "delay=nan"], "delay"),
    (["--tester-arg", "delay=inf"], "delay"),
    (["--tester-arg", "delay=-0.5"], "delay"),
])
def test_out_of_range_settings_are_one_line(world, capsys, extra, fragment):
    _one_line(capsys, _argv(world, *extra), fragment)
    assert _tree(world["out"]) == {}


@pytest.mark.parametrize("seed", ["99999999999999999999", str(2 ** 64), "-1"])
def test_tester_seed_out_of_range(world, capsys, seed):
    """The tiny tester's seed must fit torch.manual_seed (0..2**64-1)."""
    _one_line(capsys, _argv(world, "--tester-arg", f"seed={seed}", tester="tiny"),
              f"--tester-arg seed={seed}")
    assert _tree(world["out"]) == {}


def test_tester_seed_check_unit():
    from eval_arena.testers import _seed
    from selector.core.errors import InputError

    assert _seed(str(2 ** 64 - 1)) == 2 ** 64 - 1 and _seed("0") == 0 and _seed(None) is None
    for bad in (str(2 ** 64), "-1", "1.5"):
        with pytest.raises(InputError, match="seed"):
            _seed(bad)


@pytest.mark.parametrize("tokens", ["2000", "2001", "100000000"])
def test_max_new_tokens_at_or_beyond_the_models_length_is_refused(world, capsys, tokens):
    _one_line(capsys, _argv(world, "--max-new-tokens", tokens, tester="tiny"),
              f"--max-new-tokens {tokens}", "2000")
    assert not list(world["out"].rglob("*.jsonl")) if world["out"].exists() else True


def test_max_new_tokens_check_unit():
    from eval_arena.runner import check_max_new_tokens
    from selector.core.errors import InputError

    class Model:
        max_length = 10

    assert check_max_new_tokens(9, Model()) == 9 and check_max_new_tokens(10 ** 6) == 10 ** 6
    for bad in (10, 11, 0, -1, True, 2.5):
        with pytest.raises(InputError, match="--max-new-tokens"):
            check_max_new_tokens(bad, Model())


# ------------------------------------------------------------------------ deeply nested JSON
def test_deep_jsonl_dataset_line(world, capsys):
    lines = world["data"].read_text(encoding="utf-8").splitlines()
    lines.insert(2, '{"image": "img/0.png", "question": ' + DEEP + ', "answers": "a"}')
    world["data"].write_text("\n".join(lines) + "\n", encoding="utf-8")
    before = world["data"].read_bytes()
    _one_line(capsys, _argv(world), str(world["data"]), "line 3", "nested too deeply")
    assert world["data"].read_bytes() == before


def test_deep_scripted_answers_line(world, capsys):
    answers = world["tmp"] / "answers.jsonl"
    answers.write_text('{"question": "q", "answer": "a"}\n' + DEEP + "\n", encoding="utf-8")
    world["answers"] = answers
    _one_line(capsys, _argv(world), str(answers), "line 2", "nested too deeply")


def test_deep_tiny_indices_line(world, capsys):
    indices = world["tmp"] / "bard.jsonl"
    indices.write_text('{"dataset": "x", "indices": ' + DEEP + "}\n", encoding="utf-8")
    _one_line(capsys, _argv(world, "--tiny-indices", str(indices)), str(indices), "line 1")


def _judge_files(tmp: Path, question_text: str = '"what is it?"',
                 answer_text: str = '"a cat"') -> Dict[str, Path]:
    questions = tmp / "q.jsonl"
    questions.write_text('{"question_id": 1, "image": "x.jpg", "category": "c", "text": '
                         + question_text + "}\n", encoding="utf-8")
    answers = tmp / "a.jsonl"
    answers.write_text('{"question_id": 1, "text": ' + answer_text + "}\n", encoding="utf-8")
    return {"questions": questions, "answers": answers}


def _judge_argv(files: Dict[str, Path], out: Path, *extra: str) -> List[str]:
    return ["eval", "judge", "--questions", str(files["questions"]), "--answers",
            str(files["answers"]), "--references", str(files["answers"]), "--out", str(out),
            "--dry-run", *extra]


@pytest.mark.parametrize("which", ["questions", "answers"])
def test_deep_judge_lines(tmp_path, capsys, monkeypatch, which):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    files = _judge_files(tmp_path, **({"question_text": DEEP} if which == "questions"
                                      else {"answer_text": DEEP}))
    _one_line(capsys, _judge_argv(files, tmp_path / "out"), "line 1", "nested too deeply")


# ------------------------------------------------------------------- the judge's cache flag
@pytest.mark.parametrize("use_cache_flag", [True, False])
def test_damaged_judge_cache_names_the_cache_flag(tmp_path, capsys, monkeypatch, use_cache_flag):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    files = _judge_files(tmp_path)
    cache = tmp_path / ("cache" if use_cache_flag else "out")
    cache.mkdir()
    (cache / "cache.sqlite").write_bytes(b"this is not a database" * 100)
    before = (cache / "cache.sqlite").read_bytes()
    extra = ["--cache", str(cache)] if use_cache_flag else []
    line = _one_line(capsys, _judge_argv(files, tmp_path / "out", *extra), "cache.sqlite",
                     "use another --cache folder")
    assert "--work" not in line
    assert (cache / "cache.sqlite").read_bytes() == before


def test_store_names_the_callers_flag(tmp_path):
    from selector.core.errors import InputError
    from selector.core.cache import Store

    (tmp_path / "cache.sqlite").write_bytes(b"garbage" * 500)
    with pytest.raises(InputError, match="use another --work folder"):
        Store(tmp_path)
    with pytest.raises(InputError, match="use another --cache folder"):
        Store(tmp_path, "--cache")


# --------------------------------------------------------------------- run and model names
@pytest.mark.parametrize("name", ["a\nb", "a\rb", "tab\there", "nul\x00x", "..", ".", "a/b",
                                  "../escape", "", " ", "x" * 256, "line\u2028sep", "del\x7f"])
@pytest.mark.parametrize("flag", ["--run-name", "--model-name"])
def test_names_that_cannot_name_one_folder(world, capsys, name, flag):
    argv = _argv(world)
    if flag == "--run-name":
        argv[argv.index("--run-name") + 1] = name
    else:
        argv += ["--model-name", name]
    if "\x00" in name:  # argv cannot carry NUL: the library check refuses it
        from eval_arena.runner import check_folder_name
        from selector.core.errors import InputError

        with pytest.raises(InputError, match="control character"):
            check_folder_name(name, flag)
        return
    _one_line(capsys, argv, flag, "cannot name a folder")
    assert _tree(world["out"]) == {}


def test_tester_name_with_a_newline_is_refused(world, capsys):
    _one_line(capsys, _argv(world, "--tester-arg", "name=x\ny"), "model name", "cannot name a folder")
    assert _tree(world["out"]) == {}


@pytest.mark.parametrize("name", ["r1", "run-2024.01", "模型", "a b", "x" * 255])
def test_ordinary_names_are_accepted(name):
    from eval_arena.runner import check_folder_name

    assert check_folder_name(name, "--run-name") == name
