"""``igpt4 demo``: every stage of the pipeline on a generated toy pool, minutes on a CPU.

It runs the shipped ``demo.yaml`` recipe (:mod:`.pipeline`): procedurally drawn images with
captions, a known fraction of them planted bad (:mod:`.toy`); indicators and embeddings from
tiny models through the real scoring code and cache; balanced k-means++ subsets; labels from a
documented synthetic oracle standing in for the 30 MiniGPT-4 fine-tunes; the selector trained and
cross-validated; the diversity selection; the HTML report; a MiniGPT-4 training config. Then it
compares the selection with a random pick of the same size on the planted bad samples.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional

from selector.core.jsonio import PathLike, write_json

TOY_NOTICE = ("demo: TOY data and models: procedurally drawn shapes with generated captions "
              "(a planted fraction deliberately bad), tiny models built from configs and trained "
              "for seconds on separate toy data, and subset labels from a synthetic oracle "
              "instead of MiniGPT-4 fine-tunes. The code path is the real one.")


def run_demo(out: PathLike, samples: Optional[int] = None, seed: int = 0,
             extra: Optional[List[str]] = None) -> Dict[str, Any]:
    from selector.core.provenance import log
    from selector.app.pipeline import run_pipeline
    from selector.selection.rule import random_k
    from selector.core.settings import Layer
    from selector.app.toy.world import load_toy_pool

    log(TOY_NOTICE)
    # the flags as layers labelled by what the user typed, so an error names ``--seed -1``, and
    # the sizes are checked (Pipeline.preflight) before minutes of work
    flags = [Layer(f"--out {out}", {"pipeline": {"work": str(Path(out).resolve())}}),
             Layer(f"--seed {seed}", {"demo": {"seed": seed}})]
    if samples is not None:
        flags.append(Layer(f"--samples {samples}", {"demo": {"samples": samples}}))
    pipeline = run_pipeline("demo.yaml", list(extra or []), flags=flags)
    work = pipeline.work
    toy = load_toy_pool(work / "data")
    selected = (work / "selection" / "selected.txt").read_text(encoding="utf-8").split()
    num_samples = len(selected)
    random_pick = random_k(toy.ids, num_samples, seed)
    kinds: Dict[str, Dict[str, int]] = {}
    for name, ids in (("selector", selected), ("random", random_pick)):
        for sample_id in ids:
            kind = toy.kinds.get(sample_id)
            if kind:
                kinds.setdefault(kind, {"selector": 0, "random": 0})[name] += 1
    planted = sum(bool(v) for v in toy.bad.values())
    summary = {
        "pool": len(toy.ids), "planted_bad": planted, "selected": num_samples,
        "bad_kept_by_selector": sum(bool(toy.bad[i]) for i in selected),
        "bad_kept_by_random": sum(bool(toy.bad[i]) for i in random_pick),
        "bad_kept_by_kind": kinds,
        "expected_bad_in_random_pick": round(num_samples * planted / len(toy.ids), 2),
        "seconds": {name: record.seconds for name, record in pipeline.records.items()},
        "report": str(work / "selection" / "report.html"),
        "selection": str(work / "selection" / "filter_cap.json"),
        "train_config": str(work / "train_config.yaml"),
    }
    write_json(work / "demo_summary.json", summary)
    print(f"demo: planted bad samples kept: selector "
          f"{summary['bad_kept_by_selector']}/{num_samples}, "
          f"random pick {summary['bad_kept_by_random']}/{num_samples} (expected "
          f"{summary['expected_bad_in_random_pick']}; pool: {planted} bad of {len(toy.ids)})")
    print(f"demo: report    -> {summary['report']}")
    print(f"demo: selection -> {summary['selection']} (a cc_sbu_align folder: "
          f"{work / 'selection'})")
    print(f"demo: training config -> {summary['train_config']} (MiniGPT-4: python train.py "
          f"--cfg-path it; needs real weights; the cpu_smoke config trains the tiny model)")
    return summary
