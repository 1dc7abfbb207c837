"""Choosing the subset: diversity clusters, per-cluster quotas, global top-k; and baselines.

The rule of the paper (and of the original ``selector/eval_clus.py``): for every diversity cluster,
rank its samples by score and keep the top ``max(1, int(quota_total * |cluster| / N))``; pool those,
rank again and keep ``k``; output sorted by sample id. When truncated quotas leave fewer than
``k`` candidates, the best remaining samples fill up to ``k`` (the original returned fewer; reference
mode keeps that behaviour). ``quota_total`` is a small surplus over ``k``
(204 for k = 200, N = 3439) so that the global cut has something to choose from.

``truncate_scores=True`` is the original's ranking key ``int(score)``, with Python's stable sort
breaking ties by cluster-file order; the default ranks by the float score.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np

from .errors import InputError


def default_quota_total(k: int) -> int:
    """k plus a 2% surplus, rounded up: 204 for k = 200 (the original's constant)."""
    return k + (2 * k + 99) // 100


def cluster_quota(cluster_size: int, quota_total: int, pool_size: int) -> int:
    # integer floor division == the original's int(204 * size / 3439) for positive integers
    return max(1, quota_total * cluster_size // pool_size)


def id_sort_key(sample_id: str):
    """Numeric ids sort as numbers (cc_sbu_align's "2".."5000"), others after them as text."""
    return (0, int(sample_id), "") if sample_id.isdigit() else (1, 0, sample_id)


def spectral_clusters(embeddings: np.ndarray, n_clusters: int = 10, n_neighbors: int = 10,
                      seed: int = 0) -> np.ndarray:
    """Cluster labels from spectral clustering with a nearest-neighbour affinity (the paper's
    diversity step; the original used scikit-learn's defaults with ``random_state=0``)."""
    from sklearn.cluster import SpectralClustering

    n = len(embeddings)
    if n <= n_clusters:
        return np.arange(n)
    model = SpectralClustering(n_clusters=n_clusters, affinity="nearest_neighbors",
                               n_neighbors=min(n_neighbors, n - 1), random_state=seed,
                               assign_labels="kmeans")
    return model.fit_predict(np.asarray(embeddings, dtype=np.float64))


def clusters_from_labels(ids: Sequence[str], labels: Sequence[int]) -> Dict[str, List[str]]:
    """``{cluster: [ids]}`` with clusters in order of first appearance, as the original built it."""
    clusters: Dict[str, List[str]] = {}
    for sample_id, label in zip(ids, labels):
        clusters.setdefault(str(int(label)), []).append(sample_id)
    return clusters


@dataclass
class Selection:
    selected: List[str]  # sorted by id_sort_key
    quotas: Dict[str, int]
    cluster_of: Dict[str, str]
    rule: Dict[str, object] = field(default_factory=dict)
    ignored_cluster_ids: List[str] = field(default_factory=list)  # in clusters, not scored
    unclustered: List[str] = field(default_factory=list)  # scored, in no cluster


def select_diverse_top_k(ids: Sequence[str], scores: Sequence[float],
                         clusters: Dict[str, List[str]], k: int = 200,
                         quota_total: Optional[int] = None, truncate_scores: bool = False,
                         fill_to_k: bool = True) -> Selection:
    """The diversity rule. Truncated quotas can leave fewer than k candidates (the original could
    return fewer than asked); with ``fill_to_k`` the best remaining clustered samples fill up."""
    if k < 1:
        raise InputError(f"number of samples to select must be >= 1, not {k}")
    score_of = dict(zip(ids, (float(s) for s in scores)))
    pool_size = len(score_of)
    quota_total = default_quota_total(k) if quota_total is None else quota_total
    key = (lambda sample_id: int(score_of[sample_id])) if truncate_scores \
        else (lambda sample_id: score_of[sample_id])
    quotas: Dict[str, int] = {}
    cluster_of: Dict[str, str] = {}
    ignored: List[str] = []
    candidates: List[str] = []
    for name, members in clusters.items():
        known = [m for m in members if m in score_of]
        ignored.extend(m for m in members if m not in score_of)
        for member in known:
            cluster_of[member] = name
        if not known:
            continue
        quotas[name] = cluster_quota(len(known), quota_total, pool_size)
        candidates += sorted(known, key=key, reverse=True)[:quotas[name]]
    chosen = sorted(candidates, key=key, reverse=True)[:k]
    filled = 0
    if fill_to_k and len(chosen) < k:
        taken = set(chosen)
        rest = [i for i in ids if i in cluster_of and i not in taken]
        extra = sorted(rest, key=key, reverse=True)[:k - len(chosen)]
        chosen, filled = chosen + extra, len(extra)
    return Selection(
        selected=sorted(chosen, key=id_sort_key), quotas=quotas, cluster_of=cluster_of,
        rule={"k": k, "quota_total": quota_total, "pool_size": pool_size,
              "truncate_scores": truncate_scores, "candidates": len(candidates),
              "filled": filled},
        ignored_cluster_ids=ignored,
        unclustered=[i for i in ids if i not in cluster_of])


def random_k(ids: Sequence[str], k: int, seed: int = 0) -> List[str]:
    """Ablation baseline: k samples drawn uniformly without replacement (seeded)."""
    if k > len(ids):
        raise InputError(f"cannot draw {k} samples from a pool of {len(ids)}")
    rows = np.random.default_rng(seed).choice(len(ids), size=k, replace=False)
    return sorted((ids[i] for i in rows), key=id_sort_key)


def top_k_by(ids: Sequence[str], values: Sequence[float], k: int) -> List[str]:
    """Ablation baseline: the k samples with the highest value of one indicator (stable ties)."""
    order = sorted(range(len(ids)), key=lambda i: float(values[i]), reverse=True)[:k]
    return sorted((ids[i] for i in order), key=id_sort_key)
