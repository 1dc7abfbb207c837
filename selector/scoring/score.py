"""``igpt4 score``: every indicator and embedding of a pool, through the cache, then the exports.

Outputs: a flat table (``.jsonl``, ``.csv`` or ``.parquet``: one row per sample with each
indicator's value, its problem and its detail, e.g. the GPT judge's raw reply) and, with
``pool_out``, the selector's input file (features reduced by the pool-wide PCA + indicators).

Bad samples never stop the run: a corrupt image, an empty answer, a NaN output or a failed judge
request is recorded for that sample and indicator, and summarised at the end. Under ``torchrun`` /
``accelerate launch`` each rank scores its share; the main process writes the outputs.

Text-only samples (LLaVA conversations without an image) get every indicator and embedding that
needs no image; for those that do (``clip``, the image embedder) their value is *not applicable*
(a problem starting with :data:`~selector.core.cache.NOT_APPLICABLE`): cached like a value,
counted on its own in the summary, never missing for ``--strict``. In the pool file a text-only
row has zero image features (the pool-wide PCA's mean: the PCA is fitted on the samples with an
image), its not-applicable indicators hold the mean of the samples they apply to, and
the pool's ``has_image`` mask (metadata ``text_only``) says which rows these are.
"""
from __future__ import annotations

import json
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from selector.core.cache import is_not_applicable
from selector.core.errors import InputError
from selector.core.jsonio import PathLike, write_json

EXPORT_FORMATS = (".jsonl", ".csv", ".parquet")
PROBLEM_LINES = 20  # per-sample problem lines printed before only counting


def log(message: str) -> None:
    from selector.core.redaction import redact_text

    print(redact_text(message), file=sys.stderr, flush=True)


@dataclass
class ScoreSummary:
    samples: int = 0
    missing: Dict[str, int] = field(default_factory=dict)  # samples without a value, by column
    excluded_from_pool: int = 0
    # samples the column does not apply to (text-only samples: clip, image embedding); by column
    not_applicable: Dict[str, int] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return not any(self.missing.values()) and not self.excluded_from_pool


def _pool_settings(settings: Dict[str, Any]) -> List[str]:
    return [str(n) for n in settings.get("pool", {}).get("indicators", [])]


