"""``igpt4 demo``: the whole paradigm on a generated toy world, minutes on a CPU.

It runs the shipped ``demo.yaml`` recipe (:mod:`.pipeline`): procedurally drawn images with
captions, a known fraction of them planted bad (:mod:`.toy`); indicators and embeddings from
tiny models through the real scoring code and cache; balanced k-means++ subsets; GENUINE labels:
each subset fine-tunes the toy MiniGPT-4 (stage 1 pre-trained on separate drawings) through
LAVIS's train steps, our builders and runner, is evaluated by our Arena-style runner on a toy VQA
set, and ``labels collect`` turns the result files into labels (:mod:`.toy.loop`); the selector
trained and cross-validated; the diversity selection; the HTML report; a MiniGPT-4 training
config; and the claim tested: the selector's pick, random picks, the best other method and the
full pool each fine-tuned and evaluated (an ``igpt4 study``), with 95% intervals over seeds.

``--labels oracle`` runs ``demo_oracle.yaml`` instead: the fast path with labels from a
documented synthetic oracle and no fine-tunes.
"""
from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from selector.core.jsonio import PathLike, read_json, write_json

TOY_NOTICE = ("demo: TOY world, real code path: procedurally drawn shapes with generated "
              "captions (a planted fraction deliberately bad), tiny scoring models trained for "
              "seconds on separate toy data, a tiny MiniGPT-4-shaped model pre-trained on "
              "separate toy drawings, and a generated toy VQA set as the benchmark.")
LABEL_SOURCES = {"toy_finetune": "demo.yaml", "oracle": "demo_oracle.yaml"}


def _planted_counts(toy: Any, selected: List[str], seed: int) -> Dict[str, Any]:
    """Planted bad samples kept by the selector and by a random pick of the same size."""
    from selector.selection.rule import random_k

    num_samples = len(selected)
    random_pick = random_k(toy.ids, num_samples, seed)
    kinds: Dict[str, Dict[str, int]] = {}
    for name, ids in (("selector", selected), ("random", random_pick)):
        for sample_id in ids:
            kind = toy.kinds.get(sample_id)
            if kind:
                kinds.setdefault(kind, {"selector": 0, "random": 0})[name] += 1
    planted = sum(bool(v) for v in toy.bad.values())
    return {"pool": len(toy.ids), "planted_bad": planted, "selected": num_samples,
            "bad_kept_by_selector": sum(bool(toy.bad[i]) for i in selected),
            "bad_kept_by_random": sum(bool(toy.bad[i]) for i in random_pick),
            "bad_kept_by_kind": kinds,
            "expected_bad_in_random_pick": round(num_samples * planted / len(toy.ids), 2)}


def label_summary(work: Path) -> Dict[str, Any]:
    """Per subset its checkpoint, Arena result file and label; the repeated-evaluation noise
    beside the labels' spread (from WORK/label_runs.json and WORK/labels.json)."""
    from selector.labels.collect import label_noise_summary

    runs, _ = read_json(work / "label_runs.json")
    labels, _ = read_json(work / "labels.json")
    subsets = {name: {"checkpoint": run["checkpoint"], "result": run["result"],
                      "label": labels["labels"][name]} for name, run in runs["runs"].items()}
    _, spread = label_noise_summary(labels)
    first = runs["noise_subset"]
    evaluations = [r["accuracy"] for r in runs["noise_runs"]]
    noise = statistics.stdev(evaluations) if len(evaluations) >= 2 else None
    return {"source": "fine-tunes and evaluations (toy MiniGPT-4 stage 2 on each subset, "
                      "evaluated on the toy VQA set, collected by labels collect)",
            "stage1": runs["stage1"], "vqa": runs["vqa"], "subsets": subsets,
            "noise": {"subset": first, "checkpoint": runs["runs"][first]["checkpoint"],
                      "evaluations": evaluations, "results": [r["result"] for r in
                                                               runs["noise_runs"]],
                      "std": noise, "label_spread_std": spread,
                      "note": "std of repeated evaluations (Arena mode: sampled answers, random "
                              "crops) of one checkpoint, beside the std of the labels across "
                              "subsets; a noise close to the spread means the labels say little"}}


def _bad_in(selection: Path, toy: Any) -> Optional[int]:
    path = selection / "selected.txt"
    if not path.is_file():
        return None
    return sum(bool(toy.bad.get(i)) for i in path.read_text(encoding="utf-8").split())


