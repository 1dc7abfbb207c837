"""Synthetic feature pools with a known hidden quality, for tests and benchmarks of the selector
stage (no images, no models; ``igpt4 demo`` draws real images instead, see
:mod:`selector.app.toy`).

The features and indicators are drawn from a known generative model, and subset labels come from
a synthetic oracle:

* every sample has a hidden quality q ~ N(0, 1); a planted fraction (20%) are *bad* samples with
  q shifted down by 2.5;
* indicators are noisy views of q: clip = 30 + 1.5 q + N(0, 2), reward = 0.5 q + N(0, 1),
  length = 2 + 0.3 q + N(0, 0.5), gpt = 80 + 5 q + N(0, 8) (clipped to 0..100);
* image features: 8 Gaussian blobs in 6 dimensions (diversity clusters); text features: 6 dims
  weakly tied to q;
* oracle label of a subset = 30 + 2 x mean(q of its samples) + N(0, 0.05), as if it were the
  mean benchmark accuracy of a model fine-tuned on that subset.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Dict, Tuple

import numpy as np

if TYPE_CHECKING:
    from selector.scoring.pool import FeaturePool


BAD_FRACTION = 0.2


def synthetic_feature_pool(n: int, seed: int = 0) -> Tuple[FeaturePool, np.ndarray, np.ndarray]:
    """(FeaturePool of ``n`` samples, ids ``"2"``..``str(n + 1)``, hidden quality per sample,
    bad mask per sample), drawn from the generative model above for ``seed``."""
    from selector.scoring.pool import FeaturePool

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


def synthetic_labels(subsets: Dict[str, list], quality_of: Dict[str, float],
                     seed: int = 0) -> Dict[str, float]:
    """The synthetic oracle's label per subset (see above), from each sample's hidden quality
    (``quality_of``: id -> q, as :func:`synthetic_feature_pool` drew it)."""
    rng = np.random.default_rng(seed + 1)
    return {name: round(30 + 2 * float(np.mean([quality_of[i] for i in members]))
                        + float(rng.normal(scale=0.05)), 4)
            for name, members in subsets.items()}
