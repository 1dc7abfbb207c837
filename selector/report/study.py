"""``igpt4 study collect DIR``: the Arena results of a study's runs -> per method the mean accuracy
with a 95% interval over seeds, the paired difference to ``random``, and whether it exceeds the
evaluation noise.

Why these numbers: most single-score filters land *below* random at the same budget, and one
fine-tune per method says nothing, since seeds (which 200 samples a random draw gives, the
fine-tune's own randomness) move the accuracy by about as much as methods differ. A method is
worth its cost only when its difference to random, paired by seed (the same seed is the same
draw of the evaluation-independent randomness), has an interval that excludes zero *and* is
larger than what evaluating one checkpoint twice changes.

The statistics:

* a run's value is the Arena accuracy x 100 per dataset, and overall the mean over the study's
  datasets, each averaged over the run's evaluations (:func:`selector.labels.collect.subset_label`,
  the labels stage's reader: several result.json of one run are repeated evaluations);
* per method, the mean over its seeds with a Student t interval
  (``mean +- t(0.975, n - 1) * s / sqrt(n)``); with one run there is no interval;
* the paired difference to random: ``method(seed) - random(seed)`` over the seeds both have (a
  method that ignores the seed has one run, paired with every random seed), its mean and t
  interval; *significant* when the interval excludes zero;
* the evaluation noise: the pooled standard deviation ``sigma`` of the repeated evaluations of one
  checkpoint (runs evaluated more than once); two evaluations of the same checkpoint differ by
  less than ``1.96 * sqrt(2) * sigma`` in 95% of cases, and a difference to random *exceeds the
  noise* when it is larger than that. Without repeats the noise is unknown, and said so.

The study folder's layout (``study.json``, each run's ``answers/``) is written by
:mod:`selector.app.study`; the page is drawn by :mod:`selector.report.study_page`.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from selector.core.errors import InputError
from selector.core.jsonio import PathLike, read_json

STUDY_FILE = "study.json"  # what `igpt4 study` wrote: the grid, budget, seeds, inputs, versions
RESULTS_FILE = "study_results.json"  # what `igpt4 study collect` writes by default
PAGE_FILE = "study_report.html"  # the study page, beside the results by default
CONFIDENCE = 0.95
BASELINE = "random"  # every method is compared with this one, paired by seed
FULL = "full"  # the full-data run's method name
STUDY_VERSION = 1


def _finite(value: Optional[float]) -> Optional[float]:
    return float(value) if value is not None and math.isfinite(value) else None


def t_summary(values: Sequence[float], confidence: float = CONFIDENCE) -> Dict[str, Any]:
    """Mean, sample standard deviation (ddof 1) and the Student t interval of the mean of
    ``values``; one value: no interval (``note`` says so), none: no mean."""
    from scipy import stats

    values = [float(v) for v in values]
    n = len(values)
    summary: Dict[str, Any] = {"n": n, "mean": None, "std": None, "ci": None, "note": None}
    if n == 0:
        summary["note"] = "no results"
        return summary
    summary["mean"] = float(np.mean(values))
    if n == 1:
        summary["note"] = "one run: no interval"
        return summary
    std = float(np.std(values, ddof=1))
    half = float(stats.t.ppf((1.0 + confidence) / 2.0, n - 1)) * std / math.sqrt(n)
    summary["std"] = std
    summary["ci"] = [summary["mean"] - half, summary["mean"] + half]
    return summary


def read_study(folder: PathLike) -> Dict[str, Any]:
    """``DIR/study.json``, checked enough that collecting cannot misread it."""
    folder = Path(folder)
    path = folder / STUDY_FILE
    if not folder.is_dir():
        raise InputError(f"{folder}: not found (expected a folder written by igpt4 study)")
    if not path.is_file():
        raise InputError(f"{path}: not found ({folder} is no study folder: igpt4 study writes it)")
    document, _ = read_json(path)
    if not isinstance(document, dict) or document.get("command") != "study":
        raise InputError(f"{path}: not a study file (written by igpt4 study)")
    if document.get("complete") is False:
        raise InputError(f"{path}: the study was not written completely (igpt4 study was "
                         "interrupted); rerun igpt4 study with the same arguments")
    runs = document.get("runs")
    datasets = document.get("datasets")
    if not isinstance(runs, list) or not runs:
        raise InputError(f"{path}: 'runs' must be a non-empty list")
    if not isinstance(datasets, list) or not datasets or \
            not all(isinstance(d, str) and d for d in datasets):
        raise InputError(f"{path}: 'datasets' must be a non-empty list of names")
    lowered = [d.strip().lower() for d in datasets]
    if len(set(lowered)) != len(lowered):  # a dataset listed twice would weigh twice
        twice = next(d for d in datasets if lowered.count(d.strip().lower()) > 1)
        raise InputError(f"{path}: dataset {twice!r} is listed twice in 'datasets' (names are "
                         "case-insensitive)")
    seen: Dict[Any, int] = {}  # each run, folder and (method, seed) once: no result counts twice
    for index, run in enumerate(runs):
        if not isinstance(run, dict) or not isinstance(run.get("name"), str) or \
                not isinstance(run.get("method"), str) or not isinstance(run.get("folder"), str):
            raise InputError(f"{path}: runs[{index}] needs a name, method and folder")
        seed = run.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise InputError(f"{path}: runs[{index}] ({run['name']}): seed must be an integer "
                             f"or null, not {seed!r}")
        if Path(run["folder"]).is_absolute() or ".." in Path(run["folder"]).parts:
            raise InputError(f"{path}: runs[{index}] ({run['name']}): folder must lie inside "
                             "the study folder")
        for key, what in ((("name", run["name"]), f"name {run['name']!r}"),
                          (("folder", Path(run["folder"]).as_posix()),
                           f"folder {run['folder']!r}"),
                          (("seed", run["method"], seed),
                           f"method {run['method']!r} with seed {seed!r}")):
            if key in seen:
                raise InputError(f"{path}: runs[{index}] ({run['name']}): {what} is also "
                                 f"runs[{seen[key]}]'s")
            seen[key] = index
        seen.setdefault(("seeded", run["method"], seed is None), index)
        if ("seeded", run["method"], seed is not None) in seen:
            raise InputError(f"{path}: runs[{index}] ({run['name']}): method {run['method']!r} "
                             "has both seeded runs and a run without a seed")
    return document


def run_value(name: str, answers: Path, datasets: Sequence[str],
              model: Optional[str] = None) -> Dict[str, Any]:
    """One run's accuracies from its answers folder, or why it has none yet (``missing``)."""
    from selector.labels.collect import arena_results, results_of_one_model, subset_label

    results = arena_results(answers) if answers.is_dir() else []
    if not results:
        return {"missing": "no result.json yet"}
    if model is not None and all(r.model != model for r in results):  # not evaluated with it yet
        return {"missing": f"no result.json of model {model!r} yet (found: "
                           f"{', '.join(sorted({r.model for r in results}))})"}
    results = results_of_one_model(name, answers, results, model)
    found = {d for r in results for d in r.accuracies}
    absent = [d for d in datasets if d not in found]
    if absent:  # an evaluation still running (or killed): no value from part of the datasets
        return {"missing": f"incomplete: no {', '.join(absent)} in its "
                           f"{len(results)} result.json"}
    label = subset_label(name, results, datasets, allow_missing=False)
    return {"overall": label["label"], "per_dataset": label["per_dataset"],
            "repeats": label["n_runs"], "repeat_std": label["label_std"],
            "model": results[0].model, "results": [str(r.path) for r in results]}


