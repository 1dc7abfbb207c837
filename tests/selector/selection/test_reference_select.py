"""``igpt4 reference-select`` reproduces the released InstructionGPT-4 selection."""
from __future__ import annotations

import json

import numpy as np
import torch

from conftest import make_cc_sbu_align, run_cli
from selector.data.samples import read_cc_sbu_align
from selector.scoring.reference import CHECKPOINT, ReferenceRepo
from test_model import original_scores


def original_rule(ids, scores, clusters, num_samples=200):
    """The original selection rule written out independently of selector.selection."""
    score_of = dict(zip(ids, scores))
    pool = []
    for members in clusters.values():
        ranked = sorted([m for m in members if m in score_of],
                        key=lambda m: int(score_of[m]), reverse=True)
        pool += ranked[:max(1, int(204 * len(ranked) / 3439))]
    final = sorted(pool, key=lambda m: int(score_of[m]), reverse=True)[:num_samples]
    return sorted(final, key=int)


def expected_selection(reference_dir, noise=0.0, seed=0):
    repo = ReferenceRepo(reference_dir)
    pool = repo.pool()
    state = torch.load(reference_dir / CHECKPOINT, weights_only=True)
    scores = original_scores(state, pool.features)
    scores = scores + np.random.default_rng(seed).uniform(-noise, noise, size=len(scores))
    clusters = json.loads((reference_dir / "cluster/spectral/clustering_results.json").read_text())
    return original_rule(pool.ids, scores, clusters)


def test_reproduces_the_released_200(reference_dir, tmp_path):
    result = run_cli("reference-select", "--repo", reference_dir, "--out", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    annotations = json.loads((tmp_path / "out" / "filter_cap.json").read_text())["annotations"]
    ids = [a["image_id"] for a in annotations]
    assert ids == expected_selection(reference_dir)
    assert len(ids) == 200 and ids == sorted(ids, key=int)
    captions = ReferenceRepo(reference_dir).captions()
    assert all(a["caption"] == captions[a["image_id"]] for a in annotations)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["num_selected"] == 200 and len(manifest["samples"]) == 3439
    assert sum(s["selected"] for s in manifest["samples"]) == 200
    assert manifest["settings"]["quota_total"] == 204 and "torch" in manifest["versions"]
    assert sum(manifest["quotas"].values()) == 200


def test_selection_is_robust_to_float_noise(reference_dir):
    """Different hardware computes the scores with ~1e-6 differences; the selection must not move."""
    base = expected_selection(reference_dir)
    for seed in range(3):
        assert expected_selection(reference_dir, noise=1e-4, seed=seed) == base


def test_with_data_writes_a_complete_cc_sbu_align_folder(reference_dir, tmp_path):
    captions = {i: f"caption of {i}" for i in ReferenceRepo(reference_dir).captions()}
    data = make_cc_sbu_align(tmp_path / "cc_sbu_align", captions)
    out = tmp_path / "selected"
    result = run_cli("reference-select", "--repo", reference_dir, "--out", out, "--data", data,
                     "--copy-images")
    assert result.returncode == 0, result.stderr
    pool = read_cc_sbu_align(out)
    assert pool.ids == expected_selection(reference_dir)
    assert pool.samples[0].answer == f"caption of {pool.ids[0]}"
    assert not (out / "image" / f"{pool.ids[0]}.jpg").is_symlink()


def test_data_missing_a_selected_sample_is_one_line(reference_dir, tmp_path):
    data = make_cc_sbu_align(tmp_path / "cc", {"2": "x", "3": "y"})
    result = run_cli("reference-select", "--repo", reference_dir, "--out", tmp_path / "o",
                     "--data", data)
    assert result.returncode == 2 and "is not in the data" in result.stderr
    assert "Traceback" not in result.stderr


def test_skip_invalid_data_writes_a_report(reference_dir, tmp_path):
    captions = {i: f"caption of {i}" for i in ReferenceRepo(reference_dir).captions()}
    data = make_cc_sbu_align(tmp_path / "cc", captions)
    unselected = next(i for i in captions if i not in set(expected_selection(reference_dir)))
    (data / "image" / f"{unselected}.jpg").write_bytes(b"")
    out = tmp_path / "out"
    stopped = run_cli("reference-select", "--repo", reference_dir, "--out", out, "--data", data)
    assert stopped.returncode == 2 and f"'{unselected}'" in stopped.stderr
    result = run_cli("reference-select", "--repo", reference_dir, "--out", out, "--data", data,
                     "--skip-invalid")
    assert result.returncode == 0, result.stderr
    skipped = json.loads((out / "skipped.json").read_text())["skipped"]
    assert len(skipped) == 1 and "empty (0 bytes)" in skipped[0]["reason"]
    assert len(read_cc_sbu_align(out).ids) == 200
