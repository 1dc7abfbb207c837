"""The llava_conversations builder and text-only samples: MiniGPT-4's stage 2 needs an image per
sample, so they are left out with one logged line counting them."""
from __future__ import annotations

import logging

import pytest

import lavis_plugins
from conftest import make_conversations
from lavis_plugins.builders import with_images
from selector.core.errors import InputError
from selector.data.samples import read_conversations

RECORDS = [
    {"id": "img1", "image": "imgs/img1.jpg", "conversations": [
        {"from": "human", "value": "<image>\nWhat is it?"}, {"from": "gpt", "value": "A cube."}]},
    {"id": "txt1", "conversations": [
        {"from": "human", "value": "Write a haiku."}, {"from": "gpt", "value": "Rain on the roof."}]},
    {"id": "txt2", "conversations": [
        {"from": "human", "value": "Name a prime."}, {"from": "gpt", "value": "Seven."}]},
]


def _warnings(caplog):
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING
            and "text-only" in r.getMessage()]


def test_text_only_samples_are_left_out_with_one_line(tmp_path, caplog):
    path = make_conversations(tmp_path, RECORDS)
    samples = read_conversations(path).samples
    with caplog.at_level(logging.WARNING):
        kept = with_images(samples, str(path))
    assert [s.id for s in kept] == ["img1"]
    assert _warnings(caplog) == [
        f"instructiongpt4: llava_conversations: left out 2 text-only samples (no image; "
        f"MiniGPT-4 trains on an image per sample) of 3 from {path}; training on 1"]
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert with_images(kept, str(path)) == kept
    assert _warnings(caplog) == []  # nothing left out: nothing said
    with pytest.raises(InputError, match="all 2 samples are text-only"):
        with_images(samples[1:], str(path))


def test_the_dataset_refuses_a_text_only_sample_by_name(tmp_path):
    from lavis_plugins.datasets import ConversationDataset

    samples = read_conversations(make_conversations(tmp_path, RECORDS)).samples
    with pytest.raises(InputError, match=r"sample 'txt1' is text-only \(2 such\)"):
        ConversationDataset(samples)


def test_the_lavis_builder_trains_on_the_samples_with_an_image(tmp_path, caplog):
    if "lavis" not in lavis_plugins.available_hosts():
        pytest.skip("salesforce-lavis is not installed (make test installs it with --no-deps)")
    lavis_plugins.require_host()
    import yaml
    from lavis.datasets.builders import load_dataset

    lavis_plugins.register(["lavis"])
    path = make_conversations(tmp_path, RECORDS)
    config = tmp_path / "conv.yaml"
    config.write_text(yaml.safe_dump({"datasets": {"llava_conversations": {
        "data_type": "images", "build_info": {"storage": str(path), "image_root": str(tmp_path)},
        "vis_processor": {"train": {"name": "blip2_image_train", "image_size": 32}}}}}))
    with caplog.at_level(logging.WARNING):
        train = load_dataset("llava_conversations", cfg_path=str(config))["train"]
    assert [s.id for s in train.samples] == ["img1"] and len(train) == 1
    assert len(_warnings(caplog)) == 1 and "left out 2 text-only samples" in _warnings(caplog)[0]
    assert train[0]["conv_a"] == "A cube."
