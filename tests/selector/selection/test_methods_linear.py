"""``linear``: a ridge model on standardised subset means of the indicators, fitted to the subset
labels; its scores equal a hand-fitted scikit-learn Ridge applied to each sample, it records the
coefficients and the cross-validation row, ignores the seed, and meets the budget."""
from __future__ import annotations

import json

import numpy as np
import pytest

from selector.core.errors import InputError
from selector.scoring.pool import FeaturePool
from selector.selection import methods

N, SUBSETS, BUDGET = 120, 12, 20


def make_pool(seed: int = 0) -> FeaturePool:
    rng = np.random.default_rng(seed)
    image = rng.normal(size=(N, 4)) + np.repeat(np.eye(4)[:3] * 4, N // 3, axis=0)
    indicators = np.stack([rng.normal(25, 5, N), rng.normal(0, 1, N), rng.normal(40, 9, N)], 1)
    return FeaturePool([f"s{i:03d}" for i in range(N)], image, rng.normal(size=(N, 3)),
                       indicators, ["clip", "reward", "length"])


POOL = make_pool()


@pytest.fixture()
def files(tmp_path):
    rng = np.random.default_rng(3)
    order = rng.permutation(N)
    subsets = {f"sub{k}": [POOL.ids[i] for i in order[k::SUBSETS]] for k in range(SUBSETS)}
    labels = {}
    for name, members in subsets.items():
        rows = POOL.positions(members)
        labels[name] = float(30 + 0.4 * POOL.indicators[rows, 0].mean()
                             - 2 * POOL.indicators[rows, 1].mean() + rng.normal(scale=0.3))
    (tmp_path / "subsets.json").write_text(json.dumps(subsets))
    (tmp_path / "labels.json").write_text(json.dumps({"labels": labels}))
    return tmp_path / "subsets.json", tmp_path / "labels.json", subsets, labels


def run(files, seed=0, diversity=False, num=BUDGET, alpha=1.0):
    subsets_path, labels_path = files[0], files[1]
    method, _ = methods.create("linear")
    inputs = methods.MethodInputs(pool=POOL, num_samples=num, seed=seed,
                                  settings={"alpha": alpha, "diversity": False},
                                  subsets=subsets_path, labels=labels_path,
                                  selection={"quota_total": num + 1})
    scored = method.score(inputs)
    clusters = np.repeat([0, 1, 2], N // 3) if diversity else None
    return methods.choose(scored, inputs, diversity, clusters, method="linear"), scored


def _hand_fit(subsets, labels, alpha):
    from sklearn.linear_model import Ridge
    from sklearn.preprocessing import StandardScaler

    means = np.array([POOL.indicators[POOL.positions(m)].astype(np.float64).mean(axis=0)
                      for m in subsets.values()])
    y = np.array([labels[name] for name in subsets])
    scaler = StandardScaler().fit(means)
    return scaler, Ridge(alpha=alpha).fit(scaler.transform(means), y), means, y


@pytest.mark.parametrize("alpha", [1.0, 0.1, 25.0])
def test_scores_equal_a_hand_fitted_ridge_on_the_same_data(files, alpha):
    _, scored = run(files, alpha=alpha)
    scaler, ridge, _, _ = _hand_fit(files[2], files[3], alpha)
    expected = ridge.predict(scaler.transform(POOL.indicators.astype(np.float64)))
    assert np.allclose(scored.scores, expected, rtol=1e-5, atol=1e-5)
    details = scored.details
    assert details["alpha"] == alpha and details["subsets"] == SUBSETS
    raw = np.array([details["coefficients"][n] for n in POOL.indicator_names])
    assert np.allclose(raw, ridge.coef_ / scaler.scale_, rtol=1e-4)
    assert np.allclose([details["standardised_coefficients"][n] for n in POOL.indicator_names],
                       ridge.coef_, rtol=1e-4)


def test_a_subsets_mean_score_is_its_prediction_and_the_signal_is_found(files):
    _, scored = run(files)
    scaler, ridge, means, _ = _hand_fit(files[2], files[3], 1.0)
    for k, members in enumerate(files[2].values()):
        subset_mean = scored.scores[POOL.positions(members)].mean()
        assert subset_mean == pytest.approx(ridge.predict(scaler.transform(means[k:k + 1]))[0],
                                            rel=1e-6)
    coefficients = scored.details["coefficients"]
    assert coefficients["clip"] > 0 > coefficients["reward"]


def test_the_loso_spearman_is_the_cross_validation_row(files):
    from scipy.stats import spearmanr
    from sklearn.linear_model import Ridge
    from sklearn.model_selection import LeaveOneOut, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    _, scored = run(files)
    _, _, means, y = _hand_fit(files[2], files[3], 1.0)
    loso = cross_val_predict(make_pipeline(StandardScaler(), Ridge(alpha=1.0)), means, y,
                             cv=LeaveOneOut())
    assert scored.details["loso"]["spearman"] == pytest.approx(spearmanr(loso, y)[0])
    assert scored.details["loso"]["spearman"] > 0.5


def test_deterministic_and_the_seed_is_ignored(files):
    first, a = run(files, seed=1)
    other, b = run(files, seed=99)
    assert first.selected == other.selected and np.array_equal(a.scores, b.scores)
    assert not methods.create("linear")[0].uses_seed


@pytest.mark.parametrize("diversity", [False, True])
def test_budget_exactly_met(files, diversity):
    for num in (1, 7, BUDGET):
        selection, scored = run(files, diversity=diversity, num=num)
        assert len(selection.selected) == num == len(set(selection.selected))
    plain, scored = run(files)
    top = np.argsort(-scored.scores, kind="stable")[:BUDGET]
    assert sorted(plain.selected) == sorted(POOL.ids[i] for i in top)


def test_quotas_respected_with_diversity_on(files):
    selection, _ = run(files, diversity=True)
    counts = np.bincount([int(selection.cluster_of[i]) for i in selection.selected], minlength=3)
    quotas = np.array([selection.quotas[str(c)] for c in range(3)])
    assert (counts <= quotas + selection.rule["filled"]).all() and counts.sum() == BUDGET


def test_refusals_are_one_line(files, tmp_path):
    method, _ = methods.create("linear")
    bare = methods.MethodInputs(pool=POOL, num_samples=BUDGET, seed=0, settings={"alpha": 1.0})
    with pytest.raises(InputError, match="needs the labelled subsets .*--subsets and --labels"):
        method.score(bare)
    partial = dict(files[3])
    partial.pop("sub0")
    (tmp_path / "partial.json").write_text(json.dumps(partial))
    with pytest.raises(InputError, match="subset 'sub0' .* has no label"):  # train-selector's
        method.score(methods.MethodInputs(pool=POOL, num_samples=BUDGET, seed=0,
                                          settings={"alpha": 1.0}, subsets=files[0],
                                          labels=tmp_path / "partial.json"))
