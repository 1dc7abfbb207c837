"""Labels from evaluations: the Arena's ``answers/{model}/{time}/result.json`` files of each
subset -> labels.json, in the layout :func:`selector.scoring.pool.read_labels` reads.

A subset's label is its mean accuracy x 100 over the Arena datasets (GQA, IconQA, OKVQA,
ScienceQA in the paper), with the noise of repeated evaluations kept beside it. The last step of
the labels stage, after :mod:`selector.labels.split` and :mod:`selector.labels.jobs`. Labels
already made (a labels JSON, the original layout's ``labels.json``) are taken through the
existing readers (:func:`selector.scoring.pool.read_labels`,
:class:`selector.scoring.reference.ReferenceRepo`).

The datasets and ``allow_missing`` have no defaults here: they are settings (``labels.*`` in
``configs/pipeline/base.yaml``, the ``igpt4 labels collect`` flags), and the caller passes them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from selector.core.errors import InputError
from selector.core.jsonio import PathLike, read_json, write_json
from selector.labels.jobs import SUBSETS_FILE


@dataclass
class ArenaResult:
    """One ``answers/{model}/{time}/result.json``: accuracies (fractions) by lower-cased dataset."""

    path: Path
    model: str
    time: str
    accuracies: Dict[str, float]


def read_arena_result(path: PathLike) -> ArenaResult:
    """The Arena writes ``{dataset_name: accuracy}`` with the accuracy a fraction in 0..1
    (``LVLM_evaluation/eval.py``: ``result[args.dataset_name] = metrics``)."""
    path = Path(path)
    document, _ = read_json(path)
    if not isinstance(document, dict):
        raise InputError(f"{path}: expected {{dataset: accuracy}} (the Arena's result.json)")
    accuracies: Dict[str, float] = {}
    for name, value in document.items():
        if (isinstance(value, bool) or not isinstance(value, (int, float))
                or not math.isfinite(value)):
            raise InputError(f"{path}: accuracy of {name!r} is not a number ({value!r})")
        if not 0.0 <= value <= 1.0:
            raise InputError(f"{path}: accuracy of {name!r} is {value}, outside 0..1 (the Arena "
                             "writes fractions)")
        key = str(name).lower()
        if key in accuracies:
            raise InputError(f"{path}: dataset {name!r} appears twice (names are case-insensitive)")
        accuracies[key] = float(value)
    return ArenaResult(path, path.parent.parent.name, path.parent.name, accuracies)


def arena_results(answers: Path) -> List[ArenaResult]:
    """Every run under an answers folder, oldest first (the Arena's time folders are
    ``%Y%m%d%H%M%S``, so name order is time order)."""
    files = sorted(answers.glob("*/*/result.json"),
                   key=lambda p: (p.parent.name, p.parent.parent.name))
    return [read_arena_result(p) for p in files]


def _sample_std(values: Sequence[float]) -> Optional[float]:
    return float(np.std(values, ddof=1)) if len(values) >= 2 else None


def subset_label(name: str, results: Sequence[ArenaResult], datasets: Sequence[str],
                 allow_missing: bool) -> Dict[str, Any]:
    """A subset's label from its runs.

    Label = mean over ``datasets`` of each dataset's accuracy (averaged over its runs) x 100.
    The Arena's own ``eval.py`` writes one result.json per dataset, so a subset's datasets may sit
    in different time folders; a *run* is therefore the i-th evaluation of every dataset (in time
    order), and ``n_runs`` the number of complete runs. ``label_std`` is the sample standard
    deviation (ddof 1) of the per-run labels: the evaluation noise of this label (None for one run).
    """
    if not results:
        raise InputError(f"subset {name!r}: no result.json to take a label from")
    per_dataset: Dict[str, List[float]] = {d: [] for d in datasets}
    for result in results:
        for dataset in datasets:
            if dataset in result.accuracies:
                per_dataset[dataset].append(100.0 * result.accuracies[dataset])
    missing = [d for d in datasets if not per_dataset[d]]
    present = [d for d in datasets if per_dataset[d]]
    if missing and (not allow_missing or not present):
        found = sorted({d for r in results for d in r.accuracies})
        raise InputError(f"{results[-1].path}: subset {name!r} has no accuracy for "
                         f"{', '.join(missing)} in any of its {len(results)} result.json files "
                         f"(found: {', '.join(found) or 'none'}); evaluate it, or use "
                         "--allow-missing to average the datasets present")
    n_runs = min(len(per_dataset[d]) for d in present)
    run_labels = [float(np.mean([per_dataset[d][i] for d in present])) for i in range(n_runs)]
    return {
        "label": float(np.mean([np.mean(per_dataset[d]) for d in present])),
        "label_std": _sample_std(run_labels),
        "n_runs": n_runs,
        "per_dataset": {d: float(np.mean(per_dataset[d])) for d in present},
        "per_dataset_std": {d: _sample_std(per_dataset[d]) for d in present},
        "run_labels": run_labels,
        "missing": missing,
        "results": [{"path": str(r.path), "model": r.model, "time": r.time,
                     "accuracies": {d: r.accuracies[d] for d in datasets if d in r.accuracies}}
                    for r in results],
    }


@dataclass
class LabelSource:
    """Where a PATH given to ``labels collect`` leads: answers folders by subset, or labels
    read from an existing labels file / the original layout."""

    answers: Dict[str, Path] = field(default_factory=dict)
    imported: Dict[str, float] = field(default_factory=dict)
    unevaluated: List[str] = field(default_factory=list)
    described: List[str] = field(default_factory=list)


def _has_results(folder: Path) -> bool:
    return any(folder.glob("*/*/result.json"))


def _is_reference_layout(path: Path) -> bool:
    if not (path / "labels.json").is_file():
        return False  # cheap test first: importing selector.scoring.reference imports torch
    from selector.scoring.reference import KMEANS_SUBSETS, LABELS

    return (path / LABELS).is_file() and (path / KMEANS_SUBSETS).is_file()


def _find_sources(path: Path, source: LabelSource) -> None:
    """One PATH: a split folder (``subsets.json`` + ``<name>/answers``), one subset folder (with
    ``answers/``), an answers folder itself, a folder of subset folders, a labels JSON file, or a
    checkout of the original layout (``labels.json`` + ``cluster/kmeans++/modified.json``)."""
    from selector.scoring.pool import read_labels, read_subsets

    if path.is_file():
        source.imported.update(read_labels(path))
        source.described.append(f"labels file {path}")
        return
    if not path.is_dir():
        raise InputError(f"{path}: not found (expected a split folder, answers folder or labels "
                         "file)")
    if (path / SUBSETS_FILE).is_file():
        for name in read_subsets(path / SUBSETS_FILE):
            answers = path / name / "answers"
            if _has_results(answers):
                source.answers[name] = answers
            else:
                source.unevaluated.append(name)
        source.described.append(f"split {path}")
        return
    if _is_reference_layout(path):
        from selector.scoring.reference import ReferenceRepo

        repo = ReferenceRepo(path)
        labels, subsets = repo.labels(), repo.kmeans_subsets()
        unknown = [name for name in labels if name not in subsets]
        if unknown:
            raise InputError(f"{repo.path('labels.json')}: label of subset {unknown[0]!r}, which "
                             "cluster/kmeans++/modified.json lacks")
        source.imported.update(labels)
        source.described.append(f"original layout {path}")
        return
    if _has_results(path / "answers"):
        source.answers[path.name] = path / "answers"
    elif _has_results(path):
        source.answers[path.parent.name if path.name == "answers" else path.name] = path
    else:
        children = [c for c in sorted(path.iterdir()) if c.is_dir() and _has_results(c / "answers")]
        if not children:
            raise InputError(f"{path}: no result.json found (expected answers/{{model}}/{{time}}/"
                             "result.json, a split folder with subsets.json, or subset folders)")
        for child in children:
            source.answers[child.name] = child / "answers"
    source.described.append(f"answers under {path}")


def results_of_one_model(name: str, answers: Path, results: List[ArenaResult],
                         model: Optional[str] = None) -> List[ArenaResult]:
    """A subset's runs of one model (the ``{model}`` folder of ``answers/{model}/{time}``): with
    ``model``, that model's; without, the runs must all be of one model, since averaging two
    models' accuracies gives a label of neither."""
    models = sorted({r.model for r in results})
    if model is not None:
        chosen = [r for r in results if r.model == model]
        if not chosen:
            raise InputError(f"{answers}: subset {name!r} has no result.json of model {model!r} "
                             f"(found: {', '.join(models) or 'none'})")
        return chosen
    if len(models) > 1:
        raise InputError(f"{answers}: subset {name!r} was evaluated with different models "
                         f"({', '.join(models)}); keep one model's answers or choose one with "
                         "--model NAME")
    return results


