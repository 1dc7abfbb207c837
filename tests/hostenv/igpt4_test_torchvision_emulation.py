"""Test-environment only (never part of the package): make ``import torchvision`` work in the CPU
MiniGPT-4 host environment that .ci/run builds (see ../shared/hosts/minigpt4.md).

PyPI's torchvision 0.28.0 is a CUDA build; on the CPU torch its ``_C`` extension cannot load and
``import torchvision`` fails with "operator torchvision::nms does not exist". .ci/run copies this
file into the host environment's site-packages with a one-line ``.pth`` that imports it. The first
time ``torchvision`` is looked for, :class:`_Finder` tries to load the extension and, only if that
fails, defines the two op schemas torchvision's import refers to. Then it steps aside, so the
regular finders import torchvision as usual. Real MiniGPT-4 users have a working torchvision; this
makes the test environment behave like theirs, so ``pip freeze`` and ``import minigpt4`` can be
checked before our package is installed.
"""
import importlib.abc
import importlib.util
import os
import sys

SCHEMAS = ("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
           "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
_keep = []  # the torch.library fragment must stay alive, or its definitions vanish


def _emulate() -> None:
    import torch

    for finder in list(sys.meta_path):
        if isinstance(finder, _Finder):
            sys.meta_path.remove(finder)
    spec = importlib.util.find_spec("torchvision")
    folders = list(spec.submodule_search_locations or []) if spec else []
    extensions = [os.path.join(f, n) for f in folders for n in os.listdir(f)
                  if n.startswith("_C.") and n.endswith(".so")]
    try:
        if not extensions:
            raise OSError("no _C extension")
        torch.ops.load_library(extensions[0])
    except (OSError, RuntimeError):
        library = torch.library.Library("torchvision", "FRAGMENT")
        for schema in SCHEMAS:
            try:
                library.define(schema)
            except RuntimeError:  # already defined (e.g. by another shim)
                pass
        _keep.append(library)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torchvision":
            _emulate()
        return None  # the regular finders do the import


if not any(isinstance(f, _Finder) for f in sys.meta_path):
    sys.meta_path.insert(0, _Finder())
