"""Hostile inputs for ``semdedup``: identical embeddings at ``threshold: 1`` (nothing is above a
cosine of 1, so nothing is dropped, float32 rounding notwithstanding), and through the CLI."""
from __future__ import annotations

import numpy as np

from conftest import run_cli
from selector.scoring.pool import FeaturePool
from selector.selection.methods.semdedup import deduplicate_cluster, embeddings_of


def _pool(image: np.ndarray) -> FeaturePool:
    n = len(image)
    rng = np.random.default_rng(0)
    return FeaturePool([f"s{i}" for i in range(n)], image, rng.normal(size=(n, 4)),
                       rng.uniform(size=(n, 1)), ["clip"])


def test_threshold_one_keeps_identical_rows():
    embeddings = embeddings_of(_pool(np.ones((40, 8))), "image")
    assert deduplicate_cluster(embeddings, 1.0).all()


def test_threshold_one_keeps_every_random_row():
    rows = np.random.default_rng(3).normal(size=(300, 512))
    assert deduplicate_cluster(embeddings_of(_pool(rows), "image"), 1.0).all()


def test_threshold_one_cli_identical_pool(tmp_path):
    path = _pool(np.ones((40, 8))).save(tmp_path / "pool.safetensors")
    result = run_cli("select", "--pool", path, "--method", "semdedup", "--num", "40",
                     "--set", "methods.semdedup.threshold=1", "--out", tmp_path / "sel")
    assert result.returncode == 0, result.stderr
    assert len((tmp_path / "sel" / "selected.txt").read_text().split()) == 40


def test_fill_by_a_missing_indicator_names_the_pool_file(tmp_path):
    from conftest import assert_one_line_error

    path = _pool(np.random.default_rng(0).normal(size=(20, 8))).save(tmp_path / "p.safetensors")
    for extra in (["--method", "semdedup:top:nope"],
                  ["--method", "semdedup", "--set", "methods.semdedup.fill=top:nope"]):
        result = run_cli("select", "--pool", path, *extra, "--num", "3", "--out", tmp_path / "o")
        assert_one_line_error(result, "p.safetensors", "no indicator 'nope'")