def evaluation_noise(runs: Dict[str, Dict[str, Any]]) -> Dict[str, Any]:
    """The pooled std of repeated evaluations of one checkpoint (the labels stage's summary)."""
    from scipy import stats

    from selector.labels.collect import label_noise_summary

    repeated = {n: r for n, r in runs.items() if r.get("repeat_std") is not None}
    if not repeated:
        return {"std": None, "threshold": None, "runs_with_repeats": 0,
                "note": "noise unknown: no run was evaluated more than once (evaluate a "
                        "checkpoint again to measure it)"}
    std, _ = label_noise_summary({"label_std": {n: r["repeat_std"] for n, r in repeated.items()},
                                  "labels": {n: r["overall"] for n, r in repeated.items()}})
    z = float(stats.norm.ppf((1.0 + CONFIDENCE) / 2.0))
    return {"std": std, "threshold": z * math.sqrt(2.0) * std,
            "runs_with_repeats": len(repeated),
            "note": f"pooled std of repeated evaluations over {len(repeated)} runs; two "
                    f"evaluations of one checkpoint differ by less than {z:.2f} x sqrt(2) x std "
                    "in 95% of cases"}


def paired_difference(method_runs: List[Dict[str, Any]], baseline_runs: List[Dict[str, Any]],
                      noise: Dict[str, Any]) -> Dict[str, Any]:
    """``method - random`` paired by seed (a run without a seed pairs with every random seed)."""
    baseline = {r["seed"]: r["overall"] for r in baseline_runs if "overall" in r}
    done = [r for r in method_runs if "overall" in r]
    if len(done) == 1 and done[0]["seed"] is None:
        pairs = [(seed, done[0]["overall"] - value) for seed, value in sorted(baseline.items())]
    else:
        pairs = [(r["seed"], r["overall"] - baseline[r["seed"]]) for r in done
                 if r["seed"] in baseline]
    summary = t_summary([d for _, d in pairs])
    summary["seeds"] = [s for s, _ in pairs]
    summary["differences"] = [d for _, d in pairs]
    ci = summary["ci"]
    summary["significant"] = None if ci is None else bool(ci[0] > 0 or ci[1] < 0)
    summary["exceeds_noise"] = (None if summary["mean"] is None or noise["threshold"] is None
                                else bool(abs(summary["mean"]) > noise["threshold"]))
    if not pairs:
        summary["note"] = "no seed evaluated for both this method and random"
    return summary


