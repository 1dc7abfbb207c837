"""Registering our classes into whichever host registries are importable (both when both are).

Idempotent: a name already holding one of our classes is left alone; a name held by someone
else's class is an error (the registries themselves raise KeyError on a taken name).
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

from .hosts import Host

_MARK = "_igpt4_plugin"


def _ours(cls: type) -> type:
    setattr(cls, _MARK, True)
    return cls


def _register_into(host: Host) -> List[str]:
    from selector.errors import InputError

    from .builders import builder_classes

    registry = host.registry
    mapping = registry.mapping["builder_name_mapping"]
    added = []
    for name, cls in builder_classes(host).items():
        existing = mapping.get(name)
        if existing is not None:
            if getattr(existing, _MARK, False):
                continue
            raise InputError(f"{host.name} registry: builder {name!r} is already taken by "
                             f"{existing.__module__}.{existing.__qualname__}")
        registry.register_builder(name)(_ours(cls))
        added.append(f"{host.name}:builder:{name}")
    return added


def register(hosts: Optional[Sequence[str]] = None) -> Dict[str, List[str]]:
    """Register into the given hosts (default: every importable one). Returns what was added per
    host (empty lists on a second call)."""
    from . import require_host

    names = list(hosts) if hosts is not None else require_host()
    return {name: _register_into(Host(name)) for name in names}
