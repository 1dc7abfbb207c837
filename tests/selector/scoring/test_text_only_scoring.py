"""Text-only samples through ``igpt4 score``: every indicator and embedder that needs no image
scores them; ``clip`` and the image embedder report them as *not applicable* (cached, counted
apart, never a failure for ``--strict``); the pool file keeps them with zero image features."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import make_conversations, run_cli
from selector.core.cache import NOT_APPLICABLE, Store, is_failure
from selector.data.samples import read_conversations
from selector.scoring.indicators import create
from selector.scoring.score import ScoreSummary
from selector.scoring.store import sample_hash, score_cached

pytest.importorskip("transformers", reason="transformers is not installed (make test installs it)")


def _records():
    records = [{"id": f"img{i}", "image": f"imgs/{i}.jpg", "conversations": [
        {"from": "human", "value": "<image>\nWhat is in the picture?"},
        {"from": "gpt", "value": f"A {colour} square on a white background."}]}
        for i, colour in enumerate(["red", "blue", "green", "yellow", "black"])]
    records.insert(2, {"id": "txt1", "conversations": [
        {"from": "human", "value": "Write a haiku about rain."},
        {"from": "gpt", "value": "Soft rain on the roof, the gutters sing all night long."}]})
    records.append({"id": "txt2", "conversations": [
        {"from": "human", "value": "Name a prime."}, {"from": "gpt", "value": "Seven."},
        {"from": "human", "value": "Another?"}, {"from": "gpt", "value": "Eleven."}]})
    return records


@pytest.fixture
def data(tmp_path):
    from conftest import write_image

    path = make_conversations(tmp_path / "data", _records())
    for i in range(5):  # distinct images, so the image PCA has something to fit
        write_image(tmp_path / "data" / "imgs" / f"{i}.jpg", (i * 50, 200 - i * 30, 90))
    return path


@pytest.fixture
def clip(tiny_clip_files):
    config, checkpoint = tiny_clip_files
    return create("clip", model=config.stem, pretrained=str(checkpoint),
                  model_config=str(config), num_workers=0, progress=False)


class Counted:
    """Wraps an indicator, counting the samples handed to its ``score``."""

    def __init__(self, inner):
        self.inner, self.scored = inner, 0
        self.name, self.chunk_size = inner.name, None
        self.needs_image = getattr(inner, "needs_image", False)

    def settings(self):
        return self.inner.settings()

    def attach_store(self, store):
        pass

    def score(self, samples):
        self.scored += len(samples)
        return self.inner.score(samples)


def test_clip_is_not_applicable_cached_and_never_retried(data, clip, tmp_path):
    pool = read_conversations(data)
    with Store(tmp_path / "work") as store:
        counted = Counted(clip)
        values = {v.sample_id: v for v in score_cached(store, counted, pool.samples, 3)}
        assert counted.scored == 5  # the model saw only the samples with an image
        for sample_id in ("txt1", "txt2"):
            value = values[sample_id]
            assert value.value is None and value.not_applicable
            assert value.problem == f"{NOT_APPLICABLE}text-only sample (no image)"
            assert not is_failure(value.problem)
        assert all(values[f"img{i}"].value is not None for i in range(5))
        assert store.count("clip") == 7  # not-applicable rows are stored like values
        again = Counted(clip)
        assert [v.problem for v in score_cached(store, again, pool.samples)] == \
            [v.problem for v in values.values()]
        assert again.scored == 0  # a rerun retries nothing


def test_clip_called_directly_loads_nothing_for_text_only_samples(data, tiny_clip_files):
    config, checkpoint = tiny_clip_files
    fresh = create("clip", model=config.stem, pretrained=str(checkpoint), model_config=str(config),
                   num_workers=0, progress=False)
    text_only = [s for s in read_conversations(data).samples if not s.has_image]
    assert all(v.not_applicable for v in fresh.score(text_only)) and fresh._loaded is None


def test_reward_and_length_score_text_only_samples(data, tmp_path):
    from selector.app.toy.text import tiny_reward_model

    pool = read_conversations(data)
    reward = create("reward", model=str(tiny_reward_model(tmp_path / "reward")), batch_size=4,
                    progress=False)
    for indicator in (reward, create("length")):
        values = {v.sample_id: v for v in indicator.score(pool.samples)}
        assert values["txt1"].problem is None and np.isfinite(values["txt1"].value)
        assert len(values["txt2"].detail["per_turn"]) == 2  # both rounds of the conversation


def test_image_embedding_not_applicable_text_embedding_computed(data, tiny_clip_files,
                                                                tiny_llama_dir, tmp_path):
    from selector.scoring.embedders import create_embedder, embed_cached

    config, checkpoint = tiny_clip_files
    pool = read_conversations(data)
    hashes = [sample_hash(s) for s in pool.samples]
    image = create_embedder("clip_image", model=config.stem, pretrained=str(checkpoint),
                            model_config=str(config), num_workers=0, progress=False)
    text = create_embedder("causal_lm", model=str(tiny_llama_dir), progress=False)
    with Store(tmp_path / "work") as store:
        vectors, problems = embed_cached(store, image, pool.samples, hashes, chunk_size=3)
        rows = {s.id: n for n, s in enumerate(pool.samples)}
        for sample_id in ("txt1", "txt2"):
            assert problems[rows[sample_id]].startswith(NOT_APPLICABLE)
            assert np.isnan(vectors[rows[sample_id]]).all()
        assert np.isfinite(vectors[rows["img0"]]).all() and problems[rows["img0"]] is None
        from selector.core.cache import settings_hash

        key = settings_hash("embedding:image", image.settings())
        stored = store.get_arrays("image", key, hashes)
        assert len(stored) == 7 and stored[hashes[rows["txt1"]]] == (None, problems[rows["txt1"]])
        image.embed = None  # a rerun takes everything from the cache: nothing to embed
        _, again = embed_cached(store, image, pool.samples, hashes)
        assert again == problems
        text_vectors, text_problems = embed_cached(store, text, pool.samples, hashes)
        assert text_problems == [None] * len(pool) and np.isfinite(text_vectors).all()


def test_not_applicable_is_not_missing():
    summary = ScoreSummary(7, {"clip": 0, "length": 0}, 0, {"clip": 2, "length": 0})
    assert summary.complete
    assert not ScoreSummary(7, {"clip": 1}, 0, {"clip": 2}).complete


def test_score_keeps_text_only_rows_in_the_pool_and_strict_passes(data, tiny_clip_files,
                                                                  tiny_llama_dir, tmp_path):
    from selector.app.toy.models import tiny_score_settings
    from selector.scoring.pool import FeaturePool

    common = ["--data", data, "--work", tmp_path / "work", "--indicators", "clip,length",
              "--set", "pool.indicators=[clip,length]",
              *tiny_score_settings(*tiny_clip_files, tiny_llama_dir)]
    result = run_cli("score", *common, "--pool-out", tmp_path / "pool.safetensors",
                     "--out", tmp_path / "table.jsonl", "--strict")
    assert result.returncode == 0, result.stderr
    assert "without a value: clip 0, length 0, image embedding 0, text embedding 0; not " \
           "applicable (2 text-only samples): clip 2, image embedding 2" in result.stderr
    assert "txt1" not in result.stderr  # no per-sample problem line for them
    assert not (tmp_path / "work" / "pool_excluded.json").exists()
    rows = {r["id"]: r for r in map(json.loads,
                                    (tmp_path / "table.jsonl").read_text().splitlines())}
    assert rows["txt1"]["clip"] is None and rows["txt1"]["clip_problem"].startswith(NOT_APPLICABLE)
    assert rows["txt1"]["length"] > 0 and rows["txt1"]["length_problem"] is None

    pool = FeaturePool.load(tmp_path / "pool.safetensors")
    assert len(pool) == 7 and pool.text_only_ids == ["txt1", "txt2"]
    mask = pool.image_mask
    np.testing.assert_array_equal(pool.image[~mask], 0.0)
    clip = pool.indicator("clip")
    assert clip[~mask] == pytest.approx([clip[mask].mean()] * 2, rel=1e-5)
    assert pool.info["text_only"]["samples"] == 2
    assert np.isfinite(pool.features).all()

    # a rerun computes nothing: every value, not-applicable ones included, is cached
    dry = run_cli("score", *common, "--pool-out", tmp_path / "pool2.safetensors", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    for name in ("clip", "length", "image embedding", "text embedding"):
        assert any(line.split() == [*name.split(), "7", "cached", "0", "to", "compute"]
                   for line in dry.stdout.splitlines()), (name, dry.stdout)
