"""lavis_plugins.runner + train: the tiny model trains on CPU through LAVIS and our runner."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import lavis_plugins

REPO = Path(__file__).resolve().parents[2]


def _options(root: Path, data: Path, name: str = "cc_sbu_align_selected"):
    prefix = f"datasets.{name}"
    return [f"{prefix}.build_info.storage={data}", f"{prefix}.selector.checkpoint={root / 'ckpt'}",
            f"{prefix}.selector.pool={root / 'pool.safetensors'}",
            f"{prefix}.selector.cache_dir={root / 'runner_cache'}"]


def train(config: Path, options, cwd: Path, *extra: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "lavis_plugins.train", *extra, "--cfg-path", str(config),
               "--options", *options]
    # a relative run.output_dir goes under $IGPT4_RUNS (lavis_plugins.runner): here cwd/output
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONWARNINGS": "ignore",
                               "IGPT4_RUNS": str(cwd / "output")})


def read_run(output: Path):
    """(run folder, per-epoch mean training losses) of the only run under ``output``."""
    (run,) = [p for p in output.iterdir() if p.is_dir()]
    stats = [json.loads(line) for line in (run / "log.txt").read_text().splitlines()
             if line.startswith('{"train_')]
    return run, [float(s["train_loss"]) for s in stats]


@pytest.fixture(scope="module")
def lavis_run(selected_data, tmp_path_factory):
    if "lavis" not in lavis_plugins.available_hosts():
        pytest.skip("salesforce-lavis is not installed (make test installs it with --no-deps)")
    root, data = selected_data
    cwd = tmp_path_factory.mktemp("lavis_run")
    result = train(REPO / "configs" / "lavis" / "cpu_smoke.yaml", _options(root, data) +
                   ["run.max_epoch=3"], cwd, "--host", "lavis")
    assert result.returncode == 0, result.stderr[-4000:]
    return root, data, cwd


def test_tiny_model_trains_loss_falls_and_a_checkpoint_is_written(lavis_run):
    _, _, cwd = lavis_run
    # relative run.output_dir is placed under $IGPT4_RUNS, not LAVIS's package
    run, losses = read_run(cwd / "output" / "igpt4_cpu_smoke")
    assert len(losses) == 3 and all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0], losses
    checkpoint = torch.load(run / "checkpoint_2.pth", map_location="cpu", weights_only=False)
    assert set(checkpoint["model"]) == {"llama_proj.weight", "llama_proj.bias"}
    assert checkpoint["config"]["run"]["runner"] == "igpt4_portable"


def test_the_run_keeps_the_selection_it_trained_on(lavis_run):
    from selector.selection.run_selection import selection_for_run

    root, data, cwd = lavis_run
    run, _ = read_run(cwd / "output" / "igpt4_cpu_smoke")
    kept = json.loads((run / "selection" / "cc_sbu_align_selected" / "filter_cap.json")
                      .read_text())
    expected = selection_for_run(data, {"checkpoint": str(root / "ckpt"),
                                        "pool": str(root / "pool.safetensors"), "num_samples": 16,
                                        "cache_dir": str(root / "runner_cache"),
                                        "selection": {"n_clusters": 3}})
    assert expected.reused  # made by the training run's builder
    assert [a["image_id"] for a in kept["annotations"]] == expected.ids
    assert (run / "selection" / "cc_sbu_align_selected" / "manifest.json").is_file()


def test_conversation_data_trains_too(selected_data, tmp_path):
    """llava_conversations (every conversation, no selector) through the same runner."""
    if "lavis" not in lavis_plugins.available_hosts():
        pytest.skip("salesforce-lavis is not installed (make test installs it with --no-deps)")
    import yaml

    from conftest import make_conversations

    records = make_conversations(tmp_path)
    config = yaml.safe_load((REPO / "configs" / "lavis" / "cpu_smoke.yaml").read_text())
    block = config["datasets"].pop("cc_sbu_align_selected")
    block["build_info"] = {"storage": str(records), "image_root": str(tmp_path)}
    block["selector"] = {"checkpoint": None}
    config["datasets"]["llava_conversations"] = block
    config["run"].update({"batch_size_train": 2, "max_epoch": 1, "iters_per_epoch": 2})
    path = tmp_path / "conv.yaml"
    path.write_text(yaml.safe_dump(config))
    result = train(path, ["run.output_dir=out"], tmp_path, "--host", "lavis")
    assert result.returncode == 0, result.stderr[-4000:]
    run, losses = read_run(tmp_path / "output" / "out")
    assert len(losses) == 1 and math.isfinite(losses[0])
    assert (run / "checkpoint_0.pth").is_file()


def test_bad_config_path_is_one_line(tmp_path):
    result = train(tmp_path / "missing.yaml", ["a=b"], tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "config file not found" in result.stderr
