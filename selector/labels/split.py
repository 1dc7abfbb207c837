"""The split of the pool into the paper's labelled subsets: balanced k-means++ clusters.

InstructionGPT-4 learns what a good instruction sample is from a few *labelled subsets*: the pool
is split into k (the paper: 30) k-means++ clusters of CLIP image embeddings, rebalanced to equal
size so that every label measures the same amount of fine-tuning data (original:
``cluster/kmeans++/kmeans_pp.py`` + ``average.py``). Next in the flow: :mod:`selector.labels.jobs`
exports each subset for fine-tuning, :mod:`selector.labels.collect` turns the evaluations into
labels.

k, the seed and ``drop_remainder`` have no defaults here: they are settings (``split.*`` in
``configs/pipeline/base.yaml``, the ``igpt4 split`` flags), and the caller passes them.
"""
from __future__ import annotations

from typing import Dict, List, Sequence

import numpy as np

from selector.core.errors import InputError

#: the original's k-means++ restarts (``n_init=10``): an algorithm constant, not a setting
KMEANS_N_INIT = 10

Subsets = Dict[str, List[str]]


def subset_quotas(clusters: Subsets, drop_remainder: bool) -> Dict[str, int]:
    """The size every subset is balanced to.

    ``N // k`` each; with ``drop_remainder=False`` the ``N % k`` largest clusters (ties: cluster
    order) get one more, so that sizes differ by at most one and no sample is lost. Giving the
    extra place to the largest clusters moves the fewest samples.
    """
    sizes = {name: len(members) for name, members in clusters.items()}
    total, k = sum(sizes.values()), len(sizes)
    if k == 0:
        raise InputError("balance: no clusters given")
    if total < k:
        raise InputError(f"balance: {total} samples cannot fill {k} subsets")
    base, extra = divmod(total, k)
    quotas = {name: base for name in sizes}
    if not drop_remainder:
        largest = sorted(sizes, key=lambda name: -sizes[name])[:extra]  # stable: cluster order
        for name in largest:
            quotas[name] += 1
    return quotas


def balance_clusters(clusters: Subsets, drop_remainder: bool) -> Subsets:
    """Rebalance clusters to equal size the way the original ``cluster/kmeans++/average.py`` does.

    The original walks the clusters in order; each cluster above its size gives its *first*
    members (pool order) to the clusters below their size, again in cluster order, until it is
    down to size. Moved samples are therefore not the ones nearest the receiving cluster: that is
    the original's choice, kept so that the released ``modified.json`` is reproduced exactly from
    the released ``clustering_results.json`` (tested with ``drop_remainder=True``).

    Difference from the original: it balanced to the fixed size 114 = 3439 // 30 and cut every
    cluster still above it, which dropped the 19 samples of 3439 % 30 from all subsets. Here the
    ``N % k`` largest clusters keep one more sample (sizes 114 and 115), so every sample is in
    exactly one subset; ``drop_remainder=True`` restores the original's cut.
    """
    quotas = subset_quotas(clusters, drop_remainder)
    balanced = {name: list(members) for name, members in clusters.items()}
    for donor in balanced:
        if len(balanced[donor]) <= quotas[donor]:
            continue
        for receiver in balanced:
            room = quotas[receiver] - len(balanced[receiver])
            surplus = len(balanced[donor]) - quotas[donor]
            if room > 0 and surplus > 0:
                move = min(room, surplus)
                balanced[receiver].extend(balanced[donor][:move])
                balanced[donor] = balanced[donor][move:]
            if len(balanced[donor]) <= quotas[donor]:
                break
    for name, members in balanced.items():
        del members[quotas[name]:]  # only bites with drop_remainder (the original's cut)
    return balanced


def subset_names(k: int) -> List[str]:
    """``00`` .. ``29``: zero-padded so that folders sort in subset order."""
    width = max(2, len(str(k - 1)))
    return [f"{i:0{width}d}" for i in range(k)]


def kmeans_clusters(ids: Sequence[str], embeddings: np.ndarray, k: int, seed: int,
                    n_init: int = KMEANS_N_INIT) -> Subsets:
    """Raw k-means++ clusters ``{name: [ids in pool order]}``; cluster i is named
    ``subset_names(k)[i]``.

    scikit-learn's KMeans with the original's settings (``init="k-means++"``, ``n_init=10``,
    ``random_state=seed``; the original used seed 0).
    """
    from sklearn.cluster import KMeans

    ids = [str(i) for i in ids]
    features = np.asarray(embeddings, dtype=np.float64)
    if features.ndim != 2 or features.shape[0] != len(ids):
        raise InputError(f"k-means: embeddings have shape {features.shape}, expected "
                         f"({len(ids)}, d), one row per sample id")
    if len(set(ids)) != len(ids):
        duplicate = next(i for n, i in enumerate(ids) if i in ids[:n])
        raise InputError(f"k-means: duplicate sample id {duplicate!r}")
    if not np.isfinite(features).all():
        row = int(np.flatnonzero(~np.isfinite(features).all(axis=1))[0])
        raise InputError(f"k-means: sample {ids[row]!r} has a NaN or infinite embedding")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= len(ids):
        raise InputError(f"k-means: cannot split {len(ids)} samples into {k} subsets")
    labels = KMeans(n_clusters=k, init="k-means++", n_init=n_init,
                    random_state=seed).fit_predict(features)
    names = subset_names(k)
    clusters: Subsets = {name: [] for name in names}
    for sample_id, label in zip(ids, labels):
        clusters[names[int(label)]].append(sample_id)
    return clusters


def balanced_kmeans_subsets(ids: Sequence[str], embeddings: np.ndarray, k: int, seed: int,
                            drop_remainder: bool) -> Subsets:
    """k equal-size subsets (sizes differ by at most one): k-means++ clusters of ``embeddings``,
    rebalanced by :func:`balance_clusters`. Deterministic for a seed.

    The original clustered the raw 1280-d CLIP ViT-bigG-14 image embeddings; the pool file keeps
    their pool-wide PCA (``FeaturePool.image``), which is what the CLI passes here, so the clusters
    are those of the leading principal directions of the same embeddings.
    """
    return balance_clusters(kmeans_clusters(ids, embeddings, k, seed), drop_remainder)

