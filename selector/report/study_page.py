"""The study page: one self-contained HTML file with every method's accuracy and its interval over
seeds, and its paired difference to random, as a plot (methods with error bars) and as tables.

Made from the document :func:`selector.report.study.collect_study` returns, in the report's
manner (:mod:`selector.report.page`): the figure drawn with matplotlib's object API and saved as a
PNG beside the page (:mod:`selector.report.plots`' helpers), embedded as a ``data:`` URI, inline
CSS, no script, a Content-Security-Policy that forbids loading anything
(:mod:`selector.report.html`' helpers).
"""
from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from selector.core.atomic import write_text
from selector.core.errors import InputError
from selector.core.jsonio import PathLike
from selector.report.html import CSP, STYLE, esc, figure_html, fmt, report_versions, table
from selector.report.plots import _figure, _save
from selector.report.study import BASELINE


def _error_bar(summary: Dict[str, Any]) -> List[float]:
    """(below, above) the mean; no interval: none drawn."""
    if summary["mean"] is None or summary["ci"] is None:
        return [0.0, 0.0]
    return [summary["mean"] - summary["ci"][0], summary["ci"][1] - summary["mean"]]


def plot_study(document: Dict[str, Any], path: Path) -> Path:
    """Left: each method's overall accuracy (mean over seeds, 95% t interval, one dot per run);
    random's mean and interval as a band. Right: the paired difference to random with its
    interval, zero and the evaluation-noise threshold marked."""
    methods = [m for m, e in document["methods"].items() if e["overall"]["mean"] is not None]
    y = np.arange(len(methods))[::-1]
    figure = _figure(11.0, 1.6 + 0.45 * max(len(methods), 1))
    left, right = figure.add_subplot(1, 2, 1), figure.add_subplot(1, 2, 2, sharey=None)
    runs = document["runs"]
    for row, method in zip(y, methods):
        summary = document["methods"][method]["overall"]
        values = [r["overall"] for r in runs.values() if r["method"] == method and "overall" in r]
        left.scatter(values, [row] * len(values), s=12, color="C7", zorder=2)
        left.errorbar([summary["mean"]], [row], xerr=np.array([_error_bar(summary)]).T,
                      fmt="o", color="C3" if method == BASELINE else "C0", capsize=4, zorder=3)
    baseline = document["methods"].get(BASELINE, {}).get("overall")
    if baseline and baseline["mean"] is not None:
        left.axvline(baseline["mean"], color="C3", linestyle="--", linewidth=1)
        if baseline["ci"] is not None:
            left.axvspan(baseline["ci"][0], baseline["ci"][1], color="C3", alpha=0.1)
    left.set_yticks(y, methods)
    left.set_xlabel("accuracy x 100 (mean over the datasets)")
    left.set_title(f"methods at {document.get('num_samples')} samples: mean, "
                   f"{int(100 * document['confidence'])}% CI over seeds, runs")
    compared = [m for m in methods if document["methods"][m].get("vs_random", {}).get("mean")
                is not None]
    rows = np.arange(len(compared))[::-1]
    for row, method in zip(rows, compared):
        versus = document["methods"][method]["vs_random"]
        colour = "C2" if versus["significant"] else "C0"
        right.errorbar([versus["mean"]], [row], xerr=np.array([_error_bar(versus)]).T, fmt="o",
                       color=colour, capsize=4)
    right.axvline(0.0, color="C3", linestyle="--", linewidth=1)
    threshold = document["noise"]["threshold"]
    if threshold is not None:
        right.axvspan(-threshold, threshold, color="C7", alpha=0.15,
                      label="evaluation noise (95%)")
        right.legend(fontsize=8)
    right.set_yticks(rows, compared)
    right.set_xlabel("difference to random, paired by seed")
    right.set_title("method - random")
    return _save(figure, path)


def _interval_cell(summary: Optional[Dict[str, Any]]) -> str:
    if not summary or summary["mean"] is None:
        return "–"
    if summary["ci"] is None:
        return f"{summary['mean']:.2f} ({summary.get('note') or 'no interval'})"
    return f"{summary['mean']:.2f} [{summary['ci'][0]:.2f}, {summary['ci'][1]:.2f}]"


def _flag(value: Optional[bool], unknown: str) -> str:
    return unknown if value is None else ("yes" if value else "no")


