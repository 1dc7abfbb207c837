"""Drop-in training in unmodified MiniGPT-4 checkouts (current HEAD and v1 ef1ac08).

These need a checkout and an interpreter with MiniGPT-4's requirements plus this plugin installed
(see ../shared/hosts/minigpt4.md): set IGPT4_MINIGPT4_HEAD and/or IGPT4_MINIGPT4_V1 to the
checkouts, and IGPT4_MINIGPT4_PYTHON to that interpreter (default: this one).
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
def _checkout(version: str) -> Path:
    from conftest import minigpt4_checkout

    return minigpt4_checkout(version)


def _snapshot(folder: Path):
    """Every file of the checkout with its size and modification time."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in folder.rglob("*") if p.is_file()}


def _run(command, cwd: Path):
    python = os.environ.get("IGPT4_MINIGPT4_PYTHON", sys.executable)
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONWARNINGS": "ignore"}
    env.pop("IGPT4_AUTOLOAD", None)
    return subprocess.run([python] + command, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=900)


def _options(root: Path, data: Path, output: Path):
    prefix = "datasets.cc_sbu_align_selected"
    return ["--options", f"{prefix}.build_info.storage={data}",
            f"{prefix}.selector.checkpoint={root / 'ckpt'}",
            f"{prefix}.selector.pool={root / 'pool.safetensors'}",
            f"{prefix}.selector.cache_dir={root / 'host_cache'}", f"run.output_dir={output}",
            "run.max_epoch=3"]


def _check_run(output: Path, result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, result.stderr[-4000:]
    (run,) = [p for p in output.iterdir() if p.is_dir()]
    losses = [float(json.loads(line)["train_loss"])
              for line in (run / "log.txt").read_text().splitlines()
              if line.startswith('{"train_')]
    assert len(losses) == 3 and all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0], losses
    assert (run / "checkpoint_2.pth").is_file()
    kept = json.loads((run / "selection" / "cc_sbu_align_selected" / "filter_cap.json")
                      .read_text())["annotations"]
    assert len(kept) == 16


@pytest.mark.parametrize("version", ["head", "v1"])
def test_unmodified_train_py_trains_the_tiny_model(version, selected_data, tmp_path):
    checkout = _checkout(version)
    root, data = selected_data
    before = _snapshot(checkout)
    result = _run(["train.py", "--cfg-path", str(REPO / "configs" / "minigpt4" / "cpu_smoke.yaml")]
                  + _options(root, data, tmp_path / "out"), cwd=checkout)
    _check_run(tmp_path / "out", result)
    assert _snapshot(checkout) == before  # nothing written into the checkout


@pytest.mark.parametrize("version", ["head", "v1"])
def test_module_entry_point_runs_the_checkouts_train_py(version, selected_data, tmp_path):
    checkout = _checkout(version)
    root, data = selected_data
    result = _run(["-m", "lavis_plugins.train", "--host-dir", str(checkout), "--cfg-path",
                   str(REPO / "configs" / "minigpt4" / "cpu_smoke.yaml")]
                  + _options(root, data, tmp_path / "out"), cwd=tmp_path)
    _check_run(tmp_path / "out", result)
