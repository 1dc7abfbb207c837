"""Hostile-user findings on ``igpt4 study`` / ``igpt4 study collect`` (issue 14):

* a ``--force`` rerun refused at an already evaluated run had first rewritten ``study.json``
  as incomplete with the new arguments: collect then refused the study, and a rerun with the
  original arguments was refused too (a refused command must leave the study as it was);
* ``study collect --model M`` refused the whole study at the first run not (yet) evaluated with
  M, although a half-evaluated study is collected (those runs are missing);
* a hand-edited ``study.json`` with a run whose method mixes seeded and unseeded runs was a
  traceback; two runs with one name, one folder or one (method, seed), or a dataset listed twice,
  silently counted a result twice (a zero-width interval called "significant");
* ``--datasets ''`` silently meant the default four datasets.
"""
from __future__ import annotations

import json
import shutil

import pytest

from conftest import assert_one_line_error, make_cc_sbu_align, one_line_error, run_cli
from selector.app.cli import main
from selector.model.synthetic import synthetic_feature_pool

DATASETS = ("gqa", "okvqa")


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """(pool, data, a study of random x 2 seeds + top:clip + full, fully evaluated)."""
    root = tmp_path_factory.mktemp("hostile-study")
    pool, _, _ = synthetic_feature_pool(40, seed=3)
    pool_path = pool.save(root / "pool.safetensors")
    data = make_cc_sbu_align(root / "cc", {i: f"A picture {i}." for i in pool.ids})
    out = root / "study"
    assert _study(out, pool_path, data) == 0
    for n, run in enumerate(("random/0", "random/1", "top_clip/none", "full")):
        _result(out, run, 0.3 + 0.01 * n)
    return pool_path, data, out


def _study(out, pool, data, *extra):
    return main(["study", "--pool", str(pool), "--data", str(data), "--methods",
                 "random,top:clip", "--seeds", "2", "--num", "5", "--datasets",
                 ",".join(DATASETS), "--out", str(out), *map(str, extra)])


def _result(out, run, value, model="minigpt4", time="20260101000000"):
    folder = out / run / "answers" / model / time
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "result.json").write_text(json.dumps({d: value for d in DATASETS}))


def _one_line(capsys, status, *fragments):
    return one_line_error(status, capsys.readouterr().err, *fragments)


def test_a_refused_force_rerun_leaves_the_study_as_it_was(tmp_path, capsys, made):
    pool, data, source = made
    out = tmp_path / "study"
    shutil.copytree(source, out)
    before = (out / "study.json").read_bytes()
    capsys.readouterr()
    _one_line(capsys, _study(out, pool, data, "--force", "--num", "6"),
              "random/0", "already fine-tuned or evaluated")
    assert (out / "study.json").read_bytes() == before
    assert main(["study", "collect", str(out), "--out", str(tmp_path / "r.json"),
                 "--html", str(tmp_path / "r.html")]) == 0
    assert _study(out, pool, data) == 0  # the original arguments are still the study's


def test_collect_with_a_model_some_runs_lack_lists_them_as_missing(tmp_path, capsys, made):
    _, _, source = made
    out = tmp_path / "study"
    shutil.copytree(source, out)
    _result(out, "random/1", 0.5, model="llava", time="20260102000000")
    results = tmp_path / "r.json"
    assert main(["study", "collect", str(out), "--model", "llava", "--out", str(results),
                 "--html", str(tmp_path / "r.html")]) == 0
    document = json.loads(results.read_text())
    assert document["runs"]["random/1"]["overall"] == pytest.approx(50.0)
    assert "model 'llava'" in document["missing"]["random/0"]
    capsys.readouterr()
    _one_line(capsys, main(["study", "collect", str(out), "--model", "nope", "--out",
                            str(results), "--html", str(tmp_path / "r.html")]),
              "none of the", "model 'nope'")


@pytest.mark.parametrize("edit, fragment", [
    (lambda d: d["runs"][-1].update(method="random"), "seeded runs and a run without a seed"),
    (lambda d: d["runs"][0].update(seed=1), "with seed 1 is also runs[0]'s"),
    (lambda d: d["runs"][1].update(name=d["runs"][0]["name"]), "name 'random/0'"),
    (lambda d: d["runs"][1].update(folder="./" + d["runs"][0]["folder"] + "/"), "folder"),
    (lambda d: d.update(datasets=["GQA", "gqa"]), "listed twice"),
])
def test_a_hand_edited_study_file_is_one_line(tmp_path, capsys, made, edit, fragment):
    _, _, source = made
    out = tmp_path / "study"
    shutil.copytree(source, out)
    document = json.loads((out / "study.json").read_text())
    edit(document)
    (out / "study.json").write_text(json.dumps(document))
    capsys.readouterr()
    _one_line(capsys, main(["study", "collect", str(out), "--out", str(tmp_path / "r.json"),
                            "--html", str(tmp_path / "r.html")]), "study.json", fragment)
    assert not (tmp_path / "r.json").exists()


def test_empty_datasets_is_refused(tmp_path, capsys, made):
    pool, data, _ = made
    out = tmp_path / "study"
    capsys.readouterr()
    status = main(["study", "--pool", str(pool), "--data", str(data), "--methods", "random",
                   "--seeds", "1", "--num", "5", "--datasets", "", "--out", str(out)])
    _one_line(capsys, status, "--datasets")
    assert not out.exists()


def test_a_huge_seed_count_is_refused_before_anything_is_written(tmp_path):
    from selector.app.study import MAX_SEEDS
    from selector.model.synthetic import synthetic_feature_pool

    pool, _, _ = synthetic_feature_pool(20, seed=0)
    pool_path = pool.save(tmp_path / "pool.safetensors")
    data = make_cc_sbu_align(tmp_path / "cc", {i: f"caption {i}" for i in pool.ids})
    result = run_cli("study", "--pool", pool_path, "--data", data, "--methods", "random",
                     "--seeds", str(MAX_SEEDS + 1), "--num", "5", "--out", tmp_path / "s")
    assert_one_line_error(result, f"--seeds must be a whole number from 1 to {MAX_SEEDS}")
    assert not (tmp_path / "s").exists()
