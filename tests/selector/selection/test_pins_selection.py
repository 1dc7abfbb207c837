"""Pins for selector.selection (found by tests/mutation_score.py): quotas, candidates, fill-up, tie
order, the recorded rule and every refusal, worked out by hand on a ten-sample pool, for the array
rule, the label rule and the loop that specifies them."""
from __future__ import annotations

import numpy as np
import pytest

from selector.core.errors import InputError
from selector.selection.rule import (cluster_quota, clusters_from_labels, default_quota_total,
                                id_sort_key, random_k, select_diverse_top_k,
                                select_diverse_top_k_labels, select_diverse_top_k_loop, top_k_by)

IDS = [str(i) for i in range(1, 11)]
SCORES = [0.9, 0.8, 0.95, 0.1, 0.2, 0.3, 0.5, 0.7, 0.85, 1.0]
CLUSTERS = {"A": ["1", "2", "3", "4", "5", "6"], "B": ["7", "99", "8"], "C": ["9"]}  # "10" in none
RULES = [select_diverse_top_k, select_diverse_top_k_loop]


@pytest.mark.parametrize("num_samples, total", [(200, 204), (100, 102), (1, 2), (49, 50), (50, 51),
                                      (51, 53), (150, 153), (1000, 1020)])
def test_default_quota_total(num_samples, total):
    assert default_quota_total(num_samples) == total


def test_cluster_quota_floors_and_gives_at_least_one():
    assert cluster_quota(100, 204, 3439) == 5   # 5.93
    assert cluster_quota(10, 204, 3439) == 1    # 0.59 -> at least one
    assert cluster_quota(3439, 204, 3439) == 204
    assert cluster_quota(50, 100, 100) == 50


def test_ids_sort_numbers_first_as_numbers():
    assert sorted(["b", "10", "a", "2", "01x"], key=id_sort_key) == ["2", "10", "01x", "a", "b"]
    assert id_sort_key("10") == (0, 10, "") and id_sort_key("x") == (1, 0, "x")


def test_clusters_from_labels_in_order_of_first_appearance():
    assert clusters_from_labels(["a", "b", "c", "d"], [2.0, 0, 2, 1]) == \
        {"2": ["a", "c"], "0": ["b"], "1": ["d"]}


@pytest.mark.parametrize("rule", RULES)
def test_quotas_candidates_and_global_cut(rule):
    result = rule(IDS, SCORES, CLUSTERS, num_samples=3)
    # quota_total 3 + 1 = 4 over a pool of 10: A 4*6//10 = 2, B and C floor to 0 -> 1
    assert result.quotas == {"A": 2, "B": 1, "C": 1}
    # candidates: A's 3, 1; B's 8; C's 9 -> the best three
    assert result.selected == ["1", "3", "9"]
    assert result.rule == {"k": 3, "quota_total": 4, "pool_size": 10, "truncate_scores": False,
                           "candidates": 4, "filled": 0}
    assert result.cluster_of == {**{i: "A" for i in CLUSTERS["A"]}, "7": "B", "8": "B", "9": "C"}
    assert result.ignored_cluster_ids == ["99"] and result.unclustered == ["10"]


@pytest.mark.parametrize("rule", RULES)
def test_fill_up_takes_the_best_remaining_clustered_samples(rule):
    result = rule(IDS, SCORES, CLUSTERS, num_samples=6, quota_total=4)
    assert result.selected == ["1", "2", "3", "7", "8", "9"]  # 2 (0.8) and 7 (0.5) fill up
    assert result.rule["filled"] == 2 and result.rule["candidates"] == 4
    assert result.rule["quota_total"] == 4
    exact = rule(IDS, SCORES, CLUSTERS, num_samples=6, quota_total=4, fill_up=False)
    assert exact.selected == ["1", "3", "8", "9"] and exact.rule["filled"] == 0
    # "10" (the best score) is in no cluster: never selected, not even to fill up
    everything = rule(IDS, SCORES, CLUSTERS, num_samples=10)
    assert everything.selected == [str(i) for i in range(1, 10)] and "10" not in everything.selected


