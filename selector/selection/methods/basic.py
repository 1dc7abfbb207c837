"""Model-free selection methods: ``random``, ``cluster-random``, ``top:<indicator>``,
``bottom:<indicator>``, ``threshold:<indicator>=<value>`` and ``length``.

Each turns the pool into one score per row with numpy (no per-sample Python loop, except reading
the answers' text for ``length``); :func:`selector.selection.methods.choose` keeps the budget.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import numpy as np

from selector.core.errors import InputError
from selector.selection.methods import Method, MethodInputs, MethodScores, register


def random_scores(n: int, seed: int) -> np.ndarray:
    """One uniform draw per row from ``numpy.random.default_rng(seed)``: keeping the highest
    ``k`` is a uniform sample of ``k`` rows without replacement."""
    return np.random.default_rng(int(seed)).random(n)


def _indicator(inputs: MethodInputs, spec: str) -> Tuple[str, np.ndarray]:
    name = inputs.argument
    pool = inputs.pool
    if not name:
        raise InputError(f"--method {spec} needs an indicator: {spec}:<indicator> (the pool has "
                         f"{', '.join(pool.indicator_names)})")
    return name, pool.indicator(name).astype(np.float64)


def _no_argument(inputs: MethodInputs, name: str, why: str) -> None:
    """A method without an argument refuses one (``random:3`` is not seed 3)."""
    if inputs.argument is not None:
        raise InputError(f"--method {name}:{inputs.argument}: {name} takes no argument ({why})")


@register("random")
class Random(Method):
    """A uniform random draw of the budget (``--seed``)."""

    uses_seed = True

    def score(self, inputs: MethodInputs) -> MethodScores:
        _no_argument(inputs, self.name, "its seed is --seed")
        return MethodScores(random_scores(len(inputs.pool), inputs.seed))


@register("cluster-random")
class ClusterRandom(Random):
    """Random within the selector's per-cluster quotas: the diversity step over random scores."""

    diversity = True


@register("top")
class Top(Method):
    """The highest values of one pool indicator (``top:clip``); ties in pool order."""

    sign = 1.0

    def score(self, inputs: MethodInputs) -> MethodScores:
        name, values = _indicator(inputs, self.name)
        return MethodScores(self.sign * values, details={"indicator": name})


@register("bottom")
class Bottom(Top):
    """The lowest values of one pool indicator (``bottom:length``)."""

    sign = -1.0


def parse_threshold(argument: Optional[str]) -> Tuple[str, float]:
    """``"clip=30"`` -> ``("clip", 30.0)``."""
    name, sep, value = (argument or "").partition("=")
    if not sep or not name.strip() or not value.strip():
        raise InputError(f"--method threshold:{argument or ''}: write threshold:<indicator>="
                         "<value>, e.g. threshold:clip=30")
    try:
        number = float(value)
    except ValueError:
        number = float("nan")
    if not np.isfinite(number):
        raise InputError(f"--method threshold:{argument}: {value.strip()!r} is not a finite "
                         "number")
    return name.strip(), number


@register("threshold")
class Threshold(Method):
    """The DataComp filter: only samples whose indicator is above the value are eligible; the
    budget is filled among them at random (``--seed``) or by the indicator (``fill: score``)."""

    uses_seed = True

    def score(self, inputs: MethodInputs) -> MethodScores:
        name, value = parse_threshold(inputs.argument)
        pool = inputs.pool
        if name not in pool.indicator_names:
            raise InputError(f"--method threshold:{inputs.argument}: the pool has no indicator "
                             f"{name!r} (has {', '.join(pool.indicator_names)})")
        values = pool.indicator(name).astype(np.float64)
        eligible = values > value
        fill = str(inputs.settings.get("fill", "random"))
        if fill == "score":
            scores = values
        else:
            scores = random_scores(len(pool), inputs.seed)
        return MethodScores(scores, eligible, details={
            "indicator": name, "threshold": value, "fill": fill,
            "eligible": int(eligible.sum()), "uses_seed": fill != "score"})


def answer_lengths(data: Any, ids: Any, unit: str = "words") -> np.ndarray:
    """The length of every pool row's answers in ``data`` (a DataPool): words (whitespace
    separated) or characters, summed over the gpt turns of a conversation."""
    by_id: Dict[str, Any] = data.by_id()
    missing = [sample_id for sample_id in ids if sample_id not in by_id]
    if missing:
        raise InputError(f"{data.source}: pool sample {missing[0]!r} is not in the data "
                         f"({len(missing)} of the pool's samples are missing)")
    if unit == "characters":
        count = len
    else:
        def count(text: str) -> int:
            return len(text.split())
    return np.fromiter((sum(count(answer) for answer in by_id[sample_id].answers)
                        for sample_id in ids), dtype=np.float64, count=len(ids))


@register("length")
class Length(Method):
    """The longest answers (``unit``: words or characters of the answer text; conversations: the
    sum over the gpt turns). Needs the samples (``--data``)."""

    def score(self, inputs: MethodInputs) -> MethodScores:
        _no_argument(inputs, self.name, "its unit is methods.length.unit")
        if inputs.data is None:
            raise InputError("--method length needs the samples' text: give --data")
        unit = str(inputs.settings.get("unit", "words"))
        lengths = answer_lengths(inputs.data, inputs.pool.ids, unit)
        return MethodScores(lengths, details={"unit": unit})
