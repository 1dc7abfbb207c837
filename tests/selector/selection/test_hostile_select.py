"""Hostile-tester findings on select, report, labels collect and train-selector (issue 11):

* ``select --set model.*``: scoring-time settings (score_rounds, score_seed) are applied and
  recorded; learned ones (context_size, n_heads, ...) are refused, never recorded unused;
* a reused ``--out`` holds exactly the new selection afterwards (or is refused untouched);
* ``report`` refuses a pool whose content differs from the one the selection was made from;
* ``labels collect`` refuses labels of different models and labels mixing 0..1 and 0..100;
* ``train-selector`` refuses constant labels, an id twice in one subset, an unlabelled subset.

Every case runs in-process through :func:`selector.cli.main`: exit 2, one error line naming the
file / subset / key, no traceback, inputs byte-identical.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import List, Sequence

import numpy as np
import pytest

from conftest import tree_digest
from selector.app.cli import main


def run(capsys, argv: Sequence[object]):
    capsys.readouterr()
    try:
        status = main([str(a) for a in argv])
    except SystemExit as exc:
        status = exc.code if isinstance(exc.code, int) else 2
    captured = capsys.readouterr()
    return status, captured.err


def refused(capsys, argv: Sequence[object], *fragments: str,
            watched: Sequence[Path] = ()) -> str:
    before = [tree_digest(p) if p.is_dir() else p.read_bytes() for p in watched]
    status, err = run(capsys, argv)
    assert status == 2, (status, err[-2000:])
    assert "Traceback" not in err and "Warning" not in err, err
    lines = [line for line in err.splitlines() if ": error:" in line]
    assert len(lines) == 1, err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    after = [tree_digest(p) if p.is_dir() else p.read_bytes() for p in watched]
    assert before == after, "an input changed"
    return lines[0]


def ok(capsys, argv: Sequence[object]) -> str:
    status, err = run(capsys, argv)
    assert status == 0, err[-2000:]
    return err


@pytest.fixture()
def world(selected_data):
    root, data = selected_data
    return {"root": root, "pool": root / "pool.safetensors", "ckpt": root / "ckpt",
            "subsets": root / "subsets.json", "labels": root / "labels.json", "data": data}


def manifest(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text(encoding="utf-8"))


def scores(folder: Path) -> List[float]:
    return [row["score"] for row in manifest(folder)["samples"]]


def select(world, out: Path, *extra: object) -> List[object]:
    return ["select", "--pool", world["pool"], "--checkpoint", world["ckpt"], "--num", "10",
            "--out", out, *extra]


# --------------------------------------------------------------------------- 3. model settings


def test_scoring_settings_default_to_the_checkpoints_and_are_recorded(capsys, tmp_path, world):
    config = json.loads((world["ckpt"] / "selector.json").read_text())["config"]
    ok(capsys, select(world, tmp_path / "default"))
    used = manifest(tmp_path / "default")["settings"]["model"]
    assert used["score_rounds"] == config["score_rounds"]
    assert used["score_seed"] == config["score_seed"]
    assert used["context_size"] == config["context_size"] == 12  # learned, not the shipped 114


@pytest.mark.parametrize("setting, key, value", [("model.score_rounds=7", "score_rounds", 7),
                                                 ("model.score_seed=5", "score_seed", 5)])
def test_scoring_settings_are_applied(capsys, tmp_path, world, setting, key, value):
    ok(capsys, select(world, tmp_path / "default"))
    ok(capsys, select(world, tmp_path / "set", "--set", setting))
    assert manifest(tmp_path / "set")["settings"]["model"][key] == value
    assert not np.allclose(scores(tmp_path / "default"), scores(tmp_path / "set"))


def test_scoring_settings_from_a_config_file_are_applied(capsys, tmp_path, world):
    config = tmp_path / "select.yaml"
    config.write_text("model:\n  score_rounds: 3\n", encoding="utf-8")
    ok(capsys, select(world, tmp_path / "o", "--config", config))
    assert manifest(tmp_path / "o")["settings"]["model"]["score_rounds"] == 3


@pytest.mark.parametrize("setting", ["model.context_size=114", "model.context_size=6",
                                     "model.n_heads=2", "model.n_layers=3",
                                     "model.residual=false", "model.mode=reference"])
def test_learned_settings_are_refused(capsys, tmp_path, world, setting):
    key = setting.split("=")[0]
    line = refused(capsys, select(world, tmp_path / "o", "--set", setting), key, "retrain",
                   watched=[world["root"]])
    assert str(world["ckpt"]) in line
    assert not (tmp_path / "o").exists()


def test_a_learned_setting_equal_to_the_checkpoints_is_no_override(capsys, tmp_path, world):
    ok(capsys, select(world, tmp_path / "o", "--set", "model.context_size=12"))
    assert manifest(tmp_path / "o")["settings"]["model"]["context_size"] == 12


def test_model_settings_with_a_baseline_are_refused(capsys, tmp_path, world):
    refused(capsys, ["select", "--pool", world["pool"], "--baseline", "random", "--num", "5",
                     "--set", "model.score_rounds=7", "--out", tmp_path / "o"],
            "model.score_rounds", "--baseline", watched=[world["root"]])


# --------------------------------------------------------------------------- 4. reused --out


def test_reused_out_without_data_keeps_no_old_files(capsys, tmp_path, world):
    out = tmp_path / "rk6"
    ok(capsys, select(world, out, "--data", world["data"]))
    assert len(list((out / "image").iterdir())) == 10
    for name in ("report.html", "report_data.json", "report_indicators.png", "skipped.json"):
        (out / name).write_text("old", encoding="utf-8")  # what a report / skip report left
    ok(capsys, ["select", "--pool", world["pool"], "--checkpoint", world["ckpt"], "--num", "3",
                "--out", out])
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "selected.txt"]
    assert len((out / "selected.txt").read_text().split()) == 3
    assert not list(tmp_path.glob(".rk6*"))  # no staging folder left beside it


def test_reused_out_with_data_holds_exactly_the_new_images(capsys, tmp_path, world):
    out = tmp_path / "rk6"
    ok(capsys, select(world, out, "--data", world["data"]))
    ok(capsys, ["select", "--pool", world["pool"], "--baseline", "random", "--num", "4",
                "--data", world["data"], "--out", out])
    chosen = (out / "selected.txt").read_text().split()
    assert sorted(p.stem for p in (out / "image").iterdir()) == sorted(chosen)
    annotations = json.loads((out / "filter_cap.json").read_text())["annotations"]
    assert sorted(a["image_id"] for a in annotations) == sorted(chosen) and len(chosen) == 4


def test_a_failed_selection_leaves_the_previous_one(capsys, tmp_path, world):
    out = tmp_path / "prev"
    ok(capsys, select(world, out, "--data", world["data"]))
    before = tree_digest(out)
    small = tmp_path / "small"  # a data folder lacking the selected samples: fails mid-write
    small.mkdir()
    (small / "filter_cap.json").write_text(json.dumps({"annotations": [
        {"image_id": "nope", "caption": "A caption."}]}), encoding="utf-8")
    (small / "image").mkdir()
    shutil.copy(next((world["data"] / "image").iterdir()), small / "image" / "nope.jpg")
    refused(capsys, select(world, out, "--data", small), "not in the data")
    assert tree_digest(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prev", "small"]


def test_a_non_selection_folder_is_refused_untouched(capsys, tmp_path, world):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me", encoding="utf-8")
    refused(capsys, select(world, out), str(out), "no selection", watched=[out, world["root"]])


def test_a_previous_selection_with_foreign_files_is_refused_untouched(capsys, tmp_path, world):
    out = tmp_path / "sel"
    ok(capsys, select(world, out))
    (out / "notes.txt").write_text("keep me", encoding="utf-8")
    refused(capsys, select(world, out), "notes.txt", watched=[out])


def test_out_that_is_a_file_is_refused(capsys, tmp_path, world):
    out = tmp_path / "file"
    out.write_text("x", encoding="utf-8")
    refused(capsys, select(world, out), str(out), "not a folder", watched=[out])


def test_an_empty_out_folder_is_used(capsys, tmp_path, world):
    out = tmp_path / "empty"
    out.mkdir()
    ok(capsys, select(world, out))
    assert (out / "selected.txt").is_file()


# --------------------------------------------------------------------------- 6. report's pool


def test_manifest_records_the_pool_content_digest(capsys, tmp_path, world):
    from selector.scoring.pool import FeaturePool

    ok(capsys, select(world, tmp_path / "o"))
    recorded = manifest(tmp_path / "o")["settings"]["pool_sha256"]
    assert recorded == FeaturePool.load(world["pool"]).content_digest()


def test_report_refuses_a_pool_with_the_same_ids_and_other_values(capsys, tmp_path, world):
    from selector.scoring.pool import FeaturePool

    ok(capsys, select(world, tmp_path / "sel"))
    pool = FeaturePool.load(world["pool"])
    pool.indicators[3, 0] += 1.0
    other = pool.save(tmp_path / "other.safetensors")
    refused(capsys, ["report", "--selection", tmp_path / "sel", "--pool", other,
                     "--out", tmp_path / "r.html"], str(other), str(world["pool"]),
            watched=[tmp_path / "sel", other])
    assert not (tmp_path / "r.html").exists()


def test_report_accepts_the_same_pool_rewritten(capsys, tmp_path, world):
    pytest.importorskip("matplotlib")
    from selector.scoring.pool import FeaturePool

    ok(capsys, select(world, tmp_path / "sel"))
    same = FeaturePool.load(world["pool"]).save(tmp_path / "same.safetensors")
    ok(capsys, ["report", "--selection", tmp_path / "sel", "--pool", same,
                "--out", tmp_path / "r.html", "--examples", "1"])
    assert (tmp_path / "r.html").is_file()


# --------------------------------------------------------------------------- 7. labels collect

DATASETS = ("gqa", "iconqa", "okvqa", "scienceqa")


def arena(folder: Path, model: str, time: str, accuracy: float) -> None:
    path = folder / "answers" / model / time / "result.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({d: accuracy for d in DATASETS}), encoding="utf-8")


@pytest.fixture()
def evaluated(tmp_path) -> Path:
    root = tmp_path / "lb"
    for name, accuracy in (("A", 0.30), ("B", 0.45), ("C", 0.45)):
        arena(root / name, "MiniGPT-4", "20240101000000", accuracy)
    return root


def test_labels_of_two_models_in_one_subset_are_refused(capsys, tmp_path, evaluated):
    arena(evaluated / "C", "scripted", "20240105000000", 1.0)
    refused(capsys, ["labels", "collect", evaluated, "--out", tmp_path / "l.json"],
            "'C'", "MiniGPT-4", "scripted", "--model", watched=[evaluated])
    assert not (tmp_path / "l.json").exists()
    ok(capsys, ["labels", "collect", evaluated, "--model", "MiniGPT-4", "--out",
                tmp_path / "l.json"])
    document = json.loads((tmp_path / "l.json").read_text())
    assert document["labels"]["C"] == pytest.approx(45.0) and document["models"] == ["MiniGPT-4"]


def test_subsets_evaluated_with_different_models_are_refused(capsys, tmp_path, evaluated):
    shutil.rmtree(evaluated / "B" / "answers")
    arena(evaluated / "B", "scripted", "20240105000000", 0.5)
    refused(capsys, ["labels", "collect", evaluated, "--out", tmp_path / "l.json"],
            "'B'", "scripted", "MiniGPT-4", watched=[evaluated])


def test_a_model_no_subset_has_is_refused(capsys, tmp_path, evaluated):
    refused(capsys, ["labels", "collect", evaluated, "--model", "other", "--out",
                     tmp_path / "l.json"], "'other'", "MiniGPT-4", watched=[evaluated])


def test_a_labels_file_of_fractions_beside_percent_labels_is_refused(capsys, tmp_path, evaluated):
    fractions = tmp_path / "old.json"
    fractions.write_text(json.dumps({"D": 0.45}), encoding="utf-8")
    refused(capsys, ["labels", "collect", evaluated, fractions, "--out", tmp_path / "l.json"],
            str(fractions), "'D'", "0.45", "scale", watched=[evaluated, fractions])
    mixed = tmp_path / "mixed.json"
    mixed.write_text(json.dumps({"labels": {"D": 31.5, "E": 0.3, "F": 29.0}}), encoding="utf-8")
    refused(capsys, ["labels", "collect", mixed, "--out", tmp_path / "l.json"], str(mixed),
            "'E'", watched=[mixed])


def test_labels_on_one_scale_are_accepted(capsys, tmp_path, evaluated):
    percent = tmp_path / "old.json"
    percent.write_text(json.dumps({"D": 45.0}), encoding="utf-8")
    ok(capsys, ["labels", "collect", evaluated, percent, "--out", tmp_path / "l.json"])
    fractions = tmp_path / "fractions.json"  # all 0..1: one scale, taken as given
    fractions.write_text(json.dumps({"D": 0.45, "E": 0.3}), encoding="utf-8")
    ok(capsys, ["labels", "collect", fractions, "--out", tmp_path / "l2.json"])


# --------------------------------------------------------------------------- 11. train-selector


def train(world, tmp_path, subsets: Path, labels: Path) -> List[object]:
    return ["train-selector", "--pool", world["pool"], "--subsets", subsets, "--labels", labels,
            "--out", tmp_path / "sel", "--set", "training.epochs=2"]


def test_constant_labels_are_refused_without_warnings(capsys, tmp_path, world):
    labels = tmp_path / "const.json"
    labels.write_text(json.dumps({str(i): 1.0 for i in range(10)}), encoding="utf-8")
    refused(capsys, train(world, tmp_path, world["subsets"], labels), str(labels),
            "same label", watched=[labels, world["root"]])
    assert not (tmp_path / "sel").exists()


def test_an_id_twice_in_one_subset_is_refused(capsys, tmp_path, world):
    members = json.loads(world["subsets"].read_text())
    members["0"].append(members["0"][0])
    subsets = tmp_path / "dup.json"
    subsets.write_text(json.dumps(members), encoding="utf-8")
    refused(capsys, train(world, tmp_path, subsets, world["labels"]), str(subsets), "'0'",
            repr(members["0"][0]), watched=[subsets, world["root"]])


def test_a_subset_without_a_label_is_refused(capsys, tmp_path, world):
    labels_document = json.loads(world["labels"].read_text())
    values = labels_document.get("labels", labels_document)
    values.pop("3")
    labels = tmp_path / "missing.json"
    labels.write_text(json.dumps(labels_document), encoding="utf-8")
    refused(capsys, train(world, tmp_path, world["subsets"], labels), str(labels), "'3'",
            "no label", watched=[labels, world["root"]])
