"""Pins for selector.training (found by tests/mutation_score.py): the masked subset mean, the
validation split's rounding, early stopping's epoch, the units of the loss history, the
normalisation statistics, the baselines' masked means and the warning thresholds.

Tiny models and a few epochs (``lr=0`` where a constant loss makes the epochs predictable): each
test runs in well under a second."""
from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats  # noqa: F401 - imported by training lazily; loaded once here for mutation runs
import sklearn.linear_model  # noqa: F401
import sklearn.model_selection  # noqa: F401
import torch
import tqdm.auto  # noqa: F401

from selector.core.errors import InputError
from selector.core.settings import load_settings
from selector.model.network import SelectorConfig
from selector.model.training import (CrossValidation, Selector, SubsetData, _correlations,
                                     cross_validate, indicator_means, subset_means)
from test_training import TINY_LAYOUT, make_selector


def tiny(**values) -> Selector:
    """A selector of a tiny network (2 heads, 1 layer) on 1 image + 1 text feature, 2 indicators."""
    return make_selector(n_heads=2, n_layers=1, **values)


def _data(n=10, size=4, seed=0, short=None):
    rng = np.random.default_rng(seed)
    features = [rng.normal(size=(size, 4)).astype(np.float32) + i for i in range(n)]
    if short is not None:
        features[0] = features[0][:short]
    labels = [float(10 + i + rng.normal()) for i in range(n)]
    return SubsetData.from_lists(features, labels, [f"s{i}" for i in range(n)], *TINY_LAYOUT)


def test_hyper_parameters_come_from_the_settings_and_unknown_ones_are_refused():
    settings = load_settings(None, ["training.epochs=3", "model.n_heads=2"])
    selector = Selector.from_settings(settings)
    assert selector.hyper_parameters() == {
        "mode": "default", "n_heads": 2, "n_layers": 2, "residual": True, "score_rounds": 4,
        "score_seed": 0, "epochs": 3, "lr": 0.01, "weight_decay": 0.0, "val_fraction": 0.2,
        "patience": 20, "seed": 42}
    # context_size is learned, cross_validate is train-selector's: neither is a hyper-parameter
    assert not hasattr(selector, "context_size") and not hasattr(selector, "cross_validate")
    bad = {"model": settings["model"], "training": {**settings["training"], "zz": 1, "bogus": 2}}
    with pytest.raises(InputError, match=r"unknown training setting\(s\): bogus, zz"):
        Selector.from_settings(bad)
    bad = {"model": {**settings["model"], "width": 3}, "training": settings["training"]}
    with pytest.raises(InputError, match=r"unknown selector setting\(s\): width"):
        Selector.from_settings(bad)
    lacking = {"model": settings["model"], "training": {"epochs": 3}}
    with pytest.raises(InputError, match=r"missing training setting\(s\): lr, weight_decay"):
        Selector.from_settings(lacking)


def test_subset_data_pads_with_zeros_and_masks():
    data = SubsetData.from_lists([np.ones((2, 3)), np.full((3, 3), 2.0)], [1, 2], ["a", "b"],
                                 1, 1, ["clip"])
    assert data.features.shape == (2, 3, 3) and data.features.dtype == np.float32
    assert data.mask.tolist() == [[True, True, False], [True, True, True]]
    assert data.features[0, 2].tolist() == [0, 0, 0] and data.labels.dtype == np.float32
    part = data.take([1])
    assert len(part) == 1 and part.names == ["b"] and part.labels.tolist() == [2.0]
    assert part.mask.tolist() == [[True, True, True]] and len(data) == 2
    assert (part.image_dim, part.text_dim, part.indicator_names) == (1, 1, ["clip"])
    assert data.largest == 3
    with pytest.raises(InputError, match="samples have 3 features, but 1 image \\+ 1 text \\+ 2 "
                                         "indicators make 4"):
        SubsetData.from_lists([np.ones((2, 3))], [1], ["a"], 1, 1, ["clip", "reward"])


class _Fake(torch.nn.Module):
    """Scores a sample as its first feature + 1 (padding rows would score 1, not 0)."""

    def __init__(self, mode="default"):
        super().__init__()
        self.config = SelectorConfig(1, 0, ["clip"], 1, 1, True, "default", 2, 1, 0)
        self.config.mode = mode
        self.masks = []

    def forward(self, x, key_padding_mask=None):
        self.masks.append(key_padding_mask)
        return x[..., 0] + 1


