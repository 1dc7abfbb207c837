"""selector.training: determinism, best-epoch checkpointing, learning a planted signal, CV."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from selector.model import SelectorConfig
from selector.reference import ReferenceRepo
from selector.training import (SubsetData, TrainConfig, cross_validate, fit, indicator_means,
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