def score(data: PathLike, work: PathLike, out: Optional[PathLike], names: List[str],
          settings: Dict[str, Any], image_root: Optional[PathLike] = None,
          skip_invalid: bool = False, pool_out: Optional[PathLike] = None,
          pca_from: Optional[PathLike] = None, dry_run: bool = False,
          ranks=None, known_hashes: Optional[Dict[str, str]] = None) -> ScoreSummary:
    """``ranks``: how work is shared (default: detected from torchrun / accelerate variables).
    ``known_hashes``: sample hashes by id already computed from this data (the pipeline's data
    fingerprint), so no image is read twice for them."""
    from selector.data.samples import read_pool
    from selector.core.distributed import Ranks
    from selector.scoring.indicators import create
    from selector.core.cache import Store
    from selector.scoring.store import sample_hash, score_cached

    if out is not None and Path(out).suffix not in EXPORT_FORMATS:
        raise InputError(f"{out}: export format must be one of {', '.join(EXPORT_FORMATS)}")
    if not names:  # e.g. --indicators ',,,': an export of ids alone is no result
        raise InputError("--indicators: no indicators given (e.g. --indicators clip,length)")
    repeated = [n for i, n in enumerate(names) if n in names[:i]]
    if repeated:
        raise InputError(f"--indicators: {repeated[0]!r} is listed twice")
    # read once, and now: a pool without PCA fails before all the scoring, not after it
    saved_pca = _saved_pca(pca_from) if pca_from is not None and pool_out is not None else None
    pool_names = _pool_settings(settings)
    if pool_out is not None:
        lacking = [n for n in pool_names if n not in names]
        if lacking:
            raise InputError(f"the pool file needs indicator {lacking[0]!r}: add it to "
                             "--indicators or change pool.indicators")
    work = Path(work)
    ranks = ranks or Ranks()
    # images are checked by the indicators that read them: a bad image is recorded for that
    # sample and the run goes on; structural problems (JSON, ids, empty text) stop or are skipped
    pool = read_pool(data, image_root, skip_invalid=skip_invalid, check_images=False)
    if pool.skipped and ranks.is_main:
        pool.write_skip_report(work / "skipped.json")
        log(f"skipped {len(pool.skipped)} invalid samples (report: {work / 'skipped.json'})")
    configured = settings.get("indicators", {})
    indicators = [create(name, **configured.get(name, {})) for name in names]
    chunk_size = int(settings["chunk_size"])
    # the main rank creates the cache file (and switches it to WAL) before the others open it:
    # two processes switching a new SQLite file's journal mode at once can fail as "locked"
    with ranks.main_first():
        store = Store(work)
    with store:
        known = known_hashes or {}
        hashes = [known.get(s.id) or sample_hash(s) for s in pool.samples]
        embedders = _embedders(settings, ranks.is_main) if pool_out is not None else []
        if dry_run:
            _plan(store, indicators, embedders, pool.samples, hashes)
            return ScoreSummary(len(pool))
        columns = {}
        for indicator in indicators:
            indicator.progress = ranks.is_main
            indicator.bind(work)
            columns[indicator.name] = score_cached(store, indicator, pool.samples, chunk_size,
                                                   hashes, ranks)
        embeddings = {}
        if embedders:
            from selector.scoring.embedders import embed_cached

            for embedder in embedders:
                embeddings[embedder.kind] = embed_cached(store, embedder, pool.samples, hashes,
                                                         chunk_size, ranks)
    summary = ScoreSummary(len(pool), {name: sum(v.problem is not None and not v.not_applicable
                                                 for v in values)
                                       for name, values in columns.items()},
                           not_applicable={name: sum(v.not_applicable for v in values)
                                           for name, values in columns.items()})
    if not ranks.is_main:
        ranks.finish()
        return summary
    if out is not None:
        export(out, _rows(pool.samples, columns))
    _report_problems(pool.source, pool.samples, columns, embeddings)
    for kind, (_, problems) in embeddings.items():
        summary.missing[f"{kind} embedding"] = sum(p is not None and not is_not_applicable(p)
                                                   for p in problems)
        summary.not_applicable[f"{kind} embedding"] = sum(map(is_not_applicable, problems))
    if pool_out is not None:
        summary.excluded_from_pool = write_pool(pool_out, pool.samples, hashes, columns,
                                                embeddings, pool_names, settings, pca_from,
                                                embedders, work, saved_pca)
    not_applicable = {name: count for name, count in summary.not_applicable.items() if count}
    log(f"scored {len(pool)} samples" + (f" -> {out}" if out else "") + "; without a value: "
        + ", ".join(f"{name} {count}" for name, count in summary.missing.items())
        + (f"; not applicable ({pool.text_only} text-only samples): " + ", ".join(
            f"{name} {count}" for name, count in not_applicable.items())
           if not_applicable else ""))
    ranks.finish()
    return summary


def _saved_pca(pca_from: PathLike):
    """The (image, text) PCA projections saved in the pool file ``pca_from``; a pool without
    them is one line naming the file and the flag."""
    from selector.scoring.embedders import Projection
    from selector.scoring.pool import FeaturePool

    saved = FeaturePool.load(pca_from)
    try:
        return (Projection.from_tensors(saved.extra, "pca.image"),
                Projection.from_tensors(saved.extra, "pca.text"))
    except InputError as exc:
        raise InputError(f"--pca-from {pca_from}: {exc}") from None


IMAGE_EMBEDDER = "clip_image"  # features.image has no kind: the CLIP image tower is the one
TEXT_EMBEDDER = "causal_lm"  # features.text.kind when a block leaves it out (the paper's)


def _embedders(settings: Dict[str, Any], progress: bool) -> list:
    """(image, text) embedders, created by name from the ``features`` blocks: the text block's
    ``kind`` names its embedder."""
    from selector.scoring.embedders import create_embedder, embedder_names

    features = settings.get("features", {})
    text = dict(features.get("text", {}))
    text_name = text.pop("kind", TEXT_EMBEDDER)
    if text_name not in embedder_names("text"):
        raise InputError(f"features.text.kind must be one of {', '.join(embedder_names('text'))} "
                         f"(got {text_name!r})")
    return [create_embedder(IMAGE_EMBEDDER, **features.get("image", {}), progress=progress),
            create_embedder(text_name, **text, progress=progress)]


