"""selector.report.study and study_page: a study's Arena results -> means, t intervals over seeds,
paired differences to random, the evaluation noise; the study page. Checked against a hand
computation on generated result.json files."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from conftest import assert_one_line_error, run_cli
from selector.core.errors import InputError
from selector.report.study import collect_study, read_study, results_table, t_summary

DATASETS = ["gqa", "okvqa"]
#: run -> its evaluations, each {dataset: accuracy (fraction)}, as the Arena writes them
RESULTS = {
    "random/0": [{"GQA": 0.40, "OKVQA": 0.50}, {"GQA": 0.41, "OKVQA": 0.50}],  # evaluated twice
    "random/1": [{"GQA": 0.42, "OKVQA": 0.46}],
    "random/2": [{"GQA": 0.38, "OKVQA": 0.54}],
    "random/3": [{"GQA": 0.39}],  # an evaluation killed after one dataset
    "cluster-random/0": [{"GQA": 0.44, "OKVQA": 0.52}],
    "cluster-random/1": [{"GQA": 0.45, "OKVQA": 0.49}],
    "cluster-random/2": [{"GQA": 0.43, "OKVQA": 0.55}],
    # cluster-random/3: not evaluated yet
    "top_clip/none": [{"GQA": 0.36, "OKVQA": 0.44}],
    "full": [{"GQA": 0.50, "OKVQA": 0.60}, {"GQA": 0.52, "OKVQA": 0.60}],
    # length/none: not evaluated yet
}


def _runs():
    runs = []
    for method, folder in (("random", "random"), ("cluster-random", "cluster-random")):
        runs += [{"name": f"{folder}/{s}", "method": method, "seed": s, "folder": f"{folder}/{s}"}
                 for s in range(4)]
    runs.append({"name": "top_clip/none", "method": "top:clip", "seed": None,
                 "folder": "top_clip/none"})
    runs.append({"name": "length/none", "method": "length", "seed": None,
                 "folder": "length/none"})
    runs.append({"name": "full", "method": "full", "seed": None, "folder": "full"})
    return runs


def make_study(root: Path, results=RESULTS, model: str = "minigpt4") -> Path:
    """A study folder as igpt4 study lays it out, with generated Arena result files."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "study.json").write_text(json.dumps({
        "command": "study", "version": 1, "methods": ["random", "cluster-random", "top:clip",
                                                      "length"],
        "seeds": [0, 1, 2, 3], "num_samples": 200, "datasets": DATASETS, "runs": _runs(),
        "inputs": {"pool": "/p/pool.safetensors"}, "versions": {"python": "3"}}))
    for name, evaluations in results.items():
        for index, accuracies in enumerate(evaluations):
            folder = root / name / "answers" / model / f"2024010{index + 1}120000"
            folder.mkdir(parents=True)
            (folder / "result.json").write_text(json.dumps(accuracies))
    return root


def _hand_interval(values):
    values = np.asarray(values, dtype=float)
    n = len(values)
    mean = values.mean()
    half = stats.t.ppf(0.975, n - 1) * values.std(ddof=1) / math.sqrt(n)
    return mean, mean - half, mean + half


def test_means_intervals_and_paired_differences_match_a_hand_computation(tmp_path):
    document = collect_study(make_study(tmp_path / "study"))
    # a run's value: each dataset averaged over its evaluations, x 100, then the datasets' mean
    random = [np.mean([(40 + 41) / 2, 50]), np.mean([42, 46]), np.mean([38, 54])]
    cluster = [np.mean([44, 52]), np.mean([45, 49]), np.mean([43, 55])]
    assert [document["runs"][f"random/{s}"]["overall"] for s in range(3)] == \
        pytest.approx(random)
    summary = document["methods"]["random"]["overall"]
    mean, low, high = _hand_interval(random)
    assert summary["mean"] == pytest.approx(mean)
    assert summary["ci"] == pytest.approx([low, high])
    assert summary["n"] == 3 and summary["std"] == pytest.approx(np.std(random, ddof=1))
    gqa = document["methods"]["cluster-random"]["per_dataset"]["gqa"]
    assert [gqa["mean"], *gqa["ci"]] == pytest.approx(list(_hand_interval([44, 45, 43])))
    # paired by seed: cluster-random(s) - random(s)
    versus = document["methods"]["cluster-random"]["vs_random"]
    differences = np.array(cluster) - np.array(random)
    mean, low, high = _hand_interval(differences)
    assert versus["seeds"] == [0, 1, 2]
    assert versus["differences"] == pytest.approx(differences.tolist())
    assert [versus["mean"], *versus["ci"]] == pytest.approx([mean, low, high])
    assert versus["significant"] is bool(low > 0 or high < 0)
    # a method that ignores the seed: one run, no interval, paired with every random seed
    top = document["methods"]["top:clip"]
    assert top["overall"]["mean"] == pytest.approx(40.0) and top["overall"]["ci"] is None
    assert "no interval" in top["overall"]["note"] and not top["seeded"]
    top_versus = top["vs_random"]
    mean, low, high = _hand_interval(40.0 - np.array(random))
    assert [top_versus["mean"], *top_versus["ci"]] == pytest.approx([mean, low, high])
    assert top_versus["significant"] is True  # 40 is below every random seed's accuracy
    # evaluation noise: the pooled std of the repeated evaluations (random/0 and full)
    noise = document["noise"]
    stds = [np.std([45.0, np.mean([41, 50])], ddof=1), np.std([55.0, 56.0], ddof=1)]
    assert noise["runs_with_repeats"] == 2
    assert noise["std"] == pytest.approx(math.sqrt(np.mean(np.square(stds))))
    threshold = stats.norm.ppf(0.975) * math.sqrt(2) * noise["std"]
    assert noise["threshold"] == pytest.approx(threshold)
    assert versus["exceeds_noise"] is bool(abs(versus["mean"]) > threshold)
    assert top_versus["exceeds_noise"] is True
    full = document["methods"]["full"]
    assert full["overall"]["mean"] == pytest.approx(np.mean([51, 60]))
    assert document["runs"]["full"]["repeats"] == 2
    assert "vs_random" not in document["methods"]["random"]


