"""selector.model.training: determinism, best-epoch checkpointing, learning a planted signal, CV."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from selector.core.settings import load_settings
from selector.model.training import Selector, SubsetData, cross_validate, indicator_means
from selector.scoring.reference import REFERENCE_INDICATORS, ReferenceRepo

#: the released feature layout: 6 image + 6 text features, then clip, reward, length, gpt
RELEASED_LAYOUT = (6, 6, list(REFERENCE_INDICATORS))


def make_selector(**values) -> Selector:
    """An unfitted selector of the shipped settings (configs/selector/default.yaml), with
    ``values`` (model or training hyper-parameters) over them."""
    shipped = Selector.from_settings(load_settings(None, [])).hyper_parameters()
    return Selector(**{**shipped, **values})


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
    return SubsetData.from_lists(features, labels, [str(i) for i in range(n_subsets)],
                                 *RELEASED_LAYOUT)


def test_fit_is_deterministic_and_keeps_the_best_held_out_epoch():
    data = planted()
    first = make_selector(epochs=40, patience=0, seed=7).fit(data)
    second = make_selector(epochs=40, patience=0, seed=7).fit(data)
    for a, b in zip(first.model_.state_dict().values(), second.model_.state_dict().values()):
        assert torch.equal(a, b)
    val = [h["val_mse"] for h in first.history_]
    assert first.best_epoch_ == int(np.argmin(val))
    # the kept weights are those of the best epoch, not the last
    held_out = data.take([data.names.index(n) for n in first.validation_names_])
    mse = float(np.mean((first.predict_subsets(held_out) - held_out.labels) ** 2))
    assert mse == pytest.approx(val[first.best_epoch_], rel=1e-4)
    other = make_selector(epochs=40, patience=0, seed=8).fit(data)
    assert not torch.equal(other.model_.linear.weight, first.model_.linear.weight)


def test_learns_a_planted_signal_under_cross_validation():
    data = planted()
    cv = cross_validate(data, make_selector(epochs=150), progress=False)
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
    cv = cross_validate(data, make_selector(epochs=30), progress=False)
    warning = cv.warning()
    assert warning is not None and ("noise" in warning or "baseline" in warning)


def test_unequal_subset_sizes_are_masked():
    data = planted(n_subsets=6, size=10)
    short = SubsetData.from_lists([data.features[0][:4]] + list(data.features[1:]),
                                  data.labels, data.names, *RELEASED_LAYOUT)
    assert short.mask[0].sum() == 4 and short.mask[1:].all()
    means = indicator_means(short)
    assert means["clip"][0] == pytest.approx(data.features[0][:4, 12].mean(), rel=1e-6)
    result = make_selector(epochs=5).fit(short)
    assert np.isfinite(result.predict_subsets(short)).all()
    assert result.context_size_ == 10


def test_reference_files_train_and_cross_validate_in_seconds(reference_dir):
    repo = ReferenceRepo(reference_dir)
    sets = repo.fitting_sets()
    assert sets.shape == (30, 114, 16)
    data = SubsetData.from_lists(list(sets), repo.fitting_labels(), [str(i) for i in range(30)],
                                 *RELEASED_LAYOUT)
    cv = cross_validate(data, make_selector(), progress=False)
    assert len(cv.rows) == 8 and np.isfinite(cv.selector["spearman"])
    # the README's fact: single indicators are uncorrelated with the 30 labels
    assert all(abs(row["spearman"]) < 0.17 for row in cv.rows[1:5])
    reference = make_selector(mode="reference", epochs=20, patience=0).fit(data)
    assert reference.model_.config.mode == "reference" and len(reference.history_) == 20
    assert reference.context_size_ == 114


# --- pins (issue 11, item 9): each test below fails under one small mutation of training.py ---

#: a tiny network (on 1 image + 1 text feature, two indicators)
TINY = {"n_heads": 2, "n_layers": 1}
TINY_LAYOUT = (1, 1, ["clip", "reward"])


def tiny(**values) -> Selector:
    return make_selector(**TINY, **values)


def _tiny_data(n=10, size=6, seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    features = [rng.normal(size=(size, 4)).astype(np.float32) + 0.3 * i for i in range(n)]
    labels = [scale * (5 + i + rng.normal()) for i in range(n)]
    return SubsetData.from_lists(features, labels, [f"s{i}" for i in range(n)], *TINY_LAYOUT)


def test_masked_mean_ignores_padding_rows():
    """A short subset's mean is over its real samples only (not the zero padding)."""
    from selector.model.network import build
    from selector.model.training import subset_means

    data = _tiny_data(n=3)
    short = SubsetData.from_lists([data.features[0][:2]] + list(data.features[1:]),
                                  data.labels, data.names, *TINY_LAYOUT)
    model = build(tiny()._network_config(short), seed=1).eval()
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
    result = tiny(epochs=1, val_fraction=fraction).fit(_tiny_data())
    assert len(result.validation_names_) == n_val


def test_early_stopping_stops_exactly_patience_epochs_after_the_best():
    for lr, patience in ((0.0, 3), (0.3, 2), (0.05, 4)):
        result = tiny(epochs=80, lr=lr, patience=patience).fit(_tiny_data(seed=2))
        val = [h["val_mse"] for h in result.history_]
        best, stop = 0, None
        for epoch in range(len(val)):
            if val[epoch] < val[best]:
                best = epoch
            elif epoch - best >= patience:
                stop = epoch
                break
        assert len(val) == (stop + 1 if stop is not None else 80), (lr, patience)
        assert result.best_epoch_ == best
    assert len(tiny(epochs=6, lr=0.0, patience=0).fit(_tiny_data()).history_) == 6


def test_history_is_in_label_units():
    """train_mse/val_mse are squared label units: labels x 10 give losses x 100 (the selector
    standardises labels, so it learns the same), and train_mse is the MSE of the model that the
    epoch started with."""
    from selector.model.network import build
    from selector.model.training import subset_means

    train = {"epochs": 3, "lr": 0.05, "patience": 0}
    small, large = tiny(**train).fit(_tiny_data()), tiny(**train).fit(_tiny_data(scale=10.0))
    for a, b in zip(small.history_, large.history_):
        assert b["train_mse"] == pytest.approx(100 * a["train_mse"], rel=1e-3)
        assert b["val_mse"] == pytest.approx(100 * a["val_mse"], rel=1e-3)
    data = _tiny_data()
    first = tiny(epochs=1, patience=0).fit(data)
    rows = [i for i, name in enumerate(data.names) if name not in first.validation_names_]
    training = data.take(rows)
    model = build(first.model_.config, seed=42)
    model.set_normalisation(torch.from_numpy(training.features[training.mask]),
                            torch.from_numpy(training.labels))
    with torch.no_grad():
        expected = float(torch.mean((subset_means(model, training)
                                     - torch.from_numpy(training.labels)) ** 2))
    assert first.history_[0]["train_mse"] == pytest.approx(expected, rel=1e-4)
    held_out = data.take([data.names.index(n) for n in first.validation_names_])
    mse = float(np.mean((first.predict_subsets(held_out) - held_out.labels) ** 2))
    assert first.history_[0]["val_mse"] == pytest.approx(mse, rel=1e-4)


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
