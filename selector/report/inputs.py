"""The report's inputs, read and checked: the selection's manifest aligned to the pool's rows,
the selector checkpoint's cross-validation table, and the captions and images of the examples.

Everything that can be wrong with the inputs is found here, before anything is drawn or written:
a manifest from another pool, a missing sample, a NaN score is one line naming the file.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np

from selector.core.errors import InputError
from selector.core.jsonio import PathLike, read_json


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
