"""The two host frameworks, seen through one small adapter, and which of them is importable.

MiniGPT-4 carries its own copy of the LAVIS registry (``minigpt4.common.registry``); salesforce
LAVIS has ``lavis.common.registry``. Same API, separate singletons, and each registry asserts that
a builder / model / runner subclasses *its own* base class. So our classes are made per host, from
that host's bases, by the factories in this package. Hosts are imported only when asked for:
which one is present is told by :func:`available_hosts` without importing either, and
:func:`require_host` turns "neither" into one clear message instead of an ImportError chain.
"""
from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from typing import Any, List

from selector.core.errors import InputError

HOSTS = ("minigpt4", "lavis")

_PATHS = {
    "minigpt4": {"registry": "minigpt4.common.registry",
                 "builder": "minigpt4.datasets.builders.base_dataset_builder",
                 "model": "minigpt4.models.base_model",
                 "runner": "minigpt4.runners.runner_base"},
    "lavis": {"registry": "lavis.common.registry",
              "builder": "lavis.datasets.builders.base_dataset_builder",
              "model": "lavis.models.base_model",
              "runner": "lavis.runners.runner_base"},
}


def available_hosts() -> List[str]:
    """The host frameworks importable here (``minigpt4`` needs its checkout on ``sys.path``)."""
    return [name for name in HOSTS if importlib.util.find_spec(name) is not None]


def require_host() -> List[str]:
    """The importable hosts, made ready to import (torchvision); none is bad input."""
    hosts = available_hosts()
    if not hosts:
        raise InputError(
            "neither MiniGPT-4 nor LAVIS is importable: run from a MiniGPT-4 checkout (its root on "
            "PYTHONPATH) or `pip install salesforce-lavis --no-deps` plus the 'lavis' extra")
    from selector.core.compat import ensure_torchvision_importable

    ensure_torchvision_importable()  # both hosts import torchvision
    return hosts


@dataclass(frozen=True)
class Host:
    name: str  # "minigpt4" or "lavis"

    def _module(self, part: str) -> Any:
        return importlib.import_module(_PATHS[self.name][part])

    @property
    def registry(self) -> Any:
        return self._module("registry").registry

    @property
    def BaseDatasetBuilder(self) -> type:  # noqa: N802 (the host's class name)
        return self._module("builder").BaseDatasetBuilder

    @property
    def BaseModel(self) -> type:  # noqa: N802
        return self._module("model").BaseModel

    @property
    def RunnerBase(self) -> type:  # noqa: N802
        return self._module("runner").RunnerBase
