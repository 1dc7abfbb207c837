"""selector.labels.collect: the Arena's result.json files of each subset -> labels.json."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from selector.core.errors import InputError
from selector.labels.collect import collect_labels
from selector.labels.jobs import ARENA_DATASETS
from selector.scoring.pool import read_labels, read_subsets

ARENA_NAMES = {"gqa": "GQA", "iconqa": "IconQA", "okvqa": "OKVQA", "scienceqa": "ScienceQA"}


def write_result(answers: Path, time: str, accuracies, model="minigpt4") -> Path:
    folder = answers / model / time
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "result.json"
    path.write_text(json.dumps({ARENA_NAMES.get(k, k): v for k, v in accuracies.items()}))
    return path


def test_collect_labels_from_arena_layout(tmp_path):
    rng = np.random.default_rng(0)
    datasets = list(ARENA_NAMES)
    # subset A: one run, all datasets in one result.json (our eval)
    a = dict(zip(datasets, rng.uniform(0.1, 0.6, 4)))
    write_result(tmp_path / "A" / "answers", "20240101000000", a)
    # subset B: the Arena's own eval.py, one result.json per dataset in its own time folder
    b = dict(zip(datasets, rng.uniform(0.1, 0.6, 4)))
    for n, d in enumerate(datasets):
        write_result(tmp_path / "B" / "answers", f"2024010100000{n}", {d: b[d]})
    # subset C: evaluated three times (noise estimate); an extra dataset is ignored
    c_runs = [dict(zip(datasets, rng.uniform(0.1, 0.6, 4))) for _ in range(3)]
    for n, run in enumerate(c_runs):
        write_result(tmp_path / "C" / "answers", f"2024020{n}000000", {**run, "VizWiz": 0.9})
    document = collect_labels([tmp_path], ARENA_DATASETS, False, out=tmp_path / "labels.json")

    assert document["labels"]["A"] == pytest.approx(100 * np.mean(list(a.values())))
    assert document["labels"]["B"] == pytest.approx(100 * np.mean(list(b.values())))
    run_means = [100 * np.mean([r[d] for d in datasets]) for r in c_runs]
    assert document["labels"]["C"] == pytest.approx(np.mean(run_means))
    assert document["label_std"]["C"] == pytest.approx(np.std(run_means, ddof=1))
    assert document["n_runs"] == {"A": 1, "B": 1, "C": 3}
    assert document["label_std"]["A"] is None and document["label_std"]["B"] is None
    assert document["per_dataset"]["B"] == pytest.approx({d: 100 * b[d] for d in datasets})
    assert document["per_dataset_std"]["C"]["gqa"] == pytest.approx(
        np.std([100 * r["gqa"] for r in c_runs], ddof=1))
    assert len(document["runs"]["C"]["results"]) == 3
    assert read_labels(tmp_path / "labels.json") == pytest.approx(document["labels"])


def test_collect_labels_missing_datasets_and_bad_results(tmp_path):
    answers = tmp_path / "S" / "answers"
    path = write_result(answers, "20240101000000", {"gqa": 0.2, "iconqa": 0.4, "okvqa": 0.3})
    with pytest.raises(InputError, match=f"{path}: subset 'S' has no accuracy for scienceqa"):
        collect_labels([tmp_path / "S"], ARENA_DATASETS, False)
    document = collect_labels([tmp_path / "S"], ARENA_DATASETS, allow_missing=True)
    assert document["labels"]["S"] == pytest.approx(30.0)
    assert document["missing_datasets"] == {"S": ["scienceqa"]}
    assert collect_labels([answers], ["gqa", "okvqa"], False)["labels"] == {
        "S": pytest.approx(25.0)}  # an answers folder names its subset by its parent
    path.write_text(json.dumps({"GQA": 31.5}))
    with pytest.raises(InputError, match="accuracy of 'GQA' is 31.5, outside 0..1"):
        collect_labels([tmp_path / "S"], ["gqa"], False)
    path.write_text(json.dumps({"GQA": "high"}))
    with pytest.raises(InputError, match="accuracy of 'GQA' is not a number"):
        collect_labels([tmp_path / "S"], ["gqa"], False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="empty: no result.json found"):
        collect_labels([tmp_path / "empty"], ARENA_DATASETS, False)



def test_reference_labels(reference_dir, tmp_path):
    """The original layout's labels come through unchanged, and Arena results built to average to
    the released labels are collected back to them (subset i = modified.json key str(i))."""
    released = json.loads((reference_dir / "labels.json").read_text())["subset_labels"]
    document = collect_labels([reference_dir], ARENA_DATASETS, False,
                              out=tmp_path / "labels.json")
    assert document["labels"] == {str(i): v for i, v in enumerate(released)}
    assert read_labels(tmp_path / "labels.json") == document["labels"]

    subsets = read_subsets(reference_dir / "cluster" / "kmeans++" / "modified.json")
    split = tmp_path / "split"
    split.mkdir()
    (split / "subsets.json").write_text(json.dumps(subsets))
    rng = np.random.default_rng(1)
    for name in subsets:
        offsets = rng.normal(scale=3.0, size=4)
        accuracies = (released[int(name)] + offsets - offsets.mean()) / 100
        write_result(split / name / "answers", "20240101000000",
                     dict(zip(ARENA_NAMES, accuracies)))
    collected = collect_labels([split], ARENA_DATASETS, False)["labels"]
    assert list(collected) == list(subsets)
    assert [collected[str(i)] for i in range(30)] == pytest.approx(released, abs=1e-9)
