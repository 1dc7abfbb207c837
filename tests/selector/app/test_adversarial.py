"""A hostile user against every command: for each case, the exit status, exactly one error line
naming the file and the sample (or the key), no traceback, and every input byte-identical
afterwards.

The cases run in-process through :func:`selector.cli.main` (a fresh interpreter per case would
cost minutes); an exception escaping ``main`` is a traceback a user would have seen and fails the
case. Cases that need a real process (kill -9, Ctrl-C) live at the end and use subprocesses.
"""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import pytest

from conftest import REPO, make_cc_sbu_align, make_conversations, tree_digest, write_image
from selector.app.cli import main

# ---------------------------------------------------------------------------------------------
# the world a hostile user starts from


class Evil:
    """Unpickling this creates a marker file: the proof that a loader ran code from a file."""

    marker = ""

    def __reduce__(self):
        return (open, (self.marker, "w"))


def evil_pickle(path: Path, marker: Path) -> Path:
    import torch

    Evil.marker = str(marker)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {"w": Evil()}, "config": {"x": 1}}, path)
    return path


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A valid PNG whose header claims ``width`` x ``height`` pixels (a decompression bomb)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = zlib.compress(b"\x00" * 64)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows)
                     + chunk(b"IEND", b""))
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory, selected_data):
    """Inputs of every kind, in one folder whose bytes every case must leave unchanged."""
    root, data = selected_data
    base = tmp_path_factory.mktemp("hostile")
    inputs = base / "inputs"
    inputs.mkdir()
    ids = json.loads((data / "filter_cap.json").read_text())["annotations"]
    small = {a["image_id"]: a["caption"] for a in ids[:6]}
    world = {
        "pool": root / "pool.safetensors",
        "ckpt": root / "ckpt",
        "subsets": root / "subsets.json",
        "labels": root / "labels.json",
        "data": data,
        "small": make_cc_sbu_align(inputs / "small", small),
        "conv": make_conversations(inputs / "conv"),
        "inputs": inputs,
        "root": root,
        "base": base,
    }
    # an Arena-style jsonl evaluation set and scripted answers for it
    lines = []
    for i in range(4):
        write_image(inputs / "vqa" / "img" / f"{i}.jpg")
        lines.append(json.dumps({"image": f"img/{i}.jpg", "question": f"question {i}?",
                                 "answers": [f"answer {i}"]}))
    (inputs / "vqa" / "set.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (inputs / "answers.json").write_text(json.dumps(
        {f"question {i}?": f"answer {i}" for i in range(4)}), encoding="utf-8")
    world["vqa"] = inputs / "vqa" / "set.jsonl"
    world["answers"] = inputs / "answers.json"
    return world


def run(capsys, argv: Sequence[str]) -> "Outcome":
    capsys.readouterr()
    try:
        status = main([str(a) for a in argv])
    except SystemExit as exc:  # argparse's own usage errors
        status = exc.code if isinstance(exc.code, int) else 2
    captured = capsys.readouterr()
    return Outcome(status, captured.out, captured.err)


class Outcome:
    def __init__(self, status: int, out: str, err: str) -> None:
        self.status, self.out, self.err = status, out, err

    def error_line(self, *fragments: str) -> str:
        assert self.status == 2, (self.status, self.err[-2000:])
        assert "Traceback" not in self.err, self.err
        lines = [line for line in self.err.splitlines() if ": error:" in line]
        assert len(lines) == 1, self.err
        for fragment in fragments:
            assert fragment in lines[0], (fragment, lines[0])
        return lines[0]


def check_refused(capsys, world, argv: Sequence[str], *fragments: str,
                  watched: Optional[Sequence[Path]] = None) -> str:
    """Run ``argv``; assert one error line holding ``fragments`` and that the watched inputs
    (default: every input of the world) are byte-identical afterwards."""
    folders = list(watched or [world["inputs"], world["root"]])
    before = [tree_digest(folder) for folder in folders]
    line = run(capsys, argv).error_line(*fragments)
    after = [tree_digest(folder) for folder in folders]
    assert before == after, "an input changed"
    return line


# ---------------------------------------------------------------------------------------------
# validate: broken data of every kind


