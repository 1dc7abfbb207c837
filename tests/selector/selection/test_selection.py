"""selector.selection: the original rule, its generalisation, clustering and baselines."""
from __future__ import annotations

import numpy as np
import pytest

from selector.core.errors import InputError
from selector.selection.rule import (cluster_quota, clusters_from_labels, default_quota_total,
                                id_sort_key, random_k, select_diverse_top_k,
                                select_diverse_top_k_labels, select_diverse_top_k_loop,
                                top_k_by)
from selector.selection.clustering import spectral_clusters


def test_quota_matches_the_original_constants():
    assert default_quota_total(200) == 204
    for size in (1, 13, 59, 80, 85, 177, 286, 300, 325, 880, 1234, 3439):
        assert cluster_quota(size, 204, 3439) == max(1, int(204 * size / 3439))
    assert default_quota_total(50) == 51 and default_quota_total(1000) == 1020


def test_truncated_ranking_keeps_cluster_file_order_for_ties():
    ids = ["5", "3", "9", "1"]
    scores = [30.9, 30.1, 31.0, 29.0]
    clusters = {"a": ["5", "3", "9", "1"]}
    # int(): 30, 30, 31, 29 -> 9 first, then 5 before 3 (file order), even though 3 < 5 as ids
    picked = select_diverse_top_k(ids, scores, clusters, num_samples=2, quota_total=4, truncate_scores=True)
    assert picked.selected == ["5", "9"]
    clusters = {"a": ["3", "5", "9", "1"]}
    picked = select_diverse_top_k(ids, scores, clusters, num_samples=2, quota_total=4, truncate_scores=True)
    assert picked.selected == ["3", "9"]
    # float ranking: 9 (31.0), 5 (30.9)
    assert select_diverse_top_k(ids, scores, clusters, num_samples=2, quota_total=4).selected == ["5", "9"]


def test_every_cluster_gets_at_least_one():
    ids = [str(i) for i in range(100)]
    scores = np.arange(100.0)
    clusters = {"big": ids[:99], "tiny": ids[99:]}
    low = {"big": ids[1:], "tiny": ids[:1]}  # the tiny cluster holds the worst sample
    picked = select_diverse_top_k(ids, scores, low, num_samples=10)
    # the tiny cluster's sample is a candidate, but the global cut to num_samples drops it (the original
    # rule: quotas make candidates, the final ranking decides)
    assert picked.quotas == {"big": 10, "tiny": 1} and picked.rule["candidates"] == 11
    assert "0" not in picked.selected and len(picked.selected) == 10
    assert "0" in select_diverse_top_k(ids, scores, low, num_samples=11, quota_total=11).selected
    assert select_diverse_top_k(ids, scores, clusters, num_samples=10).quotas["tiny"] == 1


def test_output_sorted_by_integer_id_and_unknowns_reported():
    ids = ["10", "9", "100", "x"]
    picked = select_diverse_top_k(ids, [1, 2, 3, 4], {"c": ["10", "9", "100", "ghost"]}, num_samples=3,
                                  quota_total=4)
    assert picked.selected == ["9", "10", "100"]
    assert picked.ignored_cluster_ids == ["ghost"] and picked.unclustered == ["x"]
    assert sorted(["b", "10", "2"], key=id_sort_key) == ["2", "10", "b"]


def test_baselines():
    ids = [str(i) for i in range(50)]
    assert random_k(ids, 5, seed=1) == random_k(ids, 5, seed=1)
    assert random_k(ids, 5, seed=1) != random_k(ids, 5, seed=2)
    assert len(set(random_k(ids, 50, seed=0))) == 50
    with pytest.raises(InputError):
        random_k(ids, 51)
    values = np.arange(50.0)[::-1]
    assert top_k_by(ids, values, 3) == ["0", "1", "2"]


def test_spectral_clusters_separate_blobs():
    rng = np.random.default_rng(0)
    centres = np.array([[0, 0, 0], [20, 0, 0], [0, 20, 0]], dtype=float)
    truth = np.repeat(np.arange(3), 40)
    points = centres[truth] + rng.normal(size=(120, 3))
    labels = spectral_clusters(points, n_clusters=3, n_neighbors=10, seed=0)
    from sklearn.metrics import adjusted_rand_score

    assert adjusted_rand_score(truth, labels) == pytest.approx(1.0)
    clusters = clusters_from_labels([str(i) for i in range(120)], labels)
    assert sorted(len(v) for v in clusters.values()) == [40, 40, 40]
    assert list(clusters)[0] == str(labels[0])  # order of first appearance, as the original


