"""A resumed ``igpt4 eval`` run never mixes models, and ``eval rerun`` never changes a run's result.

Every setting that decides the answers (tester, its arguments and resolved settings, the bytes of
the files they name, --max-new-tokens, --batch-size, the datasets' questions) is fingerprinted in
``.igpt4/run.json``; a resume with any of them different is refused with one line naming the run
folder and the differing keys, and leaves the run folder byte-identical. ``--new-run`` starts a
fresh run folder beside it instead.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Dict, List

import pytest

from eval_arena import cli
from eval_arena.datasets import build_dataset
from eval_arena.runner import (STATE_DIR, answer_settings, differing_keys, evaluate, fingerprint,
                               rerun)
from eval_arena.testers import ScriptedTester
from selector.core.errors import InputError
from test_eval_runner import _answers_file, _jsonl_set


def _tree(folder: Path) -> Dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture()
def world(tmp_path):
    data = _jsonl_set(tmp_path / "data", 6)
    answers = _answers_file(tmp_path, 6)
    return {"data": data, "answers": answers, "out": tmp_path / "out", "tmp": tmp_path}


def _argv(world, *extra: str, answers=None) -> List[str]:
    return ["eval", "--tester", "scripted", "--tester-arg", f"answers={answers or world['answers']}",
            "--datasets", f"jsonl:{world['data']}", "--out", str(world["out"]), "--run-name", "r1",
            "--no-progress", *extra]


def _one_line(capsys, argv: List[str]) -> str:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    [line] = [line for line in err.splitlines() if line.startswith("igpt4: error: ")]
    return line


@pytest.fixture()
def started(world, capsys):
    """A finished run ``r1`` and its folder's bytes."""
    assert cli.main(_argv(world, "--batch-size", "2")) == 0
    capsys.readouterr()
    folder = world["out"] / "scripted" / "r1"
    return folder, _tree(folder)


def _other_answers(world) -> Path:
    other = world["tmp"] / "other.json"
    other.write_text(json.dumps({f"question {i}?": "wrong" for i in range(6)}))
    return other


@pytest.mark.parametrize("change, key", [
    ("other answers file", "tester.files.answers"),
    ("answers file rewritten in place", "tester.files.answers"),
    ("max new tokens", "max_new_tokens"),
    ("batch size", "batch_size"),
    ("other sampling", "datasets.mine."),
    ("other tester argument", "tester.args.default"),
])
def test_resume_with_other_settings_is_refused_and_changes_nothing(world, started, capsys,
                                                                   change, key):
    folder, before = started
    argv = _argv(world, "--batch-size", "2")
    if change == "other answers file":
        argv = _argv(world, "--batch-size", "2", answers=_other_answers(world))
    elif change == "answers file rewritten in place":
        world["answers"].write_text(json.dumps({f"question {i}?": "changed" for i in range(6)}))
    elif change == "max new tokens":
        argv += ["--max-new-tokens", "12"]
    elif change == "batch size":
        argv[argv.index("2")] = "3"
    elif change == "other sampling":
        argv += ["--sample-num", "3", "--sample-seed", "1"]
    else:
        argv += ["--tester-arg", "default=dunno"]
    line = _one_line(capsys, argv)
    assert str(folder) in line and key in line and "--new-run" in line, line
    assert _tree(folder) == before


def test_resume_with_the_same_settings_continues(world, started, capsys):
    folder, before = started
    # the same bytes under another path are the same model; the scripted delay changes no answer
    copy = world["tmp"] / "copy.json"
    shutil.copy(world["answers"], copy)
    assert cli.main(_argv(world, "--batch-size", "2", "--tester-arg", "delay=0",
                          answers=copy)) == 0
    assert _tree(folder)[".igpt4/mine.jsonl"] == before[".igpt4/mine.jsonl"]  # nothing re-asked
    assert (folder / "result.json").read_bytes() == before["result.json"]
    # a dataset added to a run with the same settings is answered into the same run
    second = _jsonl_set(world["tmp"] / "second", 3).rename(world["tmp"] / "second" / "extra.jsonl")
    argv = _argv(world, "--batch-size", "2")
    argv[argv.index(f"jsonl:{world['data']}")] += f",jsonl:{second}"
    assert cli.main(argv) == 0
    assert list(json.loads((folder / "result.json").read_text())) == ["mine", "extra"]


