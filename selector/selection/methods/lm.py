"""Causal-LM selection methods: ``perplexity[:low|middle|high]`` and ``ifd``.

The values are the indicators of :mod:`selector.scoring.indicators.lm`: the pool's column of that
name when the pool has one (``igpt4 score --pool-out`` with the name in ``--indicators`` and
``pool.indicators``), else computed here through the scoring cache from the samples (``--data``)
in ``--work``, with the indicator's settings of ``configs/indicators/default.yaml`` updated by
the method's ``lm`` block (so ``igpt4 score`` and a selection share cached values).

* ``perplexity``: a band of the perplexity ranking (Marion et al. 2023, "When less is more"):
  ``low`` keeps the lowest, ``high`` the highest, ``middle`` those closest to the median;
* ``ifd`` (Cherry LLM, Li et al. 2024): the highest instruction-following difficulty among the
  samples below ``threshold`` (1: an answer the instruction does not make easier is taken as
  misaligned, as the paper filters IFD >= 1).

A sample without a value (an empty answer) is never kept.
"""
from __future__ import annotations

from typing import Any, Dict, Tuple

import numpy as np

from selector.core.errors import InputError
from selector.selection.methods import Method, MethodInputs, MethodScores, register

BANDS = ("low", "middle", "high")


def lm_values(inputs: MethodInputs, name: str) -> Tuple[np.ndarray, Dict[str, Any]]:
    """The indicator ``name`` for every pool row (NaN where a sample has none) and how it was
    obtained (recorded in the manifest)."""
    pool = inputs.pool
    if name in pool.indicator_names:
        return pool.indicator(name).astype(np.float64), {"values": f"pool column {name!r}"}
    if inputs.data is None or inputs.work is None:
        raise InputError(f"--method {name}: the pool {inputs.pool_path or pool.source} has no "
                         f"{name!r} column: score it into the pool (igpt4 score --pool-out with "
                         f"{name} in --indicators and pool.indicators) or give --data and --work "
                         "to compute it through the cache")
    from selector.core.cache import Store
    from selector.core.provenance import log
    from selector.core.settings import shipped
    from selector.scoring.indicators import create
    from selector.scoring.store import score_cached

    overrides = inputs.settings.get("lm") or {}
    if not isinstance(overrides, dict):
        raise InputError(f"methods.{name}.lm must be a mapping of indicators.{name} settings "
                         f"(got {overrides!r})")
    settings = {**shipped("indicators/default.yaml", "indicators", name), **overrides}
    indicator = create(name, **settings)
    by_id = inputs.data.by_id()
    missing = [sample_id for sample_id in pool.ids if sample_id not in by_id]
    if missing:
        raise InputError(f"{inputs.data.source}: pool sample {missing[0]!r} is not in the data "
                         f"({len(missing)} of the pool's samples are missing)")
    samples = [by_id[sample_id] for sample_id in pool.ids]
    with Store(inputs.work) as store:
        found = score_cached(store, indicator, samples,
                             int(shipped("indicators/default.yaml", "chunk_size")))
    values = np.array([np.nan if v.value is None else v.value for v in found], dtype=np.float64)
    problems = [(v.sample_id, v.problem) for v in found if v.value is None]
    details: Dict[str, Any] = {"values": f"computed in {inputs.work}",
                               "lm": indicator.settings(), "without_value": len(problems)}
    if problems:
        details["first_without_value"] = {"id": problems[0][0], "problem": str(problems[0][1])}
    rate = indicator.tokens_per_second
    if rate is not None:
        details["tokens_per_s"] = round(rate, 1)
        log(f"{name}: {indicator.tokens:,} tokens computed at {rate:,.1f} tokens/s "
            f"({len(samples)} samples, the rest from the cache)")
    return values, details


def _finite_scores(scores: np.ndarray, valued: np.ndarray) -> np.ndarray:
    """Rows without a value get a score below every other (they are not eligible anyway; the
    manifest records finite numbers)."""
    out = np.array(scores, dtype=np.float64)
    floor = float(np.min(out[valued])) - 1.0 if valued.any() else 0.0
    out[~valued] = floor
    return out


@register("perplexity")
class Perplexity(Method):
    """A band of the perplexity ranking: ``perplexity:low``, ``:middle`` (closest to the
    median) or ``:high``; without an argument, ``methods.perplexity.band``."""

    def score(self, inputs: MethodInputs) -> MethodScores:
        band = inputs.argument if inputs.argument is not None else str(
            inputs.settings.get("band", "middle"))
        if band not in BANDS:
            raise InputError(f"--method perplexity:{band}: the band must be one of "
                             f"{', '.join(BANDS)}")
        values, details = lm_values(inputs, "perplexity")
        valued = np.isfinite(values)
        if band == "low":
            scores = -values
        elif band == "high":
            scores = values.copy()
        else:
            median = float(np.median(values[valued])) if valued.any() else 0.0
            details["median"] = median
            scores = -np.abs(values - median)
        return MethodScores(_finite_scores(scores, valued), valued,
                            details={"band": band, **details})


@register("ifd")
class InstructionFollowingDifficulty(Method):
    """The highest IFD among the samples with IFD below ``methods.ifd.threshold``."""

    def score(self, inputs: MethodInputs) -> MethodScores:
        if inputs.argument is not None:
            raise InputError(f"--method ifd:{inputs.argument}: ifd takes no argument (its "
                             "threshold is methods.ifd.threshold)")
        threshold = float(inputs.settings.get("threshold", 1.0))
        values, details = lm_values(inputs, "ifd")
        valued = np.isfinite(values)
        eligible = valued & (np.where(valued, values, np.inf) < threshold)
        return MethodScores(_finite_scores(values, valued), eligible, details={
            "threshold": threshold, "eligible": int(eligible.sum()),
            "at_or_above_threshold": int((valued & ~eligible).sum()), **details})
