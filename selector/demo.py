"""``igpt4 demo``: the selector stage end to end on a generated toy pool, in seconds on a CPU.

What is toy, plainly: the features and indicators are drawn from a known generative model instead
of computed by CLIP / reward / GPT models from images, and the 30 subset labels come from a
synthetic oracle instead of 30 MiniGPT-4 fine-tunes:

* every sample has a hidden quality q ~ N(0, 1); a planted fraction (20%) are *bad* samples with
  q shifted down by 2.5;
* indicators are noisy views of q: clip = 30 + 1.5 q + N(0, 2), reward = 0.5 q + N(0, 1),
  length = 2 + 0.3 q + N(0, 0.5), gpt = 80 + 5 q + N(0, 8) (clipped to 0..100);
* image features: 8 Gaussian blobs in 6 dimensions (diversity clusters); text features: 6 dims
  weakly tied to q;
* oracle label of a subset = 30 + 2 x mean(q of its samples) + N(0, 0.05), as if it were the
  mean benchmark accuracy of a model fine-tuned on that subset.

The real path is exercised: the pool file, subsets and labels files are written and read back,
the selector is trained and cross-validated, and the diversity selection writes filter_cap.json.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict

import numpy as np

from .jsonio import PathLike, write_json

BAD_FRACTION = 0.2


def make_toy_pool(n: int, seed: int = 0):
    from .pool import FeaturePool

    rng = np.random.default_rng(seed)
    ids = [str(i) for i in range(2, n + 2)]
    bad = rng.random(n) < BAD_FRACTION
    quality = rng.normal(size=n) - 2.5 * bad
    blob = rng.integers(0, 8, size=n)
    centres = rng.normal(scale=3.0, size=(8, 6))
    image = centres[blob] + rng.normal(size=(n, 6))
    text = rng.normal(size=(n, 6)) + 0.5 * quality[:, None] * rng.normal(size=(1, 6))
    indicators = np.stack([
        30 + 1.5 * quality + rng.normal(scale=2.0, size=n),
        0.5 * quality + rng.normal(size=n),
        2 + 0.3 * quality + rng.normal(scale=0.5, size=n),
        np.clip(np.round(80 + 5 * quality + rng.normal(scale=8.0, size=n)), 0, 100),
    ], axis=1)
    pool = FeaturePool(ids, image, text, indicators, ["clip", "reward", "length", "gpt"])
    return pool, quality, bad


def oracle_labels(subsets: Dict[str, list], quality_of: Dict[str, float], seed: int = 0):
    rng = np.random.default_rng(seed + 1)
    return {name: round(30 + 2 * float(np.mean([quality_of[i] for i in members]))
                        + float(rng.normal(scale=0.05)), 4)
            for name, members in subsets.items()}


def run_demo(out: PathLike, n: int = 1200, seed: int = 0, num_subsets: int = 30,
             select_fraction: float = 0.05) -> Dict[str, object]:
    from .commands import log, select, train_selector
    from .selection import random_k
    from .settings import load_settings

    out = Path(out)
    log("demo: TOY data: generated features and indicators, synthetic oracle labels "
        "(no images, no CLIP/reward/GPT models, no fine-tuning)")
    pool, quality, bad = make_toy_pool(n, seed)
    pool_path = pool.save(out / "pool.safetensors")
    rng = np.random.default_rng(seed + 2)
    order = rng.permutation(n)[: (n // num_subsets) * num_subsets].reshape(num_subsets, -1)
    subsets = {str(i): [pool.ids[j] for j in row] for i, row in enumerate(order)}
    quality_of = dict(zip(pool.ids, quality.tolist()))
    write_json(out / "subsets.json", subsets)
    write_json(out / "labels.json", {"labels": oracle_labels(subsets, quality_of, seed)})
    k = max(1, int(round(select_fraction * n)))
    settings = load_settings(overrides=[f"selection.num_samples={k}", "selection.n_clusters=8"])
    train_selector(out / "selector", settings, pool_path, out / "subsets.json",
                   out / "labels.json")
    captions = out / "captions"
    write_json(captions / "filter_cap.json", {"annotations": [
        {"image_id": i, "caption": f"toy sample {i} ({'planted bad' if b else 'good'})"}
        for i, b in zip(pool.ids, bad)]})
    selected = select(out / "selection", settings, pool_path, out / "selector",
                      captions_path=captions)
    bad_of = dict(zip(pool.ids, bad.tolist()))
    random_pick = random_k(pool.ids, k, seed)
    summary = {
        "pool": n, "planted_bad": int(bad.sum()), "selected": k,
        "bad_kept_by_selector": int(sum(bad_of[i] for i in selected)),
        "bad_kept_by_random": int(sum(bad_of[i] for i in random_pick)),
        "mean_quality_selected": float(np.mean([quality_of[i] for i in selected])),
        "mean_quality_random": float(np.mean([quality_of[i] for i in random_pick])),
    }
    write_json(out / "demo_summary.json", summary)
    print(f"demo: planted bad samples kept: selector {summary['bad_kept_by_selector']}/{k}, "
          f"random pick {summary['bad_kept_by_random']}/{k} (pool: {summary['planted_bad']} bad "
          f"of {n})")
    print(f"demo: selection -> {out / 'selection' / 'filter_cap.json'}; selector -> "
          f"{out / 'selector'}; summary -> {out / 'demo_summary.json'}")
    return summary
