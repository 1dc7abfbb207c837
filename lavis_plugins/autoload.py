"""Drop-in activation: our names resolve in an unmodified ``train.py`` of MiniGPT-4 or LAVIS.

Neither host has a plugin mechanism, and their ``train.py`` resolves ``--cfg-path`` names right
after importing the host package. So the install puts ``instructiongpt4-autoload.pth`` into
site-packages (normal and editable installs); Python runs its one line at start-up, which calls
:func:`install`. That adds an import hook and nothing else, importing nothing heavy: only when a
host package (``minigpt4``, ``lavis``) is imported does the hook, right after the package's
``__init__`` has run, make torchvision importable where needed and register our builders, runner
and tiny model into that host's registry. ``torchrun`` workers are ordinary Python processes, so
they get the same hook.

Switch it off with ``IGPT4_AUTOLOAD=0``; then ``import lavis_plugins; lavis_plugins.register()``
(or ``python -m lavis_plugins.train``) does the same explicitly. A failure inside the hook is
reported as a warning and never breaks the host's own import.
"""
from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys
import warnings
from types import ModuleType
from typing import Any, Optional, Sequence

ENV = "IGPT4_AUTOLOAD"
HOST_PACKAGES = ("minigpt4", "lavis")


def enabled() -> bool:
    return os.environ.get(ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def after_host_import(host: str) -> None:
    """What the hook does once ``host``'s package has been imported."""
    try:
        from lavis_plugins.registration import register

        register([host])
    except Exception as exc:  # never break the host's import; say what went wrong instead
        warnings.warn(f"instructiongpt4: could not register into {host} ({exc}); set "
                      f"{ENV}=0 and call lavis_plugins.register() to see the traceback",
                      RuntimeWarning, stacklevel=2)


class _RegisteringLoader(importlib.abc.Loader):
    """The host package's own loader, followed by our registration."""

    def __init__(self, inner: Any, host: str) -> None:
        self._inner = inner
        self._host = host

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> Optional[ModuleType]:
        return self._inner.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        try:
            from selector.core.compat import ensure_torchvision_importable

            ensure_torchvision_importable()  # both hosts import torchvision at once
        except Exception:  # noqa: BLE001 - the host's own import then reports the problem
            pass
        self._inner.exec_module(module)
        after_host_import(self._host)

    def __getattr__(self, name: str) -> Any:  # get_resource_reader, is_package, ...
        return getattr(self._inner, name)


class HostImportHook(importlib.abc.MetaPathFinder):
    """Finds host packages with the other finders and wraps their loaders."""

    def find_spec(self, name: str, path: Optional[Sequence[str]] = None,
                  target: Optional[ModuleType] = None) -> Optional[importlib.machinery.ModuleSpec]:
        if name not in HOST_PACKAGES:
            return None
        for finder in sys.meta_path:
            if isinstance(finder, HostImportHook) or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _RegisteringLoader(spec.loader, name)
                return spec
        return None


def install() -> bool:
    """Add the hook (once). Hosts imported before this are registered at once."""
    if not enabled() or any(isinstance(f, HostImportHook) for f in sys.meta_path):
        return False
    sys.meta_path.insert(0, HostImportHook())
    for host in HOST_PACKAGES:
        if host in sys.modules:
            after_host_import(host)
    return True