def test_new_run_starts_beside_and_keeps_the_old_run(world, started, capsys):
    folder, before = started
    other = _other_answers(world)
    assert cli.main(_argv(world, "--new-run", answers=other)) == 0
    assert _tree(folder) == before
    fresh = folder.parent / "r1-2"
    assert json.loads((fresh / "result.json").read_text()) == {"mine": 0.0}
    assert all(r["answer"] == "wrong" for r in json.loads((fresh / "mine.json").read_text()))
    assert cli.main(_argv(world, "--new-run", "--batch-size", "2")) == 0
    assert (folder.parent / "r1-3" / "result.json").read_bytes() == before["result.json"]
    assert _tree(folder) == before
    capsys.readouterr()


def test_in_process_testers_are_told_apart_by_class_and_settings(tmp_path):
    class Model(ScriptedTester):
        def __init__(self, **settings) -> None:
            super().__init__({}, default="yes", name="m")
            self.settings = {"ckpt": "a.pth", "mode": "deterministic", "seed": 0, **settings}

    dataset = build_dataset(f"jsonl:{_jsonl_set(tmp_path / 'd', 4)}", ".")
    evaluate(Model(), [dataset], tmp_path / "o", run_name="r", progress=False)
    folder = tmp_path / "o" / "m" / "r"
    before = _tree(folder)
    for tester, key in ((Model(seed=1), "tester.resolved.seed"),
                        (Model(ckpt="b.pth"), "tester.resolved.ckpt"),
                        (ScriptedTester({}, default="yes", name="m"), "tester.class")):
        with pytest.raises(InputError, match=key.replace(".", r"\.")) as caught:
            evaluate(tester, [dataset], tmp_path / "o", run_name="r", progress=False)
        assert str(folder) in str(caught.value)
        assert _tree(folder) == before
    again = Model()
    evaluate(again, [dataset], tmp_path / "o", run_name="r", progress=False)
    assert again.calls == []


def test_a_run_state_without_a_fingerprint_is_not_resumed(world, started, capsys):
    folder, _ = started
    state_path = folder / STATE_DIR / "run.json"
    state = json.loads(state_path.read_text())
    for key in ("answers", "fingerprint"):  # what an older version wrote
        del state[key]
    state_path.write_text(json.dumps(state))
    before = _tree(folder)
    line = _one_line(capsys, _argv(world, "--batch-size", "2"))
    assert str(folder) in line and "batch_size" in line
    assert _tree(folder) == before
    for hostile in ("[1, 2]", '{"datasets": 7}', "{"):
        state_path.write_text(hostile)
        line = _one_line(capsys, _argv(world, "--batch-size", "2"))
        assert "run.json" in line


def test_fingerprint_and_differing_keys():
    base = answer_settings({"name": "tiny", "args": {"ckpt": "x.pth", "mode": "arena"},
                            "resolved": {"ckpt": "x.pth", "seed": 1},
                            "files": {"ckpt": "aa", "resolved.ckpt": "aa"}}, 256, 4)
    # a file is its bytes: the path it was given under is not part of the fingerprint
    moved = answer_settings({"name": "tiny", "args": {"ckpt": "/elsewhere/y.pth", "mode": "arena"},
                             "resolved": {"ckpt": "/elsewhere/y.pth", "seed": 1},
                             "files": {"ckpt": "aa", "resolved.ckpt": "aa"}}, 256, 4)
    assert fingerprint(base) == fingerprint(moved)
    other = answer_settings({"name": "tiny", "args": {"ckpt": "x.pth", "mode": "arena"},
                             "resolved": {"ckpt": "x.pth", "seed": 2},
                             "files": {"ckpt": "bb", "resolved.ckpt": "bb"}}, 256, 4)
    assert differing_keys(base, other) == ["tester.files.ckpt", "tester.files.resolved.ckpt",
                                           "tester.resolved.seed"]
    assert fingerprint(base) != fingerprint(other)
    assert differing_keys(base, dict(base, batch_size=8)) == ["batch_size"]
    assert "a" in differing_keys(None, {"a": 1})  # nothing recorded: everything differs
    scripted = answer_settings({"name": "scripted", "args": {"delay": "3", "default": "x"}}, 9, 1)
    assert scripted["tester"]["args"] == {"default": "x"}  # delay changes no answer


