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

Plots use matplotlib's object API (``Figure`` + the Agg canvas) rather than ``pyplot``: no global
backend switch, nothing left open, safe inside a user's notebook or a server.
"""
from __future__ import annotations

import base64
import html
import io
import json
import math
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from selector.core.atomic import atomic_open, write_text
from selector.core.errors import InputError
from selector.core.jsonio import PathLike, read_json, write_json

REPORT_NAME = "report.html"
THUMBNAIL_PX = 128
CAPTION_CHARS = 1500  # longer texts are cut in the report (the data file has them whole)
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
SECTIONS = (("summary", "Summary"), ("indicators", "Indicator distributions"),
            ("correlations", "Indicator correlations"), ("clusters", "Clusters and quotas"),
            ("cross-validation", "Cross-validation"), ("examples", "Examples"),
            ("settings", "Settings and versions"))


# ----------------------------------------------------------------------------------- inputs

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


@dataclass
class ReportInputs:
    """Everything the report shows, aligned to the pool's row order."""

    pool: Any  # FeaturePool
    manifest: Dict[str, Any]
    manifest_path: str
    scores: np.ndarray  # [N] float
    selected: np.ndarray  # [N] bool
    clusters: List[Optional[str]]  # [N]
    texts: Dict[str, str] = field(default_factory=dict)
    images: Dict[str, Path] = field(default_factory=dict)
    examples_note: str = ""
    cv: Optional[Dict[str, Any]] = None
    training: Dict[str, Any] = field(default_factory=dict)
    cv_note: str = ""
    sources: Dict[str, Optional[str]] = field(default_factory=dict)

    @property
    def scores_constant(self) -> bool:
        return bool(len(self.scores) == 0 or np.ptp(self.scores) == 0)


def read_manifest(selection_dir: PathLike) -> Tuple[Dict[str, Any], Path]:
    """``SELECTION/manifest.json``, checked for the fields the report reads."""
    selection_dir = Path(selection_dir)
    path = selection_dir / "manifest.json"
    if not selection_dir.is_dir():
        raise InputError(f"{selection_dir}: selection folder not found")
    if not path.is_file():
        raise InputError(f"{selection_dir}: no manifest.json (not a folder written by "
                         "igpt4 select)")
    manifest, _ = read_json(path)
    if not isinstance(manifest, dict) or not isinstance(manifest.get("samples"), list):
        raise InputError(f"{path}: expected an object with a 'samples' list")
    for index, row in enumerate(manifest["samples"]):
        if not isinstance(row, dict) or not {"id", "score", "selected"} <= set(row):
            raise InputError(f"{path}: sample #{index} needs 'id', 'score' and 'selected'")
        if isinstance(row["score"], bool) or not isinstance(row["score"], (int, float)):
            raise InputError(f"{path}: sample {row['id']!r} has a non-numeric score "
                             f"({row['score']!r})")
    return manifest, path


def check_same_pool(pool, manifest: Dict[str, Any], where: str, pool_source: str) -> None:
    """The pool must be the one the selection was made from, by content (same ids with other
    values would show wrong numbers without any sign). Manifests from before the digest was
    recorded carry none and are checked by their ids only (:func:`align_manifest`)."""
    recorded = (manifest.get("settings") or {}).get("pool_sha256")
    if recorded is None:
        return
    found = pool.content_digest()
    if found != recorded:
        made_from = (manifest.get("settings") or {}).get("pool", "another pool")
        raise InputError(f"{pool_source}: pool content sha256 {found[:12]} differs from {made_from}"
                         f" (sha256 {str(recorded)[:12]}) that {where} was made from")


