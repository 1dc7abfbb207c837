"""``semdedup`` (SemDeDup): no two kept samples of a cluster above the threshold, the kept one of a
duplicate group the least similar to its centroid, memory-bounded blocks that change nothing,
determinism per seed, the budget met exactly, the quotas with diversity on."""
from __future__ import annotations

import numpy as np
import pytest

from selector.core.errors import InputError
from selector.scoring.pool import FeaturePool
from selector.selection import methods
from selector.selection.methods.semdedup import (deduplicate_cluster, embeddings_of,
                                                 kmeans_labels, semdedup_keep)

BUDGET = 30
SETTINGS = {"space": "image", "n_clusters": 4, "threshold": 0.95, "cluster_seed": 0,
            "fill": "random", "diversity": False}


def make_pool(groups: int = 80, seed: int = 0) -> FeaturePool:
    """``groups`` random directions in 16-d, each with 0..3 near-copies (cosine ~0.999)."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(groups):
        base = rng.normal(size=16)
        rows.append(base)
        rows += [base + rng.normal(scale=0.02, size=16) for _ in range(int(rng.integers(0, 4)))]
    image = np.array(rows)
    n = len(image)
    return FeaturePool([f"s{i:03d}" for i in range(n)], image, rng.normal(size=(n, 5)),
                       rng.normal(size=(n, 1)), ["clip"])


POOL = make_pool()


def run(pool=POOL, seed=0, diversity=False, num=BUDGET, argument=None, **settings):
    method, _ = methods.create("semdedup")
    inputs = methods.MethodInputs(pool=pool, num_samples=num, seed=seed,
                                  settings={**SETTINGS, **settings}, argument=argument,
                                  selection={"quota_total": num + 1})
    scored = method.score(inputs)
    clusters = np.arange(len(pool)) % 3 if diversity else None
    return methods.choose(scored, inputs, diversity, clusters, method="semdedup"), scored


def _cos(x):
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    return x @ x.T


def _max_kept_pair(pool, keep, labels):
    emb = embeddings_of(pool, "image").astype(np.float64)
    worst = -1.0
    for c in np.unique(labels):
        rows = np.flatnonzero(keep & (labels == c))
        if len(rows) > 1:
            sims = _cos(emb[rows])
            worst = max(worst, float(sims[np.triu_indices(len(rows), 1)].max()))
    return worst


@pytest.mark.parametrize("threshold", [0.95, 0.5])
def test_no_kept_pair_of_a_cluster_is_above_the_threshold(threshold):
    _, scored = run(threshold=threshold)
    labels = kmeans_labels(embeddings_of(POOL, "image"), 4, 0)
    keep = scored.eligible
    assert 0 < keep.sum() < len(POOL)
    assert _max_kept_pair(POOL, keep, labels) <= threshold
    assert scored.details["kept"] == int(keep.sum())
    assert scored.details["dropped"] == len(POOL) - int(keep.sum())


def test_with_one_cluster_no_pair_at_all_is_above_the_threshold():
    _, scored = run(n_clusters=1)
    emb = embeddings_of(POOL, "image").astype(np.float64)[scored.eligible]
    sims = _cos(emb)
    assert sims[np.triu_indices(len(emb), 1)].max() <= 0.95
    # the planted groups: exactly one sample of each survives (80 groups, random bases apart)
    assert scored.eligible.sum() == 80


def _naive(emb, threshold):
    """SemDeDup's reference formulation: sort by similarity to the centroid (lowest first),
    the upper triangle's column maximum above the threshold marks a duplicate."""
    centroid = emb.mean(axis=0)
    centroid /= np.linalg.norm(centroid)
    order = np.argsort(emb @ centroid, kind="stable")
    sims = np.triu(emb[order] @ emb[order].T, k=1)
    sims[np.tril_indices(len(emb))] = -np.inf
    keep = np.empty(len(emb), bool)
    keep[order] = ~(sims.max(axis=0) > threshold)
    return keep


def test_blocks_change_nothing_and_match_the_reference_formulation():
    emb = embeddings_of(POOL, "image")
    whole = deduplicate_cluster(emb, 0.95)
    for block_floats in (1, len(emb) * 3, len(emb) * 50):
        assert (deduplicate_cluster(emb, 0.95, block_floats) == whole).all()
    assert (whole == _naive(emb.astype(np.float64), 0.95)).all()
    labels = np.arange(len(emb)) % 2
    assert (semdedup_keep(emb, labels, 0.95, block_floats=7) ==
            semdedup_keep(emb, labels, 0.95)).all()


