"""Registering our classes into whichever host registries are importable (both when both are).

Idempotent: a name already holding one of our classes is left alone; a name held by someone
else's class is an error (the registries themselves raise KeyError on a taken name).
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

from lavis_plugins.hosts import Host, require_host

_MARK = "_igpt4_plugin"


def _ours(cls: type) -> type:
    setattr(cls, _MARK, True)
    return cls


def _classes(host: Host) -> Dict[str, Dict[str, type]]:
    """Our classes per registry kind, made from ``host``'s base classes."""
    from lavis_plugins.builders import builder_classes
    from lavis_plugins.runner import NAME as RUNNER, runner_class
    from lavis_plugins.tiny_model import ARCH, tiny_model_class

    return {"builder": builder_classes(host), "model": {ARCH: tiny_model_class(host)},
            "runner": {RUNNER: runner_class(host)}}


def _register_into(host: Host) -> List[str]:
    from selector.core.errors import InputError

    registry = host.registry
    added = []
    for kind, classes in _classes(host).items():
        mapping = registry.mapping[f"{kind}_name_mapping"]
        for name, cls in classes.items():
            existing = mapping.get(name)
            if existing is not None:
                if getattr(existing, _MARK, False):
                    continue
                raise InputError(f"{host.name} registry: {kind} {name!r} is already taken by "
                                 f"{existing.__module__}.{existing.__qualname__}")
            getattr(registry, f"register_{kind}")(name)(_ours(cls))
            added.append(f"{host.name}:{kind}:{name}")
    return added


def register(hosts: Optional[Sequence[str]] = None) -> Dict[str, List[str]]:
    """Register into the given hosts (default: every importable one). Returns what was added per
    host (empty lists on a second call)."""
    names = list(hosts) if hosts is not None else require_host()
    return {name: _register_into(Host(name)) for name in names}
