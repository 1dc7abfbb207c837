"""selector.model: reference semantics against an independent implementation; default mode."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from selector.core.errors import InputError
from selector.model.network import (SelectorConfig, build, load_checkpoint,
                                    load_reference_checkpoint, save_checkpoint, score_features)
from selector.scoring.reference import CHECKPOINT, REFERENCE_INDICATORS, ReferenceRepo


def selector_config(**values) -> SelectorConfig:
    """A network config for tests: the shipped model settings (configs/selector/default.yaml)
    on the released feature layout (6 image + 6 text features, the four indicators), with
    ``values`` over them (SelectorConfig itself has no defaults)."""
    from selector.core.settings import load_settings

    layout = {"image_dim": 6, "text_dim": 6, "indicator_names": list(REFERENCE_INDICATORS)}
    return SelectorConfig(**{**layout, **load_settings(None, [])["model"], **values})


def original_scores(state, features: np.ndarray) -> np.ndarray:
    """The original network written out independently: sequence-first attention over the whole
    pool (one sequence), x = x + attn(x), then linear; inputs clip, 10 reward, 10 length, gpt."""
    x = torch.from_numpy(features.copy())
    x[:, 13] *= 10
    x[:, 14] *= 10
    x = x[:, None, :]  # [sequence = pool, batch = 1, 16]
    with torch.no_grad():
        for layer in range(2):
            attention = nn.MultiheadAttention(16, 4)
            attention.load_state_dict({k.split(f"multihead_attns.{layer}.")[1]: v
                                       for k, v in state.items()
                                       if k.startswith(f"module.multihead_attns.{layer}.")})
            linear = nn.Linear(16, 16)
            linear.weight.copy_(state[f"module.linears.{layer}.weight"])
            linear.bias.copy_(state[f"module.linears.{layer}.bias"])
            x = linear(x + attention(x, x, x)[0])
        out = x @ state["module.linear.weight"].T + state["module.linear.bias"]
    return out[:, 0, 0].double().numpy()


def test_released_checkpoint_reproduces_the_original_network(reference_dir):
    repo = ReferenceRepo(reference_dir)
    pool = repo.pool()
    model = load_reference_checkpoint(reference_dir / CHECKPOINT)
    assert model.config.mode == "reference" and model.config.in_dim == 16
    ours = score_features(model, pool.features)
    state = torch.load(reference_dir / CHECKPOINT, weights_only=True)
    expected = original_scores(state, pool.features)
    assert ours.shape == (3439,)
    np.testing.assert_allclose(ours, expected, atol=2e-5)
    assert 10 < ours.min() and ours.max() < 40  # the released scale, around the labels (~31)


def test_reference_scores_depend_on_the_whole_pool(reference_dir):
    """Sequence-first semantics: a sample's score changes when the rest of the pool changes."""
    pool = ReferenceRepo(reference_dir).pool()
    model = load_reference_checkpoint(reference_dir / CHECKPOINT)
    full = score_features(model, pool.features)
    half = score_features(model, pool.features[:1000])
    assert not np.allclose(full[:1000], half, atol=1e-3)


def test_bad_checkpoint_files(tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="not a loadable torch checkpoint"):
        load_reference_checkpoint(bad)
    with pytest.raises(InputError, match="not a selector checkpoint"):
        load_checkpoint(tmp_path)


def _random_features(n, seed=0, width=16):
    return np.random.default_rng(seed).normal(size=(n, width)).astype(np.float32)


def test_default_mode_scores_every_sample_once_per_round():
    config = selector_config(context_size=16, score_rounds=3)
    model = build(config, seed=1)
    features = _random_features(100)  # 100 = 6 full sets + one filled up from the start
    scores = score_features(model, features)
    assert scores.shape == (100,) and np.isfinite(scores).all()
    # the same result whatever the batching of sets
    np.testing.assert_allclose(score_features(model, features, sets_per_batch=1), scores,
                               rtol=1e-6, atol=1e-6)
    # deterministic for a given score_seed
    np.testing.assert_array_equal(score_features(model, features), scores)


def test_default_mode_sets_are_independent():
    """Within one set only its members matter: a pool of exactly one context is one set."""
    config = selector_config(context_size=8, score_rounds=1)
    model = build(config, seed=0)
    features = _random_features(8)
    alone = score_features(model, features)
    direct = model(torch.from_numpy(features)[None]).detach().double().numpy()[0]
    np.testing.assert_allclose(np.sort(alone), np.sort(direct), atol=1e-6)


def test_default_mode_pads_to_a_multiple_of_heads():
    config = selector_config(indicator_names=["clip", "reward", "length"])  # 15 inputs, 4 heads
    assert config.in_dim == 15 and config.d_model == 16
    assert np.isfinite(score_features(build(config), _random_features(50, width=15))).all()


def test_reference_mode_requires_the_original_indicators():
    with pytest.raises(InputError, match="reference mode needs"):
        selector_config(mode="reference", indicator_names=["clip"])


def test_checkpoint_round_trip(tmp_path):
    model = build(selector_config(context_size=10), seed=3)
    model.set_normalisation(torch.randn(40, 16), torch.tensor([30.0, 31.0, 32.0]))
    save_checkpoint(model, tmp_path / "ckpt", {"note": "test"})
    again = load_checkpoint(tmp_path / "ckpt")
    features = _random_features(37)
    np.testing.assert_array_equal(score_features(again, features), score_features(model, features))
    assert (tmp_path / "ckpt" / "selector.safetensors").is_file()


def test_wrong_feature_width_is_an_input_error():
    with pytest.raises(InputError, match="expects 16 input features"):
        score_features(build(selector_config()), _random_features(5, width=12))
