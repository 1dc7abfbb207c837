"""``semdedup``: SemDeDup (Abbas et al. 2023), near-duplicates dropped by embedding cosine within
clusters, then the budget filled among the kept samples.

1. The embeddings of ``space`` (``image``, ``text``, or ``both``: the L2-normalised image and
   text features side by side, normalised again, so each modality weighs half) are clustered with
   k-means (``n_clusters``; null: one cluster per ~1000 samples; ``cluster_seed``; above 20000
   samples mini-batch k-means fitted on a seeded sample of 100000, every row assigned). Clustering
   only bounds the work: duplicates are looked for within a cluster, as in SemDeDup.
2. Within a cluster, samples are ranked by cosine similarity to the (normalised) cluster centroid,
   lowest first, and a sample is dropped when its cosine with any sample ranked before it exceeds
   ``threshold`` (SemDeDup's ``1 - eps``; 0.95 is its and DataFlow's ``eps = 0.05``). This is
   SemDeDup's rule (the column maximum of the upper triangle of the similarity matrix): of every
   group of near-duplicates the one *least* similar to the centroid is kept (SemDeDup's default,
   which keeps the "harder" examples), and no two kept samples of a cluster are above the
   threshold.
3. Eligible = the kept samples; they fill the budget at random (``fill: random``, seeded by
   ``--seed``) or by an indicator (``fill: top:<indicator>``); ``--method semdedup:top:clip``
   overrides the setting.

The similarities are computed per cluster in column blocks (``block_rows x cluster`` floats at a
time, :data:`BLOCK_FLOATS`), so memory stays bounded however large a cluster is.
"""
from __future__ import annotations

import math
import warnings
from typing import Any, Dict, Optional, Tuple

import numpy as np

from selector.core.errors import InputError
from selector.selection.methods import Method, MethodInputs, MethodScores, register
from selector.selection.methods.basic import random_scores

#: the float32 values of one block of a cluster's similarity matrix (64 MiB)
BLOCK_FLOATS = 16 * 1024 * 1024
#: samples per k-means cluster when ``n_clusters`` is null
SAMPLES_PER_CLUSTER = 1000
#: above this many samples k-means runs mini-batch (scikit-learn's MiniBatchKMeans), its
#: centroids fitted on FIT_SAMPLES rows drawn with ``cluster_seed`` (1M rows in seconds)
FULL_KMEANS_MAX = 20000
FIT_SAMPLES = 100_000

SPACES = ("image", "text", "both")


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def embeddings_of(pool: Any, space: str) -> np.ndarray:
    """The L2-normalised float32 embeddings [N, d] that ``space`` compares."""
    if space not in SPACES:
        raise InputError(f"methods.semdedup.space must be one of {', '.join(SPACES)}, not "
                         f"{space!r}")
    parts = {"image": [pool.image], "text": [pool.text], "both": [pool.image, pool.text]}[space]
    if any(part.shape[1] == 0 for part in parts):
        raise InputError(f"methods.semdedup.space={space}: the pool has no {space} features")
    return _normalise(np.concatenate([_normalise(part) for part in parts], axis=1))


def kmeans_labels(embeddings: np.ndarray, n_clusters: int, seed: int) -> np.ndarray:
    """k-means labels [N] (at most as many clusters as distinct rows)."""
    from sklearn.cluster import KMeans, MiniBatchKMeans

    n = len(embeddings)
    k = int(min(n_clusters, n))
    if k <= 1:
        return np.zeros(n, dtype=np.int64)
    with warnings.catch_warnings():  # fewer distinct points than clusters: fewer clusters
        warnings.simplefilter("ignore")
        if n <= FULL_KMEANS_MAX:
            model: Any = KMeans(n_clusters=k, n_init=1, random_state=seed)
            return np.asarray(model.fit_predict(embeddings), dtype=np.int64)
        # large pools: centroids from a seeded sample, every row assigned to its nearest
        rows = np.random.default_rng(seed).choice(n, size=min(n, max(FIT_SAMPLES, 10 * k)),
                                                  replace=False)
        model = MiniBatchKMeans(n_clusters=k, n_init=1, random_state=seed, batch_size=4096)
        model.fit(embeddings[np.sort(rows)])
        return np.asarray(model.predict(embeddings), dtype=np.int64)


