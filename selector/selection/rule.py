"""Choosing the subset: diversity clusters, per-cluster quotas, a global top cut; and baselines.

The rule of the paper (and of the original ``selector/eval_clus.py``): for every diversity cluster,
rank its samples by score and keep the top ``max(1, int(quota_total * |cluster| / N))``; pool those,
rank again and keep ``num_samples`` (the selection size: ``--num``, ``selection.num_samples``);
output sorted by sample id. When truncated quotas leave fewer than ``num_samples`` candidates, the
best remaining samples fill up to ``num_samples`` (``fill_up``; the original returned fewer, and
reference mode keeps that behaviour). ``quota_total`` is a small surplus over ``num_samples``
(204 for 200, N = 3439) so that the global cut has something to choose from.

``truncate_scores=True`` is the original's ranking key ``int(score)``, with Python's stable sort
breaking ties by cluster-file order; the default ranks by the float score.

The rule runs on numpy arrays (stable sorts of the negated key: O(N log N), about 1 s for 1M
samples, half of it building the per-sample ``cluster_of`` map); ``select_diverse_top_k_loop``
keeps the original's Python formulation as the specification the tests compare it with, ties
included. Diversity clusters come from :mod:`.clustering`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np

from selector.core.errors import InputError


def default_quota_total(num_samples: int) -> int:
    """``num_samples`` plus a 2% surplus, rounded up: 204 for 200 (the original's constant)."""
    return num_samples + (2 * num_samples + 99) // 100


def cluster_quota(cluster_size: int, quota_total: int, pool_size: int) -> int:
    # integer floor division == the original's int(204 * size / 3439) for positive integers
    return max(1, quota_total * cluster_size // pool_size)


def id_sort_key(sample_id: str):
    """Numeric ids sort as numbers (cc_sbu_align's "2".."5000"), others after them as text."""
    return (0, int(sample_id), "") if sample_id.isdigit() else (1, 0, sample_id)


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
                         clusters: Dict[str, List[str]], num_samples: int,
                         quota_total: Optional[int] = None, truncate_scores: bool = False,
                         fill_up: bool = True) -> Selection:
    """The diversity rule, for clusters given as ``{cluster: [ids]}`` (e.g. a clusters file).
    Truncated quotas can leave fewer than ``num_samples`` candidates (the original could return
    fewer than asked); with ``fill_up`` the best remaining clustered samples fill up."""
    ids = list(ids)
    index = _index(ids)
    member_rows: List[int] = []
    member_cluster: List[int] = []
    ignored: List[str] = []
    names = list(clusters)
    for c, name in enumerate(names):
        for sample_id in clusters[name]:
            row = index.get(sample_id)
            if row is None:
                ignored.append(sample_id)
            else:
                member_rows.append(row)
                member_cluster.append(c)
    rows = np.asarray(member_rows, dtype=np.int64)
    if len(np.unique(rows)) != len(rows):
        seen = np.zeros(len(ids), dtype=bool)
        for row, c in zip(member_rows, member_cluster):
            if seen[row]:
                raise InputError(f"clusters: sample {ids[row]!r} is listed more than once "
                                 f"(again in cluster {names[c]!r})")
            seen[row] = True
    return _select(ids, scores, rows, np.asarray(member_cluster, dtype=np.int64), names,
                   num_samples, quota_total, truncate_scores, fill_up, ignored)


def select_diverse_top_k_labels(ids: Sequence[str], scores: Sequence[float],
                                labels: Sequence[int], num_samples: int,
                                quota_total: Optional[int] = None, truncate_scores: bool = False,
                                fill_up: bool = True) -> Selection:
    """The diversity rule for one cluster label per sample (e.g. spectral clustering), without
    building ``{cluster: [ids]}``: the same result as ``select_diverse_top_k(ids, scores,
    clusters_from_labels(ids, labels), ...)`` (clusters in order of first appearance, members in
    pool order)."""
    ids = list(ids)
    labels = np.asarray(labels)
    if labels.shape != (len(ids),):
        raise InputError(f"clusters: {labels.shape[0] if labels.ndim else 0} labels for a pool "
                         f"of {len(ids)} samples")
    values, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
    appearance = np.argsort(first, kind="stable")  # cluster c = values[appearance[c]]
    cluster_of_value = np.empty(len(values), dtype=np.int64)
    cluster_of_value[appearance] = np.arange(len(values))
    cluster = cluster_of_value[inverse.reshape(-1)]
    rows = np.argsort(cluster, kind="stable")  # grouped by cluster, pool order within
    names = [str(int(v)) for v in values[appearance]]
    if len(set(ids)) != len(ids):
        _index(ids)  # names the duplicate
    return _select(ids, scores, rows, cluster[rows], names, num_samples, quota_total,
                   truncate_scores, fill_up, [])


def _index(ids: List[str]) -> Dict[str, int]:
    index = {sample_id: row for row, sample_id in enumerate(ids)}
    if len(index) != len(ids):
        seen = set()
        duplicate = next(i for i in ids if i in seen or seen.add(i))
        raise InputError(f"pool: sample id {duplicate!r} appears more than once")
    return index


def _select(ids: List[str], scores: Sequence[float], rows: np.ndarray, cluster: np.ndarray,
            names: List[str], num_samples: int, quota_total: Optional[int], truncate_scores: bool,
            fill_up: bool, ignored: List[str]) -> Selection:
    """The rule on arrays, O(N log N): ``rows[j]`` is the pool row of the j-th cluster member in
    cluster-file order and ``cluster[j]`` its cluster's position in ``names``. Every ranking is a
    stable sort on the negated key, so ties keep the order the original's stable
    ``sorted(..., reverse=True)`` kept: cluster-file order within a cluster, candidate order
    (cluster by cluster) in the global cut, pool order in the fill-up."""
    _check_num_samples(num_samples)
    values = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(values) != len(ids):
        raise InputError(f"{len(values)} scores for a pool of {len(ids)} samples")
    bad = ~np.isfinite(values)
    if bad.any():
        raise InputError(f"sample {ids[int(np.flatnonzero(bad)[0])]!r} has a non-finite score "
                         f"({int(bad.sum())} such samples)")
    key = np.trunc(values) if truncate_scores else values  # int(score): truncation toward 0
    pool_size = len(ids)
    quota_total = default_quota_total(num_samples) if quota_total is None else int(quota_total)
    sizes = np.bincount(cluster, minlength=len(names))
    quota = np.maximum(1, quota_total * sizes // max(pool_size, 1))
    # members by cluster, then key descending, then cluster-file order
    order = np.lexsort((np.arange(len(rows)), -key[rows], cluster))
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    rank = np.arange(len(order)) - starts[cluster[order]]
    candidates = rows[order[rank < quota[cluster[order]]]]
    chosen = candidates[np.argsort(-key[candidates], kind="stable")[:num_samples]]
    filled = 0
    if fill_up and len(chosen) < num_samples:
        eligible = np.zeros(pool_size, dtype=bool)
        eligible[rows] = True
        eligible[chosen] = False
        rest = np.flatnonzero(eligible)  # pool order
        extra = rest[np.argsort(-key[rest], kind="stable")[:num_samples - len(chosen)]]
        chosen, filled = np.concatenate([chosen, extra]), len(extra)
    clustered = np.zeros(pool_size, dtype=bool)
    clustered[rows] = True
    name_array = np.asarray(names, dtype=object)
    return Selection(
        selected=sorted((ids[row] for row in chosen.tolist()), key=id_sort_key),
        quotas={names[c]: int(quota[c]) for c in range(len(names)) if sizes[c]},
        cluster_of=dict(zip([ids[row] for row in rows.tolist()], name_array[cluster].tolist())),
        # "k": the manifest's name for the selection size, kept for readers of its manifests
        rule={"k": num_samples, "quota_total": quota_total, "pool_size": pool_size,
              "truncate_scores": truncate_scores, "candidates": int(len(candidates)),
              "filled": int(filled)},
        ignored_cluster_ids=ignored,
        unclustered=[ids[row] for row in np.flatnonzero(~clustered).tolist()])


def select_diverse_top_k_loop(ids: Sequence[str], scores: Sequence[float],
                              clusters: Dict[str, List[str]], num_samples: int,
                              quota_total: Optional[int] = None, truncate_scores: bool = False,
                              fill_up: bool = True) -> Selection:
    """The same rule as :func:`select_diverse_top_k`, written as the original wrote it (Python
    dicts and ``sorted``). Kept as the executable specification the array version is tested
    against, and as the "before" of ``benchmarks/selection_scale.py``; not used by the pipeline.
    """
    if num_samples < 1:
        raise InputError(f"number of samples to select must be >= 1, not {num_samples}")
    score_of = dict(zip(ids, (float(s) for s in scores)))
    pool_size = len(score_of)
    quota_total = default_quota_total(num_samples) if quota_total is None else quota_total
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
    chosen = sorted(candidates, key=key, reverse=True)[:num_samples]
    filled = 0
    if fill_up and len(chosen) < num_samples:
        taken = set(chosen)
        rest = [i for i in ids if i in cluster_of and i not in taken]
        extra = sorted(rest, key=key, reverse=True)[:num_samples - len(chosen)]
        chosen, filled = chosen + extra, len(extra)
    return Selection(
        selected=sorted(chosen, key=id_sort_key), quotas=quotas, cluster_of=cluster_of,
        rule={"k": num_samples, "quota_total": quota_total, "pool_size": pool_size,
              "truncate_scores": truncate_scores, "candidates": len(candidates),
              "filled": filled},
        ignored_cluster_ids=ignored,
        unclustered=[i for i in ids if i not in cluster_of])


def _check_num_samples(num_samples: int) -> None:
    """``num_samples`` >= 1: 0 must not mean "nothing", and a negative one would slice "all but
    the last |num_samples|"."""
    if isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer)) \
            or num_samples < 1:
        raise InputError(f"number of samples to select must be a whole number >= 1, "
                         f"not {num_samples!r}")


def random_k(ids: Sequence[str], num_samples: int, seed: int = 0) -> List[str]:
    """Ablation baseline: ``num_samples`` drawn uniformly without replacement (seeded)."""
    _check_num_samples(num_samples)
    if num_samples > len(ids):
        raise InputError(f"cannot draw {num_samples} samples from a pool of {len(ids)}")
    rows = np.random.default_rng(seed).choice(len(ids), size=num_samples, replace=False)
    return sorted((ids[i] for i in rows), key=id_sort_key)


def top_k_by(ids: Sequence[str], values: Sequence[float], num_samples: int) -> List[str]:
    """Ablation baseline: the ``num_samples`` samples with the highest value of one indicator
    (stable ties)."""
    _check_num_samples(num_samples)
    if num_samples > len(ids):
        raise InputError(f"cannot select {num_samples} samples from a pool of {len(ids)}")
    order = np.argsort(-np.asarray(values, dtype=np.float64), kind="stable")[:num_samples]
    return sorted((ids[i] for i in order.tolist()), key=id_sort_key)
