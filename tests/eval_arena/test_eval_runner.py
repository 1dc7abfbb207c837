"""eval_arena.runner and eval_arena.cli: Arena output files, resume after kill -9, rerun, CLI.

tests/data/arena_runner_golden.json holds the answers files and accuracies that the Arena's own
``evaluate_VQA`` wrote for a scripted model on the layouts of ``build_arena_layouts``.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

import pytest

from eval_arena import cli
from eval_arena.datasets import build_dataset
from eval_arena.metric import vqa_score
from eval_arena.runner import STATE_DIR, evaluate, file_sha256, rerun
from eval_arena import testers
from eval_arena.testers import ScriptedTester, build_tester
from selector.core.errors import InputError
from test_eval_datasets import build_arena_layouts, relative

DATA = Path(__file__).resolve().parents[1] / "data"
REPO = Path(__file__).resolve().parents[2]


def _lookup(table: Dict[str, str]):
    def answer(image: str, prompt: str) -> str:
        hits = [a for q, a in table.items() if q in prompt]
        assert len(hits) == 1, prompt
        return hits[0]

    return answer


@pytest.fixture(scope="module")
def arena(tmp_path_factory):
    base = tmp_path_factory.mktemp("arena")
    return base, build_arena_layouts(base)


def _read(path: Path):
    return json.loads(path.read_text(encoding="utf-8"))


def test_output_files_equal_the_arena_evaluate_vqa(arena, tmp_path):
    """Every dataset end to end (loading, sampling, batching, records, accuracy) against the files
    the Arena's evaluate_VQA wrote for the same scripted model."""
    base, table = arena
    golden = _read(DATA / "arena_runner_golden.json")
    for variant, run_name in (("full", "20240101000000"), ("tiny", "20240101000001")):
        runs = [r for r in golden["runs"] if r["variant"] == variant]
        datasets = [build_dataset(r["dataset"], base, variant=variant,
                                  sample_num=r["sample_num"] if r["sample_num"] is not None else -1,
                                  sample_seed=r["sample_seed"] or 0) for r in runs]
        tester = ScriptedTester(_lookup(table), name="Scripted")
        results, folder = evaluate(tester, datasets, tmp_path / "answers", run_name=run_name,
                                   batch_size=golden["batch_size"] - (variant == "tiny"), progress=False)
        assert folder == tmp_path / "answers" / "Scripted" / run_name
        assert _read(folder / "result.json") == {r["dataset"]: r["accuracy"] for r in runs}
        assert results == {r["dataset"]: r["accuracy"] for r in runs}
        for r in runs:
            records = _read(folder / f"{r['dataset']}.json")
            for record in records:
                record["image_path"] = relative(record["image_path"], base)
            assert records == r["records"], r["dataset"]
            assert [list(x) for x in records] == [list(x) for x in r["records"]]  # key order too
    assert 0.1 < min(r["accuracy"] for r in golden["runs"]) and max(r["accuracy"] for r in golden["runs"]) < 1


def _jsonl_set(folder: Path, n: int) -> Path:
    from test_eval_datasets import _image

    lines = []
    for i in range(n):
        _image(folder / "img" / f"{i}.png", i)
        lines.append(json.dumps({"image": f"img/{i}.png", "question": f"question {i}?",
                                 "answers": [f"answer {i}", "x"] if i % 3 else f"answer {i}"}))
    path = folder / "mine.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _answers_file(folder: Path, n: int) -> Path:
    """Scripted answers: right for i % 4 != 0."""
    path = folder / "scripted.json"
    path.write_text(json.dumps({f"question {i}?": (f"it is answer {i}." if i % 4 else "no idea")
                                for i in range(n)}), encoding="utf-8")
    return path


def _saved_lines(path: Path) -> List[str]:
    if not path.is_file():
        return []
    return [line for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]


