"""train-selector's cross-validation rows that are selection methods (``linear``,
``cluster-random``) and the advice naming the method to prefer over the selector."""
from __future__ import annotations

import numpy as np
import pytest

from selector.core.settings import load_settings
from selector.model.baselines import (CLUSTER_RANDOM_ROW, LINEAR_ROW, baseline_settings,
                                      composition_scores, fit_linear, loso_linear,
                                      method_of_row)
from selector.model.training import (CrossValidation, Selector, SubsetData, _correlations,
                                     cluster_random_row, cross_validate, indicator_means,
                                     linear_row)

LAYOUT = (2, 0, ["clip", "reward"])


def _data(n=12, size=8, seed=0):
    rng = np.random.default_rng(seed)
    features, labels = [], []
    for i in range(n):
        x = rng.normal(size=(size, 4)).astype(np.float32)
        x[:, 2] += i * 0.3  # clip drifts with the label
        features.append(x)
        labels.append(10 + i + rng.normal(scale=0.5))
    return SubsetData.from_lists(features, labels, [f"s{i}" for i in range(n)], *LAYOUT)


def test_the_linear_row_is_a_hand_computed_loso_ridge():
    from sklearn.linear_model import Ridge
    from sklearn.model_selection import LeaveOneOut, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    data = _data()
    means = np.stack(list(indicator_means(data).values()), axis=1).astype(np.float64)
    for alpha in (1.0, 10.0):
        expected = cross_val_predict(make_pipeline(StandardScaler(), Ridge(alpha=alpha)), means,
                                     data.labels.astype(np.float64), cv=LeaveOneOut())
        row, predictions = linear_row(data, alpha)
        assert np.allclose(predictions, expected, rtol=1e-6)
        assert np.allclose(loso_linear(means, data.labels, alpha), expected, rtol=1e-6)
        hand = _correlations(LINEAR_ROW, expected, data.labels)
        assert row["model"] == LINEAR_ROW and row["spearman"] == pytest.approx(hand["spearman"])
        assert row["pearson"] == pytest.approx(hand["pearson"], rel=1e-6)
    fitted = fit_linear(means, data.labels, 1.0, ["clip", "reward"])
    pipe = make_pipeline(StandardScaler(), Ridge(alpha=1.0)).fit(means, data.labels)
    assert np.allclose(fitted.predict(means), pipe.predict(means), rtol=1e-6)
    assert fitted.predict(np.zeros((1, 2)))[0] == pytest.approx(fitted.intercept)


def test_composition_is_minus_the_distance_to_the_pools_mix():
    a, b = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    subsets = np.stack([np.stack([a] * 4), np.stack([b] * 4), np.stack([a, a, b, b])])
    mask = np.ones((3, 4), bool)
    # the pool: 6 a, 6 b -> 50/50; all-a and all-b are 0.5 away, the half-half subset 0
    assert np.allclose(composition_scores(subsets, mask, 10, 0), [-0.5, -0.5, 0.0])
    mask[2, 2:] = False  # the third subset now holds a, a: pool 6 a / 4 b
    assert np.allclose(composition_scores(subsets, mask, 10, 0), [-0.4, -0.6, -0.4])
    assert np.allclose(composition_scores(subsets[:, :, :0], mask, 10, 0), 0.0)  # no features


def test_cluster_random_row_and_its_spread_are_deterministic():
    data = _data()
    first, again = cluster_random_row(data, 3, 0), cluster_random_row(data, 3, 0)
    assert first == again and first["model"] == CLUSTER_RANDOM_ROW
    assert np.isfinite(first["spearman_spread"]) and first["spearman_spread"] >= 0