def align_manifest(pool, manifest: Dict[str, Any], where: str
                   ) -> Tuple[np.ndarray, np.ndarray, List[Optional[str]]]:
    """Scores, selected flags and clusters in pool row order; the manifest must cover the pool
    exactly (a report mixing two pools would show wrong numbers without any sign)."""
    rows = manifest["samples"]
    if not rows or not len(pool):
        raise InputError(f"{where}: nothing to report (the manifest or the pool is empty)")
    ids = [str(row["id"]) for row in rows]
    if len(set(ids)) != len(ids):
        seen = set()
        duplicate = next(i for i in ids if i in seen or seen.add(i))
        raise InputError(f"{where}: sample {duplicate!r} is listed twice")
    known = set(pool.ids)
    unknown = [i for i in ids if i not in known]
    if unknown:
        raise InputError(f"{where}: sample {unknown[0]!r} is not in the pool ({len(unknown)} "
                         "unknown ids): was the selection made from another pool file?")
    positions = pool.positions(ids, where)
    if len(ids) != len(pool):
        missing = sorted(set(pool.ids) - set(ids))
        raise InputError(f"{where}: covers {len(ids)} of the pool's {len(pool)} samples (sample "
                         f"{missing[0]!r} is missing): was it made from another pool file?")
    scores = np.zeros(len(pool))
    selected = np.zeros(len(pool), dtype=bool)
    clusters: List[Optional[str]] = [None] * len(pool)
    for row, position in zip(rows, positions):
        scores[position] = float(row["score"])
        selected[position] = bool(row["selected"])
        cluster = row.get("cluster")
        clusters[position] = None if cluster is None else str(cluster)
    if not np.isfinite(scores).all():
        first = pool.ids[int(np.flatnonzero(~np.isfinite(scores))[0])]
        raise InputError(f"{where}: sample {first!r} has a NaN or infinite score")
    return scores, selected, clusters


def read_cross_validation(checkpoint: PathLike) -> Tuple[Optional[Dict[str, Any]],
                                                         Dict[str, Any], str]:
    """(cross-validation dict or None, training facts, note) from a selector checkpoint."""
    path = Path(checkpoint)
    if path.is_file():
        return None, {}, (f"{path} is a single weights file (a released .pth): it carries no "
                          "cross-validation report")
    if not path.is_dir():
        raise InputError(f"{path}: selector checkpoint not found")
    report: Dict[str, Any] = {}
    if (path / "training_report.json").is_file():
        report, _ = read_json(path / "training_report.json")
    elif (path / "selector.json").is_file():
        document, _ = read_json(path / "selector.json")
        report = document.get("metadata", {}) if isinstance(document, dict) else {}
    else:
        raise InputError(f"{path}: not a selector checkpoint (no training_report.json or "
                         "selector.json)")
    if not isinstance(report, dict):
        raise InputError(f"{path}: training report is not a JSON object")
    training = {key: report[key] for key in ("subsets", "samples_per_subset", "best_epoch",
                                             "final", "fit_seconds", "training") if key in report}
    cv = report.get("cross_validation")
    if cv is None:
        return None, training, (f"{path} was trained without cross-validation "
                                "(training.cross_validate was false)")
    if not isinstance(cv, dict) or not isinstance(cv.get("rows"), list) or not all(
            isinstance(r, dict) and "model" in r for r in cv["rows"]):
        raise InputError(f"{path}: cross_validation must hold a 'rows' list of {{model, spearman, "
                         "...}}")
    return cv, training, f"from {path}"


def _sample_text(sample) -> str:
    """The caption (cc_sbu_align), or the rounds of a conversation."""
    from selector.data.samples import DEFAULT_INSTRUCTION

    rounds = sample.rounds
    if len(rounds) == 1 and rounds[0][0] == DEFAULT_INSTRUCTION:
        return rounds[0][1]
    return "\n".join(f"Q: {q}\nA: {a}" for q, a in rounds)


