"""selector.model.training.Selector has the scikit-learn shape: hyper-parameters in __init__ that
fit leaves alone, learned state ending in ``_`` only after fit, ``fit`` returning self, the
context size learned from the subsets, ``predict`` the scoring path of the network, ``score``
R^2, and checkpoints that read and write as before."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from selector.core.errors import InputError
from selector.model.network import build, load_checkpoint, save_checkpoint, score_features
from selector.model.training import Selector, SubsetData
from test_model import selector_config
from test_training import TINY_LAYOUT, make_selector

#: the order of a checkpoint's config keys (selector.json), as every version wrote them
CONFIG_KEYS = ["image_dim", "text_dim", "indicator_names", "n_heads", "n_layers", "residual",
               "mode", "context_size", "score_rounds", "score_seed"]


def _subsets(sizes=(5, 7, 3, 7, 6, 4), seed=0) -> SubsetData:
    rng = np.random.default_rng(seed)
    features = [rng.normal(size=(size, 4)).astype(np.float32) + 0.5 * i
                for i, size in enumerate(sizes)]
    labels = [10.0 + i + rng.normal() for i in range(len(sizes))]
    return SubsetData.from_lists(features, labels, [f"s{i}" for i in range(len(sizes))],
                                 *TINY_LAYOUT)


def _tiny(**values) -> Selector:
    return make_selector(**{"n_heads": 2, "n_layers": 1, "epochs": 3, "patience": 0, **values})


def _public(selector: Selector) -> dict:
    return {name: value for name, value in vars(selector).items() if not name.endswith("_")}


def test_fit_returns_self_and_leaves_the_hyper_parameters_alone():
    selector = _tiny(score_rounds=3)
    before = dict(_public(selector))
    assert before == selector.hyper_parameters()  # nothing but hyper-parameters before fit
    assert selector.fit(_subsets()) is selector
    assert _public(selector) == before and selector.hyper_parameters() == before


def test_learned_state_exists_only_after_fit():
    selector = _tiny()
    assert not [name for name in vars(selector) if name.endswith("_")]
    data = _subsets()
    features = np.zeros((4, 4), np.float32)
    for call in (lambda: selector.predict(features), lambda: selector.predict_subsets(data),
                 lambda: selector.score(data), lambda: selector.config_,
                 lambda: selector.training_metadata(), lambda: selector.save("unused")):
        with pytest.raises(InputError, match="this selector is not fitted yet"):
            call()
    selector.fit(data)
    learned = {name for name in vars(selector) if name.endswith("_")}
    assert learned == {"model_", "context_size_", "history_", "best_epoch_",
                       "validation_names_"}
    assert len(selector.history_) == 3 and 0 <= selector.best_epoch_ < 3
    assert selector.predict(features).shape == (4,)


def test_the_context_size_is_learned_from_the_largest_subset(tmp_path):
    selector = _tiny().fit(_subsets(sizes=(5, 7, 3, 9, 6, 4)))
    assert selector.context_size_ == 9 and selector.model_.config.context_size == 9
    assert not hasattr(selector, "context_size")  # state, not a hyper-parameter
    selector.save(tmp_path / "ckpt")
    saved = json.loads((tmp_path / "ckpt" / "selector.json").read_text())["config"]
    assert saved["context_size"] == 9
    assert Selector.load(tmp_path / "ckpt").context_size_ == 9
    # refitting learns it again
    assert selector.fit(_subsets(sizes=(2, 3, 2))).context_size_ == 3


def test_predict_is_the_networks_scoring_path():
    """On a fixed network, predict gives exactly the scores of score_features, with the
    selector's scoring settings (as select applied them to the network's config before)."""
    config = selector_config(context_size=8, score_rounds=2, score_seed=3)
    model = build(config, seed=5)
    model.set_normalisation(torch.randn(50, 16), torch.tensor([30.0, 31.0, 33.0]))
    features = np.random.default_rng(2).normal(size=(101, 16)).astype(np.float32)
    selector = Selector.from_network(model)
    np.testing.assert_array_equal(selector.predict(features), score_features(model, features))
    selector.score_rounds, selector.score_seed = 5, 9
    other = build(dataclasses.replace(config, score_rounds=5, score_seed=9), seed=0)
    other.load_state_dict(model.state_dict())
    np.testing.assert_array_equal(selector.predict(features), score_features(other, features))
    assert selector.config_.score_rounds == 5 and model.config.score_rounds == 2
    selector.score_rounds = 0
    with pytest.raises(InputError, match="score_rounds must be >= 1"):
        selector.predict(features)


def test_reference_mode_predict_is_the_released_path():
    model = build(selector_config(mode="reference"), seed=1)
    features = np.random.default_rng(3).normal(size=(60, 16)).astype(np.float32)
    np.testing.assert_array_equal(Selector.from_network(model).predict(features),
                                  score_features(model, features))


def test_score_is_r2_of_the_subset_predictions():
    data = _subsets()
    selector = _tiny(epochs=20).fit(data)
    predicted = selector.predict_subsets(data)
    labels = data.labels.astype(np.float64)
    expected = 1 - np.sum((labels - predicted) ** 2) / np.sum((labels - labels.mean()) ** 2)
    assert selector.score(data) == pytest.approx(expected, rel=1e-9)
    assert np.isnan(selector.score(data.take([0])))  # R^2 of one subset is undefined


def test_clone_is_unfitted_with_the_same_hyper_parameters():
    selector = _tiny(seed=3).fit(_subsets())
    copy = selector.clone()
    assert copy.hyper_parameters() == selector.hyper_parameters()
    assert not hasattr(copy, "model_")


def test_a_loaded_selector_scores_but_needs_training_settings_to_refit(tmp_path):
    selector = _tiny().fit(_subsets())
    selector.save(tmp_path / "ckpt")
    loaded = Selector.load(tmp_path / "ckpt")
    assert {name: getattr(loaded, name) for name in ("mode", "n_heads", "n_layers", "residual",
                                                     "score_rounds", "score_seed")} == \
        {name: getattr(selector, name) for name in ("mode", "n_heads", "n_layers", "residual",
                                                    "score_rounds", "score_seed")}
    assert loaded.epochs is None and loaded.lr is None
    features = np.random.default_rng(0).normal(size=(9, 4)).astype(np.float32)
    np.testing.assert_array_equal(loaded.predict(features), selector.predict(features))
    with pytest.raises(InputError, match=r"training setting\(s\) epochs, lr, weight_decay, "
                                         "val_fraction, patience, seed not set"):
        loaded.fit(_subsets())


def test_checkpoints_read_and_write_as_before(tmp_path):
    """A checkpoint written the old way (the network's save_checkpoint) loads into a Selector,
    and the Selector writes the same bytes back; the config keeps its keys and their order."""
    selector = _tiny().fit(_subsets())
    metadata = {"note": "test", **selector.training_metadata()}
    save_checkpoint(selector.model_, tmp_path / "old", metadata)
    loaded = Selector.load(tmp_path / "old")
    loaded.save(tmp_path / "new", metadata)
    selector.save(tmp_path / "fitted", metadata)
    for name in ("selector.json", "selector.safetensors"):
        old = (tmp_path / "old" / name).read_bytes()
        assert (tmp_path / "new" / name).read_bytes() == old
        assert (tmp_path / "fitted" / name).read_bytes() == old
    document = json.loads((tmp_path / "new" / "selector.json").read_text())
    assert list(document) == ["config", "metadata"] and list(document["config"]) == CONFIG_KEYS
    assert document["config"]["context_size"] == 7
    assert load_checkpoint(tmp_path / "new").config == selector.model_.config


def test_from_settings_and_fit_check_the_model_settings():
    data = _subsets()
    with pytest.raises(InputError, match="selector mode must be one of default, reference"):
        _tiny(mode="other").fit(data)
    with pytest.raises(InputError, match="reference mode needs the indicators"):
        _tiny(mode="reference").fit(data)
    with pytest.raises(InputError, match="training needs at least 2 labelled subsets, got 1"):
        _tiny().fit(data.take([0]))
