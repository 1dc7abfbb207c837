"""Per-sample quality indicators behind one protocol, selectable by name.

An indicator has a ``name``, the ``settings`` that determine its values (hashed into cache keys, so
a changed setting recomputes only that indicator) and ``score(samples)`` returning one
:class:`~selector.core.cache.IndicatorValue` per sample: a value, or the reason there is none (a
corrupt image, an empty answer, a NaN output). A bad sample never stops the others.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from selector.core.cache import IndicatorValue
from selector.core.registry import Registry
from selector.data.samples import Sample


class Indicator:
    """Base class: subclasses set ``name`` and implement ``settings`` and ``score``.

    ``settings()`` must hold everything that changes the values and nothing secret (it is hashed
    into cache keys and stored in the cache). ``chunk_size``, when set, overrides the run's chunk
    size (samples per ``score`` call and per cache transaction): the GPT Batch API path wants one
    large batch, not many small ones.
    """

    name: str = ""
    chunk_size: Optional[int] = None
    progress: bool = True  # show a progress bar (off on all but the main rank)

    def settings(self) -> Dict[str, Any]:
        raise NotImplementedError

    def score(self, samples: Sequence[Sample]) -> List[IndicatorValue]:
        raise NotImplementedError

    def bind(self, work_dir: Path) -> None:
        """Where the run keeps its state (e.g. submitted batch jobs); most indicators need none."""

    def attach_store(self, store: Any) -> None:
        """The run's :class:`~selector.core.cache.Store`, given before ``score`` is called: an
        indicator paid per request (GPT) commits each reply there as it arrives; others ignore
        it."""

    def estimate(self, samples: Sequence[Sample]) -> Dict[str, Any]:
        """What scoring ``samples`` would cost (``igpt4 score --dry-run``); free by default."""
        return {}


INDICATOR_MODULES = ("clip", "reward", "length", "gpt")
#: indicators living in a module of another name: name -> module
SHARED_MODULES = {"perplexity": "lm", "ifd": "lm"}
#: every indicator by name; its module is imported only when it is asked for
REGISTRY = Registry("indicator", {**{name: f"{__name__}.{name}" for name in INDICATOR_MODULES},
                                  **{name: f"{__name__}.{module}"
                                     for name, module in SHARED_MODULES.items()}})
register = REGISTRY.register


def create(name: str, **settings: Any) -> Indicator:
    """An indicator by its registry name (``clip``, ``length``, ...) with its settings."""
    return REGISTRY.create(name, **settings)
