"""``igpt4 report``: one self-contained HTML file that explains a selection.

Inputs: the pool file (indicators, ids), the folder ``igpt4 select`` wrote (``manifest.json`` with
every sample's score, cluster and whether it was selected), optionally the selector checkpoint
(its leave-one-subset-out table) and the data folder (captions and images for the examples).

Why self-contained: the report is mailed around and opened on laptops, offline, long after the
work dir is gone. So every plot and thumbnail is a base64 ``data:`` URI, the CSS is inline, there
is no script, and a Content-Security-Policy forbids the browser to load anything else (a broken
reference shows up as a console error instead of a silent network request). The plots are also
written beside the HTML as PNG files, and the numbers behind them as ``<name>_data.json``, so that
slides and notebooks can reuse them.

The work flows through the package in this order: :mod:`~selector.report.inputs` reads and
aligns what the report shows, :mod:`~selector.report.tables` computes its numbers,
:mod:`~selector.report.plots` draws them, :mod:`~selector.report.html` renders the page, and this
module writes the files.
"""
from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any, Dict, Optional, Union

import numpy as np

from selector.core.atomic import write_text
from selector.core.errors import InputError
from selector.core.jsonio import PathLike, write_json
from selector.report.html import render
from selector.report.inputs import ReportInputs, load_inputs, read_manifest
from selector.report.plots import (plot_clusters, plot_correlations, plot_cross_validation,
                                   plot_indicators)
from selector.report.tables import (cluster_table, correlations, finite_or_none,
                                    indicator_summary, pick_examples)

REPORT_NAME = "report.html"