def _cc(tmp_path: Path, annotations, raw: Optional[bytes] = None, images: bool = True) -> Path:
    folder = tmp_path / "cc"
    folder.mkdir(parents=True, exist_ok=True)
    text = raw if raw is not None else json.dumps({"annotations": annotations}).encode("utf-8")
    (folder / "filter_cap.json").write_bytes(text)
    if images:
        for entry in annotations if isinstance(annotations, list) else []:
            if isinstance(entry, dict) and isinstance(entry.get("image_id"), str) \
                    and len(entry["image_id"]) < 100 and "\n" not in entry["image_id"] \
                    and "/" not in entry["image_id"]:
                write_image(folder / "image" / f"{entry['image_id']}.jpg")
    return folder


GOOD = {"image_id": "7", "caption": "A red square on a grey table."}

VALIDATE_CASES = {
    "malformed json": (None, b'{"annotations": [', ["filter_cap.json"]),
    "annotations not a list": (None, b'{"annotations": {"a": 1}}', ["filter_cap.json"]),
    "top level a list": (None, b'[1, 2]', ["filter_cap.json"]),
    "empty file": (None, b"", ["filter_cap.json"]),
    "caption not text": ([GOOD, {"image_id": "8", "caption": 5}], None, ["filter_cap.json", "8"]),
    "caption missing": ([GOOD, {"image_id": "9"}], None, ["filter_cap.json", "9"]),
    "duplicate id": ([GOOD, dict(GOOD)], None, ["filter_cap.json", "7"]),
    "boolean id": ([GOOD, {"image_id": True, "caption": "x y"}], None, ["filter_cap.json"]),
    "id with newline": ([GOOD, {"image_id": "a\nb", "caption": "x y"}], None, ["filter_cap.json"]),
    "300-character id": ([GOOD, {"image_id": "x" * 300, "caption": "x y"}], None,
                         ["filter_cap.json"]),
    "path traversal id": ([GOOD, {"image_id": "../../etc/passwd", "caption": "x y"}], None,
                          ["filter_cap.json"]),
    "entry not an object": ([GOOD, "just text"], None, ["filter_cap.json"]),
}


@pytest.mark.parametrize("case", sorted(VALIDATE_CASES))
def test_validate_refuses_broken_cc_sbu_align(capsys, tmp_path, world, case):
    annotations, raw, fragments = VALIDATE_CASES[case]
    folder = _cc(tmp_path, annotations, raw)
    before = tree_digest(folder)
    run(capsys, ["validate", folder]).error_line(*fragments)
    assert tree_digest(folder) == before


def _one_image_case(tmp_path: Path, damage: Callable[[Path], None]) -> Path:
    folder = _cc(tmp_path, [GOOD, {"image_id": "8", "caption": "A blue circle."}])
    damage(folder / "image" / "8.jpg")
    return folder


IMAGE_DAMAGE = {
    "truncated jpeg": lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]),
    "zero bytes": lambda p: p.write_bytes(b""),
    "text renamed jpg": lambda p: p.write_text("not an image at all"),
    "missing file": lambda p: p.unlink(),
    "a folder": lambda p: (p.unlink(), p.mkdir()),
    "decompression bomb": lambda p: (p.unlink(), png_header_only(p, 40000, 40000)),
}


@pytest.mark.parametrize("case", sorted(IMAGE_DAMAGE))
def test_validate_refuses_broken_images(capsys, tmp_path, case):
    folder = _one_image_case(tmp_path, IMAGE_DAMAGE[case])
    before = tree_digest(folder)
    run(capsys, ["validate", folder]).error_line("8")
    assert tree_digest(folder) == before


@pytest.mark.parametrize("case", ["truncated jpeg", "decompression bomb"])
def test_validate_skip_invalid_reports_broken_images(capsys, tmp_path, case):
    folder = _one_image_case(tmp_path, IMAGE_DAMAGE[case])
    report = tmp_path / "report.json"
    outcome = run(capsys, ["validate", folder, "--skip-invalid", "--report", report])
    assert outcome.status == 2 and "Traceback" not in outcome.err
    assert "1 valid samples, 1 invalid" in outcome.out
    assert "8" in json.dumps(json.loads(report.read_text()))


def test_validate_utf8_bom_is_accepted(capsys, tmp_path):
    folder = _cc(tmp_path, [GOOD])
    raw = (folder / "filter_cap.json").read_bytes()
    (folder / "filter_cap.json").write_bytes(b"\xef\xbb\xbf" + raw)
    outcome = run(capsys, ["validate", folder])
    assert outcome.status == 0, outcome.err
    assert "1 valid samples" in outcome.out