def render_study(document: Dict[str, Any], study: Dict[str, Any], figure: Optional[Path],
                 created: str) -> str:
    """The page's HTML."""
    datasets = document["datasets"]
    rows = []
    for method, entry in document["methods"].items():
        versus = entry.get("vs_random")
        rows.append([method, f"{entry['evaluated']} of {entry['runs']}",
                     _interval_cell(entry["overall"])]
                    + [entry["per_dataset"][d]["mean"] for d in datasets]
                    + ([_interval_cell(versus), _flag(versus["significant"], "–"),
                        _flag(versus["exceeds_noise"], "noise unknown")] if versus else
                       ["baseline" if method == BASELINE else "no random in the study", "", ""]))
    body = ['<section id="methods"><h2>Methods</h2>']
    if figure is not None:
        body.append(figure_html(figure, "methods with error bars", "Left: accuracy per method "
                                "(mean over seeds with its 95% t interval; grey dots are the "
                                "runs). Right: the paired difference to random; green where "
                                "its interval excludes zero, grey band: evaluation noise."))
    body.append(table(["method", "runs evaluated", "overall [95% CI]"] + datasets
                      + ["vs random [95% CI]", "CI excludes 0", "exceeds noise"], rows))
    noise = document["noise"]
    body.append(f'<div class="note">{esc(noise["note"])}'
                + (f"; std {esc(fmt(noise['std']))}, threshold {esc(fmt(noise['threshold']))}"
                   if noise["std"] is not None else "") + "</div>")
    body.append('<div class="note">A method that ignores the seed has one run: its interval is '
                "not drawn, and its difference to random pairs that run with every random seed "
                "(the interval then reflects random's spread only).</div></section>")
    if document["missing"]:
        body.append('<section id="missing"><h2>Runs without results</h2>' + table(
            ["run", "why"], list(document["missing"].items())) + "</section>")
    runs = [[name, r["method"], r["seed"], r.get("overall"), r.get("repeats"),
             r.get("repeat_std"), r.get("missing", "")] for name, r in document["runs"].items()]
    body.append('<section id="runs"><h2>Runs</h2>' + table(
        ["run", "method", "seed", "overall", "evaluations", "std of evaluations", "missing"],
        runs) + "</section>")
    inputs = study.get("inputs") or {}
    settings = [["budget (samples)", study.get("num_samples")],
                ["seeds", ", ".join(map(str, study.get("seeds") or []))],
                ["methods", ", ".join(study.get("methods") or [])],
                ["datasets", ", ".join(datasets)]] + [[k, v] for k, v in inputs.items()]
    versions = study.get("versions") or {}
    now = report_versions()
    names = list(dict.fromkeys(list(versions) + list(now)))
    body.append('<section id="settings"><h2>Study settings and versions</h2>'
                + table(["setting", "value"], [[k, fmt(v)] for k, v in settings])
                + table(["package", "at study", "at report"],
                        [[n, versions.get(n), now.get(n)] for n in names])
                + f'<div class="note">study {esc(document["study"])}; made '
                  f'{esc(study.get("created", "at an unknown time"))}; page made {esc(created)}'
                  "</div></section>")
    title = f"Selection methods at {study.get('num_samples')} samples"
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{esc(CSP)}">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(title)}</title><style>{STYLE}</style></head><body>"
            f"<header><h1>{esc(title)}</h1><div>{esc(document['study'])}</div></header>"
            f"<main>{''.join(body)}</main></body></html>\n")


def write_study_page(document: Dict[str, Any], study: Dict[str, Any], out: PathLike) -> Path:
    """``out`` (self-contained HTML) and its figure ``<stem>_methods.png`` beside it."""
    import importlib.util

    out = Path(out)
    if out.suffix.lower() not in (".html", ".htm"):
        raise InputError(f"{out}: the study page must end in .html")
    if importlib.util.find_spec("matplotlib") is None:
        raise InputError("the study page needs matplotlib (pip install "
                         "'instructiongpt4[report]')")
    out.parent.mkdir(parents=True, exist_ok=True)
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", out.stem) or "study"
    figure = None
    if any(e["overall"]["mean"] is not None for e in document["methods"].values()):
        figure = plot_study(document, out.parent / f"{stem}_methods.png")
    created = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    return write_text(out, render_study(document, study, figure, created))