def test_resume_after_sigkill_redoes_nothing_finished(tmp_path):
    n, batch = 24, 2
    data = _jsonl_set(tmp_path / "data", n)
    answers = _answers_file(tmp_path, n)
    out = tmp_path / "answers"
    command = [sys.executable, "-m", "eval_arena.cli", "eval", "--tester", "scripted",
               "--tester-arg", f"answers={answers}", "--tester-arg", "delay=0.25",
               "--datasets", f"jsonl:{data}", "--batch-size", str(batch), "--out", str(out),
               "--run-name", "run1", "--no-progress"]
    log = out / "scripted" / "run1" / STATE_DIR / "mine.jsonl"
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while len(_saved_lines(log)) < 3 * batch and time.time() < deadline and process.poll() is None:
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    saved = _saved_lines(log)
    assert 3 * batch <= len(saved) < n, "the run was not interrupted mid-way"
    assert not (out / "scripted" / "run1" / "mine.json").exists()
    with open(log, "a", encoding="utf-8") as handle:  # what a kill in the middle of a write leaves
        handle.write('{"index": 23, "answer": "torn')
    # resume with the same settings (the scripted tester's delay does not change an answer, so
    # it may go): only unsaved questions are asked, each once
    resume = command[3:]
    del resume[resume.index("delay=0.25") - 1:resume.index("delay=0.25") + 1]
    assert cli.main(resume) == 0
    lines = _saved_lines(log)
    assert lines[:len(saved)] == saved and len(lines) == n
    assert sorted(json.loads(line)["index"] for line in lines) == list(range(n))
    folder = out / "scripted" / "run1"
    resumed = _read(folder / "result.json")

    # the result equals an uninterrupted run's
    fresh, fresh_folder = evaluate(ScriptedTester.from_file(answers), [build_dataset(f"jsonl:{data}", ".")],
                                   tmp_path / "fresh", run_name="run1", batch_size=batch, progress=False)
    assert resumed == fresh == {"mine": (n - n // 4) / n}
    assert (folder / "mine.json").read_text() == (fresh_folder / "mine.json").read_text()
    assert (folder / "result.json").read_text() == (fresh_folder / "result.json").read_text()


class _Crashing(ScriptedTester):
    """Fails on the given batch call, like a model running out of memory."""

    def __init__(self, fail_on: int, **kwargs) -> None:
        super().__init__(lambda image, question: "answer " + question.split()[1].rstrip("?"), **kwargs)
        self.fail_on, self.batches = fail_on, 0

    def batch_generate(self, images, questions, max_new_tokens=256):
        self.batches += 1
        if self.batches == self.fail_on:
            raise MemoryError("out of memory")
        return super().batch_generate(images, questions, max_new_tokens)


def test_resume_after_a_crash_and_refusal_of_other_questions(tmp_path):
    data = _jsonl_set(tmp_path / "data", 10)
    dataset = build_dataset(f"jsonl:{data}", ".")
    with pytest.raises(MemoryError):
        evaluate(_Crashing(3, name="m"), [dataset], tmp_path / "out", run_name="r", batch_size=3,
                 progress=False)
    tester = _Crashing(0, name="m")
    results, folder = evaluate(tester, [dataset], tmp_path / "out", run_name="r", batch_size=3, progress=False)
    assert [q for _, q in tester.calls] == [f"question {i}?" for i in range(6, 10)]
    assert results == {"mine": 1.0}
    assert [r["answer"] for r in _read(folder / "mine.json")] == [f"answer {i}" for i in range(10)]
    # same run folder, other sampling: refused, nothing mixed
    other = build_dataset(f"jsonl:{data}", ".", sample_num=4, sample_seed=1)
    with pytest.raises(InputError, match=r"other settings \(differing: datasets\.mine\.fingerprint, "
                       r"datasets\.mine\.questions, datasets\.mine\.sample_num"):
        evaluate(tester, [other], tmp_path / "out", run_name="r", batch_size=3, progress=False)
    # a finished run resumes without asking anything
    again = _Crashing(0, name="m")
    assert evaluate(again, [dataset], tmp_path / "out", run_name="r", batch_size=3,
                    progress=False)[0] == results
    assert again.calls == []


def test_rerun_rescores_without_a_model(tmp_path):
    data = _jsonl_set(tmp_path / "data", 12)
    answers = _answers_file(tmp_path, 12)
    results, folder = evaluate(ScriptedTester.from_file(answers, name="m"),
                               [build_dataset(f"jsonl:{data}", ".")], tmp_path / "out", progress=False)
    assert len(folder.name) == 14 and folder.name.isdigit()  # %Y%m%d%H%M%S
    original = (folder / "result.json").read_bytes()
    state = (folder / STATE_DIR / "run.json").read_bytes()
    assert rerun(folder) == results == {"mine": 9 / 12}
    assert _read(folder / "result.arena.json") == results
    records = _read(folder / "mine.json")
    expected_vqa = sum(vqa_score(r["answer"], r["gt_answers"]) for r in records) / len(records)
    assert rerun(folder, metric="vqa", write=False) == {"mine": expected_vqa}
    assert not (folder / "result.vqa.json").exists()  # --print-only writes nothing
    assert rerun(folder, metric="vqa") == {"mine": expected_vqa}
    assert _read(folder / "result.vqa.json") == {"mine": expected_vqa}
    assert rerun(folder) == results  # the rerun files are not read as answers
    # the run's own result and state are byte-identical after every rerun
    assert (folder / "result.json").read_bytes() == original
    assert (folder / STATE_DIR / "run.json").read_bytes() == state
    (folder / "result.json").unlink()  # a run that died before its first result still rescores
    assert rerun(folder) == results and not (folder / "result.json").exists()
    records[3]["gt_answers"] = 7
    (folder / "mine.json").write_text(json.dumps(records))
    with pytest.raises(InputError, match=r"mine.json: item 3: 'gt_answers' must be"):
        rerun(folder)
    with pytest.raises(InputError, match="no answer files"):
        rerun(tmp_path / "data")


def test_tester_protocol_and_registry(tmp_path):
    tester = build_tester("scripted", {"default": "dunno", "name": "bot"})
    assert isinstance(tester, testers.Tester) and tester.name == "bot"
    assert tester.generate("img.png", "anything?") == "dunno"
    assert tester.batch_generate(["a", "b"], ["q1", "q2"], max_new_tokens=5) == ["dunno", "dunno"]
    assert build_tester("scripted", {"echo": "1"}).generate("i", "hello") == "hello"
    with pytest.raises(InputError, match="unknown tester 'gpt9'"):
        build_tester("gpt9")
    with pytest.raises(InputError, match="bad --tester-arg"):
        build_tester("scripted", {"temperature": "0"})
    with pytest.raises(InputError, match="no answer for question"):
        ScriptedTester({}).generate("i", "q")

    class Broken(ScriptedTester):
        def batch_generate(self, images, questions, max_new_tokens=256):
            return ["only one"]

    data = _jsonl_set(tmp_path, 3)
    with pytest.raises(RuntimeError, match="returned 1 answers for 2 questions"):
        evaluate(Broken({}, default="x"), [build_dataset(f"jsonl:{data}", ".")], tmp_path / "o",
                 batch_size=2, progress=False)
    dataset = build_dataset(f"jsonl:{data}", ".")
    with pytest.raises(InputError, match="listed twice"):
        evaluate(tester, [dataset, dataset], tmp_path / "o", progress=False)


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="igpt4")
    commands = parser.add_subparsers(dest="command", required=True)
    cli.add_parsers(commands)
    return parser.parse_args(list(argv))


def test_cli_eval_and_rerun(arena, tmp_path, capsys):
    base, table = arena
    answers = tmp_path / "answers.json"  # {prompt: answer}, as ScriptedTester.from_file reads it
    prompts = [i.question for name in ("gqa", "iconqa") for i in build_dataset(name, base).items]
    answers.write_text(json.dumps({p: _lookup(table)("", p) for p in prompts}))
    args = _parse("eval", "--tester", "scripted", "--tester-arg", f"answers={answers}",
                  "--datasets", "gqa,IconQA", "--data-root", str(base), "--sample-num", "4",
                  "--sample-seed", "3", "--batch-size", "2", "--out", str(tmp_path / "out"),
                  "--run-name", "t1", "--no-progress")
    assert args.command == "eval" and args.eval_command is None
    assert cli.run(args) == 0
    folder = tmp_path / "out" / "scripted" / "t1"
    result = _read(folder / "result.json")
    assert list(result) == ["GQA", "IconQA"]
    assert capsys.readouterr().out.splitlines() == [f"{k}:{v}" for k, v in result.items()]
    gqa = build_dataset("gqa", base, sample_num=4, sample_seed=3)
    assert [r["question"] for r in _read(folder / "GQA.json")] == [i.question for i in gqa.items]
    state = _read(folder / STATE_DIR / "run.json")
    assert state["tester"] == {"name": "scripted", "args": {"answers": str(answers)},
                               "files": {"answers": file_sha256(answers)}}
    assert len(state["fingerprint"]) == 16 and state["answers"]["batch_size"] == 2
    assert state["datasets"]["GQA"]["sample_num"] == 4

    args = _parse("eval", "rerun", str(folder), "--metric", "vqa", "--print-only")
    assert args.eval_command == "rerun"
    assert cli.run(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == ["GQA", "IconQA"]
    assert _read(folder / "result.json") == result
    assert not (folder / "result.vqa.json").exists()
    original = (folder / "result.json").read_bytes()
    assert cli.run(_parse("eval", "rerun", str(folder), "--metric", "vqa")) == 0
    assert [line.split(":")[0] for line in capsys.readouterr().out.splitlines()] == ["GQA", "IconQA"]
    assert list(_read(folder / "result.vqa.json")) == ["GQA", "IconQA"]
    assert (folder / "result.json").read_bytes() == original

    with pytest.raises(InputError, match="eval needs --tester"):
        cli.run(_parse("eval", "--datasets", "gqa", "--data-root", str(base)))
    with pytest.raises(InputError, match="needs --data-root"):
        cli.run(_parse("eval", "--tester", "scripted", "--datasets", "gqa"))
    with pytest.raises(InputError, match="expected KEY=VALUE"):
        cli.run(_parse("eval", "--tester", "scripted", "--tester-arg", "oops", "--datasets", "gqa",
                       "--data-root", str(base)))


def test_cli_import_is_light_and_errors_are_one_line(tmp_path):
    probe = ("import sys, eval_arena.cli; "
             "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'numpy', 'PIL', 'tqdm')))")
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    result = subprocess.run([sys.executable, "-m", "eval_arena.cli", "eval", "--tester", "scripted",
                             "--tester-arg", "default=x", "--datasets", "gqa", "--data-root", str(tmp_path)],
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("igpt4: error: GQA (testdev): questions/testdev_balanced_questions.json not found")


def test_cli_hosts_eval_judge_when_present(monkeypatch, tmp_path):
    judge_cli = pytest.importorskip("eval_arena.judge_cli", reason="eval judge is not in this tree")
    seen = []
    monkeypatch.setattr(judge_cli, "run_judge", lambda args: seen.append(args.questions) or 7)
    args = _parse("eval", "judge", "--questions", "q.jsonl", "--answers", "a.json", "--out", str(tmp_path))
    assert args.eval_command == "judge"
    assert cli.run(args) == 7 and seen == ["q.jsonl"]