def collect_study(folder: PathLike, model: Optional[str] = None) -> Dict[str, Any]:
    """The results document of a study (what ``study_results.json`` holds): per run its values
    or why it has none, per method the summaries, the evaluation noise. Runs without results
    are listed under ``missing``; no evaluated run at all is an error."""
    folder = Path(folder)
    study = read_study(folder)
    datasets = [d.strip().lower() for d in study["datasets"]]
    runs: Dict[str, Dict[str, Any]] = {}
    for run in study["runs"]:
        value = run_value(run["name"], folder / run["folder"] / "answers", datasets, model)
        runs[run["name"]] = {"method": run["method"], "seed": run.get("seed"),
                             "folder": run["folder"], **value}
    missing = {name: r["missing"] for name, r in runs.items() if "missing" in r}
    if len(missing) == len(runs):
        raise InputError(f"{folder}: none of the {len(runs)} runs has a complete result.json "
                         + (f"of model {model!r} " if model is not None else "")
                         + f"yet (run {folder / 'launch.sh'} first)")
    models = sorted({r["model"] for r in runs.values() if "model" in r})
    if len(models) > 1:  # accuracies of two models compare neither the data nor the methods
        other = next(n for n, r in runs.items() if r.get("model") == models[1])
        raise InputError(f"{folder / runs[other]['folder']}: run {other!r} was evaluated with "
                         f"model {models[1]!r}, others with {models[0]!r}; choose one with "
                         "--model NAME")
    evaluated = {n: r for n, r in runs.items() if "overall" in r}
    noise = evaluation_noise(evaluated)
    order = list(dict.fromkeys([r["method"] for r in study["runs"]]))
    by_method = {m: [dict(r, name=n) for n, r in runs.items() if r["method"] == m] for m in order}
    methods: Dict[str, Any] = {}
    for method, members in by_method.items():
        done = [r for r in members if "overall" in r]
        entry: Dict[str, Any] = {
            "seeded": any(r["seed"] is not None for r in members),
            "runs": len(members), "evaluated": len(done),
            "seeds": [r["seed"] for r in done],
            "missing": [r["name"] for r in members if "overall" not in r],
            "overall": t_summary([r["overall"] for r in done]),
            "per_dataset": {d: t_summary([r["per_dataset"][d] for r in done]) for d in datasets},
        }
        if method != BASELINE and BASELINE in by_method:
            entry["vs_random"] = paired_difference(members, by_method[BASELINE], noise)
        methods[method] = entry
    return {"study": str(folder.resolve()), "datasets": datasets, "confidence": CONFIDENCE,
            "unit": "accuracy x 100 (overall: mean over the datasets)",
            "num_samples": study.get("num_samples"), "seeds": study.get("seeds"),
            "baseline": BASELINE if BASELINE in by_method else None,
            "models": models, "noise": noise, "methods": methods, "runs": runs,
            "missing": missing}


def _interval(summary: Dict[str, Any], signed: bool = False) -> str:
    if summary["mean"] is None:
        return "-"
    sign = "+" if signed else ""
    if summary["ci"] is None:
        return f"{summary['mean']:{sign}.2f} (no CI)"
    low, high = summary["ci"]
    return f"{summary['mean']:{sign}.2f} [{low:{sign}.2f}, {high:{sign}.2f}]"


def _yes_no(value: Optional[bool], unknown: str) -> str:
    return unknown if value is None else ("yes" if value else "no")


def results_table(document: Dict[str, Any]) -> str:
    """The results as a text table (what ``study collect`` prints)."""
    datasets = document["datasets"]
    head = (f"{'method':<22} {'runs':>5}  {'overall [95% CI]':<24} "
            + " ".join(f"{d[:9]:>9}" for d in datasets)
            + f"  {'vs random [95% CI]':<26} {'CI>0':>4} {'>noise':>7}")
    rows = [head]
    for method, entry in document["methods"].items():
        means = " ".join(f"{'-' if s['mean'] is None else format(s['mean'], '.2f'):>9}"
                         for s in (entry["per_dataset"][d] for d in datasets))
        versus = entry.get("vs_random")
        if versus is None or versus["mean"] is None:
            tail = f"  {'(baseline)' if method == BASELINE else '-':<26} {'':>4} {'':>7}"
        else:
            tail = (f"  {_interval(versus, signed=True):<26} "
                    f"{_yes_no(versus['significant'], '-'):>4} "
                    f"{_yes_no(versus['exceeds_noise'], 'unknown'):>7}")
        rows.append(f"{method:<22} {entry['evaluated']:>2}/{entry['runs']:<2}  "
                    f"{_interval(entry['overall']):<24} {means}{tail}")
    noise = document["noise"]
    rows.append("evaluation noise: " + (
        f"std {noise['std']:.3f} ({noise['runs_with_repeats']} runs evaluated more than once); "
        f"a difference exceeds it above {noise['threshold']:.3f}" if noise["std"] is not None
        else noise["note"]))
    for name, why in document["missing"].items():
        rows.append(f"missing: {name}: {why}")
    return "\n".join(rows)
