"""The report's HTML: escaping, number formatting, tables, embedded figures and thumbnails, and
the page itself (:func:`render`).

Self-contained on purpose: every plot and thumbnail is a base64 ``data:`` URI, the CSS is inline,
there is no script, and a Content-Security-Policy forbids the browser to load anything else.
"""
from __future__ import annotations

import base64
import html
import io
import json
import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from selector.report.inputs import ReportInputs
from selector.report.tables import Example

THUMBNAIL_PX = 128
CAPTION_CHARS = 1500  # longer texts are cut in the report (the data file has them whole)
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
SECTIONS = (("summary", "Summary"), ("indicators", "Indicator distributions"),
            ("correlations", "Indicator correlations"), ("clusters", "Clusters and quotas"),
            ("cross-validation", "Cross-validation"), ("examples", "Examples"),
            ("settings", "Settings and versions"))


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
