"""Hostile-user findings on ``igpt4 select --method`` (issue 14):

* a negative ``--seed`` was a numpy traceback (``expected non-negative integer``);
* an argument to a method that takes none (``random:3``, ``cluster-random:2``, ``length:x``,
  ``linear:1``, ``selector:x``) was silently ignored: ``random:3`` drew with seed 0, not 3.

Each runs in-process through :func:`selector.app.cli.main`: exit 2, one error line, nothing
written.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import pytest

from conftest import assert_one_line_error, make_cc_sbu_align, one_line_error, run_cli
from selector.app.cli import main
from selector.model.synthetic import synthetic_feature_pool


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile-methods")
    pool, _, _ = synthetic_feature_pool(40, seed=2)
    pool_path = pool.save(root / "pool.safetensors")
    data = make_cc_sbu_align(root / "cc", {i: "word " * (int(i) % 6 + 1) for i in pool.ids},
                             images=False)
    return pool_path, data


def refused(capsys, argv: Sequence[object], *fragments: str) -> str:
    capsys.readouterr()
    try:
        status = main([str(a) for a in argv])
    except SystemExit as exc:
        status = exc.code if isinstance(exc.code, int) else 2
    return one_line_error(status, capsys.readouterr().err, *fragments)


@pytest.mark.parametrize("method", ["random", "cluster-random", "threshold:clip=20",
                                    "semdedup"])
def test_negative_seed_is_one_line(tmp_path, capsys, world, method):
    pool, _ = world
    out = tmp_path / "out"
    refused(capsys, ["select", "--pool", pool, "--method", method, "--seed", "-1", "--num", "5",
                     "--out", out], "--seed", "-1")
    assert not out.exists()


def test_negative_seed_of_the_random_baseline_is_one_line(tmp_path, capsys, world):
    pool, _ = world
    refused(capsys, ["select", "--pool", pool, "--baseline", "random", "--seed", "-3", "--num",
                     "5", "--out", tmp_path / "out"], "--seed", "-3")


@pytest.mark.parametrize("spec, extra", [
    ("random:3", []), ("cluster-random:2", []), ("length:x", ["--data"]),
    ("linear:1", []), ("selector:x", [])])
def test_an_argument_to_a_method_without_one_is_refused(tmp_path, capsys, world, spec, extra):
    pool, data = world
    out = tmp_path / "out"
    argv = ["select", "--pool", pool, "--method", spec, "--num", "5", "--out", out]
    if extra:
        argv += [extra[0], data]
    line = refused(capsys, argv, f"--method {spec}", "takes no argument")
    assert not out.exists(), line


def test_random_with_a_seed_still_works(tmp_path, world):
    pool, _ = world
    picks = []
    for name in ("a", "b"):
        out = tmp_path / name
        assert main(["select", "--pool", str(pool), "--method", "random", "--seed", "3",
                     "--num", "7", "--out", str(out)]) == 0
        picks.append(Path(out / "selected.txt").read_text().split())
    assert picks[0] == picks[1] and len(picks[0]) == 7


def test_clusters_without_the_diversity_step_are_refused_not_dropped(tmp_path):
    from selector.model.synthetic import synthetic_feature_pool

    pool, _, _ = synthetic_feature_pool(30, seed=0)
    pool_path = pool.save(tmp_path / "pool.safetensors")
    clusters = tmp_path / "clusters.json"
    clusters.write_text(json.dumps({"a": pool.ids[:15], "b": pool.ids[15:]}))
    refused = run_cli("select", "--pool", pool_path, "--method", "top:clip", "--clusters",
                      clusters, "--num", "5", "--out", tmp_path / "out")
    assert_one_line_error(refused, "--clusters", "without the diversity step")
    used = run_cli("select", "--pool", pool_path, "--method", "top:clip", "--diversity",
                   "--clusters", clusters, "--num", "5", "--out", tmp_path / "out")
    assert used.returncode == 0, used.stderr
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["settings"]["clusters"] \
        == str(clusters)