@pytest.mark.parametrize("rule", RULES)
def test_truncated_scores_tie_in_cluster_file_order(rule):
    ids = ["1", "2", "3", "4"]
    clusters = {"X": ["2", "1", "3", "4"]}
    scores = [5.9, 5.1, 4.99, -0.5]
    result = rule(ids, scores, clusters, num_samples=1, quota_total=4, truncate_scores=True)
    assert result.selected == ["2"]  # int(5.1) == int(5.9): "2" is first in the file
    assert result.rule["truncate_scores"] is True
    assert rule(ids, scores, clusters, num_samples=1, quota_total=4).selected == ["1"]
    # truncation is toward zero: -0.5 ranks with 0, level with nothing better
    low = rule(["a", "b"], [-0.5, 0.4], {"X": ["a", "b"]}, num_samples=1, quota_total=2,
               truncate_scores=True)
    assert low.selected == ["a"]


@pytest.mark.parametrize("rule", RULES)
def test_global_cut_ties_keep_candidate_order(rule):
    ids = ["1", "2", "3"]
    clusters = {"P": ["3"], "Q": ["1"], "R": ["2"]}
    assert rule(ids, [1.0, 1.0, 1.0], clusters, num_samples=1, quota_total=3).selected == ["3"]
    assert rule(ids, [1.0, 1.0, 1.0], clusters, num_samples=2, quota_total=3).selected == ["1", "3"]


def test_label_rule_records_the_same_selection():
    labels = [0, 0, 0, 0, 0, 0, 1, 1, 2, 3]
    by_labels = select_diverse_top_k_labels(IDS, SCORES, labels, num_samples=3)
    by_clusters = select_diverse_top_k(IDS, SCORES, clusters_from_labels(IDS, labels), num_samples=3)
    assert by_labels == by_clusters
    assert by_labels.quotas == {"0": 2, "1": 1, "2": 1, "3": 1}
    assert by_labels.selected == ["1", "3", "10"] and by_labels.unclustered == []
    assert by_labels.cluster_of["10"] == "3" and by_labels.rule["candidates"] == 5
    exact = select_diverse_top_k_labels(IDS, SCORES, labels, num_samples=7, quota_total=4,
                                        fill_up=False, truncate_scores=True)
    assert exact.rule["filled"] == 0 and exact.rule["truncate_scores"] is True
    assert exact.rule["quota_total"] == 4 and exact.quotas == {"0": 2, "1": 1, "2": 1, "3": 1}
    assert len(exact.selected) == 5
    filled = select_diverse_top_k_labels(IDS, SCORES, labels, num_samples=7, quota_total=4)
    assert filled.rule["filled"] == 2 and len(filled.selected) == 7  # fill-up is the default


@pytest.mark.parametrize("rule", ["clusters", "labels", "loop"])
def test_200_samples_record_k_and_a_quota_total_of_204(rule):
    """The manifest's rule names the selection size "k" (its readers' key)."""
    ids = [str(i) for i in range(250)]
    scores = [float(i % 17) for i in range(250)]
    if rule == "labels":
        result = select_diverse_top_k_labels(ids, scores, [0] * 250, num_samples=200)
    else:
        chosen = select_diverse_top_k if rule == "clusters" else select_diverse_top_k_loop
        result = chosen(ids, scores, {"all": ids}, num_samples=200)
    assert len(result.selected) == 200 and result.rule["k"] == 200
    assert result.rule["quota_total"] == 204


