"""lavis_plugins.tiny_tester: the tiny model built for answering beside the model itself, with
neither a host nor eval_arena imported (the generation path is eval_arena's, handed the parts)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from selector.core.errors import InputError

REPO = Path(__file__).resolve().parents[2]


def test_load_tiny_imports_no_eval_arena_and_no_host():
    probe = ("import json, sys\n"
             "from lavis_plugins.tiny_tester import load_tiny\n"
             "tiny = load_tiny(device='cpu', eval_transform=True)\n"
             "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('eval_arena', 'minigpt4', 'lavis'))\n"
             "print(json.dumps({'bad': bad, 'settings': tiny.settings, 'training': tiny.model.training}))\n")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["bad"] == []
    assert seen["training"] is False
    assert seen["settings"]["image_transform"] == "blip2_image_eval 32"
    assert seen["settings"]["device"] == "cpu" and seen["settings"]["dtype"] == "float32"
    assert seen["settings"]["ckpt"] is None and seen["settings"]["weights_loaded"] == 0


def test_the_arena_transform_and_a_wrong_arch(tmp_path):
    from lavis_plugins.tiny_tester import load_tiny

    assert load_tiny(device="cpu").settings["image_transform"] == "arena blip2_image_train 32"
    other = tmp_path / "other.yaml"
    other.write_text("model:\n  arch: minigpt4\n", encoding="utf-8")
    with pytest.raises(InputError, match="is not the tiny model"):
        load_tiny(str(other), device="cpu")
    odd = tmp_path / "odd.yaml"
    odd.write_text("model:\n  arch: igpt4_tiny_minigpt4\ndatasets:\n  d:\n    vis_processor:\n"
                   "      eval:\n        name: clip_image_eval\n", encoding="utf-8")
    with pytest.raises(InputError, match="knows the blip2_image_eval transform only"):
        load_tiny(str(odd), device="cpu", eval_transform=True)