def comparison_summary(work: Path, toy: Any) -> Dict[str, Any]:
    """The compare stage's table: per method the accuracy with its 95% interval over seeds,
    the paired difference to random, and the planted bad samples its picks kept."""
    document, _ = read_json(work / "compare" / "study_results.json")
    study, _ = read_json(work / "compare" / "study.json")
    folders = {run["name"]: run for run in study["runs"]}
    rows: Dict[str, Any] = {}
    for method, entry in document["methods"].items():
        names = [n for n, r in document["runs"].items() if r["method"] == method]
        bad = [_bad_in(work / "compare" / folders[n]["folder"] / "selection", toy)
               if method != "full" else sum(bool(v) for v in toy.bad.values()) for n in names]
        bad = [b for b in bad if b is not None]
        rows[method] = {"runs": entry["evaluated"], "accuracy": entry["overall"]["mean"],
                        "ci95": entry["overall"]["ci"],
                        "per_run": {n: document["runs"][n].get("overall") for n in names},
                        "vs_random": None if "vs_random" not in entry else {
                            "mean": entry["vs_random"]["mean"], "ci95": entry["vs_random"]["ci"],
                            "significant": entry["vs_random"]["significant"],
                            "exceeds_noise": entry["vs_random"]["exceeds_noise"]},
                        "planted_bad_kept": bad,
                        "samples": document["num_samples"] if method != "full" else len(toy.ids)}
    return {"table": document["table"], "methods": rows, "noise": document["noise"],
            "chosen": document.get("chosen", {}), "verdict": verdict(rows),
            "judge": document.get("judge"), "study": str(work / "compare")}


def verdict(rows: Dict[str, Any]) -> str:
    """Whether the selector's pick beat random here, in words, whatever the answer is."""
    versus = (rows.get("selector") or {}).get("vs_random")
    if not versus or versus["mean"] is None:
        return "no answer: the selector or random has no evaluated run"
    low_high = versus["ci95"]
    if low_high is None:
        return (f"no answer: one seed of random gives no interval ({versus['mean']:+.2f} "
                "points against random; use compare.seeds of 2 or more)")
    said = (f"{versus['mean']:+.2f} points [95% interval {low_high[0]:+.2f}, "
            f"{low_high[1]:+.2f}] against random")
    if not versus["significant"]:
        return (f"NO: the selector's pick did not beat random in this toy world: the difference "
                f"is within the seeds' spread ({said})")
    if versus.get("exceeds_noise") is False:
        return (f"NO: the selector's pick did not beat random in this toy world: the difference "
                f"is within the evaluation noise ({said})")
    if versus["mean"] > 0:
        return f"YES: the selector's pick beat random in this toy world ({said})"
    return f"NO: the selector's pick did worse than random in this toy world ({said})"


def _flags(out: PathLike, samples: Optional[int], seed: int, kind: str) -> List[Any]:
    """The flags as layers labelled by what the user typed, so an error names ``--seed -1``, and
    the sizes are checked (Pipeline.preflight) before minutes of work."""
    from selector.core.settings import Layer

    flags = [Layer(f"--out {out}", {"pipeline": {"work": str(Path(out).resolve())}}),
             Layer(f"--seed {seed}", {"demo": {"seed": seed}}),
             Layer(f"--kind {kind}", {"demo": {"kind": kind}})]
    if samples is not None:
        flags.append(Layer(f"--samples {samples}", {"demo": {"samples": samples}}))
    return flags