def deduplicate_cluster(embeddings: np.ndarray, threshold: float,
                        block_floats: int = BLOCK_FLOATS) -> np.ndarray:
    """Keep mask [n] of one cluster's normalised ``embeddings`` [n, d] (SemDeDup's rule, see the
    module docstring): ranked by cosine to the normalised centroid, lowest first; a sample is
    dropped when any sample ranked before it is above ``threshold``."""
    n = len(embeddings)
    if n <= 1:
        return np.ones(n, dtype=bool)
    centroid = embeddings.mean(axis=0)
    centroid = centroid / max(float(np.linalg.norm(centroid)), 1e-12)
    order = np.argsort(embeddings @ centroid, kind="stable")
    ranked = np.ascontiguousarray(embeddings[order])
    block = max(1, int(block_floats // n))
    nearest = np.full(n, -np.inf, dtype=np.float32)  # max cosine to an earlier-ranked sample
    for start in range(1, n, block):
        stop = min(n, start + block)
        sims = ranked[:stop] @ ranked[start:stop].T  # [stop, stop - start]: earlier rows only
        later = np.arange(stop)[:, None] >= np.arange(start, stop)[None, :]
        sims[later] = -np.inf
        # a cosine is at most 1: float32 rounding puts identical rows at 1.0000001, which
        # threshold 1 ("nothing is a duplicate") must not drop
        nearest[start:stop] = np.minimum(sims.max(axis=0), 1.0)
    keep = np.empty(n, dtype=bool)
    keep[order] = nearest <= threshold
    return keep


def semdedup_keep(embeddings: np.ndarray, labels: np.ndarray, threshold: float,
                  block_floats: int = BLOCK_FLOATS) -> np.ndarray:
    """Keep mask [N] over all clusters of ``labels``."""
    keep = np.zeros(len(embeddings), dtype=bool)
    order = np.argsort(labels, kind="stable")
    bounds = np.flatnonzero(np.diff(labels[order])) + 1
    for rows in np.split(order, bounds):
        keep[rows] = deduplicate_cluster(embeddings[rows], threshold, block_floats)
    return keep


def parse_fill(fill: str, pool: Any) -> Tuple[str, Optional[str]]:
    """``"random"`` -> ``("random", None)``; ``"top:clip"`` -> ``("top", "clip")``."""
    kind, _, name = str(fill).partition(":")
    if kind == "random" and not name:
        return "random", None
    if kind == "top" and name:
        pool.indicator(name)  # one line naming the indicators when the pool lacks it
        return "top", name
    raise InputError(f"methods.semdedup.fill must be random or top:<indicator>, not {fill!r}")


@register("semdedup")
class SemDeDup(Method):
    """Near-duplicates dropped within k-means clusters (see the module docstring)."""

    uses_seed = True  # with fill: random (details record whether the draw used it)

    def score(self, inputs: MethodInputs) -> MethodScores:
        settings: Dict[str, Any] = inputs.settings
        pool = inputs.pool
        space = str(settings.get("space", "image"))
        threshold = float(settings.get("threshold", 0.95))
        if not -1.0 < threshold <= 1.0:
            raise InputError(f"methods.semdedup.threshold must be in (-1, 1], not {threshold}")
        fill, indicator = parse_fill(inputs.argument or settings.get("fill", "random"), pool)
        embeddings = embeddings_of(pool, space)
        n_clusters = settings.get("n_clusters")
        if n_clusters is None:
            n_clusters = max(1, math.ceil(len(pool) / SAMPLES_PER_CLUSTER))
        seed = int(settings.get("cluster_seed", 0))
        labels = kmeans_labels(embeddings, int(n_clusters), seed)
        keep = semdedup_keep(embeddings, labels, threshold)
        if fill == "random":
            scores = random_scores(len(pool), inputs.seed)
        else:
            scores = pool.indicator(indicator).astype(np.float64)
        return MethodScores(scores, keep, details={
            "space": space, "threshold": threshold, "n_clusters": int(n_clusters),
            "clusters_found": int(len(np.unique(labels))), "cluster_seed": seed,
            "kept": int(keep.sum()), "dropped": int((~keep).sum()),
            "fill": fill if indicator is None else f"top:{indicator}",
            "kept_rule": "of each near-duplicate group, the sample least similar to its "
                         "cluster centroid", "uses_seed": fill == "random"})