def test_tiny_tester_checkpoint_bytes_are_part_of_the_run(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    from lavis_plugins.tiny_model import TinyMiniGPT4

    torch.manual_seed(0)
    state = {k: v.detach().clone() for k, v in TinyMiniGPT4().state_dict().items()
             if k.startswith("llama_proj")}
    ckpt = tmp_path / "checkpoint_1.pth"
    config = {"model": {"arch": "igpt4_tiny_minigpt4", "seed": 0}}
    torch.save({"model": state, "config": config}, ckpt)
    data = _jsonl_set(tmp_path / "d", 2)
    argv = ["eval", "--tester", "tiny", "--tester-arg", f"ckpt={ckpt}", "--tester-arg",
            "mode=deterministic", "--datasets", f"jsonl:{data}", "--max-new-tokens", "3",
            "--out", str(tmp_path / "o"), "--run-name", "t", "--no-progress"]
    assert cli.main(argv) == 0
    folder = tmp_path / "o" / "tiny" / "t"
    run = json.loads((folder / STATE_DIR / "run.json").read_text())
    assert set(run["tester"]["files"]) >= {"ckpt", "resolved.ckpt"}
    assert run["answers"]["tester"]["resolved"]["mode"] == "deterministic"
    before = _tree(folder)
    # the checkpoint overwritten in place by another training run: another model
    torch.save({"model": {k: v + 1 for k, v in state.items()}, "config": config}, ckpt)
    capsys.readouterr()
    line = _one_line(capsys, argv)
    assert str(folder) in line and "tester.files.ckpt" in line
    assert _tree(folder) == before
    # other decoding settings
    line = _one_line(capsys, [a if a != "mode=deterministic" else "mode=arena" for a in argv])
    assert "tester.resolved.mode" in line and _tree(folder) == before


def test_rerun_writes_beside_the_result_and_keeps_it_byte_identical(world, started, capsys):
    folder, before = started
    for metric in ("vqa", "arena", "vqa"):
        assert cli.main(["eval", "rerun", str(folder), "--metric", metric]) == 0
        out, err = capsys.readouterr()
        assert f"result.{metric}.json" in err
        assert json.loads((folder / f"result.{metric}.json").read_text()) == \
            {line.split(":")[0]: float(line.split(":")[1]) for line in out.splitlines()}
    after = _tree(folder)
    assert {k: v for k, v in after.items() if not k.startswith("result.")} == \
        {k: v for k, v in before.items() if not k.startswith("result.")}
    assert after["result.json"] == before["result.json"]
    assert rerun(folder) == json.loads(before["result.json"])  # result.*.json are not answers
    assert cli.main(["eval", "rerun", str(folder), "--print-only", "--metric", "vqa"]) == 0
    assert _tree(folder) == after
    import argparse  # the command's --help says where the rerun writes

    parser = argparse.ArgumentParser(prog="igpt4")
    cli.add_parsers(parser.add_subparsers(dest="command"))
    with pytest.raises(SystemExit):
        parser.parse_args(["eval", "rerun", "--help"])
    assert "result.METRIC.json" in capsys.readouterr().out


def test_a_dataset_named_like_the_result_file_is_refused(tmp_path):
    data = _jsonl_set(tmp_path / "d", 2).rename(tmp_path / "d" / "result.jsonl")
    with pytest.raises(InputError, match="result"):
        evaluate(ScriptedTester({}, default="x"), [build_dataset(f"jsonl:{data}", ".")],
                 tmp_path / "o", progress=False)


def test_rerun_reads_answers_holding_replacement_characters(tmp_path):
    """Model output is read as written: a model cut off inside a character leaves U+FFFD, which
    the mojibake checks for user data would refuse; ``eval rerun`` must still rescore it."""
    from eval_arena.runner import read_answers

    path = tmp_path / "GQA.json"
    path.write_text(json.dumps([{"question": "q?", "answer": "a bl\ufffd\ufffd", "gt_answers": "a",
                                 "image_path": "x.jpg", "model_name": "m"}], ensure_ascii=False),
                    encoding="utf-8")
    assert read_answers(path)[0]["answer"] == "a bl\ufffd\ufffd"
