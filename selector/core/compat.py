"""Compatibility shims for the environments this plugin runs in.

torchvision wheels from PyPI are CUDA builds. On a CPU-only torch their C++ extension
(``torchvision/_C.so``) cannot load, and ``import torchvision`` then dies in
``torchvision/_meta_registrations.py`` with "operator torchvision::nms does not exist", because it
registers fake kernels for ops whose schemas only the extension defines. Everything we import
that imports torchvision (open_clip, transformers' image processors, LAVIS, MiniGPT-4) fails with it.

:func:`ensure_torchvision_importable` defines just those op schemas, and only when the extension
really cannot load. ``torchvision.ops.nms`` then raises if called (nothing in our stack calls it);
everything else in torchvision works. When the extension loads (any matching CPU or CUDA build),
the shim does nothing.
"""
from __future__ import annotations

import importlib.util
import os
from typing import Optional

#: The op schemas torchvision's pure-Python import path refers to when its extension is absent.
MISSING_OP_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}

_library = None  # keeps the torch.library fragment alive (registrations vanish when it is freed)
_state: Optional[str] = None


def _extension_path() -> Optional[str]:
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        for name in os.listdir(folder):
            if name.startswith("_C.") and name.endswith((".so", ".pyd")):
                return os.path.join(folder, name)
    return None


def ensure_torchvision_importable() -> str:
    """Make ``import torchvision`` work on a CPU torch with a CUDA-built torchvision.

    Returns what was done: ``"absent"`` (torchvision not installed), ``"native"`` (its extension
    loads, nothing to do), ``"shimmed"`` (schemas registered). Idempotent.
    """
    global _library, _state
    if _state is not None:
        return _state
    import torch

    path = _extension_path()
    if path is None and importlib.util.find_spec("torchvision") is None:
        _state = "absent"
        return _state
    if _ops_defined(torch):
        _state = "native"
        return _state
    try:
        if path is None:
            raise OSError("torchvision has no _C extension")
        torch.ops.load_library(path)
        _state = "native"
    except (OSError, ImportError, RuntimeError):
        _library = torch.library.Library("torchvision", "FRAGMENT")
        for name, schema in MISSING_OP_SCHEMAS.items():
            if not _op_defined(torch, name):
                _library.define(schema)
        _state = "shimmed"
    return _state


def _op_defined(torch_module, name: str) -> bool:
    try:
        getattr(torch_module.ops.torchvision, name)
        return True
    except (AttributeError, RuntimeError):
        return False


def _ops_defined(torch_module) -> bool:
    return all(_op_defined(torch_module, name) for name in MISSING_OP_SCHEMAS)