def check_label_scales(labels: Dict[str, float], imported_from: Dict[str, str]) -> None:
    """Labels are accuracy x 100 (0..100). A label read from a file that looks like a 0..1
    fraction (0 < value <= 1) beside labels above 1 mixes two scales: refused, since the small
    one would silently read as a near-zero accuracy."""
    fraction = next((n for n, v in labels.items() if n in imported_from and 0.0 < v <= 1.0), None)
    larger = next((n for n, v in labels.items() if abs(v) > 1.0), None)
    if fraction is not None and larger is not None:
        raise InputError(f"{imported_from[fraction]}: label of subset {fraction!r} is "
                         f"{labels[fraction]:g} (a 0..1 fraction?) while subset {larger!r} has "
                         f"{labels[larger]:g}: labels mix scales; give every label as accuracy "
                         "x 100")


def collect_labels(paths: Sequence[PathLike], datasets: Sequence[str], allow_missing: bool,
                   out: Optional[PathLike] = None, model: Optional[str] = None) -> Dict[str, Any]:
    """Labels of every evaluated subset found under ``paths``, as the labels file document:
    ``{"labels": {subset: value}, "label_std", "n_runs", "per_dataset", "runs", ...}`` (what
    :func:`selector.scoring.pool.read_labels` reads; the other keys are for people and plots).

    Labels already made (a labels JSON, the original layout) are taken as they are. A subset found
    twice is an error, not a silent overwrite.
    """
    datasets = [d.strip().lower() for d in datasets if d.strip()]
    if not datasets:
        raise InputError("labels: no datasets given")
    if len(set(datasets)) != len(datasets):
        raise InputError(f"labels: dataset listed twice in {', '.join(datasets)}")
    if not paths:
        raise InputError("labels: no paths given")
    labels: Dict[str, float] = {}
    details: Dict[str, Dict[str, Any]] = {}
    imported_from: Dict[str, str] = {}
    model_of: Dict[str, str] = {}  # subset -> the model its label comes from
    unevaluated: List[str] = []
    described: List[str] = []
    for path in paths:
        source = LabelSource()
        _find_sources(Path(path), source)
        described.extend(source.described)
        unevaluated.extend(source.unevaluated)
        found = list(source.imported) + list(source.answers)
        clash = next((name for name in found if name in labels), None)
        if clash is not None:
            raise InputError(f"{path}: subset {clash!r} was already found in an earlier path")
        labels.update(source.imported)
        imported_from.update((name, str(path)) for name in source.imported)
        for name, answers in source.answers.items():
            results = results_of_one_model(name, answers, arena_results(answers), model)
            model_of[name] = results[0].model
            other = next((n for n, m in model_of.items() if m != model_of[name]), None)
            if other is not None:  # labels of two models do not rank the subsets' data
                raise InputError(f"{answers}: subset {name!r} was evaluated with model "
                                 f"{model_of[name]!r} but subset {other!r} with "
                                 f"{model_of[other]!r}; choose one with --model NAME")
            details[name] = subset_label(name, results, datasets, allow_missing)
            labels[name] = details[name]["label"]
    if not labels:
        waiting = f" ({len(unevaluated)} subsets have no result.json yet)" if unevaluated else ""
        raise InputError(f"labels: no evaluated subset under {', '.join(str(p) for p in paths)}"
                         f"{waiting}")
    check_label_scales(labels, imported_from)
    document: Dict[str, Any] = {
        "labels": labels,
        "label_std": {n: d["label_std"] for n, d in details.items()},
        "n_runs": {n: d["n_runs"] for n, d in details.items()},
        "per_dataset": {n: d["per_dataset"] for n, d in details.items()},
        "per_dataset_std": {n: d["per_dataset_std"] for n, d in details.items()},
        "runs": {n: {"run_labels": d["run_labels"], "results": d["results"]}
                 for n, d in details.items()},
        "datasets": datasets,
        "unit": "mean accuracy x 100 over the datasets (each averaged over its runs)",
        "sources": described,
        "models": sorted(set(model_of.values())),
    }
    missing = {n: d["missing"] for n, d in details.items() if d["missing"]}
    if missing:
        document["missing_datasets"] = missing
    if unevaluated:
        document["unevaluated"] = unevaluated
    imported = [n for n in labels if n not in details]
    if imported:
        document["imported"] = imported
    if out is not None:
        write_json(out, document)
    return document


def label_noise_summary(document: Dict[str, Any]) -> Tuple[Optional[float], float]:
    """(pooled evaluation noise of a label, spread of the labels across subsets): a noise close
    to the spread means the labels say little about data quality."""
    stds = [s for s in document.get("label_std", {}).values() if s is not None]
    noise = float(np.sqrt(np.mean(np.square(stds)))) if stds else None
    values = list(document["labels"].values())
    spread = float(np.std(values, ddof=1)) if len(values) >= 2 else 0.0
    return noise, spread