def test_the_kept_one_is_the_least_similar_to_the_centroid():
    rng = np.random.default_rng(1)
    spread = rng.normal(size=(30, 8))
    group = np.ones(8) + rng.normal(scale=0.01, size=(4, 8))  # four near-copies
    emb = np.concatenate([spread, group])
    emb = (emb / np.linalg.norm(emb, axis=1, keepdims=True)).astype(np.float32)
    keep = deduplicate_cluster(emb, 0.99)
    centroid = emb.mean(axis=0)
    to_centroid = emb[30:] @ (centroid / np.linalg.norm(centroid))
    assert keep[30:].sum() == 1 and np.flatnonzero(keep[30:])[0] == int(np.argmin(to_centroid))


def test_deterministic_per_seed_and_the_dedup_does_not_depend_on_it():
    first, a = run(seed=1)
    again, _ = run(seed=1)
    other, b = run(seed=2)
    assert first.selected == again.selected and first.selected != other.selected
    assert (a.eligible == b.eligible).all()
    assert methods.create("semdedup")[0].uses_seed and a.details["uses_seed"]


def test_fill_by_a_score_is_deterministic_and_takes_the_best_kept():
    first, scored = run(seed=1, fill="top:clip")
    assert first.selected == run(seed=7, fill="top:clip")[0].selected
    assert not scored.details["uses_seed"] and scored.details["fill"] == "top:clip"
    clip = POOL.indicator("clip")
    kept = np.flatnonzero(scored.eligible)
    best = kept[np.argsort(-clip[kept], kind="stable")[:BUDGET]]
    assert sorted(first.selected) == sorted(POOL.ids[i] for i in best)
    # the spec's argument overrides the setting
    assert run(argument="top:clip")[0].selected == first.selected


@pytest.mark.parametrize("diversity", [False, True])
def test_budget_exactly_met_among_the_kept(diversity):
    for num in (1, 9, BUDGET):
        selection, scored = run(diversity=diversity, num=num)
        assert len(selection.selected) == num == len(set(selection.selected))
        kept = {POOL.ids[i] for i in np.flatnonzero(scored.eligible)}
        assert set(selection.selected) <= kept


def test_quotas_respected_with_diversity_on():
    selection, scored = run(diversity=True)
    counts = np.bincount([int(selection.cluster_of[i]) for i in selection.selected], minlength=3)
    quotas = np.array([selection.quotas[str(c)] for c in range(3)])
    filled = selection.rule["filled"]
    assert (counts <= quotas + filled).all() and counts.sum() == BUDGET
    assert set(selection.cluster_of) == {POOL.ids[i] for i in np.flatnonzero(scored.eligible)}


def test_text_and_both_spaces_and_refusals():
    _, image = run(n_clusters=1)
    for space in ("text", "both"):
        _, scored = run(space=space, n_clusters=1)
        assert not (scored.eligible == image.eligible).all() and scored.details["space"] == space
        emb = embeddings_of(POOL, space).astype(np.float64)[scored.eligible]
        assert _cos(emb)[np.triu_indices(len(emb), 1)].max() <= 0.95
    with pytest.raises(InputError, match="fill must be random or top:<indicator>"):
        run(fill="best")
    with pytest.raises(InputError, match="no indicator 'gpt'"):
        run(fill="top:gpt")
    with pytest.raises(InputError, match="space must be one of image, text, both"):
        run(space="audio")
    with pytest.raises(InputError, match="are eligible, fewer than"):
        run(threshold=-0.99, n_clusters=1, num=BUDGET)


def test_large_pools_fit_centroids_on_a_seeded_sample(monkeypatch):
    from selector.selection.methods import semdedup

    monkeypatch.setattr(semdedup, "FULL_KMEANS_MAX", 50)
    monkeypatch.setattr(semdedup, "FIT_SAMPLES", 60)
    emb = embeddings_of(POOL, "image")
    first, again = kmeans_labels(emb, 4, 0), kmeans_labels(emb, 4, 0)
    assert first.shape == (len(POOL),) and (first == again).all()
    assert set(first.tolist()) <= {0, 1, 2, 3} and len(set(first.tolist())) > 1
    _, scored = run(n_clusters=4)
    labels = kmeans_labels(emb, 4, 0)
    assert _max_kept_pair(POOL, scored.eligible, labels) <= 0.95
