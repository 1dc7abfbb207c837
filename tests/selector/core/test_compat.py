"""selector.compat: torchvision importable on a CPU torch with a CUDA-built torchvision."""
from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from conftest import REPO


def python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                          timeout=300)


needs_torchvision = pytest.mark.skipif(importlib.util.find_spec("torchvision") is None,
                                       reason="torchvision is not installed")


@needs_torchvision
def test_shim_makes_torchvision_open_clip_and_lavis_importable():
    for module in ("open_clip", "lavis"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed (make test installs it)")
    result = python("from selector.core.compat import ensure_torchvision_importable as e; "
                    "state = e(); import torchvision, open_clip, lavis; "
                    "from lavis.common.registry import registry; "
                    "print(state, registry.get_builder_class('coco_caption') is not None, "
                    "e() == state)")
    assert result.returncode == 0, result.stderr[-2000:]
    state, has_builders, idempotent = result.stdout.split()
    assert state in ("shimmed", "native") and idempotent == "True"
    assert has_builders == "True"  # lavis imported fully: its builders are registered


@needs_torchvision
def test_shim_only_acts_when_the_extension_cannot_load():
    """Without the shim the import fails exactly when the shim reports it was needed."""
    bare = python("import torchvision")
    shimmed = python("from selector.core.compat import ensure_torchvision_importable as e; "
                     "print(e()); import torchvision.ops; print(torchvision.__version__)")
    assert shimmed.returncode == 0, shimmed.stderr[-2000:]
    state = shimmed.stdout.split()[0]
    if bare.returncode == 0:
        assert state == "native"
    else:
        assert "torchvision::nms does not exist" in bare.stderr
        assert state == "shimmed"
        # the placeholder ops exist but have no kernel: calling them fails loudly, not silently
        call = python("from selector.core.compat import ensure_torchvision_importable as e; e(); "
                      "import torch, torchvision; "
                      "torchvision.ops.nms(torch.zeros(1, 4), torch.zeros(1), 0.5)")
        assert call.returncode != 0


def test_shim_without_torchvision(monkeypatch):
    import selector.core.compat as compat

    monkeypatch.setattr(compat, "_state", None)
    monkeypatch.setattr(compat.importlib.util, "find_spec", lambda name: None)
    assert compat.ensure_torchvision_importable() == "absent"
