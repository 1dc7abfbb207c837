"""lavis_plugins: host detection without importing the hosts."""
from __future__ import annotations

import pytest

import lavis_plugins
import lavis_plugins.hosts
from selector.core.errors import InputError


def test_no_host_gives_one_clear_message(monkeypatch):
    monkeypatch.setattr(lavis_plugins.hosts.importlib.util, "find_spec", lambda name: None)
    assert lavis_plugins.available_hosts() == []
    with pytest.raises(InputError, match="neither MiniGPT-4 nor LAVIS is importable"):
        lavis_plugins.require_host()


def test_detects_installed_hosts(monkeypatch):
    monkeypatch.setattr(lavis_plugins.hosts.importlib.util, "find_spec",
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


def test_a_dataset_build_reads_pool_and_checkpoint_once_and_passes_no_strings(selected_setup,
                                                                             monkeypatch):
    """The builder hands its ``selector`` block down typed (no ``key=value`` overrides parsed on
    the way), and a build that makes its selection reads the pool file and the checkpoint once."""
    _lavis()
    from lavis.datasets.builders import load_dataset

    import selector.core.settings as settings_module
    from selector.model import training
    from selector.scoring.pool import FeaturePool
    from selector.selection import run_selection

    root, data = selected_setup
    lavis_plugins.register(["lavis"])
    reads = {"pool": 0, "checkpoint": 0}
    real_pool, real_checkpoint = FeaturePool.load.__func__, training.load_checkpoint

    def count_pool(cls, path, *args, **kwargs):
        reads["pool"] += 1
        return real_pool(cls, path, *args, **kwargs)

    def count_checkpoint(*args, **kwargs):
        reads["checkpoint"] += 1
        return real_checkpoint(*args, **kwargs)

    real_overrides = settings_module.override_layers

    def no_strings(overrides, *args, **kwargs):
        assert not list(overrides), f"key=value overrides parsed: {overrides}"
        return real_overrides(overrides, *args, **kwargs)

    handed = []
    real_for_run = run_selection.selection_for_run
    monkeypatch.setattr(FeaturePool, "load", classmethod(count_pool))
    monkeypatch.setattr(training, "load_checkpoint", count_checkpoint)  # Selector.load's
    monkeypatch.setattr(settings_module, "override_layers", no_strings)
    monkeypatch.setattr(run_selection, "selection_for_run",
                        lambda storage, options, *a: handed.append(options) or
                        real_for_run(storage, options, *a))
    # a selection not made before (its own cache folder): select() runs inside this build
    config = _dataset_config(root, data, cache_dir=str(root / "cache-once"), num_samples=12)
    train = load_dataset("cc_sbu_align_selected", cfg_path=str(config))["train"]
    assert len(train) == 12 and reads == {"pool": 1, "checkpoint": 1}
    assert isinstance(handed[0], run_selection.RunSelectionOptions)
    assert handed[0].num_samples == 12 and handed[0].selection == {"n_clusters": 3}
    reads.update(pool=0, checkpoint=0)  # reused: still once each (the key, the mode check)
    assert len(load_dataset("cc_sbu_align_selected", cfg_path=str(config))["train"]) == 12
    assert reads == {"pool": 1, "checkpoint": 1}


def test_selection_options_read_the_block_as_before():
    """Typed options keep the block's meaning: ``selection.num_samples`` wins over
    ``num_samples``, a string is read as a YAML value (as the overrides did), errors name the
    key and value as before, and keys the hosts add are ignored."""
    from selector.selection.run_selection import RunSelectionOptions

    options = RunSelectionOptions.from_block({"checkpoint": "c", "num_samples": "30",
                                              "selection": {"num_samples": 40,
                                                            "n_clusters": "4"},
                                              "mode": None, "host_key": 1})
    settings = options.selector_settings()
    assert options.num_samples == 30 and options.mode == "default"
    assert settings["selection"]["num_samples"] == 40 and settings["selection"]["n_clusters"] == 4
    with pytest.raises(InputError, match=r"^--set selection\.nope=1: unknown setting "
                                         r"'selection\.nope'"):
        RunSelectionOptions.from_block({"selection": {"nope": 1}}).selector_settings()
    with pytest.raises(InputError, match="selector.num_samples must be a whole number"):
        RunSelectionOptions.from_block({"num_samples": "many"})
    indicators = RunSelectionOptions.from_block(
        {"indicators": {"pool": {"indicators": ["length"]}, "chunk_size": "8"}})
    assert indicators.indicator_settings()["pool"]["indicators"] == ["length"]
    assert indicators.indicator_settings()["chunk_size"] == 8
