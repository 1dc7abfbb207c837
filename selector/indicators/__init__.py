"""Per-sample quality indicators behind one protocol, selectable by name.

An indicator has a ``name``, the ``settings`` that determine its values (hashed into cache keys, so
a changed setting recomputes only that indicator) and ``score(samples)`` returning one
:class:`IndicatorValue` per sample: a value, or the reason there is none (a corrupt image, an empty
answer, a NaN output). A bad sample never stops the others.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence

from ..data import Sample
from ..errors import InputError


@dataclass(frozen=True)
class IndicatorValue:
    sample_id: str
    value: Optional[float]
    problem: Optional[str] = None
    detail: Dict[str, Any] = field(default_factory=dict)


class Indicator:
    """Base class: subclasses set ``name`` and implement ``settings`` and ``score``."""

    name: str = ""

    def settings(self) -> Dict[str, Any]:
        raise NotImplementedError

    def score(self, samples: Sequence[Sample]) -> List[IndicatorValue]:
        raise NotImplementedError


_REGISTRY: Dict[str, Callable[..., Indicator]] = {}


def register(name: str) -> Callable[[type], type]:
    def decorate(cls: type) -> type:
        cls.name = name
        _REGISTRY[name] = cls
        return cls
    return decorate


def create(name: str, **settings: Any) -> Indicator:
    """An indicator by its registry name (``clip``, ``length``, ...) with its settings."""
    from . import clip, length  # noqa: F401  (registration)

    if name not in _REGISTRY:
        raise InputError(f"unknown indicator {name!r} (known: {', '.join(sorted(_REGISTRY))})")
    try:
        return _REGISTRY[name](**settings)
    except TypeError as exc:
        raise InputError(f"indicator {name!r}: {exc}") from None
