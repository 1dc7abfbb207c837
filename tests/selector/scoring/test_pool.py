"""selector.pool: the pool, subsets and labels file formats."""
from __future__ import annotations

import json

import numpy as np
import pytest

from selector.core.errors import InputError
from selector.scoring.pool import FeaturePool, match_labels, read_labels, read_subsets


def small_pool(n=5):
    rng = np.random.default_rng(0)
    return FeaturePool([str(i) for i in range(n)], rng.normal(size=(n, 6)), rng.normal(size=(n, 6)),
                       rng.normal(size=(n, 4)), ["clip", "reward", "length", "gpt"])


def test_round_trip_and_order(tmp_path):
    pool = small_pool()
    again = FeaturePool.load(pool.save(tmp_path / "pool.safetensors"))
    assert again.ids == pool.ids and again.indicator_names == pool.indicator_names
    np.testing.assert_array_equal(again.features, pool.features)
    assert again.features.shape == (5, 16)
    np.testing.assert_array_equal(again.features[:, 12], pool.indicator("clip"))
    assert again.take(["3", "1"]).ids == ["3", "1"]


def test_bad_pool_files(tmp_path):
    pool = small_pool()
    pool.image[2, 0] = np.nan
    path = pool.save(tmp_path / "nan.safetensors")
    with pytest.raises(InputError, match="sample '2' has a NaN"):
        FeaturePool.load(path)
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    with pytest.raises(InputError, match="not a safetensors file"):
        FeaturePool.load(tmp_path / "junk.safetensors")
    with pytest.raises(InputError, match="is not in the pool"):
        small_pool().take(["nope"])


def test_label_layouts(tmp_path):
    layouts = [{"subset_labels": [30.5, 31.0, 29.0]},
               {"labels": {"0": 30.5, "1": 31.0, "2": 29.0}},
               {"0": 30.5, "1": 31.0, "2": 29.0}]
    for n, layout in enumerate(layouts):
        path = tmp_path / f"labels{n}.json"
        path.write_text(json.dumps(layout))
        assert read_labels(path) == {"0": 30.5, "1": 31.0, "2": 29.0}
    path.write_text(json.dumps({"labels": {"0": "high"}}))
    with pytest.raises(InputError, match="subset '0' is not a finite number"):
        read_labels(path)


def test_subsets_must_be_disjoint_and_labelled(tmp_path):
    path = tmp_path / "subsets.json"
    path.write_text(json.dumps({"0": ["1", "2"], "1": ["2", "3"]}))
    with pytest.raises(InputError, match="sample '2' is in subsets '0' and '1'"):
        read_subsets(path)
    subsets = {"0": ["1"], "1": ["2"], "2": ["3"], "3": ["4"]}
    names, members, labels = match_labels(subsets, {"0": 1.0, "1": 2.0, "3": 3.0})
    assert names == ["0", "1", "3"] and list(labels) == [1.0, 2.0, 3.0]
    with pytest.raises(InputError, match="subset '9'"):
        match_labels(subsets, {"0": 1.0, "1": 2.0, "9": 3.0})


def test_strided_arrays_round_trip_through_the_pool_file(tmp_path):
    """safetensors writes raw buffers: a transposed view must not come back scrambled."""
    rng = np.random.default_rng(0)
    strided = rng.normal(size=(32, 3)).astype(np.float32).T
    assert not strided.flags["C_CONTIGUOUS"]
    pool = FeaturePool(["a", "b"], strided[:2, :4].T[:2], np.zeros((2, 2)), np.zeros((2, 1)),
                       ["x"], {"pca.image.components": strided})
    pool.save(tmp_path / "p.safetensors")
    loaded = FeaturePool.load(tmp_path / "p.safetensors")
    np.testing.assert_array_equal(loaded.extra["pca.image.components"], strided)
    np.testing.assert_array_equal(loaded.image, pool.image)
