"""The two host frameworks, seen through one small adapter.

MiniGPT-4 carries its own copy of the LAVIS registry (``minigpt4.common.registry``); salesforce
LAVIS has ``lavis.common.registry``. Same API, separate singletons, and each registry asserts that
a builder / model / runner subclasses *its own* base class. So our classes are made per host, from
that host's bases, by the factories in this package. Hosts are imported only when asked for.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

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