def _safe_stem(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "report"


PLOTS = ("indicators", "correlations", "clusters", "cross_validation")


def _refuse_overlap(out_dir: Path, name: str, stem: str, pool: Any, selection: PathLike,
                    checkpoint: Optional[PathLike], data: Optional[PathLike]) -> None:
    """The report's files (HTML, PNGs, numbers) never are, hold or lie inside what it reads: the
    pool, checkpoint and data, and the selection's manifest, captions and images (the report
    goes *beside* those, in the selection folder by default)."""
    from selector.core.overlap import refuse_overlap

    selection = Path(selection)
    outputs = [out_dir / name, out_dir / f"{stem}_data.json"] + \
        [out_dir / f"{stem}_{plot}.png" for plot in PLOTS]
    refuse_overlap({"--out": outputs}, {
        "--pool": pool if isinstance(pool, (str, os.PathLike)) else None,
        "--checkpoint": checkpoint, "--data": data,
        "--selection": [selection / "manifest.json", selection / "filter_cap.json",
                        selection / "selected.txt", selection / "image"]})


def write_report(out_dir: PathLike, pool: Union[PathLike, Any], selection: PathLike,
                 checkpoint: Optional[PathLike] = None, data: Optional[PathLike] = None,
                 max_examples: int = 12, name: str = REPORT_NAME) -> Path:
    """Write ``out_dir/name`` (self-contained HTML), its PNG plots and ``<stem>_data.json``.

    ``pool``: the pool file (or a loaded FeaturePool); ``selection``: the folder ``igpt4 select``
    wrote; ``checkpoint``: the selector checkpoint folder (cross-validation table); ``data``: the
    cc_sbu_align folder or conversation JSON (captions and thumbnails of the examples);
    ``max_examples``: examples per group (selected, near misses, rejected). Returns the HTML path.
    """
    if max_examples < 0:
        raise InputError(f"max_examples must be >= 0, not {max_examples}")
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:
        raise InputError("igpt4 report needs matplotlib (pip install "
                         "'instructiongpt4[report]')")
    out_dir = Path(out_dir)
    stem = _safe_stem(Path(name).stem)
    _refuse_overlap(out_dir, name, stem, pool, selection, checkpoint, data)
    inputs = load_inputs(pool, selection, checkpoint, data)
    out_dir.mkdir(parents=True, exist_ok=True)
    plots: Dict[str, Path] = {}
    names = list(inputs.pool.indicator_names)
    parts: Dict[str, Any] = {"plots": plots}
    parts["indicator_stats"] = indicator_summary(inputs.pool.indicators, names, inputs.selected)
    if names:
        plots["indicators"] = plot_indicators(inputs, out_dir / f"{stem}_indicators.png")
    columns = inputs.pool.indicators.astype(np.float64)
    labels = list(names)
    if not inputs.scores_constant:
        columns = np.concatenate([columns, inputs.scores[:, None]], axis=1)
        labels.append("score")
    parts["correlation_labels"] = labels
    if len(labels) >= 2:
        parts["pearson"], parts["spearman"] = correlations(columns)
        plots["correlations"] = plot_correlations(labels, parts["pearson"], parts["spearman"],
                                                  out_dir / f"{stem}_correlations.png")
    parts["clusters"] = cluster_table(inputs) if any(c is not None for c in inputs.clusters) \
        else []
    if parts["clusters"]:
        plots["clusters"] = plot_clusters(parts["clusters"], out_dir / f"{stem}_clusters.png")
    if inputs.cv is not None:
        scatter = plot_cross_validation(inputs.cv, out_dir / f"{stem}_cross_validation.png")
        if scatter is not None:
            plots["cross_validation"] = scatter
    parts["examples"] = pick_examples(inputs, max_examples)
    created = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    document = render(inputs, parts, created)
    path = write_text(out_dir / name, document)
    write_json(out_dir / f"{stem}_data.json", _report_data(inputs, parts, created))
    return path


def _report_data(inputs: ReportInputs, parts: Dict[str, Any], created: str) -> Dict[str, Any]:
    """The numbers behind the report, for notebooks and slides (NaN written as null)."""
    def clean(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(v) for v in value]
        if isinstance(value, np.ndarray):
            return clean(value.tolist())
        if isinstance(value, (np.floating, float)):
            return finite_or_none(float(value))
        return value

    return clean({
        "created": created, "sources": inputs.sources,
        "counts": {"pool": len(inputs.pool), "selected": int(inputs.selected.sum())},
        "indicators": parts["indicator_stats"],
        "correlations": {"labels": parts["correlation_labels"],
                         "pearson": parts.get("pearson"), "spearman": parts.get("spearman")},
        "clusters": parts["clusters"],
        "cross_validation": inputs.cv, "cross_validation_note": inputs.cv_note,
        "examples": {title: [e.id for e in group] for title, _, group in parts["examples"]},
        "plots": {key: path.name for key, path in parts["plots"].items()},
    })


def report_command(selection: PathLike, pool: PathLike, checkpoint: Optional[PathLike] = None,
                   data: Optional[PathLike] = None, out: Optional[PathLike] = None,
                   max_examples: int = 12) -> Path:
    """``igpt4 report``: the HTML goes to ``out`` (default ``SELECTION/report.html``), its plots
    beside it. Without ``checkpoint``, the one named in the manifest is used when it still exists
    (``igpt4 select --checkpoint`` records it)."""
    out_path = Path(out) if out is not None else Path(selection) / REPORT_NAME
    if out_path.suffix.lower() not in (".html", ".htm"):
        raise InputError(f"{out_path}: the report file must end in .html")
    _refuse_overlap(out_path.parent, out_path.name, _safe_stem(out_path.stem), pool, selection,
                    checkpoint, data)  # before reading anything (write_report checks again)
    if checkpoint is None:
        manifest, _ = read_manifest(selection)
        recorded = (manifest.get("settings") or {}).get("checkpoint")
        if recorded and recorded != "None" and Path(recorded).exists():
            from selector.core.provenance import log

            log(f"report: cross-validation from the checkpoint recorded in the manifest: "
                f"{recorded}")
            checkpoint = recorded
    return write_report(out_path.parent, pool, selection, checkpoint, data, max_examples,
                        out_path.name)
