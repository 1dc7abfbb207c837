"""selector.labels.split: balanced k-means++ subsets (the original's kmeans_pp.py + average.py)."""
from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from selector.core.errors import InputError
from selector.labels.split import (balance_clusters, balanced_kmeans_subsets, kmeans_clusters,
                                   subset_quotas)


def blobs(sizes, dim=4, seed=0, spread=0.05):
    """Well-separated Gaussian blobs of the given sizes, rows shuffled: (ids, X, true label)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(len(sizes), dim)) * 20
    truth = np.repeat(np.arange(len(sizes)), sizes)
    rng.shuffle(truth)
    X = centres[truth] + rng.normal(scale=spread, size=(len(truth), dim))
    return [str(100 + i) for i in range(len(truth))], X, truth


def assert_partition(subsets, ids):
    members = [i for m in subsets.values() for i in m]
    assert sorted(members) == sorted(ids) and len(members) == len(set(members))



def test_kmeans_finds_planted_clusters_and_balancing_moves_leading_members():
    sizes = [40, 25, 15, 10, 5]  # N = 95, k = 5 -> 19 each
    ids, X, truth = blobs(sizes)
    raw = kmeans_clusters(ids, X, k=5, seed=0)
    truth_of = dict(zip(ids, truth))
    # every k-means cluster is exactly one planted blob
    assert sorted(len(m) for m in raw.values()) == sorted(sizes)
    assert all(len({truth_of[i] for i in m}) == 1 for m in raw.values())
    subsets = balanced_kmeans_subsets(ids, X, k=5, seed=0, drop_remainder=False)
    assert list(subsets) == ["00", "01", "02", "03", "04"]
    assert {len(m) for m in subsets.values()} == {19}
    assert_partition(subsets, ids)
    for name, members in raw.items():
        if len(members) > 19:  # donors keep their last 19 members in pool order
            assert subsets[name] == members[-19:]
        else:  # receivers keep all of theirs, first, and only gain
            assert subsets[name][:len(members)] == members


@pytest.mark.parametrize("n,k", [(103, 10), (3439 // 10, 30), (31, 30), (60, 30), (7, 1)])
def test_sizes_differ_by_at_most_one_and_no_id_is_lost(n, k):
    rng = np.random.default_rng(n)
    ids = [f"s{i}" for i in range(n)]
    subsets = balanced_kmeans_subsets(ids, rng.normal(size=(n, 3)), k=k, seed=1,
                                      drop_remainder=False)
    sizes = Counter(len(m) for m in subsets.values())
    assert len(subsets) == k
    assert set(sizes) <= {n // k, n // k + 1} and sizes.get(n // k + 1, 0) == n % k
    assert_partition(subsets, ids)


def test_extra_places_go_to_the_largest_clusters_and_the_walk_is_the_originals():
    clusters = {"A": list("abc"), "B": list("defghijq"), "C": list("k"), "D": list("lmnop")}
    # 17 samples in 4 subsets: 4 each, the one extra place to the largest cluster B
    assert subset_quotas(clusters, drop_remainder=False) == {"A": 4, "B": 5, "C": 4, "D": 4}
    assert subset_quotas(clusters, drop_remainder=True) == {"A": 4, "B": 4, "C": 4, "D": 4}
    # worked by hand from average.py's loops: B gives its first member to A and the next two to
    # C; D gives its first member to C
    assert balance_clusters(clusters, drop_remainder=False) == {
        "A": list("abcd"), "B": list("ghijq"), "C": list("kefl"), "D": list("mnop")}
    # the original's fixed size and final cut: B gives d to A, e, f, g to C, keeps h i j q
    assert balance_clusters(clusters, drop_remainder=True) == {
        "A": list("abcd"), "B": list("hijq"), "C": list("kefg"), "D": list("lmno")}


def test_deterministic_for_a_seed():
    ids, X, _ = blobs([30, 30, 30, 30], spread=8.0, seed=3)  # overlapping: k-means has choices
    first = balanced_kmeans_subsets(ids, X, k=6, seed=7, drop_remainder=False)
    assert balanced_kmeans_subsets(ids, X, k=6, seed=7, drop_remainder=False) == first
    assert balanced_kmeans_subsets(list(ids), X.astype(np.float32).astype(np.float64),
                                   k=6, seed=7, drop_remainder=False) == first


@pytest.mark.parametrize("ids,X,k,message", [
    (["1", "2", "3"], np.zeros((3, 2)), 4, "cannot split 3 samples into 4"),
    (["1", "2", "1"], np.zeros((3, 2)), 2, "duplicate sample id '1'"),
    (["1", "2", "3"], np.array([[0, 1], [np.nan, 0], [1, 1]]), 2, "sample '2' has a NaN"),
    (["1", "2"], np.zeros((3, 2)), 2, r"expected \(2, d\)"),
    (["1", "2"], np.zeros((2, 2)), 0, "cannot split 2 samples into 0"),
])
def test_bad_split_input(ids, X, k, message):
    with pytest.raises(InputError, match=message):
        balanced_kmeans_subsets(ids, X, k=k, seed=0, drop_remainder=False)


def test_reference_balancing_reproduces_released_modified_json(reference_dir):
    """The released modified.json is the original average.py applied to clustering_results.json:
    ``drop_remainder=True`` must give it back exactly (keys, members and their order)."""
    folder = reference_dir / "cluster" / "kmeans++"
    raw = json.loads((folder / "clustering_results.json").read_text(encoding="utf-8"))
    released = json.loads((folder / "modified.json").read_text(encoding="utf-8"))
    assert balance_clusters(raw, drop_remainder=True) == released
    assert list(balance_clusters(raw, drop_remainder=True)) == list(released)
    ours = balance_clusters(raw, drop_remainder=False)  # none dropped: 19 subsets of 115, 11 of 114
    all_ids = [i for m in raw.values() for i in m]
    assert len(all_ids) == 3439
    assert_partition(ours, all_ids)
    assert Counter(len(m) for m in ours.values()) == {115: 19, 114: 11}
    largest = sorted(raw, key=lambda n: -len(raw[n]))[:19]
    assert {n for n, m in ours.items() if len(m) == 115} == set(largest)

