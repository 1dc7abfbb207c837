"""``python -m lavis_plugins.train`` goes through the shared error wrapper, as ``igpt4`` does:
bad input is one line and exit 2 (no traceback; ``--debug`` shows it), a bad flag is argparse's
exit 2, Ctrl-C one line and 130. These run without any host installed."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import List

import pytest

from lavis_plugins import train

REPO = Path(__file__).resolve().parents[2]
PROG = "lavis_plugins.train: error:"


def _run(args: List[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("MINIGPT4_DIR", None)
    return subprocess.run([sys.executable, "-m", "lavis_plugins.train", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300, env=env)


def _one_line(result: subprocess.CompletedProcess, prefix: str = PROG) -> str:
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if ": error:" in line]
    assert len(errors) == 1 and errors[0].startswith(prefix), result.stderr
    return errors[0]


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "train.yaml"
    path.write_text("model:\n  arch: igpt4_tiny_minigpt4\n", encoding="utf-8")
    return path


def test_a_missing_checkout_is_one_line(config, tmp_path):
    result = _run(["--host", "minigpt4", "--cfg-path", str(config)], cwd=tmp_path)
    assert "no MiniGPT-4 checkout found" in _one_line(result)
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_a_folder_that_is_no_checkout_is_one_line(config, tmp_path):
    result = _run(["--host-dir", str(tmp_path), "--cfg-path", str(config)], cwd=tmp_path)
    assert "not a MiniGPT-4 checkout" in _one_line(result)


def test_a_missing_config_is_one_line(tmp_path):
    result = _run(["--cfg-path", str(tmp_path / "absent.yaml")], cwd=tmp_path)
    assert "config file not found" in _one_line(result)


def test_a_bad_flag_is_argparse_exit_2(config, tmp_path):
    result = _run(["--cfg-path", str(config), "--host", "neither"], cwd=tmp_path)
    assert "invalid choice" in _one_line(result, "python -m lavis_plugins.train: error:")


def test_debug_shows_the_traceback(config, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("MINIGPT4_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    from selector.core.errors import InputError

    with pytest.raises(InputError, match="no MiniGPT-4 checkout found"):
        train.main(["--host", "minigpt4", "--cfg-path", str(config), "--debug"])
    assert train.main(["--host", "minigpt4", "--cfg-path", str(config)]) == 2
    assert capsys.readouterr().err.count(PROG) == 1


def test_ctrl_c_is_one_line_and_130(config, tmp_path, monkeypatch, capsys):
    (tmp_path / "minigpt4").mkdir()
    (tmp_path / "train.py").write_text("", encoding="utf-8")

    def interrupted(checkout: Path, argv: List[str]) -> None:
        assert checkout == tmp_path.resolve() and argv == ["--cfg-path", str(config.resolve())]
        raise KeyboardInterrupt

    monkeypatch.setattr(train, "run_minigpt4", interrupted)
    assert train.main(["--host-dir", str(tmp_path), "--cfg-path", str(config)]) == 130
    assert capsys.readouterr().err.strip() == "lavis_plugins.train: interrupted"
