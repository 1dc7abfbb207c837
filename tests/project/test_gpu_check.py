"""benchmarks/gpu_check.py: every CUDA path, run here at tiny sizes on the CPU (``--device cpu
--small``). The MiniGPT-4 paths need IGPT4_MINIGPT4_HEAD / _V1 (and IGPT4_MINIGPT4_PYTHON), as the
host tests; without them the script says which were skipped and why, and does not exit 0."""
from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "gpu_check.py"
PATHS = ["clip fp16", "clip bf16", "reward", "text features", "train head", "train v1",
         "tester head", "tester v1", "tester tiny", "score accelerate"]
HOST_PATHS = {"train head": "IGPT4_MINIGPT4_HEAD", "tester head": "IGPT4_MINIGPT4_HEAD",
              "train v1": "IGPT4_MINIGPT4_V1", "tester v1": "IGPT4_MINIGPT4_V1"}


def _need_open_clip() -> None:
    # find_spec, not importorskip: importing open_clip before the torchvision shim breaks it
    if importlib.util.find_spec("open_clip") is None:
        pytest.skip("open_clip is not installed (make test installs it)")


def _module():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cpu_small_runs_every_path(tmp_path):
    _need_open_clip()
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    result = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--small"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    lines = result.stdout.strip().splitlines()
    assert lines, result.stderr[-3000:]
    rows = {line[:17].strip(): line[17:].split(None, 1) for line in lines[1:-2]}
    assert list(rows) == PATHS, result.stdout + result.stderr[-3000:]
    missing = {path for path, variable in HOST_PATHS.items() if not os.environ.get(variable)}
    for path, (outcome, text) in rows.items():
        if path in missing:
            assert outcome == "skipped" and HOST_PATHS[path] in text, (path, outcome, text)
        else:
            assert outcome == "ok", (path, outcome, text, result.stderr[-3000:])
    if missing:  # honest: what did not run is not counted as run, and the exit says so
        assert lines[-1] == f"{len(PATHS) - len(missing)}/{len(PATHS)} paths ran " \
                            f"({len(missing)} skipped)"
        assert result.returncode == 3
    else:
        assert re.fullmatch(r"(\d+)/\1 paths ran", lines[-1]) and lines[-1].startswith("10/")
        assert result.returncode == 0, result.stderr[-3000:]
    # the CLIP lines carry their figures: speed and FLOPs per sample
    assert re.search(r"images/s .* GFLOP/sample", rows["clip bf16"][1]), rows["clip bf16"]
    assert "bfloat16" in rows["clip bf16"][1] and "float16" in rows["clip fp16"][1]


def test_flop_count_includes_the_attention_projections(tmp_path):
    """nn.MultiheadAttention's fused inference path is invisible to torch's FLOP counter: the
    script turns it off while counting, so a ViT layer's FLOPs are all there."""
    _need_open_clip()
    import json

    import torch

    from selector.scoring.indicators.clip import load_open_clip

    gpu_check = _module()
    width, layers, patch, size = 32, 2, 16, 64
    config = {"embed_dim": 16, "vision_cfg": {"image_size": size, "layers": layers, "width": width,
                                              "head_width": 16, "patch_size": patch},
              "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 16, "heads": 2,
                           "layers": 1}}
    (tmp_path / "igpt4-flops.json").write_text(json.dumps(config))
    model = load_open_clip("igpt4-flops", None, str(tmp_path / "igpt4-flops.json"), "cpu",
                           "fp32")[0]
    pixels = torch.randn(2, 3, size, size)
    with torch.no_grad():
        counted = gpu_check.flops_per_sample(lambda: model.encode_image(pixels), 2)
    tokens = (size // patch) ** 2 + 1
    linear = layers * 2 * tokens * (4 * width * width + 2 * width * 4 * width)  # qkv+out, MLP
    patches = 2 * (size // patch) ** 2 * 3 * patch * patch * width
    attention = layers * 4 * tokens * tokens * width  # the counter may or may not see SDPA
    assert linear + patches <= counted <= linear + patches + attention + 2 * width * 16
    assert torch.backends.mha.get_fastpath_enabled()  # restored


def test_peak_table_and_override():
    gpu_check = _module()
    table = dict(gpu_check.PEAK_BF16_TFLOPS)
    assert table["H200"] == table["H100"] == 989.0 and table["A100"] == 312.0

    class Args:
        peak_tflops, device, small, num_workers = None, "cpu", True, None

    check = gpu_check.Check(Args(), Path("."))
    assert check.peak() is None  # no ceiling for a CPU
    Args.peak_tflops = 500.0
    assert check.peak()[0] == 500.0