def _plan(store, indicators, embedders, samples, hashes) -> None:
    """What a real run would compute and what it would cost; computes nothing."""
    from selector.core.cache import settings_hash

    lines = []
    for indicator in indicators:
        key = settings_hash(indicator.name, indicator.settings())
        indicator.attach_store(store)  # the estimate leaves out requests already answered
        cached = store.get(indicator.name, key, hashes)  # failures are never stored: to compute
        todo = [s for s, d in zip(samples, hashes) if d not in cached]
        estimate = indicator.estimate(todo) if todo else {}
        lines.append(f"  {indicator.name:<16} {len(cached):>8} cached {len(todo):>8} to compute"
                     + (f"  {_describe(estimate)}" if estimate else ""))
    for embedder in embedders:
        key = settings_hash(f"embedding:{embedder.kind}", embedder.settings())
        cached = store.get_arrays(embedder.kind, key, hashes)
        lines.append(f"  {embedder.kind + ' embedding':<16} {len(cached):>8} cached "
                     f"{len(hashes) - len(cached):>8} to compute")
    print(f"dry run over {len(samples)} samples (nothing computed, nothing sent):")
    print("\n".join(lines))


def _describe(estimate: Dict[str, Any]) -> str:
    parts = []
    for key, value in estimate.items():
        if key == "cost_usd":
            parts.append(f"estimated cost ${value:,.2f}")
        elif isinstance(value, float):
            parts.append(f"{key} {value:,.1f}")
        elif isinstance(value, int):
            parts.append(f"{key} {value:,}")
        else:
            parts.append(f"{key} {value}")
    return ", ".join(parts)


def _rows(samples, columns) -> List[Dict[str, Any]]:
    with_detail = [name for name, values in columns.items() if any(v.detail for v in values)]
    rows = []
    for i, sample in enumerate(samples):
        row: Dict[str, Any] = {"id": sample.id}
        for name, values in columns.items():
            row[name] = values[i].value
            row[f"{name}_problem"] = values[i].problem
            if name in with_detail:
                row[f"{name}_detail"] = json.dumps(values[i].detail, ensure_ascii=False)
        rows.append(row)
    return rows


def export(out: PathLike, rows: List[Dict[str, Any]]) -> Path:
    """A flat table, written atomically (:mod:`selector.atomic`: never half a file), secrets
    redacted (:mod:`selector.redaction`)."""
    import csv

    from selector.core.atomic import atomic_open
    from selector.core.redaction import redact

    rows = redact(rows)
    out = Path(out)
    if out.suffix == ".csv":
        with atomic_open(out, newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]) if rows else ["id"])
            writer.writeheader()
            writer.writerows(rows)
    elif out.suffix == ".jsonl":
        with atomic_open(out) as handle:
            handle.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    elif out.suffix == ".parquet":
        try:
            import pandas as pd
            import pyarrow  # noqa: F401  (to_parquet's engine: fail before writing anything)
        except ImportError as exc:
            raise InputError(f"{out}: Parquet export needs pandas and pyarrow "
                             f"(pip install 'instructiongpt4[parquet]'): {exc}") from None
        with atomic_open(out, "wb") as handle:
            pd.DataFrame(rows).to_parquet(handle, index=False)
    else:
        raise InputError(f"{out}: export format must be one of {', '.join(EXPORT_FORMATS)}")
    return out


def _report_problems(source: str, samples, columns, embeddings) -> None:
    """Per-sample problem lines (the first few) and counts by reason; "not applicable" is no
    problem (the summary line counts it)."""
    found = [(sample.id, name, value.problem) for name, values in columns.items()
             for sample, value in zip(samples, values)
             if value.problem and not value.not_applicable]
    found += [(sample.id, f"{kind} embedding", problem)
              for kind, (_, problems) in embeddings.items()
              for sample, problem in zip(samples, problems)
              if problem and not is_not_applicable(problem)]
    for sample_id, name, problem in found[:PROBLEM_LINES]:
        log(f"{source}: sample {sample_id!r}: {name}: {problem}")
    if len(found) > PROBLEM_LINES:
        log(f"... and {len(found) - PROBLEM_LINES} more (see the *_problem columns)")
    if found:
        reasons = Counter((name, problem) for _, name, problem in found)
        log("problems by reason: " + "; ".join(f"{name}: {reason} x{count}"
                                             for (name, reason), count in reasons.most_common()))


