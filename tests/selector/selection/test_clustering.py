"""selector.clustering: exact spectral clustering, its scalable approximation, the auto switch."""
from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from selector.selection.clustering import (EXACT_MAX_SAMPLES, diversity_clusters, resolve_method,
                                 scalable_spectral_clusters, spectral_clusters)
from selector.core.errors import InputError


def _blobs(n, n_blobs=6, spread=1.0, separation=25.0, seed=0, dims=6):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_blobs, dims))
    centres *= separation / np.linalg.norm(centres, axis=1, keepdims=True)  # on a sphere
    truth = rng.integers(0, n_blobs, size=n)
    return (centres[truth] + rng.normal(scale=spread, size=(n, dims))).astype(np.float32), truth


def _mixture(n, seed=0):
    """Overlapping Gaussians, a continuous cloud like the pool's PCA image features (the graph
    is connected; exact spectral clustering of it is stable across seeds)."""
    model = np.random.default_rng(12345)
    means = model.normal(scale=5.0, size=(30, 6))
    scales = model.uniform(1.75, 3.25, size=(30, 6))
    rng = np.random.default_rng(seed)
    component = rng.integers(0, 30, size=n)
    return (means[component] + rng.normal(size=(n, 6)) * scales[component]).astype(np.float32)


def test_scalable_clustering_recovers_separated_blobs():
    points, truth = _blobs(6000)
    # fewer graph rows than samples: the cells' graph is built from a sample, every row assigned
    labels = scalable_spectral_clusters(points, n_clusters=6, micro_clusters=300,
                                        graph_samples=2000, seed=0)
    assert labels.shape == (6000,)
    assert adjusted_rand_score(truth, labels) > 0.99
    again = scalable_spectral_clusters(points, n_clusters=6, micro_clusters=300,
                                       graph_samples=2000, seed=0)
    np.testing.assert_array_equal(labels, again)  # seeded: the same clusters every run


def test_one_sample_per_cell_is_the_exact_eigenproblem():
    """With as many cells as samples the coarsened graph is the sample graph itself: the
    scalable method then solves the exact method's eigenproblem (with another eigensolver)."""
    points = _mixture(400, seed=0)
    exact = spectral_clusters(points, n_clusters=5, n_neighbors=10, seed=0)
    # a pool whose exact clustering does not depend on the k-means seed (no near-tie)
    assert adjusted_rand_score(exact, spectral_clusters(points, 5, 10, seed=1)) > 0.99
    scalable = scalable_spectral_clusters(points, n_clusters=5, n_neighbors=10, seed=0,
                                          micro_clusters=400, graph_samples=400)
    assert adjusted_rand_score(exact, scalable) > 0.99


def test_agreement_with_exact_on_a_small_pool():
    points = _mixture(3000, seed=1)
    exact = spectral_clusters(points, 10, 10, seed=0)
    scalable = scalable_spectral_clusters(points, 10, 10, seed=0, micro_clusters=1500)
    agreement = adjusted_rand_score(exact, scalable)
    print(f"ARI(scalable, exact), 3000 synthetic samples: {agreement:.3f}")
    assert agreement > 0.6


def test_agreement_with_exact_on_the_released_pool(reference_dir):
    from selector.scoring.reference import ReferenceRepo

    image = ReferenceRepo(reference_dir).pool().image  # 3439 x 6, the released PCA features
    exact = spectral_clusters(image, 10, 10, seed=0)
    scalable = scalable_spectral_clusters(image, 10, 10, seed=0)
    agreement = adjusted_rand_score(exact, scalable)
    print(f"ARI(scalable, exact), released cc_sbu_align features: {agreement:.3f}")
    assert agreement > 0.6


@pytest.mark.filterwarnings("ignore:Graph is not fully connected")  # separated blobs
def test_auto_runs_exact_up_to_the_threshold_and_scalable_above():
    points, _ = _blobs(301, n_blobs=3)
    settings = {"n_clusters": 3, "n_neighbors": 10, "cluster_seed": 0, "clustering": "auto",
                "exact_max_samples": 300, "micro_clusters": 40}
    assert diversity_clusters(points[:300], settings).method == "exact"
    above = diversity_clusters(points, settings)
    assert above.method == "scalable" and above.info["micro_clusters"] == 40
    assert set(above.info["timings"]) >= {"micro_clusters_fit", "graph", "eigenproblem"}
    assert diversity_clusters(points, {**settings, "clustering": "exact"}).method == "exact"
    forced = diversity_clusters(points[:50], {**settings, "clustering": "scalable"})
    assert forced.method == "scalable"
    # the shipped defaults: absent keys mean auto with a 20k threshold
    assert diversity_clusters(points[:50], {"n_clusters": 3}).method == "exact"
    assert resolve_method("auto", EXACT_MAX_SAMPLES) == "exact"
    assert resolve_method("auto", EXACT_MAX_SAMPLES + 1) == "scalable"


def test_bad_clustering_settings_are_input_errors():
    points, _ = _blobs(100, n_blobs=2)
    with pytest.raises(InputError, match="must be one of auto, exact, scalable"):
        diversity_clusters(points, {"clustering": "spectral"})
    with pytest.raises(InputError, match="micro_clusters must be in 1..10000"):
        diversity_clusters(points, {"clustering": "scalable", "micro_clusters": -5})
    with pytest.raises(InputError, match="micro_clusters must be in 1..10000"):
        diversity_clusters(points, {"clustering": "scalable", "micro_clusters": 50_000})
    with pytest.raises(InputError, match="graph_samples must exceed n_neighbors"):
        diversity_clusters(points, {"clustering": "scalable", "graph_samples": 5})


@pytest.mark.filterwarnings("ignore:Graph is not fully connected")
def test_select_uses_the_configured_clustering(tmp_path):
    from selector.selection.select import select
    from selector.model.network import build, save_checkpoint
    from test_model import selector_config
    from selector.scoring.pool import FeaturePool
    from selector.core.settings import load_settings

    image, _ = _blobs(400, n_blobs=4)
    rng = np.random.default_rng(0)
    pool = FeaturePool([str(i) for i in range(400)], image, rng.normal(size=(400, 6)),
                       rng.normal(size=(400, 4)), ["clip", "reward", "length", "gpt"])
    pool_path = pool.save(tmp_path / "pool.safetensors")
    save_checkpoint(build(selector_config(context_size=20, score_rounds=2), seed=0),
                    tmp_path / "ckpt")
    chosen = {}
    for method in ("exact", "scalable"):
        settings = load_settings(None, ["selection.num_samples=30", "selection.n_clusters=4",
                                        f"selection.clustering={method}",
                                        "selection.micro_clusters=60"])
        out = tmp_path / method
        chosen[method] = select(out, settings, pool_path, tmp_path / "ckpt")
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["clustering"]["method"] == method and len(chosen[method]) == 30
        clusters = {s["cluster"] for s in manifest["samples"]}
        assert len(clusters) == 4
    # four well-separated blobs: both methods find them, so the selections are the same
    assert chosen["exact"] == chosen["scalable"]