@pytest.mark.parametrize("encoding", ["latin-1", "cp1252"])
def test_validate_never_accepts_mojibake(capsys, tmp_path, encoding):
    """A latin-1/cp1252 caption must not come back as GB18030 garbage without a word."""
    entry = {"image_id": "7", "caption": "Un café très élégant, à côté d'une crème brûlée."}
    raw = json.dumps({"annotations": [entry]}, ensure_ascii=False).encode(encoding)
    folder = _cc(tmp_path, [entry], raw)
    outcome = run(capsys, ["validate", folder])
    if outcome.status == 0:  # only acceptable if the text was decoded correctly and said so
        pytest.fail(f"{encoding} file accepted: {outcome.out} {outcome.err}")
    outcome.error_line("filter_cap.json")


def test_validate_forced_encoding(capsys, tmp_path):
    entry = {"image_id": "7", "caption": "Un café très élégant."}
    folder = _cc(tmp_path, [entry], json.dumps({"annotations": [entry]},
                                               ensure_ascii=False).encode("latin-1"))
    outcome = run(capsys, ["validate", folder, "--encoding", "latin-1"])
    assert outcome.status == 0, outcome.err


CONVERSATION_CASES = {
    "two human turns": [{"from": "human", "value": "<image>\nWhat?"},
                        {"from": "human", "value": "And?"}, {"from": "gpt", "value": "A."}],
    "starts with gpt": [{"from": "gpt", "value": "Hello."},
                        {"from": "human", "value": "<image>\nWhat?"}],
    "turn only image token": [{"from": "human", "value": "<image>"},
                              {"from": "gpt", "value": "A red square."}],
    "unknown role": [{"from": "robot", "value": "<image>\nWhat?"},
                     {"from": "gpt", "value": "A."}],
    "value not text": [{"from": "human", "value": 5}, {"from": "gpt", "value": "A."}],
    "empty conversation": [],
}


@pytest.mark.parametrize("case", sorted(CONVERSATION_CASES))
def test_validate_refuses_broken_conversations(capsys, tmp_path, case):
    records = [{"id": "ok1", "image": "imgs/ok1.jpg", "conversations": [
        {"from": "human", "value": "<image>\nWhat is it?"}, {"from": "gpt", "value": "A cube."}]},
        {"id": "bad1", "image": "imgs/bad1.jpg", "conversations": CONVERSATION_CASES[case]}]
    path = make_conversations(tmp_path / "conv", records)
    before = tree_digest(tmp_path / "conv")
    run(capsys, ["validate", path]).error_line("conversations.json", "bad1")
    assert tree_digest(tmp_path / "conv") == before


# ---------------------------------------------------------------------------------------------
# select


def test_select_into_its_own_data_folder_is_refused(capsys, world, tmp_path):
    data = world["data"]
    for flags in ([], ["--copy-images"]):
        check_refused(capsys, world, ["select", "--pool", world["pool"], "--checkpoint",
                                      world["ckpt"], "--data", data, "--out", data, *flags],
                      "--out", watched=[world["root"]])


@pytest.mark.parametrize("where", ["inside data", "contains pool", "pool itself",
                                   "inside checkpoint", "link to data"])
def test_select_outputs_overlapping_inputs_are_refused(capsys, world, tmp_path, where):
    root = world["root"]
    out = {"inside data": world["data"] / "image" / "sel",
           "contains pool": root,
           "pool itself": world["pool"],
           "inside checkpoint": world["ckpt"] / "sel"}.get(where)
    if where == "link to data":
        out = tmp_path / "link"
        out.symlink_to(world["data"], target_is_directory=True)
    check_refused(capsys, world, ["select", "--pool", world["pool"], "--checkpoint",
                                  world["ckpt"], "--data", world["data"], "--out", out], "--out")


@pytest.mark.parametrize("setting", [["--num", "0"], ["--num", "-3"],
                                     ["--set", "selection.num_samples=abc"],
                                     ["--set", "selection.num_samples=0"],
                                     ["--set", "selection.no_such_key=1"],
                                     ["--set", "nosuchsection.key=1"]])
def test_select_bad_settings(capsys, world, tmp_path, setting):
    line = check_refused(capsys, world, ["select", "--pool", world["pool"], "--checkpoint",
                                         world["ckpt"], "--out", tmp_path / "o", *setting])
    key = setting[1].split("=")[0].split(".")[-1] if setting[0] == "--set" else "num"
    assert key in line
    assert not (tmp_path / "o" / "selected.txt").exists()


@pytest.mark.parametrize("case", ["missing", "garbage", "truncated", "no ids", "ids not json",
                                  "ids not a list", "ids wrong length"])
