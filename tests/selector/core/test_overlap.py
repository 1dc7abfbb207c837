"""Inputs are never destroyed: no command writes into, over or inside its own inputs.

For every command that writes, several overlaps (the same path, an output inside an input, an
output folder that contains an input, the same through a symlink) must exit 2 with one line
naming both, before anything is written: every input stays byte-identical. The commands run
in-process through the real entry point (``selector.cli.main``)."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import pytest

from conftest import make_cc_sbu_align, run_cli
from selector.core.overlap import overlap, refuse_overlap
from selector.core.errors import InputError


# ------------------------------------------------------------------------------ the helper
def test_same_inside_contains_and_via_a_link(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (tmp_path / "link").symlink_to(data)
    assert " is the input --data" in overlap({"--out": data}, {"--data": data})
    assert " lies inside the input" in overlap({"--out": data / "sub"}, {"--data": data})
    assert " contains the input" in overlap({"--out": tmp_path}, {"--data": data / "f.json"})
    message = overlap({"--out": tmp_path / "link"}, {"--data": data})
    assert "once links are followed" in message
    assert overlap({"--out": tmp_path / "x" / ".." / "data"}, {"--data": data})
    assert overlap({"--out": tmp_path / "other"}, {"--data": data}) is None
    assert overlap({"--out": tmp_path / "data2"}, {"--data": data}) is None  # a prefix is no parent
    assert overlap({"--out": None}, {"--data": data}) is None
    assert overlap({"--out": data}, {"--data": None, "PATH": [tmp_path / "a", data]})


def test_two_outputs_on_one_path_are_refused_one_inside_another_is_fine(tmp_path):
    assert "are the same path" in overlap({"--out": tmp_path / "x", "--pool-out": tmp_path / "x"},
                                          {})
    assert overlap({"--work": tmp_path, "--out": tmp_path / "scores.csv"}, {}) is None


def test_home_is_expanded(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(InputError, match="--out ~/data is the input"):
        refuse_overlap({"--out": "~/data"}, {"--data": tmp_path / "data"})


# ---------------------------------------------------------------------------- fixtures
def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def snapshot(root: Path) -> Dict[str, Tuple[str, str]]:
    """Every file, folder and link under ``root``: links by target, files by content."""
    state = {}
    for path in sorted(root.rglob("*")):
        relative = str(path.relative_to(root))
        if path.is_symlink():
            state[relative] = ("link", os.readlink(path))
        elif path.is_file():
            state[relative] = ("file", _digest(path))
        else:
            state[relative] = ("dir", "")
    return state


@pytest.fixture
def inputs(tmp_path) -> Dict[str, Path]:
    """Small real inputs of every kind under tmp_path/in (pool, data, subsets, labels, clusters,
    a checkpoint folder, an Arena answers run, judge files), and a link to the data."""
    from selector.model.synthetic import synthetic_feature_pool, synthetic_labels

    root = tmp_path / "in"
    root.mkdir()
    pool, quality, _ = synthetic_feature_pool(24, seed=1)
    pool.save(root / "pool.safetensors")
    data = make_cc_sbu_align(root / "cc", {i: f"A picture {i}. It shows shapes." for i in pool.ids})
    members = {str(i): pool.ids[i * 6:(i + 1) * 6] for i in range(4)}
    (root / "subsets.json").write_text(json.dumps(members))
    labels = synthetic_labels(members, dict(zip(pool.ids, quality.tolist())))
    (root / "labels.json").write_text(json.dumps({"labels": labels}))
    (root / "clusters.json").write_text(json.dumps(members))
    (root / "ckpt").mkdir()
    (root / "ckpt" / "selector.json").write_text("{}")
    run = root / "answers" / "model" / "run1"
    run.mkdir(parents=True)
    (run / "GQA.json").write_text(json.dumps([{"answer": "a", "gt_answers": ["a"]}]))
    (run / "result.json").write_text(json.dumps({"GQA": 1.0}))
    (root / "judge").mkdir()
    for name in ("questions", "answers", "references"):
        (root / "judge" / f"{name}.jsonl").write_text("")
    (root / "vqa.jsonl").write_text(json.dumps({"image": "cc/image/2.jpg", "question": "Q?",
                                                "answers": ["a"]}) + "\n")
    (root / "replies.json").write_text(json.dumps({"annotations": []}))
    (tmp_path / "link").symlink_to(data)
    return {"root": root, "pool": root / "pool.safetensors", "data": data, "link": tmp_path / "link",
            "subsets": root / "subsets.json", "labels": root / "labels.json",
            "clusters": root / "clusters.json", "ckpt": root / "ckpt", "run": run,
            "judge": root / "judge", "vqa": root / "vqa.jsonl", "replies": root / "replies.json"}


def _refused(capsys, argv: List[str], inputs: Dict[str, Path], *fragments: str) -> str:
    """Run ``igpt4 ARGV``: exit 2, one line holding ``fragments``, every input unchanged, and no
    output created."""
    from selector.app import cli

    before = snapshot(inputs["root"])
    status = cli.main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert status == 2, err
    lines = [line for line in err.splitlines() if line.startswith("igpt4: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    assert snapshot(inputs["root"]) == before, "an input changed"
    return lines[0]


# Each case: (id, argv from the inputs, fragments of the one line). Several overlaps per command.
CASES: List[Tuple[str, Callable[[Dict[str, Path]], List], Tuple[str, ...]]] = [
    ("select data=out", lambda i: ["select", "--pool", i["pool"], "--baseline", "random", "--num",
                                   "5", "--data", i["data"], "--out", i["data"]], ("is the input --data",)),
    ("select data=out copy", lambda i: ["select", "--pool", i["pool"], "--baseline", "random",
                                        "--num", "5", "--data", i["data"], "--out", i["data"],
                                        "--copy-images"], ("is the input --data",)),
    ("select out inside data", lambda i: ["select", "--pool", i["pool"], "--baseline", "random",
                                          "--num", "5", "--data", i["data"], "--out",
                                          i["data"] / "image"], ("lies inside the input --data",)),
    ("select out contains data", lambda i: ["select", "--pool", i["pool"], "--baseline",
                                            "random", "--num", "5", "--data", i["data"], "--out",
                                            i["root"]], ("contains the input",)),
    ("select via link", lambda i: ["select", "--pool", i["pool"], "--baseline", "random", "--num",
                                   "5", "--data", i["link"], "--out", i["data"]],
     ("once links are followed",)),
    ("select out=pool", lambda i: ["select", "--pool", i["pool"], "--baseline", "random", "--num",
                                   "5", "--out", i["pool"]], ("is the input --pool",)),
    ("select out inside checkpoint", lambda i: ["select", "--pool", i["pool"], "--checkpoint",
                                                i["ckpt"], "--out", i["ckpt"] / "sel"],
     ("--checkpoint",)),
    ("select out contains clusters", lambda i: ["select", "--pool", i["pool"], "--checkpoint",
                                                i["ckpt"], "--clusters", i["clusters"], "--out",
                                                i["root"]], ("contains the input --pool",)),
    ("select out=captions", lambda i: ["select", "--pool", i["pool"], "--baseline", "random",
                                       "--num", "5", "--captions", i["data"], "--out", i["data"]],
     ("--captions",)),
    ("reference-select out inside repo", lambda i: ["reference-select", "--repo", i["root"],
                                                    "--out", i["root"] / "selected"],
     ("lies inside the input --repo",)),
    ("reference-select out=data", lambda i: ["reference-select", "--repo", i["ckpt"], "--out",
                                             i["link"], "--data", i["data"]], ("--data",)),
    ("train-selector out contains labels", lambda i: [
        "train-selector", "--pool", i["pool"], "--subsets", i["subsets"], "--labels",
        i["labels"], "--out", i["root"]], ("contains the input",)),
    ("train-selector out=labels", lambda i: [
        "train-selector", "--pool", i["pool"], "--subsets", i["subsets"], "--labels",
        i["labels"], "--out", i["labels"]], ("is the input --labels",)),
    ("train-selector out inside repo", lambda i: ["train-selector", "--repo", i["root"], "--out",
                                                  i["root"] / "sel"], ("--repo",)),
    ("score work inside data", lambda i: ["score", "--data", i["data"], "--work",
                                          i["data"] / "work", "--out", i["root"].parent / "t.csv"],
     ("--work", "lies inside the input --data")),
    ("score out inside data", lambda i: ["score", "--data", i["data"], "--work",
                                         i["root"].parent / "w", "--out", i["data"] / "s.csv"],
     ("--out",)),
    ("score pool-out=pca-from", lambda i: ["score", "--data", i["data"], "--work",
                                           i["root"].parent / "w", "--pool-out", i["pool"],
                                           "--pca-from", i["pool"]], ("--pool-out", "--pca-from")),
    ("score out=pool-out", lambda i: ["score", "--data", i["data"], "--work",
                                      i["root"].parent / "w", "--out", i["root"].parent / "x",
                                      "--pool-out", i["root"].parent / "x"], ("same path",)),
    ("score work via link", lambda i: ["score", "--data", i["data"], "--work", i["link"],
                                       "--out", i["root"].parent / "t.csv"],
     ("once links are followed",)),
    ("validate report over data", lambda i: ["validate", i["data"], "--report",
                                             i["data"] / "filter_cap.json"], ("--report",)),
    ("parse-gpt out=replies", lambda i: ["parse-gpt", i["replies"], "--out", i["replies"]],
     ("is the input replies",)),
    ("split out inside data", lambda i: ["split", "--pool", i["pool"], "--data", i["data"],
                                         "--out", i["data"] / "subsets"], ("--data",)),
    ("split out contains subsets", lambda i: ["split", "--subsets", i["subsets"], "--data",
                                              i["data"], "--out", i["root"]], ("contains",)),
    ("split out=pool via link", lambda i: ["split", "--pool", i["pool"], "--data", i["link"],
                                           "--out", i["data"]], ("once links are followed",)),
    ("labels out inside split", lambda i: ["labels", "collect", i["root"], "--out",
                                           i["root"] / "new_labels.json"], ("lies inside",)),
    ("labels out=labels file", lambda i: ["labels", "collect", i["labels"], "--out",
                                          i["labels"]], ("is the input PATH",)),
    ("report out inside data", lambda i: ["report", "--selection", i["root"], "--pool", i["pool"],
                                          "--data", i["data"], "--out",
                                          i["data"] / "report.html"], ("--data",)),
    ("report out inside selection images", lambda i: [
        "report", "--selection", i["data"], "--pool", i["pool"], "--out",
        i["data"] / "image" / "r.html"], ("--selection",)),
    ("report out inside checkpoint", lambda i: [
        "report", "--selection", i["data"], "--pool", i["pool"], "--checkpoint", i["ckpt"],
        "--out", i["ckpt"] / "r.html"], ("--checkpoint",)),
    ("eval out contains jsonl", lambda i: ["eval", "--tester", "scripted", "--datasets",
                                           f"jsonl:{i['vqa']}", "--out", i["root"]],
     ("--datasets",)),
    ("eval out inside data-root", lambda i: ["eval", "--tester", "scripted", "--datasets", "gqa",
                                             "--data-root", i["root"], "--out",
                                             i["root"] / "answers2"], ("--data-root",)),
    ("eval out contains tester ckpt", lambda i: ["eval", "--tester", "tiny", "--tester-arg",
                                                 f"ckpt={i['ckpt'] / 'selector.json'}",
                                                 "--datasets", f"jsonl:{i['vqa']}", "--out",
                                                 i["ckpt"]], ("--tester-arg ckpt",)),
    ("eval out via link", lambda i: ["eval", "--tester", "scripted", "--datasets",
                                     f"jsonl:{i['link'] / 'x.jsonl'}", "--out", i["data"]],
     ("once links are followed",)),
    ("judge out contains answers", lambda i: [
        "eval", "judge", "--questions", i["judge"] / "questions.jsonl", "--answers",
        i["judge"] / "answers.jsonl", "--out", i["judge"]], ("contains the input",)),
    ("judge cache=questions", lambda i: [
        "eval", "judge", "--questions", i["judge"] / "questions.jsonl", "--answers",
        i["judge"] / "answers.jsonl", "--out", i["root"].parent / "j",
        "--cache", i["judge"] / "questions.jsonl"], ("--cache",)),
    ("judge out inside references", lambda i: [
        "eval", "judge", "--questions", i["judge"] / "questions.jsonl", "--answers",
        i["judge"] / "answers.jsonl", "--references", i["judge"], "--out",
        i["judge"] / "out"], ("--references",)),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_every_command_refuses_outputs_over_its_inputs(case, inputs, capsys, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    _, argv, fragments = case
    _refused(capsys, argv(inputs), inputs, *fragments)


def test_eval_rerun_never_writes_over_an_answers_file(inputs, capsys):
    from eval_arena import runner

    run = inputs["run"]
    where = getattr(runner, "rerun_result_path", lambda folder, metric: folder / "result.json")
    target = where(run, "vqa")
    if target.exists():
        target.unlink()
    target.symlink_to(run / "GQA.json")  # the file rerun writes is one of the answers
    _refused(capsys, ["eval", "rerun", run, "--metric", "vqa"], inputs, "result", "GQA.json")


def _recipe(folder: Path, **pipeline) -> Path:
    body = "pipeline:\n" + "".join(f"  {key}: {value}\n" for key, value in pipeline.items())
    path = folder / "recipe.yaml"
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(body + "  stages: [score]\n")
    return path


@pytest.mark.parametrize("where", ["same", "inside", "contains recipe", "link"])
def test_run_refuses_a_work_folder_over_its_inputs(where, inputs, capsys):
    root, data = inputs["root"], inputs["data"]
    work = {"same": data, "inside": data / "work", "contains recipe": root,
            "link": inputs["link"]}[where]
    recipe = _recipe(root / "recipes", data=data, work=work) if where != "contains recipe" \
        else _recipe(root, data=root.parent / "elsewhere", work=root)
    _refused(capsys, ["run", "--config", recipe], inputs, "pipeline.work")


def test_demo_refuses_an_output_holding_the_shipped_configs(tmp_path, inputs, capsys,
                                                           monkeypatch):
    """The shipped configs are an input of the demo; they are copied here and pointed at, so
    that a regression writes into tmp_path, not into the package."""
    from selector.core import settings

    configs = tmp_path / "pkg" / "configs"
    shutil.copytree(settings.config_dir(), configs)
    monkeypatch.setattr(settings, "config_dir", lambda: configs)
    before = snapshot(configs)
    _refused(capsys, ["demo", "--out", tmp_path / "pkg"], inputs, "contains the input",
             str(configs))
    assert snapshot(configs) == before and not (tmp_path / "pkg" / "data").exists()


def test_demo_never_replaces_a_data_folder_it_did_not_generate(tmp_path, inputs, capsys):
    """``WORK/data`` is the demo's generated pool: a user's folder of that name is kept."""
    work = tmp_path / "project"
    shutil.copytree(inputs["data"], work / "data")
    before = snapshot(work)
    from selector.app import cli

    assert cli.main(["demo", "--out", str(work), "--samples", "20"]) == 2
    assert "not a generated toy pool" in capsys.readouterr().err
    assert snapshot(work) == before


# ------------------------------------------------------------------ the reproduction
@pytest.mark.parametrize("copy", [False, True])
def test_select_data_d_out_d_leaves_d_byte_identical(tmp_path, inputs, copy):
    """The issue's example, as a user runs it: ``igpt4 select --data D --out D`` (and with
    --copy-images) exited 0 after shrinking D/filter_cap.json and linking images to themselves."""
    data = inputs["data"]
    before = snapshot(data)
    result = run_cli("select", "--pool", inputs["pool"], "--baseline", "random", "--num", "5",
                     "--data", data, "--out", data, *(["--copy-images"] if copy else []))
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert len([l for l in result.stderr.splitlines() if l.startswith("igpt4: error:")]) == 1
    assert snapshot(data) == before


def test_a_selection_never_replaces_a_source_image_with_a_link_to_itself(tmp_path, inputs,
                                                                         capsys):
    """Data whose images are links into the output's image folder: the paths do not overlap,
    but writing would replace each real image with a link to itself. Refused before writing."""
    from selector.app import cli

    out = tmp_path / "out"
    assert cli.main(["select", "--pool", str(inputs["pool"]), "--baseline", "random", "--num",
                     "5", "--data", str(inputs["data"]), "--out", str(out), "--copy-images"]) == 0
    linked = tmp_path / "linked"  # a cc_sbu_align folder whose images are links into out/image
    (linked / "image").mkdir(parents=True)
    shutil.copy(out / "filter_cap.json", linked / "filter_cap.json")
    for image in (out / "image").iterdir():
        (linked / "image" / image.name).symlink_to(image)
    capsys.readouterr()
    before_out, before_linked = snapshot(out), snapshot(linked)
    for mode in ([], ["--copy-images"]):
        status = cli.main(["select", "--pool", str(inputs["pool"]), "--baseline", "random",
                           "--num", "5", "--data", str(linked), "--out", str(out), *mode])
        err = capsys.readouterr().err
        assert status == 2 and "is the source image" in err, err
        assert snapshot(out) == before_out and snapshot(linked) == before_linked
    assert all(not p.is_symlink() and p.stat().st_size > 0 for p in (out / "image").iterdir())


def test_legitimate_layouts_are_not_refused(inputs, tmp_path, capsys):
    """Outputs beside the inputs, a rerun into the same selection, the work folder holding its
    own outputs, the report beside the selection it reads."""
    from selector.app import cli

    out = tmp_path / "sel"
    argv = ["select", "--pool", str(inputs["pool"]), "--baseline", "random", "--num", "5",
            "--data", str(inputs["data"]), "--out", str(out)]
    assert cli.main(argv) == 0
    assert cli.main(argv) == 0  # again into the same OUT: its links are replaced, not refused
    assert all((out / "image" / p.name).is_symlink() for p in (out / "image").iterdir())
    assert overlap({"--out": tmp_path / "w" / "s.csv", "--pool-out": tmp_path / "w" / "p",
                    "--work": tmp_path / "w"}, {"--data": inputs["data"]}) is None
    from selector.report.page import _refuse_overlap

    _refuse_overlap(out, "report.html", "report", inputs["pool"], out, None, inputs["data"])
