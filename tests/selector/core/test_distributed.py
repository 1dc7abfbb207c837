"""Scoring under torchrun: 2 CPU processes (gloo) give the single-process result."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, make_cc_sbu_align, run_cli

pytest.importorskip("accelerate", reason="accelerate is not installed (make test installs it)")


def test_two_ranks_score_their_shares_and_merge_to_the_single_process_result(
        tiny_clip_files, tiny_llama_dir, tmp_path):
    from selector.scoring.pool import FeaturePool
    from selector.app.toy.models import tiny_score_settings

    captions = {str(i): f"a picture with {i} shapes. they are {'red' if i % 2 else 'blue'}"
                for i in range(12)}
    data = make_cc_sbu_align(tmp_path / "cc", captions)
    (data / "image" / "4.jpg").write_bytes(b"broken")
    options = ["--indicators", "clip,length", "--set", "pool.indicators=[clip,length]",
               *tiny_score_settings(*tiny_clip_files, tiny_llama_dir)]

    single = run_cli("score", "--data", data, "--work", tmp_path / "w1", *options,
                     "--out", tmp_path / "single.jsonl", "--pool-out", tmp_path / "single.pool")
    assert single.returncode == 0, single.stderr
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launched = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
         "-m", "selector.app.cli", "score", "--data", str(data),
         "--work", str(tmp_path / "w2"), *map(str, options), "--out", str(tmp_path / "two.jsonl"),
         "--pool-out", str(tmp_path / "two.pool")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    errors = [line for line in launched.stderr.splitlines()
              if "Error" in line or "error:" in line]  # each rank's own error, not the noise
    assert launched.returncode == 0, "\n".join(errors[:20]) + launched.stderr[-2000:]

    one = [json.loads(line) for line in (tmp_path / "single.jsonl").read_text().splitlines()]
    two = [json.loads(line) for line in (tmp_path / "two.jsonl").read_text().splitlines()]
    assert [r["id"] for r in one] == [r["id"] for r in two] == list(captions)
    for a, b in zip(one, two):
        assert a["clip_problem"] == b["clip_problem"] and a["length"] == b["length"]
        assert (a["clip"] is None) == (b["clip"] is None)
        if a["clip"] is not None:
            assert abs(a["clip"] - b["clip"]) < 1e-4
    pool_one = FeaturePool.load(tmp_path / "single.pool")
    pool_two = FeaturePool.load(tmp_path / "two.pool")
    assert pool_one.ids == pool_two.ids and "4" not in pool_one.ids
    np.testing.assert_allclose(pool_one.features, pool_two.features, atol=1e-4)
    # each rank really scored a share: one shard per rank and kind, the table written once
    for kind in ("image", "text"):
        assert len(list((tmp_path / "w2" / "arrays").glob(f"{kind}-*/*.npy"))) == 2
    assert launched.stderr.count("pool file ->") == 1
