"""selector.model.synthetic: the feature pools with a known hidden quality that the selector's
tests and benchmarks train on. Pinned, because many tests pin numbers computed on them."""
from __future__ import annotations

import pytest

from selector.model.synthetic import BAD_FRACTION, synthetic_feature_pool, synthetic_labels


def test_a_seed_draws_the_same_pool_as_always():
    pool, quality, bad = synthetic_feature_pool(30, seed=2)
    assert pool.ids[:3] == ["2", "3", "4"] and len(pool.ids) == 30
    assert pool.indicator_names == ["clip", "reward", "length", "gpt"]
    assert quality[:3].tolist() == pytest.approx([0.8414588934539998, 0.12871565747406846,
                                                  1.078342440739298])
    assert int(bad.sum()) == 7 and 0 < BAD_FRACTION < 1
    assert pool.indicators[0].tolist() == pytest.approx([29.791191, 1.162535, 1.738992, 81.0])
    assert pool.image[0, :2].tolist() == pytest.approx([-3.066973, 5.760034])
    assert pool.text[0, :2].tolist() == pytest.approx([0.749225, -0.407282])
    again, _, _ = synthetic_feature_pool(30, seed=2)
    other, _, _ = synthetic_feature_pool(30, seed=3)
    assert (again.image == pool.image).all() and not (other.image == pool.image).all()


def test_synthetic_labels_follow_the_hidden_quality():
    pool, quality, _ = synthetic_feature_pool(30, seed=2)
    quality_of = dict(zip(pool.ids, quality.tolist()))
    assert synthetic_labels({"a": pool.ids[:10], "b": pool.ids[10:]}, quality_of, seed=1) \
        == {"a": 28.992, "b": 29.4361}
    best = sorted(pool.ids, key=quality_of.get)
    labels = synthetic_labels({"low": best[:10], "high": best[-10:]}, quality_of)
    assert labels["high"] > labels["low"] + 2
