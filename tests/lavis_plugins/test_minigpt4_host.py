"""Drop-in training in unmodified MiniGPT-4 checkouts (current HEAD and v1 ef1ac08).

These need a checkout and an interpreter with MiniGPT-4's requirements plus this plugin installed
(`bash .ci/minigpt4_host.sh build ENV` makes one): set IGPT4_MINIGPT4_HEAD and/or
IGPT4_MINIGPT4_V1 to the checkouts, and IGPT4_MINIGPT4_PYTHON to that interpreter (default: this
one). Under CI=true they fail instead of skipping when the variables are missing.

The first tests need no host: the smoke set and where runs and caches go by default.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------ defaults, smoke set (no host)
def test_user_folders_follow_xdg_and_overrides(monkeypatch, tmp_path):
    from selector.core.paths import runs_dir, user_cache_dir

    for name in ("IGPT4_CACHE", "IGPT4_RUNS", "XDG_CACHE_HOME", "XDG_DATA_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert user_cache_dir() == tmp_path / ".cache" / "instructiongpt4"
    assert runs_dir() == tmp_path / ".local" / "share" / "instructiongpt4" / "runs"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xc"))
    monkeypatch.setenv("XDG_DATA_HOME", "relative/is/ignored")  # as the XDG spec says
    assert user_cache_dir() == tmp_path / "xc" / "instructiongpt4"
    assert runs_dir() == tmp_path / ".local" / "share" / "instructiongpt4" / "runs"
    monkeypatch.setenv("IGPT4_CACHE", str(tmp_path / "c"))
    monkeypatch.setenv("IGPT4_RUNS", str(tmp_path / "r"))
    assert (user_cache_dir(), runs_dir()) == (tmp_path / "c", tmp_path / "r")


def test_smoke_set_is_made_once_complete_and_resolved(monkeypatch, tmp_path):
    from lavis_plugins import smoke
    from selector.data.samples import read_pool
    from selector.core.errors import InputError
    from selector.scoring.pool import FeaturePool

    monkeypatch.setenv("IGPT4_CACHE", str(tmp_path / "cache"))
    storage, options = smoke.resolve("igpt4:smoke", {"checkpoint": "igpt4:smoke",
                                                     "pool": "igpt4:smoke", "num_samples": 16})
    folder = smoke.default_folder()
    assert Path(storage) == folder / "data" and options["num_samples"] == 16
    assert Path(options["checkpoint"]) == folder / "selector"
    pool = FeaturePool.load(options["pool"])
    assert sorted(pool.ids) == sorted(s.id for s in read_pool(storage).samples)
    from selector.selection.smoke import SAMPLES

    assert len(pool.ids) == SAMPLES
    assert not [p for p in folder.parent.iterdir() if p.name.endswith(".tmp")]
    before = _snapshot(folder)
    assert smoke.smoke_set() == folder and _snapshot(folder) == before  # made once, reused
    assert sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) < 1_000_000
    with pytest.raises(InputError, match="igpt4:smoke only goes with build_info.storage"):
        smoke.resolve(str(tmp_path), {"checkpoint": "igpt4:smoke"})
    assert smoke.resolve("/data/x", {"checkpoint": "/c"}) == ("/data/x", {"checkpoint": "/c"})


def test_default_selection_cache_is_outside_the_data_folder(selected_data, monkeypatch, tmp_path):
    from selector.selection.run_selection import selection_for_run

    root, data = selected_data
    monkeypatch.setenv("IGPT4_CACHE", str(tmp_path / "cache"))
    before = _snapshot(data)
    chosen = selection_for_run(data, {"checkpoint": str(root / "ckpt"), "num_samples": 16,
                                      "pool": str(root / "pool.safetensors"),
                                      "selection": {"n_clusters": 3}})
    assert chosen.folder.is_relative_to(tmp_path / "cache" / "datasets")
    assert _snapshot(data) == before  # nothing written into the data folder


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