def test_select_damaged_pool(capsys, world, tmp_path, case):
    from safetensors import safe_open
    from safetensors.numpy import save_file

    good = world["pool"]
    pool = tmp_path / "pool.safetensors"
    if case == "garbage":
        pool.write_bytes(b"\x00" * 100)
    elif case == "truncated":
        pool.write_bytes(good.read_bytes()[:300])
    elif case != "missing":
        with safe_open(str(good), "np") as handle:
            tensors = {k: handle.get_tensor(k) for k in handle.keys()}
            metadata = dict(handle.metadata())
        ids = json.loads(metadata["ids"])
        metadata["ids"] = {"no ids": None, "ids not json": "[1, 2", "ids not a list": '{"a": 1}',
                           "ids wrong length": json.dumps(ids[:-3])}[case]
        if metadata["ids"] is None:
            del metadata["ids"]
        save_file(tensors, str(pool), metadata=metadata)
    check_refused(capsys, world, ["select", "--pool", pool, "--checkpoint", world["ckpt"],
                                  "--out", tmp_path / "o"], "pool.safetensors")


@pytest.mark.parametrize("case", ["no config", "truncated weights", "config not json",
                                  "wrong shape", "pickle"])
def test_select_damaged_checkpoint(capsys, world, tmp_path, case):
    import shutil

    ckpt = tmp_path / "ckpt"
    shutil.copytree(world["ckpt"], ckpt)
    marker = tmp_path / "EXECUTED"
    weights = ckpt / "selector.safetensors"
    if case == "no config":
        (ckpt / "selector.json").unlink()
    elif case == "truncated weights":
        weights.write_bytes(weights.read_bytes()[:200])
    elif case == "config not json":
        (ckpt / "selector.json").write_text("{nope")
    elif case == "wrong shape":
        from safetensors.numpy import load_file, save_file

        tensors = load_file(str(weights))
        name = sorted(tensors, key=lambda k: -tensors[k].size)[0]
        tensors[name] = tensors[name].reshape(-1)[: tensors[name].size // 2].copy()
        save_file(tensors, str(weights))
    if case == "pickle":
        ckpt = evil_pickle(tmp_path / "released.pth", marker)
    check_refused(capsys, world, ["select", "--pool", world["pool"], "--checkpoint", ckpt,
                                  "--num", "20", "--out", tmp_path / "o"], str(ckpt.name))
    assert not marker.exists(), "a checkpoint ran code"


@pytest.mark.parametrize("case", ["absent ids", "malformed", "not a mapping"])
def test_select_bad_clusters_file(capsys, world, tmp_path, case):
    clusters = tmp_path / "clusters.json"
    if case == "absent ids":
        clusters.write_text(json.dumps({"0": ["no-such-id", "other-ghost"]}))
    elif case == "malformed":
        clusters.write_text("{")
    else:
        clusters.write_text(json.dumps(["a", "b"]))
    check_refused(capsys, world, ["select", "--pool", world["pool"], "--checkpoint",
                                  world["ckpt"], "--clusters", clusters, "--num", "20",
                                  "--out", tmp_path / "o"],
                  "clusters.json")


@pytest.mark.parametrize("baseline", ["top:nosuchindicator", "bogus", "top:"])
def test_select_bad_baseline(capsys, world, tmp_path, baseline):
    check_refused(capsys, world, ["select", "--pool", world["pool"], "--baseline", baseline,
                                  "--num", "20", "--out", tmp_path / "o"],
                  baseline.split(":")[-1] or "indicator")


@pytest.mark.parametrize("case", ["missing", "malformed yaml", "not a mapping"])
def test_select_bad_config_file(capsys, world, tmp_path, case):
    config = tmp_path / "mine.yaml"
    if case == "malformed yaml":
        config.write_text("selection: [unclosed\n  num_samples: 3\n")
    elif case == "not a mapping":
        config.write_text("- just\n- a list\n")
    check_refused(capsys, world, ["select", "--pool", world["pool"], "--checkpoint",
                                  world["ckpt"], "--config", config, "--out", tmp_path / "o"],
                  "mine.yaml")


# ---------------------------------------------------------------------------------------------
# train-selector


@pytest.mark.parametrize("labels", [{"0": 1e308}, {"0": "NaN"}, {"0": "high"}, {"0": None},
                                    {"0": [1, 2]}])
def test_train_selector_bad_labels(capsys, world, tmp_path, labels):
    document = json.loads(world["labels"].read_text())
    table = document.get("labels", document)
    table.update(labels)
    path = tmp_path / "labels.json"
    path.write_text(json.dumps({"labels": table}))
    check_refused(capsys, world, ["train-selector", "--pool", world["pool"], "--subsets",
                                  world["subsets"], "--labels", path, "--out", tmp_path / "c"],
                  "labels.json", "0")


def test_train_selector_subsets_with_unknown_ids(capsys, world, tmp_path):
    subsets = json.loads(world["subsets"].read_text())
    subsets["0"] = subsets["0"] + ["ghost-sample"]
    path = tmp_path / "subsets.json"
    path.write_text(json.dumps(subsets))
    check_refused(capsys, world, ["train-selector", "--pool", world["pool"], "--subsets", path,
                                  "--labels", world["labels"], "--out", tmp_path / "c"],
                  "ghost-sample")


@pytest.mark.parametrize("setting", ["training.epochs=0", "training.epochs=-1",
                                     "training.lr=-1", "training.epochs=abc",
                                     "training.lr=nan"])
def test_train_selector_bad_settings(capsys, world, tmp_path, setting):
    key = setting.split("=")[0].split(".")[-1]
    check_refused(capsys, world, ["train-selector", "--pool", world["pool"], "--subsets",
                                  world["subsets"], "--labels", world["labels"], "--out",
                                  tmp_path / "c", "--set", setting], key)


@pytest.mark.parametrize("target", ["pool", "labels folder"])
def test_train_selector_refuses_writing_over_inputs(capsys, world, tmp_path, target):
    out = world["pool"] if target == "pool" else world["root"]
    check_refused(capsys, world, ["train-selector", "--pool", world["pool"], "--subsets",
                                  world["subsets"], "--labels", world["labels"], "--out", out],
                  "--out")


# ---------------------------------------------------------------------------------------------
# reference-select


def _repo_layout(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    (repo / "cc_sbu_align_test").mkdir(parents=True)
    return repo


def test_reference_select_missing_repo(capsys, world, tmp_path):
    check_refused(capsys, world, ["reference-select", "--repo", tmp_path / "nope", "--out",
                                  tmp_path / "o"], "nope")


def test_reference_select_never_unpickles(capsys, world, tmp_path, reference_dir):
    import shutil

    repo = tmp_path / "repo"
    shutil.copytree(reference_dir, repo, ignore=shutil.ignore_patterns("*.jpg", "image"))
    marker = tmp_path / "EXECUTED"
    targets = sorted(repo.rglob("*.pt")) + sorted(repo.rglob("*.pth"))
    assert targets, "the reference layout has no torch files"
    for target in targets:
        evil_pickle(target, marker)
    outcome = run(capsys, ["reference-select", "--repo", repo, "--out", tmp_path / "o"])
    outcome.error_line()
    assert not marker.exists(), "a released file ran code"


def test_reference_select_num_zero(capsys, world, tmp_path, reference_dir):
    check_refused(capsys, world, ["reference-select", "--repo", reference_dir, "--out",
                                  tmp_path / "o", "--num", "0"], "num")


def test_reference_select_out_inside_repo(capsys, world, tmp_path, reference_dir):
    before = tree_digest(reference_dir / "cluster")
    run(capsys, ["reference-select", "--repo", reference_dir, "--out",
                 reference_dir / "cluster" / "out"]).error_line("--out")
    assert tree_digest(reference_dir / "cluster") == before


# ---------------------------------------------------------------------------------------------
# split and labels collect


@pytest.mark.parametrize("k", ["0", "-2", "100000"])
def test_split_bad_k(capsys, world, tmp_path, k):
    check_refused(capsys, world, ["split", "--pool", world["pool"], "--data", world["data"],
                                  "--out", tmp_path / "s", "--k", k], "k")


def test_split_into_data_folder(capsys, world, tmp_path):
    check_refused(capsys, world, ["split", "--pool", world["pool"], "--data", world["data"],
                                  "--out", world["data"] / "subsets", "--k", "2"], "--out")


@pytest.mark.parametrize("case", ["malformed yaml", "missing"])
def test_split_bad_template(capsys, world, tmp_path, case):
    template = tmp_path / "template.yaml"
    if case == "malformed yaml":
        template.write_text("model: {arch: [\n")
    check_refused(capsys, world, ["split", "--pool", world["pool"], "--data", world["data"],
                                  "--out", tmp_path / "s", "--k", "2", "--template", template],
                  "template.yaml")


def test_split_subsets_naming_unknown_samples(capsys, world, tmp_path):
    subsets = tmp_path / "subsets.json"
    subsets.write_text(json.dumps({"0": ["ghost-1"], "1": ["ghost-2"]}))
    check_refused(capsys, world, ["split", "--subsets", subsets, "--data", world["data"],
                                  "--out", tmp_path / "s"], "ghost-")


def _result(folder: Path, body: str) -> Path:
    run_dir = folder / "answers" / "minigpt4" / "20240101000000"
    run_dir.mkdir(parents=True)
    (run_dir / "result.json").write_text(body, encoding="utf-8")
    return folder


@pytest.mark.parametrize("body", ["{", '{"GQA": "abc", "IconQA": 0.5, "OKVQA": 0.5, '
                                  '"ScienceQA": 0.5}', '[0.5]', '{"GQA": 1e999}'])
def test_labels_collect_bad_result_files(capsys, world, tmp_path, body):
    subset = _result(tmp_path / "00", body)
    before = tree_digest(subset)
    run(capsys, ["labels", "collect", subset, "--out", tmp_path / "labels.json"]).error_line(
        "result.json")
    assert tree_digest(subset) == before
    assert not (tmp_path / "labels.json").exists()


def test_labels_collect_refuses_writing_over_an_input(capsys, world, tmp_path):
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps({"labels": {"0": 50.0}}))
    before = labels.read_bytes()
    run(capsys, ["labels", "collect", labels, "--out", labels]).error_line("--out")
    assert labels.read_bytes() == before


# ---------------------------------------------------------------------------------------------
# eval, eval rerun, eval judge


def _eval(world, out: Path, *extra: str) -> List[str]:
    return ["eval", "--tester", "scripted", "--tester-arg", f"answers={world['answers']}",
            "--datasets", f"jsonl:{world['vqa']}", "--out", out, "--run-name", "r1",
            "--no-progress", *extra]


@pytest.mark.parametrize("argv,fragment", [
    (["--batch-size", "0"], "batch"),
    (["--sample-num", "-5"], "sample"),
    (["--tester-arg", "delay=abc"], "delay"),
    (["--tester-arg", "noequals"], "noequals"),
])
def test_eval_bad_arguments(capsys, world, tmp_path, argv, fragment):
    check_refused(capsys, world, _eval(world, tmp_path / "ans", *argv), fragment)


def test_eval_unknown_tester_and_dataset(capsys, world, tmp_path):
    check_refused(capsys, world, ["eval", "--tester", "nosuch", "--datasets",
                                  f"jsonl:{world['vqa']}", "--out", tmp_path / "a"], "nosuch")
    check_refused(capsys, world, ["eval", "--tester", "scripted", "--tester-arg",
                                  f"answers={world['answers']}", "--datasets",
                                  f"jsonl:{tmp_path / 'ghost.jsonl'}", "--out", tmp_path / "a"],
                  "ghost.jsonl")


def test_eval_output_inside_the_data_is_refused(capsys, world, tmp_path):
    check_refused(capsys, world, _eval(world, world["vqa"]), "--out")
    check_refused(capsys, world, _eval(world, world["inputs"]), "--out")


def test_eval_resume_with_other_settings_is_refused(capsys, world, tmp_path):
    out = tmp_path / "ans"
    assert run(capsys, _eval(world, out)).status == 0
    run_dir = out / "scripted" / "r1"
    before = tree_digest(run_dir)
    other = tmp_path / "other.json"
    other.write_text(json.dumps({f"question {i}?": "wrong" for i in range(4)}))
    argv = _eval(world, out)
    argv[argv.index(f"answers={world['answers']}")] = f"answers={other}"
    run(capsys, argv).error_line("r1")
    assert tree_digest(run_dir) == before


def test_eval_rerun_keeps_the_original_result(capsys, world, tmp_path):
    out = tmp_path / "ans"
    assert run(capsys, _eval(world, out)).status == 0
    run_dir = out / "scripted" / "r1"
    original = (run_dir / "result.json").read_bytes()
    outcome = run(capsys, ["eval", "rerun", run_dir, "--metric", "vqa"])
    assert outcome.status == 0, outcome.err
    assert (run_dir / "result.json").read_bytes() == original
    run(capsys, ["eval", "rerun", tmp_path / "nope"]).error_line("nope")


def _judge_inputs(tmp_path: Path) -> Dict[str, Path]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    questions = tmp_path / "questions.jsonl"
    questions.write_text("\n".join(json.dumps({
        "question_id": i, "image": f"{i}.jpg", "category": "detail", "text": f"Question {i}?"})
        for i in range(3)) + "\n", encoding="utf-8")
    references = tmp_path / "references.jsonl"
    references.write_text("\n".join(json.dumps({"question_id": i, "text": f"Reference {i}."})
                                    for i in range(3)) + "\n", encoding="utf-8")
    answers = tmp_path / "answers.jsonl"
    answers.write_text("\n".join(json.dumps({"question_id": i, "text": f"Answer {i}."})
                                 for i in range(3)) + "\n", encoding="utf-8")
    return {"questions": questions, "references": references, "answers": answers}


@pytest.mark.parametrize("case", ["answers malformed line", "questions missing", "no key",
                                  "out over answers"])
def test_eval_judge_hostile_inputs(capsys, world, tmp_path, monkeypatch, case):
    files = _judge_inputs(tmp_path / "in")
    out = tmp_path / "judged"
    monkeypatch.setenv("OPENAI_API_KEY", "sk-hostile-test-key")
    fragment = {"answers malformed line": "answers.jsonl", "questions missing": "ghost.jsonl",
                "no key": "OPENAI_API_KEY", "out over answers": "--out"}[case]
    if case == "answers malformed line":
        with open(files["answers"], "a", encoding="utf-8") as handle:
            handle.write('{"question_id": 3, "text": \n')
    elif case == "questions missing":
        files["questions"] = tmp_path / "ghost.jsonl"
    elif case == "no key":
        monkeypatch.delenv("OPENAI_API_KEY")
    elif case == "out over answers":
        out = tmp_path / "in"
    before = tree_digest(tmp_path / "in")
    argv = ["eval", "judge", "--questions", files["questions"], "--references",
            files["references"], "--answers", files["answers"], "--out", out,
            "--max-retries", "0", "--timeout", "1"]
    if case != "no key":  # a local server needs no key; OpenAI's does
        argv += ["--base-url", "http://127.0.0.1:9/v1"]
    run(capsys, argv).error_line(fragment)
    assert tree_digest(tmp_path / "in") == before


# ---------------------------------------------------------------------------------------------
# score


@pytest.mark.parametrize("setting", ["indicators.clip.batch_size=0",
                                     "indicators.length.no_such=1",
                                     "features.pca_components=-1", "chunk_size=0",
                                     "indicators.length.normaliser=abc"])
def test_score_bad_settings(capsys, world, tmp_path, setting):
    check_refused(capsys, world, ["score", "--data", world["small"], "--work", tmp_path / "w",
                                  "--indicators", "length", "--out", tmp_path / "t.jsonl",
                                  "--set", setting], setting.split("=")[0].split(".")[-1])


def test_score_unknown_indicator(capsys, world, tmp_path):
    check_refused(capsys, world, ["score", "--data", world["small"], "--work", tmp_path / "w",
                                  "--indicators", "length,nosuch", "--out", tmp_path / "t.jsonl"],
                  "nosuch")


@pytest.mark.parametrize("flag", ["--out", "--work", "--pool-out"])
def test_score_outputs_inside_the_data(capsys, world, tmp_path, flag):
    paths = {"--out": tmp_path / "t.jsonl", "--work": tmp_path / "w"}
    paths[flag] = world["small"] / ("cache" if flag == "--work" else f"x{flag[2:]}.jsonl")
    argv = ["score", "--data", world["small"], "--indicators", "length",
            "--work", paths["--work"], "--out", paths["--out"]]
    if flag == "--pool-out":
        argv += ["--pool-out", world["small"] / "pool.safetensors"]
    check_refused(capsys, world, argv, flag)


def test_score_unwritable_output(capsys, world, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("I am a file, not a folder")
    check_refused(capsys, world, ["score", "--data", world["small"], "--work", tmp_path / "w",
                                  "--indicators", "length", "--out", blocker / "t.jsonl"],
                  "a-file")


def test_score_damaged_cache_file(capsys, world, tmp_path):
    work = tmp_path / "w"
    work.mkdir()
    (work / "cache.sqlite").write_bytes(b"this is not an SQLite database, just some bytes" * 4)
    check_refused(capsys, world, ["score", "--data", world["small"], "--work", work,
                                  "--indicators", "length", "--out", tmp_path / "t.jsonl"],
                  "cache.sqlite")


def test_score_unsupported_table_format(capsys, world, tmp_path):
    check_refused(capsys, world, ["score", "--data", world["small"], "--work", tmp_path / "w",
                                  "--indicators", "length", "--out", tmp_path / "t.xlsx"],
                  "t.xlsx")


# ---------------------------------------------------------------------------------------------
# report, run, demo


def test_report_hostile(capsys, world, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    check_refused(capsys, world, ["report", "--selection", empty, "--pool", world["pool"]],
                  "empty")
    selection = tmp_path / "sel"
    assert run(capsys, ["select", "--pool", world["pool"], "--baseline", "random", "--num", "10",
                        "--out", selection]).status == 0
    check_refused(capsys, world, ["report", "--selection", selection, "--pool", world["pool"],
                                  "--checkpoint", world["ckpt"],
                                  "--out", world["ckpt"] / "report.html"], "--out")


@pytest.mark.parametrize("case", ["missing", "malformed yaml", "unknown key", "bad type"])
def test_run_bad_recipe(capsys, world, tmp_path, case):
    recipe = tmp_path / "recipe.yaml"
    if case == "malformed yaml":
        recipe.write_text("pipeline: {data: [\n")
    elif case == "unknown key":
        recipe.write_text("pipeline:\n  no_such_setting: 3\n")
    elif case == "bad type":
        recipe.write_text("select:\n  num_samples: lots\n")
    fragment = {"unknown key": "no_such_setting", "bad type": "num_samples"}.get(case,
                                                                                 "recipe.yaml")
    check_refused(capsys, world, ["run", "--config", recipe], fragment)


@pytest.mark.parametrize("argv,fragment", [(["--samples", "0"], "samples"),
                                           (["--samples", "-4"], "samples"),
                                           (["--set", "select.num_samples=-1"], "num_samples"),
                                           (["--set", "nosuch.key=1"], "nosuch")])
def test_demo_bad_settings(capsys, world, tmp_path, argv, fragment):
    check_refused(capsys, world, ["demo", "--out", tmp_path / "d", *argv], fragment)


def test_demo_out_is_a_file(capsys, world, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    check_refused(capsys, world, ["demo", "--out", blocker, "--samples", "40"], "a-file")


def test_configs_unknown_name(capsys, world):
    run(capsys, ["configs", "minigpt4/nosuch.yaml"]).error_line("nosuch.yaml")


# ---------------------------------------------------------------------------------------------
# kill -9 while paying for GPT replies: the rerun sends exactly the unanswered requests


@pytest.mark.parametrize("kill_after", [6, 20, 34])
def test_kill9_during_gpt_scoring_loses_no_paid_reply(tmp_path, kill_after):
    """Killed after 6, 20 or 34 of 40 replies: every reply that arrived is kept, and the rerun
    sends exactly the requests that were never answered."""
    pytest.importorskip("openai")
    from openai_server import FakeOpenAI

    captions = {str(i): f"Picture {i}: a {['red', 'blue'][i % 2]} shape on a table."
                for i in range(40)}
    data = make_cc_sbu_align(tmp_path / "cc", captions)
    before = tree_digest(data)
    with FakeOpenAI(latency=0.1) as server:
        env = {**os.environ, "OPENAI_API_KEY": "sk-kill9-test", "PYTHONPATH": str(REPO)}
        command = [sys.executable, "-m", "selector.app.cli", "score", "--data", str(data), "--work",
                   str(tmp_path / "w"), "--indicators", "gpt", "--out", str(tmp_path / "t.jsonl"),
                   "--set", f"indicators.gpt.base_url={server.base_url}",
                   "--set", "indicators.gpt.concurrency=2"]
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)

        def answered() -> int:
            return len(server.chat_requests) - server.in_flight

        deadline = time.time() + 120
        while answered() < kill_after and time.time() < deadline and process.poll() is None:
            time.sleep(0.005)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
        time.sleep(0.3)  # let the server finish the requests that were in flight
        sent_first = len(server.chat_requests)
        assert kill_after <= answered() < 40, answered()
        with sqlite3.connect(str(tmp_path / "w" / "cache.sqlite")) as connection:
            kept = connection.execute("SELECT COUNT(*) FROM indicator_values WHERE "
                                      "indicator = 'gpt:request' AND value IS NOT NULL").fetchone()[0]
        assert kept >= kill_after - 2  # at most the replies in flight at the kill are lost
        rerun = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                               timeout=300)
        assert rerun.returncode == 0, rerun.stderr
        assert len(server.chat_requests) - sent_first == 40 - kept
        assert "sk-kill9-test" not in rerun.stderr + rerun.stdout
    assert tree_digest(data) == before