@pytest.mark.parametrize("call, message", [
    (lambda: select_diverse_top_k(["a", "b"], [1, 2], {"X": ["a"], "Y": ["b", "a"]}, 1),
     "clusters: sample 'a' is listed more than once (again in cluster 'Y')"),
    (lambda: select_diverse_top_k(["x", "a", "b", "a"], [1, 2, 3, 4], {"X": ["a"]}, 1),
     "pool: sample id 'a' appears more than once"),
    (lambda: select_diverse_top_k_labels(["x", "a", "b", "a"], [1, 2, 3, 4], [0, 0, 1, 1], 1),
     "pool: sample id 'a' appears more than once"),
    (lambda: select_diverse_top_k_labels(["a", "b"], [1, 2], [0, 0, 1], 1),
     "clusters: 3 labels for a pool of 2 samples"),
    (lambda: select_diverse_top_k_labels(["a", "b"], [1, 2], 0, 1),
     "clusters: 0 labels for a pool of 2 samples"),
    (lambda: select_diverse_top_k(["a", "b"], [1, 2, 3], {"X": ["a"]}, 1),
     "3 scores for a pool of 2 samples"),
    (lambda: select_diverse_top_k(["a", "b", "c"], [1, float("nan"), float("inf")], {"X": ["a"]},
                                  1),
     "sample 'b' has a non-finite score (2 such samples)"),
    (lambda: select_diverse_top_k(["a"], [1], {"X": ["a"]}, num_samples=0),
     "number of samples to select must be a whole number >= 1, not 0"),
    (lambda: select_diverse_top_k(["a"], [1], {"X": ["a"]}, num_samples=True),
     "number of samples to select must be a whole number >= 1, not True"),
    (lambda: select_diverse_top_k(["a"], [1], {"X": ["a"]}, num_samples=1.5),
     "number of samples to select must be a whole number >= 1, not 1.5"),
    (lambda: random_k(["a"], 2), "cannot draw 2 samples from a pool of 1"),
    (lambda: random_k(["a"], -1), "not -1"),
    (lambda: top_k_by(["a"], [1], 2), "cannot select 2 samples from a pool of 1"),
    (lambda: top_k_by(["a"], [1], 0), "not 0"),
])
def test_refusals_name_the_problem(call, message):
    with pytest.raises(InputError) as caught:
        call()
    assert message in str(caught.value)


def test_loop_rule_refuses_num_samples_below_one():
    with pytest.raises(InputError, match="must be"):
        select_diverse_top_k_loop(["a"], [1], {"X": ["a"]}, num_samples=0)


def test_numpy_integer_num_samples_is_accepted():
    assert select_diverse_top_k(IDS, SCORES, CLUSTERS,
                                num_samples=np.int64(3)).selected == ["1", "3", "9"]


@pytest.mark.parametrize("rule", RULES)
def test_clusters_of_unknown_ids_only_are_ignored(rule):
    clusters = {"G": ["ghost"], **CLUSTERS, "Z": ["nobody", "none"]}
    result = rule(IDS, SCORES, clusters, num_samples=3)
    assert result.selected == ["1", "3", "9"] and result.quotas == {"A": 2, "B": 1, "C": 1}
    assert result.ignored_cluster_ids == ["ghost", "99", "nobody", "none"]


def test_scores_as_a_column_or_as_unsigned_integers():
    column = np.asarray(SCORES).reshape(-1, 1)
    assert select_diverse_top_k(IDS, column, CLUSTERS, num_samples=3).selected == ["1", "3", "9"]
    assert select_diverse_top_k_labels(IDS, column, [0] * 10, num_samples=2, quota_total=2).selected == \
        ["3", "10"]
    unsigned = np.array([9, 8, 95, 1, 2, 3, 5, 7, 85, 100], dtype=np.uint8)  # SCORES * 100, roughly
    assert select_diverse_top_k(IDS, unsigned, CLUSTERS, num_samples=3).selected == ["1", "3", "9"]


def test_top_k_by_ranks_unsigned_values_as_numbers():
    # negating uint8 values in place would wrap around (-200 -> 56) and rank them backwards
    assert top_k_by(["a", "b", "c"], np.array([1, 200, 3], dtype=np.uint8), 1) == ["b"]


def test_baselines_by_hand():
    assert top_k_by(["3", "1", "2"], [0.5, 0.5, 0.9], 2) == ["2", "3"]  # tie: pool order
    assert top_k_by(["3", "1", "2"], [0.5, 0.5, 0.9], 3) == ["1", "2", "3"]
    drawn = random_k([str(i) for i in range(20)], 5, seed=3)
    assert drawn == random_k([str(i) for i in range(20)], 5, seed=3)
    assert drawn == sorted(drawn, key=id_sort_key) and len(set(drawn)) == 5
    assert drawn != random_k([str(i) for i in range(20)], 5, seed=4)
    assert random_k([str(i) for i in range(20)], 5) == random_k([str(i) for i in range(20)], 5, 0)
    assert sorted(random_k(["a", "b"], 2), key=id_sort_key) == ["a", "b"]