def read_example_texts(data: Optional[PathLike], selection_dir: Optional[Path]
                       ) -> Tuple[Dict[str, str], Dict[str, Path], str]:
    """Captions and image paths by sample id, and a note on where they came from.

    With ``data`` (a cc_sbu_align folder or conversation JSON) every sample has both. Without it,
    the selection folder's own ``filter_cap.json`` and ``image/`` (written by ``select --data``
    or ``--captions``) still cover the selected samples."""
    from selector.data.samples import read_pool

    if data is not None:
        # Invalid samples were reported when the pool was scored; here one bad record must not
        # cost the whole report, so they are skipped (and counted in the note).
        pool = read_pool(data, skip_invalid=True, check_images=False)
        texts = {s.id: _sample_text(s) for s in pool.samples}
        images = {s.id: s.image for s in pool.samples}
        note = f"captions and images from {pool.source}"
        if pool.skipped:
            note += f" ({len(pool.skipped)} invalid records skipped)"
        return texts, images, note
    if selection_dir is not None and (selection_dir / "filter_cap.json").is_file():
        from selector.data.samples import read_cc_sbu_align

        pool = read_cc_sbu_align(selection_dir, skip_invalid=True, check_images=False)
        texts = {s.id: s.answer for s in pool.samples}
        images = {s.id: s.image for s in pool.samples if s.image.is_file()}
        return texts, images, (f"captions of the selected samples from {pool.source}; rejected "
                               "samples have no caption here (pass the data folder to see them)")
    return {}, {}, ("no captions: the selection folder has no filter_cap.json and no data folder "
                    "was given")


def load_inputs(pool: Union[PathLike, Any], selection: PathLike,
                checkpoint: Optional[PathLike] = None, data: Optional[PathLike] = None
                ) -> ReportInputs:
    from selector.scoring.pool import FeaturePool

    selection_dir = Path(selection)
    manifest, manifest_path = read_manifest(selection_dir)
    pool_source = None
    if not isinstance(pool, FeaturePool):
        pool_source = str(pool)
        pool = FeaturePool.load(pool)
    scores, selected, clusters = align_manifest(pool, manifest, str(manifest_path))
    check_same_pool(pool, manifest, str(manifest_path), pool_source or pool.source)
    texts, images, examples_note = read_example_texts(data, selection_dir)
    cv, training, cv_note = None, {}, ("no selector checkpoint given (igpt4 report --checkpoint "
                                       "DIR shows its cross-validation table)")
    if checkpoint is not None:
        cv, training, cv_note = read_cross_validation(checkpoint)
    return ReportInputs(pool, manifest, str(manifest_path), scores, selected, clusters, texts,
                        images, examples_note, cv, training, cv_note,
                        {"pool": pool_source or "(in memory)", "selection": str(selection_dir),
                         "checkpoint": str(checkpoint) if checkpoint is not None else None,
                         "data": str(data) if data is not None else None})


# ------------------------------------------------------------------------------ statistics

def _finite_or_none(value: Any) -> Any:
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


# ----------------------------------------------------------------------------------- plots

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


# ------------------------------------------------------------------------------------ HTML

def esc(value: Any) -> str:
    """Everything that reaches the HTML goes through here: captions are user data."""
    return html.escape(str(value), quote=True)


def fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return "n/a" if not math.isfinite(value) else f"{float(value):.{digits}g}"
    return str(value)


