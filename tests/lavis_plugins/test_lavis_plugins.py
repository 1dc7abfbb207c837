"""lavis_plugins: host detection without importing the hosts."""
from __future__ import annotations

import pytest

import lavis_plugins
from selector.core.errors import InputError


def test_no_host_gives_one_clear_message(monkeypatch):
    monkeypatch.setattr(lavis_plugins.importlib.util, "find_spec", lambda name: None)
    assert lavis_plugins.available_hosts() == []
    with pytest.raises(InputError, match="neither MiniGPT-4 nor LAVIS is importable"):
        lavis_plugins.require_host()


def test_detects_installed_hosts(monkeypatch):
    monkeypatch.setattr(lavis_plugins.importlib.util, "find_spec",
                        lambda name: object() if name == "lavis" else None)
    assert lavis_plugins.available_hosts() == ["lavis"]


def _lavis():
    if "lavis" not in lavis_plugins.available_hosts():
        pytest.skip("salesforce-lavis is not installed (make test installs it with --no-deps)")
    lavis_plugins.require_host()


@pytest.fixture(scope="module")
def selected_setup(selected_data):
    return selected_data


def _dataset_config(root, data, name="cc_sbu_align_selected", **selector):
    config = root / f"{name}.yaml"
    options = {"checkpoint": str(root / "ckpt"), "pool": str(root / "pool.safetensors"),
               "num_samples": 16, "cache_dir": str(root / "cache"),
               "selection": {"n_clusters": 3}, **selector}
    import yaml

    config.write_text(yaml.safe_dump({"datasets": {name: {
        "data_type": "images", "build_info": {"storage": str(data)},
        "vis_processor": {"train": {"name": "blip2_image_train", "image_size": 32}},
        "text_processor": {"train": {"name": "blip_caption"}},
        "selector": options}}}))
    return config


def test_register_is_idempotent_and_refuses_a_taken_name():
    _lavis()
    from lavis.common.registry import registry

    first = lavis_plugins.register(["lavis"])
    assert lavis_plugins.register(["lavis"]) == {"lavis": []}
    assert registry.get_builder_class("cc_sbu_align_selected") is not None
    # added now, or by an earlier test of this session: either way the registered class is ours
    assert set(first["lavis"]) <= {"lavis:builder:cc_sbu_align_selected",
                                    "lavis:builder:llava_conversations",
                                    "lavis:model:igpt4_tiny_minigpt4",
                                    "lavis:runner:igpt4_portable"}
    assert getattr(registry.get_model_class("igpt4_tiny_minigpt4"), "_igpt4_plugin", False)
    assert getattr(registry.get_runner_class("igpt4_portable"), "_igpt4_plugin", False)
    assert getattr(registry.get_builder_class("cc_sbu_align_selected"), "_igpt4_plugin", False)
    with pytest.raises(KeyError):  # the host's own rule for taken names still holds
        registry.register_builder("cc_sbu_align_selected")(
            registry.get_builder_class("cc_sbu_align_selected"))


def test_lavis_load_dataset_yields_exactly_the_selectors_choice(selected_setup):
    _lavis()
    import torch
    from lavis.datasets.builders import load_dataset

    from selector.selection.run_selection import selection_for_run

    root, data = selected_setup
    lavis_plugins.register(["lavis"])
    dataset = load_dataset("cc_sbu_align_selected", cfg_path=str(_dataset_config(root, data)))
    train = dataset["train"]
    expected = selection_for_run(data, {"checkpoint": str(root / "ckpt"),
                                        "pool": str(root / "pool.safetensors"),
                                        "num_samples": 16, "cache_dir": str(root / "cache"),
                                        "selection": {"n_clusters": 3}})
    assert expected.reused  # the builder made it; the same inputs give the same selection
    assert [s.id for s in train.samples] == expected.ids and len(train) == 16
    item = train[0]
    assert item["answer"] == item["text_input"] == train.samples[0].answer
    assert isinstance(item["image"], torch.Tensor) and item["image"].shape == (3, 32, 32)
    batch = train.collater([train[0], train[1]])
    assert batch["image"].shape == (2, 3, 32, 32) and len(batch["answer"]) == 2
    assert train.selection_folder == expected.folder


def test_conversation_builder_lays_rounds_out_for_minigpt4(tmp_path):
    _lavis()
    import yaml
    from lavis.datasets.builders import load_dataset

    from conftest import make_conversations

    lavis_plugins.register(["lavis"])
    records = make_conversations(tmp_path)
    config = tmp_path / "conv.yaml"
    config.write_text(yaml.safe_dump({"datasets": {"llava_conversations": {
        "data_type": "images",
        "build_info": {"storage": str(records), "image_root": str(tmp_path)},
        "vis_processor": {"train": {"name": "blip2_image_train", "image_size": 32}}}}}))
    train = load_dataset("llava_conversations", cfg_path=str(config))["train"]
    assert len(train) == 2 and train.selection_folder is None  # no checkpoint: every sample
    item = train[0]
    assert item["conv_q"] == ("<Img><ImageHere></Img> What is in the picture? !@#"
                              "What colour is it? ")
    assert item["conv_a"] == "A red square.!@#Red." and item["connect_sym"] == "!@#"
    assert item["instruction_input"] == "<Img><ImageHere></Img> What is in the picture? "
    assert item["answer"] == "A red square.######Human: What colour is it? ###Assistant: Red."
    assert train[1]["conv_a"] == "A blue field."