def run_demo(out: PathLike, samples: Optional[int] = None, seed: int = 0,
             extra: Optional[Sequence[str]] = None, labels: str = "toy_finetune",
             kind: str = "captions") -> Dict[str, Any]:
    from selector.app.pipeline import run_pipeline
    from selector.app.toy.world import load_toy_pool
    from selector.core.errors import InputError
    from selector.core.provenance import log

    if labels not in LABEL_SOURCES:
        raise InputError(f"--labels must be one of {', '.join(LABEL_SOURCES)} (got {labels!r})")
    if labels == "oracle" and kind == "conversations":
        raise InputError("--labels oracle --kind conversations: the oracle knows the caption "
                         "pool's planted kinds only; the conversation demo takes its labels "
                         "from fine-tunes (leave --labels out)")
    log(TOY_NOTICE)
    pipeline = run_pipeline(LABEL_SOURCES[labels], list(extra or []),
                            flags=_flags(out, samples, seed, kind))
    work = pipeline.work
    if pipeline.recipe.generated_conversations:
        from selector.app.toy.conversations import load_toy_conversations

        toy = load_toy_conversations(work / "data")
    else:
        toy = load_toy_pool(work / "data")
    selected = (work / "selection" / "selected.txt").read_text(encoding="utf-8").split()
    summary = _planted_counts(toy, selected, seed)
    source = pipeline.recipe.settings["labels"]["source"]
    if source == "toy_finetune":
        summary["labels"] = label_summary(work)
    else:
        summary["labels"] = {"source": "synthetic oracle (a formula of each subset's planted bad "
                                       "samples, selector/app/toy/oracle.py), not fine-tunes"}
    if "compare" in pipeline.recipe.stages:
        summary["comparison"] = comparison_summary(work, toy)
    seconds = {name: record.seconds for name, record in pipeline.records.items()}
    summary.update({
        "seconds": seconds,
        "seconds_total": round(sum(seconds.values()), 1),
        "report": str(work / "selection" / "report.html"),
        "selection": str(work / "selection" / ("conversations.json"
                                                if pipeline.recipe.generated_conversations
                                                else "filter_cap.json")),
        "train_config": str(work / "train_config.yaml"),
    })
    write_json(work / "demo_summary.json", summary)
    _print(summary, work)
    return summary


def _print(summary: Dict[str, Any], work: Path) -> None:
    num_samples = summary["selected"]
    labels = summary["labels"]
    if "subsets" in labels:
        noise = labels["noise"]
        std = "unknown" if noise["std"] is None else f"{noise['std']:.2f}"
        print(f"demo: labels came from fine-tunes and evaluations: {len(labels['subsets'])} "
              f"subsets, each a stage-2 fine-tune of the toy MiniGPT-4 evaluated on the toy VQA "
              f"set ({labels['vqa']['questions']} questions, the Arena's GQA layout and "
              f"word-match metric); labels (accuracy x 100) spread std "
              f"{noise['label_spread_std']:.2f}, evaluation noise std {std} "
              f"({len(noise['evaluations'])} evaluations of subset {noise['subset']}'s "
              f"checkpoint)")
    else:
        print(f"demo: labels came from a {labels['source']}")
    print(f"demo: planted bad samples kept: selector "
          f"{summary['bad_kept_by_selector']}/{num_samples}, "
          f"random pick {summary['bad_kept_by_random']}/{num_samples} (expected "
          f"{summary['expected_bad_in_random_pick']}; pool: {summary['planted_bad']} bad of "
          f"{summary['pool']})")
    comparison = summary.get("comparison")
    if comparison:
        print("demo: fine-tuned on each pick and evaluated on the toy VQA set (accuracy x 100, "
              "95% interval over seeds):")
        print(comparison["table"])
        bad = "; ".join(f"{m} {_mean(r['planted_bad_kept'])}/{r['samples']}"
                        for m, r in comparison["methods"].items())
        print(f"demo: planted bad samples in the picks (mean over seeds): {bad}")
        judged = comparison.get("judge")
        if judged:
            scores = "; ".join(f"{m} {v:.1f}" for m, v in judged["methods"].items())
            print(f"demo: multi-round answers to {judged['questions']} toy judge questions, "
                  f"igpt4 eval judge against the TOY scripted judge {judged['model']} on "
                  f"127.0.0.1 (relative score, mean over runs): {scores}")
        for note in comparison["chosen"].values():
            print(f"demo: best other method: {note}")
        print(f"demo: {comparison['verdict']}")
    print(f"demo: report    -> {summary['report']}")
    what = "a cc_sbu_align folder" if summary["selection"].endswith("filter_cap.json") \
        else "LLaVA-format conversations + image/"
    print(f"demo: selection -> {summary['selection']} ({what}: {work / 'selection'})")
    print(f"demo: training config -> {summary['train_config']} (MiniGPT-4: python train.py "
          f"--cfg-path it; needs real weights; the cpu_smoke config trains the tiny model)")
    times = ", ".join(f"{name} {seconds:.1f}" for name, seconds in summary["seconds"].items())
    print(f"demo: seconds per stage (0: current, skipped): {times}; total "
          f"{summary['seconds_total']:.1f}")


def _mean(values: Sequence[float]) -> str:
    if not values:
        return "-"
    mean = sum(values) / len(values)
    return f"{mean:.0f}" if math.isclose(mean, round(mean)) else f"{mean:.1f}"