def test_subset_means_ignore_padding():
    data = SubsetData.from_lists([np.array([[1.0], [3.0]]), np.array([[5.0], [7.0], [9.0]])],
                                 [0, 0], ["a", "b"], 0, 0, ["clip"])
    model = _Fake()
    means = subset_means(model, data)
    assert means.tolist() == [3.0, 8.0]  # (2 + 4) / 2, not (2 + 4 + 1) / 3
    assert model.masks[0].tolist() == [[False, False, True], [False, False, False]]


def test_reference_mode_means_need_equal_sizes():
    data = SubsetData.from_lists([np.array([[1.0], [3.0]]), np.array([[5.0], [9.0]])], [0, 0],
                                 ["a", "b"], 0, 0, ["clip"])
    assert subset_means(_Fake("reference"), data).tolist() == [3.0, 8.0]
    uneven = SubsetData.from_lists([np.array([[1.0]]), np.array([[5.0], [9.0]])], [0, 0],
                                   ["a", "b"], 0, 0, ["clip"])
    with pytest.raises(InputError, match="reference-mode training needs subsets of equal size"):
        subset_means(_Fake("reference"), uneven)


@pytest.mark.parametrize("n, fraction, n_val", [
    (10, 0.25, 2),   # round(2.5) == 2 (round half to even)
    (10, 0.35, 4),   # round(3.5) == 4
    (10, 0.2, 2), (10, 0.01, 1),  # any positive fraction holds out at least one subset
    (10, 0.0, 0), (10, 1.0, 9),   # ... and at least one is trained on
    (2, 0.5, 1), (3, 0.2, 1),
])
def test_validation_split_rounding(n, fraction, n_val):
    result = tiny(epochs=1, val_fraction=fraction, seed=1).fit(_data(n))
    assert len(result.validation_names_) == n_val
    names = _data(n).names
    assert result.validation_names_ == sorted(result.validation_names_, key=names.index)


def test_the_split_depends_on_the_seed():
    splits = {tuple(tiny(epochs=1, seed=s).fit(_data(10)).validation_names_) for s in range(6)}
    assert len(splits) > 1
    first = tiny(epochs=1, seed=3).fit(_data(10)).validation_names_
    assert first == tiny(epochs=1, seed=3).fit(_data(10)).validation_names_


def test_early_stopping_stops_patience_epochs_after_the_best():
    # lr 0: the held-out loss never improves after epoch 0
    result = tiny(epochs=50, lr=0.0, patience=3).fit(_data())
    assert result.best_epoch_ == 0 and [h["epoch"] for h in result.history_] == [0, 1, 2, 3]
    never = tiny(epochs=7, lr=0.0, patience=0).fit(_data())
    assert len(never.history_) == 7 and never.best_epoch_ == 0  # a tie is no improvement


def test_history_is_in_label_units(tmp_path):
    data = _data(8)
    result = tiny(epochs=1, lr=0.0, val_fraction=0.25).fit(data)
    record = result.history_[0]
    assert set(record) == {"epoch", "train_mse", "val_mse"}
    held = data.take([data.names.index(n) for n in result.validation_names_])
    trained = data.take([i for i, n in enumerate(data.names)
                         if n not in result.validation_names_])
    assert record["val_mse"] == pytest.approx(
        float(np.mean((result.predict_subsets(held) - held.labels) ** 2)), rel=1e-5)
    assert record["train_mse"] == pytest.approx(
        float(np.mean((result.predict_subsets(trained) - trained.labels) ** 2)), rel=1e-5)
    assert record["train_mse"] > 0.1  # labels spread over ~8 units: not standardised units
    assert not result.model_.training


def test_without_validation_the_training_subsets_are_held_out():
    data = _data(4)
    result = tiny(epochs=1, lr=0.0, val_fraction=0.0).fit(data)
    assert result.validation_names_ == []
    assert result.history_[0]["val_mse"] == pytest.approx(result.history_[0]["train_mse"],
                                                          rel=1e-5)


def test_normalisation_uses_only_real_training_samples():
    data = _data(4, short=1)
    result = tiny(epochs=1, val_fraction=0.0).fit(data)
    real = data.features[data.mask]
    assert torch.allclose(result.model_.input_shift, torch.from_numpy(real.mean(axis=0)),
                          atol=1e-5)
    assert float(result.model_.output_shift) == pytest.approx(float(data.labels.mean()), rel=1e-5)


