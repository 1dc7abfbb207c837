"""Adapters into the host stacks (salesforce LAVIS, MiniGPT-4's copy of the LAVIS registry).

The hosts are imported lazily, inside functions: importing this package needs neither. Which host
is present is told by :func:`available_hosts`; :func:`require_host` turns "neither" into one clear
message instead of an ImportError chain.
"""
from __future__ import annotations

import importlib.util
from typing import Dict, List, Optional, Sequence

from selector.core.errors import InputError

HOSTS = ("minigpt4", "lavis")


def available_hosts() -> List[str]:
    """The host frameworks importable here (``minigpt4`` needs its checkout on ``sys.path``)."""
    return [name for name in HOSTS if importlib.util.find_spec(name) is not None]


def require_host() -> List[str]:
    hosts = available_hosts()
    if not hosts:
        raise InputError(
            "neither MiniGPT-4 nor LAVIS is importable: run from a MiniGPT-4 checkout (its root on "
            "PYTHONPATH) or `pip install salesforce-lavis --no-deps` plus the 'lavis' extra")
    from selector.core.compat import ensure_torchvision_importable

    ensure_torchvision_importable()  # both hosts import torchvision
    return hosts


def register(hosts: Optional[Sequence[str]] = None) -> Dict[str, List[str]]:
    """Register our builders into the importable host registries (idempotent)."""
    from .registration import register as _register

    return _register(hosts)