def _numeric(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], marked: Sequence[int] = ()
          ) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = []
    for index, row in enumerate(rows):
        cells = "".join(f'<td class="n">{esc(fmt(v))}</td>' if _numeric(v)
                        else f"<td>{esc(fmt(v))}</td>" for v in row)
        body.append(f'<tr class="marked">{cells}</tr>' if index in marked else f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def data_uri(payload: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(payload).decode('ascii')}"


def figure_html(path: Path, alt: str, caption: str) -> str:
    uri = data_uri(path.read_bytes(), "image/png")
    return (f'<figure><img class="plot" src="{uri}" alt="{esc(alt)}">'
            f"<figcaption>{esc(caption)} (also saved as {esc(path.name)})</figcaption></figure>")


def thumbnail(image: Optional[Path], size: int = THUMBNAIL_PX) -> Tuple[Optional[str], str]:
    """(JPEG data URI of the image fitted into size x size, or None; why not)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    if image is None:
        return None, "no image known"
    try:
        with Image.open(image) as opened:
            opened.draft("RGB", (size, size))  # JPEG: decode at a reduced scale, much faster
            picture = ImageOps.exif_transpose(opened).convert("RGB")
    except FileNotFoundError:
        return None, "image file missing"
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        return None, f"image unreadable ({type(exc).__name__})"
    picture.thumbnail((size, size))
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=85)
    return data_uri(buffer.getvalue(), "image/jpeg"), ""


def example_card(example: Example) -> str:
    uri, why = thumbnail(example.image)
    picture = (f'<img class="thumb" src="{uri}" alt="image of sample {esc(example.id)}">' if uri
               else f'<div class="thumb missing">{esc(why)}</div>')
    text = example.text
    if text is None:
        caption = '<div class="caption missing">no caption available</div>'
    else:
        shown = text if len(text) <= CAPTION_CHARS else text[:CAPTION_CHARS] + " …"
        caption = f'<div class="caption">{esc(shown)}</div>'
    values = " · ".join(f"{esc(n)} {esc(fmt(v))}" for n, v in example.indicators.items())
    state = "selected" if example.selected else "rejected"
    return (f'<div class="card {state}" data-id="{esc(example.id)}">{picture}<div class="meta">'
            f'<b>{esc(example.id)}</b> <span class="tag">{state}</span><br>score '
            f'{esc(fmt(example.score))} · cluster {esc(fmt(example.cluster))}<br>'
            f'<span class="ind">{values}</span></div>{caption}</div>')


STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;margin:0;
  color:#1d2330;background:#fff;line-height:1.4}
header{background:#1d2330;color:#fff;padding:18px 32px}
header h1{margin:0 0 6px 0;font-size:1.6em}
nav a{color:#cfe0ff;margin-right:14px;text-decoration:none;font-size:.92em}
main{max-width:1280px;margin:0 auto;padding:8px 32px 48px}
section{margin-top:28px;border-top:1px solid #dde2ea;padding-top:8px}
h2{font-size:1.3em}
table{border-collapse:collapse;margin:8px 0 16px;font-size:.9em}
th,td{border:1px solid #d5dae3;padding:3px 8px;text-align:left}
th{background:#eef1f6}
td.n{text-align:right;font-variant-numeric:tabular-nums}
tr.marked td{background:#fff4d6;font-weight:600}
figure{margin:8px 0 16px}
img.plot{max-width:100%;height:auto;border:1px solid #e3e7ee}
figcaption,.note{color:#566074;font-size:.88em}
.note{background:#f4f6fa;border-left:4px solid #9aa8c0;padding:6px 10px;margin:8px 0}
.warning{background:#fff1ec;border-left:4px solid #e0673f;padding:6px 10px;margin:8px 0}
.counts{display:flex;flex-wrap:wrap;gap:12px;margin:12px 0}
.count{background:#f4f6fa;border-radius:6px;padding:8px 14px;min-width:120px}
.count b{display:block;font-size:1.4em}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(260px,1fr));gap:12px}
.card{border:1px solid #d5dae3;border-radius:6px;padding:8px;font-size:.85em;overflow:hidden}
.card.selected{border-top:4px solid #2f8f4e}.card.rejected{border-top:4px solid #c0392b}
.thumb{display:block;max-width:128px;max-height:128px;margin-bottom:6px}
.thumb.missing{width:128px;height:72px;background:#eef1f6;color:#566074;font-size:.85em;
  display:flex;align-items:center;justify-content:center;text-align:center}
.tag{font-size:.8em;text-transform:uppercase;color:#566074}
.ind{color:#566074}
.caption{white-space:pre-wrap;word-wrap:break-word;max-height:12em;overflow:auto;margin-top:6px}
.caption.missing{color:#8a93a6;font-style:italic}
.grid2{display:grid;grid-template-columns:1fr 1fr;gap:16px}
"""


def _flatten(value: Any, prefix: str = "") -> List[Tuple[str, Any]]:
    if isinstance(value, dict):
        out: List[Tuple[str, Any]] = []
        for key, inner in value.items():
            out += _flatten(inner, f"{prefix}.{key}" if prefix else str(key))
        return out
    if isinstance(value, (list, tuple)):
        return [(prefix, json.dumps(value, ensure_ascii=False, default=str))]
    return [(prefix, value)]


def report_versions() -> Dict[str, str]:
    from selector.core.provenance import package_versions

    return package_versions(("instructiongpt4", "numpy", "scipy", "matplotlib", "Pillow"))


def _section(anchor: str, body: str) -> str:
    title = dict(SECTIONS)[anchor]
    return f'<section id="{anchor}"><h2>{esc(title)}</h2>{body}</section>'


def _note(text: str, kind: str = "note") -> str:
    return f'<div class="{kind}">{esc(text)}</div>'


def _selection_kind(manifest: Dict[str, Any]) -> str:
    settings = manifest.get("settings") or {}
    if settings.get("baseline"):
        return f"baseline {settings['baseline']}"
    return str(settings.get("command", "select"))


def render(inputs: ReportInputs, parts: Dict[str, Any], created: str) -> str:
    pool, manifest = inputs.pool, inputs.manifest
    kind = _selection_kind(manifest)
    counts = [("pool samples", len(pool)), ("selected", int(inputs.selected.sum())),
              ("clusters", len([r for r in parts["clusters"] if r["cluster"] != "(none)"])),
              ("indicators", len(pool.indicator_names)),
              ("selection", kind)]
    if inputs.cv is not None:
        counts.append(("labelled subsets", len(inputs.cv.get("labels") or {})))
    summary = "".join(f'<div class="count"><b>{esc(fmt(v))}</b>{esc(k)}</div>' for k, v in counts)
    summary = f'<div class="counts">{summary}</div>'
    summary += table(["input", "path"], [[k, v if v is not None else "not given"]
                                         for k, v in inputs.sources.items()])
    if inputs.scores_constant:
        summary += _note("All scores in the manifest are equal (a random baseline): score-based "
                         "ranking and the score histogram are left out.")

    body = [_section("summary", summary)]

    if pool.indicator_names:
        stats = parts["indicator_stats"]
        indicators = figure_html(parts["plots"]["indicators"], "indicator histograms",
                                 "Densities of each indicator over the pool (filled) and the "
                                 "selection (outline); dashed lines are the means.")
        indicators += table(["indicator", "pool mean", "pool sd", "pool median", "selected mean",
                             "selected median", "shift (pool sd)"],
                            [[r["indicator"], r["pool_mean"], r["pool_std"], r["pool_median"],
                              r["selected_mean"], r["selected_median"], r["shift_in_sd"]]
                             for r in stats])
    else:
        indicators = _note("The pool file has no indicator columns.")
    body.append(_section("indicators", indicators))

    labels = parts["correlation_labels"]
    if len(labels) >= 2:
        pearson, spearman = parts["pearson"], parts["spearman"]
        correlation = figure_html(parts["plots"]["correlations"], "correlation heat maps",
                                  f"Correlations over all {len(pool)} pool samples.")
        correlation += '<div class="grid2"><div><h3>Pearson r</h3>' + table(
            [""] + labels, [[a] + list(pearson[i]) for i, a in enumerate(labels)])
        correlation += "</div><div><h3>Spearman ρ</h3>" + table(
            [""] + labels, [[a] + list(spearman[i]) for i, a in enumerate(labels)]) + "</div></div>"
    else:
        correlation = _note("Correlations need at least two indicators (or an indicator and "
                            "non-constant scores).")
    body.append(_section("correlations", correlation))

    rows = parts["clusters"]
    if rows:
        rule = manifest.get("rule") or {}
        rule_text = ", ".join(f"{k} {fmt(v)}" for k, v in rule.items())
        clusters = figure_html(parts["plots"]["clusters"], "cluster bar charts",
                               "Diversity clusters: size in the pool, quota (max(1, "
                               "floor(quota_total x size / N))) and samples selected.")
        if rule_text:
            clusters += _note(f"selection rule: {rule_text}")
        clusters += table(["cluster", "size", "share of pool", "quota", "selected", "mean score"],
                          [[r["cluster"], r["size"], f"{100 * r['share']:.1f}%", r["quota"],
                            r["selected"],
                            r["mean_score"]] for r in rows])
    else:
        clusters = _note(f"No diversity clusters: this selection was made by {kind}, which "
                         "ranks the whole pool without clusters.")
    body.append(_section("clusters", clusters))

    if inputs.cv is not None:
        cv_rows = inputs.cv["rows"]
        finite = [i for i, r in enumerate(cv_rows)
                  if isinstance(r.get("spearman"), (int, float)) and math.isfinite(r["spearman"])]
        best = max(finite, key=lambda i: cv_rows[i]["spearman"]) if finite else None
        crossval = _note(f"{inputs.cv.get('method', 'cross-validation')}, "
                         f"{len(inputs.cv.get('labels') or {})} labelled subsets, "
                         f"{inputs.cv_note}. The highlighted row has the highest Spearman ρ; "
                         "the selector is worth its training only if it beats the single-"
                         "indicator baselines.")
        if inputs.cv.get("warning"):
            crossval += _note(str(inputs.cv["warning"]), "warning")
        crossval += table(["model", "Spearman ρ", "p", "Pearson r", "p"],
                          [[r.get("model"), r.get("spearman"), r.get("spearman_p"),
                            r.get("pearson"), r.get("pearson_p")] for r in cv_rows],
                          marked=[best] if best is not None else [])
        if parts["plots"].get("cross_validation"):
            crossval += figure_html(parts["plots"]["cross_validation"], "cross-validation "
                                    "scatter", "Each subset's label against the selector's "
                                    "prediction when that subset was held out.")
        if inputs.training:
            crossval += "<h3>Final fit</h3>" + table(
                ["setting", "value"], [(k, fmt(v)) for k, v in _flatten(inputs.training)])
    else:
        crossval = _note(f"No cross-validation table: {inputs.cv_note}.")
    body.append(_section("cross-validation", crossval))

    examples = _note(inputs.examples_note + f"; thumbnails fitted into {THUMBNAIL_PX} px.")
    for title, explanation, group in parts["examples"]:
        examples += f"<h3>{esc(title)} <small>({esc(explanation)})</small></h3>"
        examples += ('<div class="cards">' + "".join(example_card(e) for e in group) + "</div>"
                     if group else _note("none"))
    body.append(_section("examples", examples))

    settings = table(["setting", "value"],
                     [(k, fmt(v)) for k, v in _flatten(manifest.get("settings") or {})])
    select_versions = manifest.get("versions") or {}
    now_versions = report_versions()
    names = list(dict.fromkeys(list(select_versions) + list(now_versions)))
    settings += "<h3>Versions</h3>" + table(
        ["package", "at selection", "at report"],
        [[n, select_versions.get(n), now_versions.get(n)] for n in names])
    settings += _note(f"selection made {manifest.get('created', 'at an unknown time')}; "
                      f"report made {created}; manifest {inputs.manifest_path}")
    body.append(_section("settings", settings))

    nav = "".join(f'<a href="#{a}">{esc(t)}</a>' for a, t in SECTIONS)
    title = f"InstructionGPT-4 selection report: {int(inputs.selected.sum())} of {len(pool)}"
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{esc(CSP)}">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(title)}</title><style>{STYLE}</style></head><body>"
            f"<header><h1>{esc(title)}</h1><div>{esc(kind)} · {esc(inputs.sources['selection'])}"
            f"</div><nav>{nav}</nav></header><main>{''.join(body)}</main></body></html>\n")


# -------------------------------------------------------------------------------- entry points

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
            return _finite_or_none(float(value))
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
