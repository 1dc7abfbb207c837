"""The report's figures, drawn with matplotlib's object API (``Figure`` + the Agg canvas) rather
than ``pyplot``: no global backend switch, nothing left open, safe inside a user's notebook or a
server. Each is saved as a PNG (through the one atomic writer) and embedded by the HTML."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from selector.core.atomic import atomic_open
from selector.report.inputs import ReportInputs


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _save(figure, path: Path) -> Path:
    with atomic_open(path, "wb") as handle:
        figure.savefig(handle, format="png", metadata={"Software": None})
    return path


def plot_indicators(inputs: ReportInputs, path: Path) -> Path:
    """One histogram per indicator (and the score), pool vs selected, as densities so that 200
    selected and 3439 pooled samples compare."""
    panels = [(name, inputs.pool.indicators[:, j].astype(np.float64))
              for j, name in enumerate(inputs.pool.indicator_names)]
    if not inputs.scores_constant:
        panels.append(("score", inputs.scores))
    columns = min(3, len(panels))
    rows = math.ceil(len(panels) / columns)
    figure = _figure(4.2 * columns, 3.0 * rows)
    for index, (name, values) in enumerate(panels):
        ax = figure.add_subplot(rows, columns, index + 1)
        low, high = float(values.min()), float(values.max())
        edges = np.histogram_bin_edges(values, bins=30, range=(low, high) if high > low
                                       else (low - 0.5, high + 0.5))
        ax.hist(values, bins=edges, density=True, alpha=0.45, color="C0",
                label=f"pool (n={len(values)})")
        chosen = values[inputs.selected]
        if len(chosen):
            ax.hist(chosen, bins=edges, density=True, histtype="step", linewidth=2, color="C3",
                    label=f"selected (n={len(chosen)})")
            ax.axvline(float(chosen.mean()), color="C3", linestyle="--", linewidth=1)
        ax.axvline(float(values.mean()), color="C0", linestyle="--", linewidth=1)
        ax.set_title(name)
        ax.set_ylabel("density")
        ax.legend(fontsize=8)
    return _save(figure, path)


def _heatmap(figure, ax, matrix: np.ndarray, labels: Sequence[str], title: str) -> None:
    image = ax.imshow(np.ma.masked_invalid(matrix), vmin=-1, vmax=1, cmap="RdBu_r")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    small = len(labels) <= 12
    for i in range(len(labels)):
        for j in range(len(labels)):
            if small:
                value = matrix[i, j]
                ax.text(j, i, "n/a" if not np.isfinite(value) else f"{value:.2f}", ha="center",
                        va="center", fontsize=8,
                        color="white" if np.isfinite(value) and abs(value) > 0.6 else "black")
    ax.set_title(title)
    figure.colorbar(image, ax=ax, shrink=0.8)


def plot_correlations(labels: Sequence[str], pearson: np.ndarray, spearman: np.ndarray,
                      path: Path) -> Path:
    size = 2.5 + 0.55 * len(labels)
    figure = _figure(2 * size + 1.5, size)
    _heatmap(figure, figure.add_subplot(1, 2, 1), pearson, labels, "Pearson r")
    _heatmap(figure, figure.add_subplot(1, 2, 2), spearman, labels, "Spearman ρ")
    return _save(figure, path)


def plot_clusters(rows: List[Dict[str, Any]], path: Path) -> Path:
    """Cluster sizes, and quota vs selected per cluster (two scales: hundreds vs tens)."""
    names = [r["cluster"] for r in rows]
    x = np.arange(len(rows))
    figure = _figure(min(18.0, 4 + 0.45 * len(rows)), 6.0)
    top, bottom = figure.add_subplot(2, 1, 1), figure.add_subplot(2, 1, 2)
    top.bar(x, [r["size"] for r in rows], color="C0")
    top.set_ylabel("samples in pool")
    top.set_title("cluster sizes")
    quotas = [r["quota"] if r["quota"] is not None else 0 for r in rows]
    bottom.bar(x - 0.2, quotas, width=0.4, color="C7", label="quota")
    bottom.bar(x + 0.2, [r["selected"] for r in rows], width=0.4, color="C3", label="selected")
    bottom.set_ylabel("samples")
    bottom.set_title("quota and selected per cluster")
    bottom.legend(fontsize=8)
    for ax in (top, bottom):
        if len(rows) <= 60:
            ax.set_xticks(x, names, rotation=90 if len(rows) > 15 else 0, fontsize=8)
        else:
            ax.set_xticks([])
        ax.set_xlabel("cluster (largest first)")
    return _save(figure, path)


def plot_cross_validation(cv: Dict[str, Any], path: Path) -> Optional[Path]:
    """Held-out prediction vs genuine label, one point per subset."""
    predictions, labels = cv.get("predictions") or {}, cv.get("labels") or {}
    names = [n for n in labels if n in predictions]
    if len(names) < 2:
        return None
    x = np.array([predictions[n] for n in names], dtype=np.float64)
    y = np.array([labels[n] for n in names], dtype=np.float64)
    figure = _figure(5.0, 4.2)
    ax = figure.add_subplot(1, 1, 1)
    ax.scatter(x, y, color="C0")
    low, high = float(min(x.min(), y.min())), float(max(x.max(), y.max()))
    ax.plot([low, high], [low, high], color="C7", linestyle="--", linewidth=1,
            label="prediction = label")
    ax.legend(fontsize=8)
    if len(names) <= 40:
        for name, a, b in zip(names, x, y):
            ax.annotate(name, (a, b), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("selector's held-out prediction (subset mean score)")
    ax.set_ylabel("subset label")
    ax.set_title(f"leave-one-subset-out, {len(names)} subsets")
    return _save(figure, path)