def test_truncated_quotas_are_filled_up_to_num_samples_unless_reproducing():
    ids = [str(i) for i in range(300)]
    scores = np.random.default_rng(0).normal(size=300)
    clusters = {str(c): ids[c * 75:(c + 1) * 75] for c in range(4)}  # quotas 7 each = 28 < 30
    filled = select_diverse_top_k(ids, scores, clusters, num_samples=30)
    assert filled.rule["candidates"] == 28 and filled.rule["filled"] == 2
    assert len(filled.selected) == 30
    original = select_diverse_top_k(ids, scores, clusters, num_samples=30, truncate_scores=True,
                                    fill_up=False)
    assert len(original.selected) == 28


# --- the array rule (numpy, O(N log N)) against the original's loop formulation ---------------

def _random_case(rng):
    """A pool with numeric and text ids in random order, scores with many ties (also after
    int()), clusters that miss some pool samples and list unknown ids, in shuffled file order."""
    n = int(rng.integers(1, 60))
    ids = [str(i) for i in rng.choice(5000, size=n, replace=False)]
    ids = [f"s{i}" if rng.random() < 0.2 else i for i in ids]
    scores = rng.integers(-3, 4, size=n) + rng.choice([0.0, 0.25, 0.5, 0.9], size=n)
    n_clusters = int(rng.integers(1, 7))
    clusters = {}
    for sample_id in ids:
        if rng.random() < 0.85:
            clusters.setdefault(str(rng.integers(0, n_clusters)), []).append(sample_id)
    for members in clusters.values():
        rng.shuffle(members)
        if rng.random() < 0.3:
            members.insert(int(rng.integers(0, len(members) + 1)), f"ghost{rng.integers(99)}")
    clusters = {name: clusters[name] for name in rng.permutation(sorted(clusters))}
    options = {"num_samples": int(rng.integers(1, n + 4)),
               "quota_total": None if rng.random() < 0.5 else int(rng.integers(1, n + 6)),
               "truncate_scores": bool(rng.random() < 0.5), "fill_up": bool(rng.random() < 0.5)}
    return ids, scores, clusters, options


def _assert_same_selection(ours, expected):
    assert ours.selected == expected.selected
    assert list(ours.quotas.items()) == list(expected.quotas.items())
    assert ours.cluster_of == expected.cluster_of
    assert ours.rule == expected.rule
    assert ours.ignored_cluster_ids == expected.ignored_cluster_ids
    assert ours.unclustered == expected.unclustered


def test_array_rule_equals_the_loop_rule_on_random_inputs():
    rng = np.random.default_rng(7)
    for _ in range(400):
        ids, scores, clusters, options = _random_case(rng)
        expected = select_diverse_top_k_loop(ids, scores, clusters, **options)
        _assert_same_selection(select_diverse_top_k(ids, scores, clusters, **options), expected)


def test_label_rule_equals_the_loop_rule_on_clusters_from_labels():
    rng = np.random.default_rng(11)
    for _ in range(200):
        n = int(rng.integers(1, 80))
        ids = [str(i) for i in rng.permutation(n)]
        scores = rng.integers(0, 5, size=n) + rng.choice([0.0, 0.5], size=n)
        labels = rng.choice([3, 7, 42, 0, 9], size=n)  # non-contiguous, first seen in any order
        options = {"num_samples": int(rng.integers(1, n + 2)), "truncate_scores": bool(rng.random() < 0.5),
                   "fill_up": bool(rng.random() < 0.5)}
        expected = select_diverse_top_k_loop(ids, scores, clusters_from_labels(ids, labels),
                                             **options)
        _assert_same_selection(select_diverse_top_k_labels(ids, scores, labels, **options),
                               expected)


