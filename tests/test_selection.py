"""selector.selection: the original rule, its generalisation, clustering and baselines."""
from __future__ import annotations

import numpy as np
import pytest

from selector.errors import InputError
from selector.selection import (cluster_quota, clusters_from_labels, default_quota_total,
                                id_sort_key, random_k, select_diverse_top_k, spectral_clusters,
                                top_k_by)


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
    picked = select_diverse_top_k(ids, scores, clusters, k=2, quota_total=4, truncate_scores=True)
    assert picked.selected == ["5", "9"]
    clusters = {"a": ["3", "5", "9", "1"]}
    picked = select_diverse_top_k(ids, scores, clusters, k=2, quota_total=4, truncate_scores=True)
    assert picked.selected == ["3", "9"]
    # float ranking: 9 (31.0), 5 (30.9)
    assert select_diverse_top_k(ids, scores, clusters, k=2, quota_total=4).selected == ["5", "9"]


def test_every_cluster_gets_at_least_one():
    ids = [str(i) for i in range(100)]
    scores = np.arange(100.0)
    clusters = {"big": ids[:99], "tiny": ids[99:]}
    low = {"big": ids[1:], "tiny": ids[:1]}  # the tiny cluster holds the worst sample
    picked = select_diverse_top_k(ids, scores, low, k=10)
    # the tiny cluster's sample is a candidate, but the global cut to k drops it (the original
    # rule: quotas make candidates, the final ranking decides)
    assert picked.quotas == {"big": 10, "tiny": 1} and picked.rule["candidates"] == 11
    assert "0" not in picked.selected and len(picked.selected) == 10
    assert "0" in select_diverse_top_k(ids, scores, low, k=11, quota_total=11).selected
    assert select_diverse_top_k(ids, scores, clusters, k=10).quotas["tiny"] == 1


def test_output_sorted_by_integer_id_and_unknowns_reported():
    ids = ["10", "9", "100", "x"]
    picked = select_diverse_top_k(ids, [1, 2, 3, 4], {"c": ["10", "9", "100", "ghost"]}, k=3,
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


def test_truncated_quotas_are_filled_up_to_k_unless_reproducing():
    ids = [str(i) for i in range(300)]
    scores = np.random.default_rng(0).normal(size=300)
    clusters = {str(c): ids[c * 75:(c + 1) * 75] for c in range(4)}  # quotas 7 each = 28 < 30
    filled = select_diverse_top_k(ids, scores, clusters, k=30)
    assert filled.rule["candidates"] == 28 and filled.rule["filled"] == 2
    assert len(filled.selected) == 30
    original = select_diverse_top_k(ids, scores, clusters, k=30, truncate_scores=True,
                                    fill_to_k=False)
    assert len(original.selected) == 28
