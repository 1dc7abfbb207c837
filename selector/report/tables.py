"""The numbers the report shows: indicator summaries, correlations, the cluster table and the
example groups, computed from :class:`~selector.report.inputs.ReportInputs` (no drawing, no HTML),
so that the data file and the page hold the same values."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from selector.report.inputs import ReportInputs


@dataclass
class Example:
    """One sample as the report shows it."""

    id: str
    score: float
    cluster: Optional[str]
    selected: bool
    indicators: Dict[str, float]
    text: Optional[str] = None
    image: Optional[Path] = None


def finite_or_none(value: Any) -> Any:
    """JSON has no NaN: the data file writes null for an undefined correlation."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def indicator_summary(values: np.ndarray, names: Sequence[str], selected: np.ndarray
                      ) -> List[Dict[str, Any]]:
    """Per indicator: pool and selected mean/median, and the shift in pool standard deviations."""
    rows = []
    for column, name in enumerate(names):
        pool_values = values[:, column].astype(np.float64)
        chosen = pool_values[selected]
        std = float(pool_values.std())
        mean_selected = float(chosen.mean()) if len(chosen) else float("nan")
        rows.append({
            "indicator": name, "pool_mean": float(pool_values.mean()), "pool_std": std,
            "pool_median": float(np.median(pool_values)),
            "selected_mean": mean_selected,
            "selected_median": float(np.median(chosen)) if len(chosen) else float("nan"),
            "shift_in_sd": (mean_selected - float(pool_values.mean())) / std if std > 0
            else float("nan"),
        })
    return rows


def correlations(values: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(Pearson, Spearman) matrices of the columns; NaN where a column is constant.
    Spearman is Pearson on average ranks (its definition, ties included)."""
    from scipy.stats import rankdata

    values = np.asarray(values, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        pearson = np.atleast_2d(np.corrcoef(values, rowvar=False))
        spearman = np.atleast_2d(np.corrcoef(rankdata(values, axis=0), rowvar=False))
    return pearson, spearman


def cluster_table(inputs: ReportInputs) -> List[Dict[str, Any]]:
    """Per cluster: size, its quota (from the manifest), selected count and mean score, largest
    cluster first."""
    quotas = inputs.manifest.get("quotas") or {}
    names = sorted({c for c in inputs.clusters if c is not None} | set(map(str, quotas)))
    labels = np.array([c if c is not None else "" for c in inputs.clusters], dtype=object)
    rows = []
    for name in names:
        members = labels == name
        size = int(members.sum())
        rows.append({"cluster": name, "size": size,
                     "share": size / len(labels) if len(labels) else 0.0,
                     "quota": quotas.get(name), "selected": int(inputs.selected[members].sum()),
                     "mean_score": float(inputs.scores[members].mean()) if size else float("nan")})
    unclustered = int(sum(c is None for c in inputs.clusters))
    if rows and unclustered:
        members = labels == ""
        rows.append({"cluster": "(none)", "size": unclustered,
                     "share": unclustered / len(labels), "quota": None,
                     "selected": int(inputs.selected[members].sum()),
                     "mean_score": float(inputs.scores[members].mean())})
    rows.sort(key=lambda r: (r["cluster"] == "(none)", -r["size"], r["cluster"]))
    return rows


def pick_examples(inputs: ReportInputs, per_group: int) -> List[Tuple[str, str, List[Example]]]:
    """(title, explanation, examples) groups: the best selected samples, the near misses (best
    rejected) and the worst rejected. Constant scores (the random baseline) rank nothing, so both
    groups are then shown in pool order."""
    pool = inputs.pool
    names = list(pool.indicator_names)

    def example(row: int) -> Example:
        sample_id = pool.ids[row]
        return Example(sample_id, float(inputs.scores[row]), inputs.clusters[row],
                       bool(inputs.selected[row]),
                       {n: float(pool.indicators[row, j]) for j, n in enumerate(names)},
                       inputs.texts.get(sample_id), inputs.images.get(sample_id))

    chosen = np.flatnonzero(inputs.selected)
    rejected = np.flatnonzero(~inputs.selected)
    if per_group <= 0:
        return []
    if inputs.scores_constant:
        return [("Selected", "in pool order (all scores are equal, nothing to rank by)",
                 [example(r) for r in chosen[:per_group]]),
                ("Rejected", "in pool order", [example(r) for r in rejected[:per_group]])]

    def by_score(rows: np.ndarray, best_first: bool) -> np.ndarray:
        keys = -inputs.scores[rows] if best_first else inputs.scores[rows]
        return rows[np.argsort(keys, kind="stable")]

    best_rejected = by_score(rejected, True)[:per_group]
    shown = set(best_rejected.tolist())
    worst_rejected = [r for r in by_score(rejected, False)[:2 * per_group] if r not in shown]
    return [
        ("Selected, highest scores", "what the ranking values most",
         [example(r) for r in by_score(chosen, True)[:per_group]]),
        ("Rejected, highest scores", "near misses: left out by a cluster's quota or the final cut",
         [example(r) for r in best_rejected]),
        ("Rejected, lowest scores", "what the ranking filters out",
         [example(r) for r in worst_rejected[:per_group]]),
    ]