def test_training_improves_and_keeps_the_best_epoch():
    data = _data(10)
    result = tiny(epochs=30, lr=0.05, patience=0, seed=2).fit(data)
    val = [h["val_mse"] for h in result.history_]
    assert result.best_epoch_ == int(np.argmin(val)) and min(val) < val[0]
    meta = result.training_metadata()
    assert meta["best_epoch"] == result.best_epoch_
    assert meta["final"] == result.history_[result.best_epoch_]
    assert meta["training"]["epochs"] == 30
    assert meta["validation_subsets"] == result.validation_names_


def test_fit_needs_two_subsets():
    with pytest.raises(InputError, match="training needs at least 2 labelled subsets, got 1"):
        tiny(epochs=1).fit(_data(1))


def test_predictions_are_float64():
    result = tiny(epochs=1).fit(_data(4))
    predicted = result.predict_subsets(_data(4))
    assert predicted.dtype == np.float64 and predicted.shape == (4,)


def test_indicator_means_are_masked_per_indicator():
    data = SubsetData.from_lists([np.array([[0, 0, 1, 10], [0, 0, 3, 30]], np.float32),
                                  np.array([[0, 0, 5, 50]], np.float32)], [1, 2], ["a", "b"],
                                 *TINY_LAYOUT)
    means = indicator_means(data)
    assert list(means) == ["clip", "reward"]
    assert means["clip"].tolist() == [2.0, 5.0] and means["reward"].tolist() == [20.0, 50.0]


def test_correlations_of_constant_predictions_are_nan():
    row = _correlations("m", np.ones(5), np.arange(5.0))
    assert row["model"] == "m" and all(math.isnan(row[k]) for k in
                                       ("spearman", "spearman_p", "pearson", "pearson_p"))
    row = _correlations("m", np.array([1.0, 2, 3, 5]), np.array([2.0, 4, 6, 8]))
    assert row["spearman"] == pytest.approx(1.0) and 0.9 < row["pearson"] < 1.0
    assert row["spearman_p"] < 0.01 and 0 < row["pearson_p"] < 0.1


def _cv(selector, baselines):
    rows = [{"model": "selector (LOSO)", "spearman": selector[0], "spearman_p": selector[1],
             "pearson": 0.5, "pearson_p": 0.01}]
    rows += [{"model": name, "spearman": rho, "spearman_p": 0.5, "pearson": 0.0, "pearson_p": 1.0}
             for name, rho in baselines]
    return CrossValidation(rows, {"a": 1.0}, {"a": 2.0, "b": 3.0})


def test_warning_thresholds():
    assert _cv((0.5, 0.01), [("mean clip", 0.4)]).warning() is None
    assert _cv((0.5, 0.049), [("mean clip", float("nan"))]).warning() is None
    for selector in [(0.5, 0.05), (0.0, 0.001), (-0.3, 0.001), (float("nan"), 0.001)]:
        warning = _cv(selector, []).warning()
        assert warning.startswith("warning: the selector's leave-one-subset-out ranking of the 2 "
                                  "subsets is not significantly better than chance"), selector
        assert "with 2 labels it may have learnt noise" in warning
    assert "(Spearman 0.000, p = 0.001)" in _cv((0.0, 0.001), []).warning()
    tied = _cv((0.5, 0.01), [("mean clip", 0.2), ("mean gpt", 0.5)]).warning()
    assert tied == ("warning: the baseline 'mean gpt' ranks the held-out subsets as well as the "
                    "selector (Spearman 0.500 vs 0.500)")
    assert "'mean clip'" in _cv((0.5, 0.01), [("mean clip", 0.7), ("mean gpt", 0.6)]).warning()
    assert _cv((0.5, 0.01), [("mean clip", 0.499)]).warning() is None


def test_table_and_dict():
    cv = _cv((0.5, 0.01), [("mean clip", 0.25)])
    lines = cv.table().splitlines()
    assert lines[0] == f"{'model':<24} {'spearman':>9} {'p':>8} {'pearson':>9} {'p':>8}"
    assert lines[1] == f"{'selector (LOSO)':<24} {0.5:>9.3f} {0.01:>8.3g} {0.5:>9.3f} {0.01:>8.3g}"
    assert len(lines) == 3 and cv.selector is cv.rows[0]
    assert cv.to_dict() == {"method": "leave-one-subset-out", "rows": cv.rows,
                            "predictions": {"a": 1.0}, "labels": {"a": 2.0, "b": 3.0},
                            "warning": None, "advice": None}