def test_array_rule_reproduces_the_released_selection_inputs(reference_dir):
    """The released checkpoint's scores and spectral clusters, int()-truncated ranking, no
    fill-up: the case whose tie order decides the released 200."""
    from selector.model.network import load_reference_checkpoint, score_features
    from selector.scoring.reference import CHECKPOINT, ReferenceRepo

    repo = ReferenceRepo(reference_dir)
    pool = repo.pool()
    scores = score_features(load_reference_checkpoint(reference_dir / CHECKPOINT), pool.features)
    clusters = repo.spectral_clusters()
    options = {"num_samples": 200, "truncate_scores": True, "fill_up": False}
    _assert_same_selection(select_diverse_top_k(pool.ids, scores, clusters, **options),
                           select_diverse_top_k_loop(pool.ids, scores, clusters, **options))


def test_bad_clusters_and_scores_are_input_errors():
    ids = ["1", "2", "3"]
    with pytest.raises(InputError, match="'2' is listed more than once"):
        select_diverse_top_k(ids, [1, 2, 3], {"a": ["1", "2"], "b": ["2"]}, num_samples=1)
    with pytest.raises(InputError, match="'3' has a non-finite score"):
        select_diverse_top_k(ids, [1, 2, float("nan")], {"a": ids}, num_samples=1)
    with pytest.raises(InputError, match="appears more than once"):
        select_diverse_top_k_labels(["1", "1"], [1, 2], [0, 0], num_samples=1)
    with pytest.raises(InputError, match="2 labels for a pool of 3"):
        select_diverse_top_k_labels(ids, [1, 2, 3], [0, 0], num_samples=1)


def test_top_k_by_keeps_pool_order_for_ties():
    rng = np.random.default_rng(3)
    ids = [str(i) for i in rng.permutation(200)]
    values = rng.integers(0, 6, size=200).astype(float)
    expected = sorted(range(200), key=lambda i: values[i], reverse=True)[:17]
    assert top_k_by(ids, values, 17) == sorted((ids[i] for i in expected), key=id_sort_key)


# --- chunked scoring: bounded memory, the scores of one pass -----------------------------------

def test_chunked_default_scoring_equals_one_pass():
    from selector.model.network import build, default_sets_per_batch, score_features
    from test_model import selector_config

    config = selector_config(context_size=8, score_rounds=2)
    model = build(config, seed=4)
    features = np.random.default_rng(0).normal(size=(3001, 16)).astype(np.float32)  # 376 sets
    one_pass = score_features(model, features, sets_per_batch=10 ** 6)
    np.testing.assert_array_equal(score_features(model, features, sets_per_batch=64), one_pass)
    # the default chunk is a multiple of 64 sets, whatever the row budget
    assert default_sets_per_batch(8, chunk_rows=1000) == 64
    assert default_sets_per_batch(114) % 64 == 0
    np.testing.assert_array_equal(score_features(model, features, chunk_rows=1600), one_pass)


def test_chunked_reference_scoring_equals_the_whole_pool_pass():
    """Reference mode: every sample attends to the whole pool; chunking the queries bounds the
    attention weights to chunk x N without changing a score."""
    from selector.model.network import build, reference_query_chunk, score_features
    from test_model import selector_config

    model = build(selector_config(mode="reference"), seed=2)
    features = np.random.default_rng(1).normal(size=(1000, 16)).astype(np.float32)
    whole = score_features(model, features)  # 1000^2 weights fit the default budget
    assert reference_query_chunk(1000, 4) is None
    budget = 3 * 4 * 1000 * 4 * 130  # room for 130 queries -> chunks of 128
    assert reference_query_chunk(1000, 4, budget) == 128
    np.testing.assert_array_equal(score_features(model, features, reference_budget_bytes=budget),
                                  whole)
    assert reference_query_chunk(1000, 4, 3 * 4 * 1000 * 4 * 20) == 20
    np.testing.assert_array_equal(
        score_features(model, features, reference_budget_bytes=3 * 4 * 1000 * 4 * 20), whole)
    # a million-sample pool: a bounded chunk (the full N x N weights would be ~48 TB)
    chunk = reference_query_chunk(1_000_000, 4)
    assert 8 <= chunk and 3 * 4 * 1_000_000 * 4 * chunk <= 400 << 20