def test_cross_validate_adds_the_rows_with_the_settings_given():
    data = _data(n=6, size=4)
    selector = Selector(**{**Selector.from_settings(load_settings(None, [])).hyper_parameters(),
                           "epochs": 2, "n_heads": 2, "n_layers": 1})
    cv = cross_validate(data, selector, progress=False)
    names = [row["model"] for row in cv.rows]
    assert names[-2:] == [LINEAR_ROW, CLUSTER_RANDOM_ROW] and len(names) == 6
    assert cv.rows[-2] == linear_row(data, 1.0)[0]
    other = cross_validate(data, selector, progress=False,
                           settings=load_settings(None, ["methods.linear.alpha=50"]))
    assert other.rows[-2] == linear_row(data, 50.0)[0] and other.rows[:4] == cv.rows[:4]
    assert baseline_settings(None) == (1.0, 10, 0)
    assert baseline_settings({"methods": {"linear": {"alpha": 3}}, "selection": {}}) == (3.0, 10, 0)


def _cv(selector, baselines, p=0.01):
    rows = [{"model": "selector (LOSO)", "spearman": selector, "spearman_p": 0.01,
             "pearson": 0.0, "pearson_p": 1.0}]
    rows += [{"model": name, "spearman": rho, "spearman_p": p, "pearson": 0.0,
              "pearson_p": 1.0} for name, rho in baselines]
    return CrossValidation(rows, {}, {})


ROWS = [("mean clip", 0.1), ("linear on means (LOSO)", 0.9), (LINEAR_ROW, 0.477),
        (CLUSTER_RANDOM_ROW, 0.05)]


def test_advice_names_the_method_that_beats_the_selector():
    advice = _cv(0.279, ROWS).advice()
    assert advice == ("warning: linear (Spearman 0.477) beats the selector (0.279) in "
                      "cross-validation: prefer --method linear")  # the OLS row is no method
    assert "prefer --method top:clip" in _cv(0.2, [("mean clip", 0.3)]).advice()
    assert "prefer --method cluster-random" in _cv(-0.385, [(CLUSTER_RANDOM_ROW, 0.04),
                                                            ("mean gpt", -0.1)]).advice()
    assert "matches the selector" in _cv(0.477, ROWS).advice()
    assert "beats the selector (nan)" in _cv(float("nan"), ROWS).advice()
    assert _cv(0.279, ROWS).to_dict()["advice"] == advice
    # a row that beats the selector but not chance: random, not that method
    released = _cv(-0.385, [("mean length", 0.122), (CLUSTER_RANDOM_ROW, 0.042)], p=0.522)
    assert released.advice() == ("warning: top:length (Spearman 0.122) beats the selector "
                                 "(-0.385) in cross-validation, but is no better than chance "
                                 "itself (p = 0.522): prefer --method random")
    assert _cv(0.279, ROWS, p=0.05).advice().endswith("prefer --method random")


def test_no_advice_when_the_selector_beats_them_and_random_when_nothing_does():
    assert _cv(0.5, ROWS).advice() is None
    assert _cv(0.2, [("mean clip", -0.1)]).advice() is None  # the selector beats chance
    nothing = _cv(-0.3, [("mean clip", -0.1), (CLUSTER_RANDOM_ROW, float("nan"))]).advice()
    assert nothing.endswith("better than chance: prefer --method random")


def test_rows_map_to_methods():
    assert method_of_row("mean clip") == "top:clip" and method_of_row(LINEAR_ROW) == "linear"
    assert method_of_row(CLUSTER_RANDOM_ROW) == "cluster-random"
    assert method_of_row("selector (LOSO)") is None
    assert method_of_row("linear on means (LOSO)") is None


def test_train_selector_logs_and_records_the_advice(tmp_path, monkeypatch):
    from selector.model import fit

    data = _data(n=6, size=4)
    logged = []
    monkeypatch.setattr(fit, "load_training_data", lambda *args: data)
    monkeypatch.setattr(fit, "log", logged.append)
    settings = load_settings(None, ["training.epochs=2", "model.n_heads=2", "model.n_layers=1"])
    report = fit.train_selector(tmp_path / "out", settings, "pool", "subsets", "labels")
    cv = report["cross_validation"]
    assert "advice" in cv and [r["model"] for r in cv["rows"]][-1] == CLUSTER_RANDOM_ROW
    lines = [line for line in (cv["warning"], cv["advice"]) if line]
    assert lines and all(line in logged for line in lines)