def test_missing_results_are_reported_not_crashed(tmp_path):
    document = collect_study(make_study(tmp_path / "study"))
    missing = document["missing"]
    assert set(missing) == {"random/3", "cluster-random/3", "length/none"}
    assert "incomplete" in missing["random/3"] and "okvqa" in missing["random/3"]
    assert missing["cluster-random/3"] == "no result.json yet"
    length = document["methods"]["length"]
    assert length["evaluated"] == 0 and length["overall"]["mean"] is None
    assert length["vs_random"]["mean"] is None and length["vs_random"]["exceeds_noise"] is None
    assert document["methods"]["random"]["evaluated"] == 3
    assert document["methods"]["random"]["missing"] == ["random/3"]
    table = results_table(document)
    assert "missing: cluster-random/3: no result.json yet" in table
    assert "(no CI)" in table and "(baseline)" in table


def test_noise_unknown_without_repeats_and_no_random(tmp_path):
    results = {name: evaluations[:1] for name, evaluations in RESULTS.items()}
    document = collect_study(make_study(tmp_path / "study", results))
    assert document["noise"]["std"] is None and "noise unknown" in document["noise"]["note"]
    assert document["methods"]["top:clip"]["vs_random"]["exceeds_noise"] is None
    assert "unknown" in results_table(document)


def test_t_summary_edges():
    assert t_summary([])["mean"] is None
    one = t_summary([3.0])
    assert one["mean"] == 3.0 and one["ci"] is None and "no interval" in one["note"]
    same = t_summary([2.0, 2.0, 2.0])
    assert same["ci"] == [2.0, 2.0]


def test_nothing_evaluated_and_bad_study_files_are_one_line(tmp_path):
    with pytest.raises(InputError, match="none of the 11 runs"):
        collect_study(make_study(tmp_path / "empty", {}))
    with pytest.raises(InputError, match="no study folder"):
        read_study(tmp_path)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "study.json").write_text(json.dumps({"command": "study", "runs": [], "datasets": []}))
    with pytest.raises(InputError, match="'runs' must be a non-empty list"):
        read_study(bad)
    (bad / "study.json").write_text(json.dumps({
        "command": "study", "datasets": ["gqa"],
        "runs": [{"name": "x", "method": "random", "seed": 0, "folder": "../elsewhere"}]}))
    with pytest.raises(InputError, match="inside the study folder"):
        read_study(bad)
    # an accuracy outside 0..1 in a result file: one line naming the file (the labels reader's)
    study = make_study(tmp_path / "percent", {"random/0": [{"GQA": 40.0, "OKVQA": 50.0}]})
    result = run_cli("study", "collect", study)
    assert_one_line_error(result, "result.json", "outside 0..1")
    missing = run_cli("study", "collect", tmp_path / "nowhere")
    assert_one_line_error(missing, "nowhere")


def test_two_models_need_a_choice(tmp_path):
    study = make_study(tmp_path / "study")
    extra = study / "cluster-random" / "0" / "answers" / "other" / "20240301000000"
    extra.mkdir(parents=True)
    (extra / "result.json").write_text(json.dumps({"GQA": 0.9, "OKVQA": 0.9}))
    with pytest.raises(InputError, match="--model"):
        collect_study(study)
    document = collect_study(study, model="minigpt4")
    assert document["runs"]["cluster-random/0"]["overall"] == pytest.approx(48.0)


def test_collect_command_writes_results_table_and_a_self_contained_page(tmp_path):
    pytest.importorskip("matplotlib")
    study = make_study(tmp_path / "study")
    result = run_cli("study", "collect", study)
    assert result.returncode == 0, result.stderr
    assert "cluster-random" in result.stdout and "vs random" in result.stdout
    document = json.loads((study / "study_results.json").read_text())
    assert document["methods"]["random"]["evaluated"] == 3
    page = (study / "study_report.html").read_text(encoding="utf-8")
    assert "Content-Security-Policy" in page and "data:image/png;base64," in page
    assert "http://" not in page.replace("http-equiv", "") and "<script" not in page
    assert "top:clip" in page and "cluster-random/3" in page
    assert (study / "study_report_methods.png").read_bytes()[:4] == b"\x89PNG"
    # another place for both; a page name that is no HTML file is one line
    out = tmp_path / "elsewhere" / "results.json"
    again = run_cli("study", "collect", study, "--out", out)
    assert again.returncode == 0, again.stderr
    assert out.is_file() and (out.parent / "study_report.html").is_file()
    bad = run_cli("study", "collect", study, "--html", tmp_path / "page.txt")
    assert_one_line_error(bad, "page.txt", ".html")
    inside = run_cli("study", "collect", study, "--out", study / "random" / "0" / "r.json")
    assert_one_line_error(inside, "--out")