def test_cross_validation_rows_and_predictions():
    data = _data(4)
    cv = cross_validate(data, tiny(epochs=2), progress=False)
    assert [r["model"] for r in cv.rows] == ["selector (LOSO)", "mean clip", "mean reward",
                                             "linear on means (LOSO)", "linear (ridge, LOSO)",
                                             "cluster-random (mix)"]
    assert list(cv.predictions) == data.names and cv.labels == dict(zip(data.names,
                                                                       data.labels.tolist()))
    alone = tiny(epochs=2).fit(data.take([1, 2, 3]))
    assert cv.predictions["s0"] == pytest.approx(alone.predict_subsets(data.take([0]))[0],
                                                 rel=1e-5)


class _Pool:
    """What SubsetData.from_pool reads of a FeaturePool: features, positions, the layout."""

    def __init__(self):
        self.ids = ["a", "b", "c"]
        self.features = np.array([[1.0, 0], [2.0, 0], [3.0, 0]], np.float32)
        self.image, self.text = self.features[:, :1], self.features[:, :0]
        self.indicator_names = ["clip"]
        self.asked = []

    def positions(self, ids, where="pool"):
        self.asked.append(where)
        missing = [i for i in ids if i not in self.ids]
        if missing:
            raise InputError(f"{where}: sample id {missing[0]!r} is not in the pool")
        return np.array([self.ids.index(i) for i in ids])


def test_subsets_from_a_pool_name_the_subset_of_an_unknown_id():
    pool = _Pool()
    data = SubsetData.from_pool(pool, [["c", "a"], ["b"]], [1.0, 2.0], ["first", "second"])
    assert data.features[:, :, 0].tolist() == [[3.0, 1.0], [2.0, 0.0]]
    assert data.mask.tolist() == [[True, True], [True, False]] and data.names == ["first", "second"]
    assert data.labels.tolist() == [1.0, 2.0]
    assert (data.image_dim, data.text_dim, data.indicator_names) == (1, 0, ["clip"])
    assert pool.asked == ["subset first", "subset second"]
    with pytest.raises(InputError, match="subset second: sample id 'z' is not in the pool"):
        SubsetData.from_pool(pool, [["a"], ["z"]], [1.0, 2.0], ["first", "second"])


def test_cross_validation_shows_its_progress_unless_told_not_to(capsys):
    data = _data(3)
    cross_validate(data, tiny(epochs=1))
    shown = capsys.readouterr().err
    assert "cross-validation" in shown and "3/3" in shown
    cross_validate(data, tiny(epochs=1), progress=False)
    assert capsys.readouterr().err == ""


def test_metadata_records_the_training_settings_in_order():
    result = tiny(epochs=2, patience=0, val_fraction=0.25).fit(_data(4))
    meta = result.training_metadata()
    assert list(meta) == ["training", "best_epoch", "validation_subsets", "final"]
    assert list(meta["training"].items()) == [
        ("epochs", 2), ("lr", 0.01), ("weight_decay", 0.0), ("val_fraction", 0.25),
        ("patience", 0), ("seed", 42)]
    assert meta["final"] == result.history_[meta["best_epoch"]]


def test_fit_shows_its_progress_only_when_asked(capsys):
    tiny(epochs=2).fit(_data(3))
    assert capsys.readouterr().err == ""
    tiny(epochs=2).fit(_data(3), progress=True)
    shown = capsys.readouterr().err
    assert "training selector" in shown and "2/2" in shown


def test_weight_decay_is_applied():
    plain = tiny(epochs=3, patience=0, val_fraction=0.0).fit(_data(6))
    decayed = tiny(epochs=3, patience=0, val_fraction=0.0, weight_decay=50.0).fit(_data(6))
    assert not torch.equal(plain.model_.linear.weight, decayed.model_.linear.weight)


def test_small_but_real_spread_is_correlated():
    row = _correlations("m", np.array([0.1, 0.2, 0.3, 0.5]), np.array([2.0, 4, 6, 8]))
    assert row["spearman"] == pytest.approx(1.0)