def write_pool(path: PathLike, samples, hashes, columns, embeddings, pool_names: List[str],
               settings: Dict[str, Any], pca_from: Optional[PathLike], embedders,
               work: Path, saved_pca: Optional[Tuple[Any, Any]] = None) -> int:
    """The selector's input file: PCA-reduced embeddings + indicators for every sample that has
    all of them. Returns how many samples were left out (listed in WORK/pool_excluded.json).

    "Not applicable" is not missing: a text-only sample stays in, with zero image features and,
    for each indicator that needs an image, the mean of that indicator over the samples it
    applies to (recorded in ``info["text_only"]``); the pool's ``has_image`` mask marks it."""
    from selector.scoring.embedders import Projection
    from selector.scoring.pool import FeaturePool

    image, image_problems = embeddings["image"]
    text, text_problems = embeddings["text"]
    indicators = np.array([[columns[n][i].value if columns[n][i].value is not None else np.nan
                            for n in pool_names] for i in range(len(samples))], dtype=np.float64)
    applies = np.array([[not columns[n][i].not_applicable for n in pool_names]
                        for i in range(len(samples))], dtype=bool).reshape(indicators.shape)
    excluded = []
    for i, sample in enumerate(samples):
        reasons = [f"{n}: {columns[n][i].problem}" for n in pool_names
                   if columns[n][i].problem and not columns[n][i].not_applicable]
        reasons += [f"{kind} embedding: {problems[i]}" for kind, problems in
                    (("image", image_problems), ("text", text_problems))
                    if problems[i] and not is_not_applicable(problems[i])]
        if reasons or not np.isfinite(indicators[i][applies[i]]).all():
            excluded.append({"sample": sample.id, "reasons": reasons or ["non-finite value"]})
    left_out = {e["sample"] for e in excluded}
    keep = np.array([i for i, s in enumerate(samples) if s.id not in left_out], dtype=np.int64)
    with_image = np.array([not is_not_applicable(image_problems[i]) for i in keep], dtype=bool)
    filled = {}
    for column, name in enumerate(pool_names):  # the not-applicable cells: the column's mean
        rows = keep[~applies[keep, column]]
        if len(rows):
            known = indicators[keep[applies[keep, column]], column]
            filled[name] = float(known.mean()) if len(known) else 0.0
            indicators[rows, column] = filled[name]
    features = settings.get("features", {})
    image_rows, text_rows = keep[with_image], keep  # the image PCA sees only real images
    if pca_from is not None:
        image_pca, text_pca = saved_pca if saved_pca is not None else _saved_pca(pca_from)
        fitted_on = f"reused from {pca_from}"
    else:
        n_components, seed = int(features.get("pca_components", 6)), int(features.get("pca_seed", 0))
        if len(image_rows) < n_components <= len(keep):  # short of images: text-only samples
            raise InputError(f"--pool-out {path}: the image PCA (features.pca_components="
                             f"{n_components}) needs {n_components} samples with an image; "
                             f"{len(image_rows)} of the {len(keep)} have one (the others are "
                             "text-only): reuse a pool file's PCA with --pca-from")
        image_pca = Projection.fit_cached(work, {"embedder": embedders[0].settings(),
                                                 "samples": [hashes[i] for i in image_rows]},
                                          image[image_rows], n_components, seed)
        text_pca = Projection.fit_cached(work, {"embedder": embedders[1].settings(),
                                                "samples": [hashes[i] for i in text_rows]},
                                         text[text_rows], n_components, seed)
        fitted_on = f"fitted on these {len(keep)} samples"
    image_features = np.zeros((len(keep), image_pca.components.shape[0]), dtype=np.float32)
    if with_image.any():
        image_features[with_image] = image_pca.transform(image[image_rows])
    info = {"pca": fitted_on, "image_embedder": embedders[0].settings(),
            "text_embedder": embedders[1].settings(),
            "indicator_settings": {n: settings.get("indicators", {}).get(n, {})
                                   for n in pool_names}}
    text_only = int((~with_image).sum())
    if text_only:
        info["text_only"] = {"samples": text_only, "image_features": "zero (the image PCA's mean; "
                             "fitted on the samples with an image)",
                             "not_applicable_filled_with_mean": filled}
    pool = FeaturePool([samples[i].id for i in keep], image_features,
                       text_pca.transform(text[keep]), indicators[keep], pool_names,
                       {**image_pca.tensors("pca.image"), **text_pca.tensors("pca.text")}, info,
                       has_image=with_image if text_only else None)
    pool.save(path)
    if excluded:
        write_json(work / "pool_excluded.json", {"excluded": excluded})
        log(f"{len(excluded)} samples lack a value or an embedding and are not in the pool file "
            f"(list: {work / 'pool_excluded.json'})")
    log(f"pool file -> {path} ({len(pool)} samples"
        + (f", {text_only} of them text-only: zero image features" if text_only else "")
        + f"; PCA {fitted_on}; explained variance "
        f"image {image_pca.explained_variance_ratio.sum():.2f}, "
        f"text {text_pca.explained_variance_ratio.sum():.2f})")
    return len(excluded)
