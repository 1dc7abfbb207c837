"""Adapters into the host stacks (salesforce LAVIS, MiniGPT-4's copy of the LAVIS registry).

The hosts are imported lazily, inside functions: importing this package needs neither. Which host
is present is told by :func:`available_hosts`; :func:`require_host` turns "neither" into one clear
message instead of an ImportError chain (both live in :mod:`lavis_plugins.hosts`, which the
package's own modules import them from; they are named here for the public API).
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

from lavis_plugins.hosts import HOSTS, available_hosts, require_host

__all__ = ["HOSTS", "available_hosts", "register", "require_host"]


def register(hosts: Optional[Sequence[str]] = None) -> Dict[str, List[str]]:
    """Register our builders into the importable host registries (idempotent)."""
    from lavis_plugins.registration import register as _register

    return _register(hosts)
