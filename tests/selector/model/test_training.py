"""selector.training: determinism, best-epoch checkpointing, learning a planted signal, CV."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from selector.model.network import SelectorConfig
from selector.scoring.reference import ReferenceRepo
from selector.model.training import (SubsetData, TrainConfig, cross_validate, fit, indicator_means,
                               predict_subsets)


def planted(n_subsets=24, size=20, seed=0, noise=0.02):
    """Subsets whose label is 30 + the mean of a hidden quality that the clip indicator sees."""
    rng = np.random.default_rng(seed)
    features, labels = [], []
    for _ in range(n_subsets):
        quality = rng.normal(size=size) + rng.normal(scale=0.7)
        x = rng.normal(size=(size, 16)).astype(np.float32)
        x[:, 12] = 30 + 2 * quality  # clip
        features.append(x)
        labels.append(30 + quality.mean() + rng.normal(scale=noise))
    return SubsetData.from_lists(features, labels, [str(i) for i in range(n_subsets)])


def test_fit_is_deterministic_and_keeps_the_best_held_out_epoch():
    data = planted()
    config = SelectorConfig(context_size=20)
    first = fit(data, config, TrainConfig(epochs=40, patience=0, seed=7))
    second = fit(data, config, TrainConfig(epochs=40, patience=0, seed=7))
    for a, b in zip(first.model.state_dict().values(), second.model.state_dict().values()):
        assert torch.equal(a, b)
    val = [h["val_mse"] for h in first.history]
    assert first.best_epoch == int(np.argmin(val))
    # the kept weights are those of the best epoch, not the last
    held_out = data.take([data.names.index(n) for n in first.validation_names])
    mse = float(np.mean((predict_subsets(first.model, held_out) - held_out.labels) ** 2))
    assert mse == pytest.approx(val[first.best_epoch], rel=1e-4)
    other = fit(data, config, TrainConfig(epochs=40, patience=0, seed=8))
    assert not torch.equal(other.model.linear.weight, first.model.linear.weight)


def test_learns_a_planted_signal_under_cross_validation():
    data = planted()
    cv = cross_validate(data, SelectorConfig(context_size=20), TrainConfig(epochs=150),
                        progress=False)
    assert cv.selector["model"] == "selector (LOSO)"
    assert cv.selector["spearman"] > 0.6 and cv.selector["spearman_p"] < 0.01
    names = [row["model"] for row in cv.rows]
    assert names[1:5] == ["mean clip", "mean reward", "mean length", "mean gpt"]
    assert cv.rows[1]["spearman"] > 0.6  # the clip baseline sees the signal too
    assert set(cv.predictions) == set(data.names)


def test_pure_noise_labels_raise_the_warning():
    data = planted()
    data.labels[:] = np.random.default_rng(3).permutation(data.labels)
    data.features[:, :, 12] = np.random.default_rng(4).normal(size=data.features.shape[:2])
    cv = cross_validate(data, SelectorConfig(context_size=20), TrainConfig(epochs=30),
                        progress=False)
    warning = cv.warning()
    assert warning is not None and ("noise" in warning or "baseline" in warning)


def test_unequal_subset_sizes_are_masked():
    data = planted(n_subsets=6, size=10)
    short = SubsetData.from_lists([data.features[0][:4]] + list(data.features[1:]),
                                  data.labels, data.names)
    assert short.mask[0].sum() == 4 and short.mask[1:].all()
    config = SelectorConfig(context_size=10)
    means = indicator_means(short, config)
    assert means["clip"][0] == pytest.approx(data.features[0][:4, 12].mean(), rel=1e-6)
    result = fit(short, config, TrainConfig(epochs=5))
    assert np.isfinite(predict_subsets(result.model, short)).all()


def test_reference_files_train_and_cross_validate_in_seconds(reference_dir):
    repo = ReferenceRepo(reference_dir)
    sets = repo.fitting_sets()
    assert sets.shape == (30, 114, 16)
    data = SubsetData.from_lists(list(sets), repo.fitting_labels(), [str(i) for i in range(30)])
    cv = cross_validate(data, SelectorConfig(), TrainConfig(), progress=False)
    assert len(cv.rows) == 6 and np.isfinite(cv.selector["spearman"])
    # the README's fact: single indicators are uncorrelated with the 30 labels
    assert all(abs(row["spearman"]) < 0.17 for row in cv.rows[1:5])
    reference = fit(data, SelectorConfig(mode="reference"), TrainConfig(epochs=20, patience=0))
    assert reference.model.config.mode == "reference" and len(reference.history) == 20


# --- pins (issue 11, item 9): each test below fails under one small mutation of training.py ---

TINY = SelectorConfig(image_dim=1, text_dim=1, indicator_names=["clip", "reward"], n_heads=2,
                      n_layers=1, context_size=6)


def _tiny_data(n=10, size=6, seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    features = [rng.normal(size=(size, 4)).astype(np.float32) + 0.3 * i for i in range(n)]
    labels = [scale * (5 + i + rng.normal()) for i in range(n)]
    return SubsetData.from_lists(features, labels, [f"s{i}" for i in range(n)])


def test_masked_mean_ignores_padding_rows():
    """A short subset's mean is over its real samples only (not the zero padding)."""
    from selector.model.network import build
    from selector.model.training import subset_means

    data = _tiny_data(n=3)
    short = SubsetData.from_lists([data.features[0][:2]] + list(data.features[1:]),
                                  data.labels, data.names)
    model = build(TINY, seed=1).eval()
    with torch.no_grad():
        means = subset_means(model, short)
        alone = model(torch.from_numpy(short.features[:1, :2])).mean()
        short.features[0, 2:] = 1e3  # whatever the padding holds
        again = subset_means(model, short)
    assert float(means[0]) == pytest.approx(float(alone), rel=1e-5, abs=1e-6)
    assert float(again[0]) == pytest.approx(float(means[0]), rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("fraction, n_val", [(0.27, 3), (0.22, 2), (0.01, 1), (0.0, 0),
                                             (0.99, 9), (0.5, 5)])
def test_validation_split_rounds_to_nearest_and_keeps_one_each_side(fraction, n_val):
    result = fit(_tiny_data(), TINY, TrainConfig(epochs=1, val_fraction=fraction))
    assert len(result.validation_names) == n_val


def test_early_stopping_stops_exactly_patience_epochs_after_the_best():
    for lr, patience in ((0.0, 3), (0.3, 2), (0.05, 4)):
        result = fit(_tiny_data(seed=2), TINY, TrainConfig(epochs=80, lr=lr, patience=patience))
        val = [h["val_mse"] for h in result.history]
        best, stop = 0, None
        for epoch in range(len(val)):
            if val[epoch] < val[best]:
                best = epoch
            elif epoch - best >= patience:
                stop = epoch
                break
        assert len(val) == (stop + 1 if stop is not None else 80), (lr, patience)
        assert result.best_epoch == best
    assert len(fit(_tiny_data(), TINY, TrainConfig(epochs=6, lr=0.0, patience=0)).history) == 6


def test_history_is_in_label_units():
    """train_mse/val_mse are squared label units: labels x 10 give losses x 100 (the selector
    standardises labels, so it learns the same), and train_mse is the MSE of the model that the
    epoch started with."""
    from selector.model.network import build
    from selector.model.training import subset_means

    train = TrainConfig(epochs=3, lr=0.05, patience=0)
    small, large = fit(_tiny_data(), TINY, train), fit(_tiny_data(scale=10.0), TINY, train)
    for a, b in zip(small.history, large.history):
        assert b["train_mse"] == pytest.approx(100 * a["train_mse"], rel=1e-3)
        assert b["val_mse"] == pytest.approx(100 * a["val_mse"], rel=1e-3)
    data = _tiny_data()
    first = fit(data, TINY, TrainConfig(epochs=1, patience=0))
    rows = [i for i, name in enumerate(data.names) if name not in first.validation_names]
    training = data.take(rows)
    model = build(TINY, seed=42)
    model.set_normalisation(torch.from_numpy(training.features[training.mask]),
                            torch.from_numpy(training.labels))
    with torch.no_grad():
        expected = float(torch.mean((subset_means(model, training)
                                     - torch.from_numpy(training.labels)) ** 2))
    assert first.history[0]["train_mse"] == pytest.approx(expected, rel=1e-4)
    held_out = data.take([data.names.index(n) for n in first.validation_names])
    mse = float(np.mean((predict_subsets(first.model, held_out) - held_out.labels) ** 2))
    assert first.history[0]["val_mse"] == pytest.approx(mse, rel=1e-4)


def _cv(selector, baseline, p=0.001):
    from selector.model.training import CrossValidation

    rows = [{"model": "selector (LOSO)", "spearman": selector, "spearman_p": p},
            {"model": "mean clip", "spearman": baseline, "spearman_p": 0.01},
            {"model": "mean gpt", "spearman": float("nan"), "spearman_p": float("nan")}]
    return CrossValidation(rows, {}, {str(i): 0.0 for i in range(30)})


def test_baseline_warning_threshold():
    assert "baseline 'mean clip' ranks" in _cv(0.6, 0.6).warning()  # a tie is "as well"
    assert "baseline 'mean clip'" in _cv(0.6, 0.7).warning()
    assert _cv(0.6, 0.59).warning() is None
    assert "not significantly better than chance" in _cv(0.6, 0.1, p=0.05).warning()
    assert _cv(0.6, 0.1, p=0.0499).warning() is None
    assert "better than chance" in _cv(0.0, -0.5, p=0.001).warning()
    assert "better than chance" in _cv(float("nan"), 0.1).warning()
