"""Diversity clusters of a pool's image features: exact spectral clustering for small pools, and a
scalable approximation of it for pools of a million samples.

**Exact** (the paper's step): scikit-learn's ``SpectralClustering`` with a k-nearest-neighbour
affinity and ``random_state`` (the original ran sklearn's defaults with ``random_state=0``). It
builds the kNN graph of all N samples and solves an eigenproblem on the N x N graph Laplacian with
ARPACK in shift-invert mode, whose sparse factorisation grows faster than N: measured on 2 CPU
cores (6-dim features) 0.5-1.5 s at 3.4k samples, about 15 s at 20k, 17 minutes and 3.2 GB peak
at 50k (``benchmarks/selection_scale.py``).

**Scalable** (micro-cluster coarsening of the same graph):

1. ``MiniBatchKMeans`` splits the pool into ``micro_clusters`` small cells (fitted on a random
   sample of ``graph_samples`` rows; every row is then assigned to its nearest cell);
2. the exact method's graph (``kneighbors_graph``, self included, symmetrised) is built on the same
   random sample of rows and summed per pair of cells: ``W = P^T A P``;
3. the spectral step is solved on the cell graph: the generalised eigenproblem ``L v = lambda D v``
   of the sample graph restricted to vectors that are constant on each cell. A cell's volume is the
   sum of its samples' degrees, most of it edges *inside* the cell; scikit-learn's
   ``spectral_embedding`` drops self-loops, so the (small, dense) eigenproblem is solved with
   ``scipy.linalg.eigh`` instead;
4. ``KMeans`` (``n_init=10``, ``random_state``, as ``SpectralClustering(assign_labels="kmeans")``)
   on the cells' spectral coordinates, each cell weighted by its number of samples in the whole
   pool, so the k-means objective is the one over samples; every sample inherits its cell's label.

Past ``graph_samples`` rows only the cell assignment grows with N (linearly); the graph and the
eigenproblem keep a fixed size (the cell graph is dense: ``micro_clusters^2 x 8`` bytes, 32 MB at
2000). About 10 s and 0.4 GB for 1M samples. ``auto`` (the default) runs the exact method up to
``exact_max_samples`` (20k) samples and the scalable one above. Agreement with the exact
clustering (adjusted Rand index, 1 = the same partition): 0.83-0.86 on the released 3439
cc_sbu_align features, 0.88-0.89 on 50k synthetic samples (exact vs exact with another seed:
0.99-1.0), measured by ``benchmarks/selection_scale.py``.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np

from selector.core.errors import InputError

METHODS = ("auto", "exact", "scalable")
EXACT_MAX_SAMPLES = 20_000
MICRO_CLUSTERS = 2_000
GRAPH_SAMPLES = 100_000
MAX_MICRO_CLUSTERS = 10_000  # the cell graph is dense: 10k cells take 0.8 GB
MINI_BATCH = 16_384  # MiniBatchKMeans batch: larger batches were faster and tighter here


@dataclass
class DiversityClustering:
    labels: np.ndarray  # [N] integer cluster label per sample
    method: str  # "exact" or "scalable" (what ran, after resolving "auto")
    info: Dict[str, Any] = field(default_factory=dict)  # settings and timings, for the manifest


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


def scalable_spectral_clusters(embeddings: np.ndarray, n_clusters: int = 10,
                               n_neighbors: int = 10, seed: int = 0,
                               micro_clusters: int = MICRO_CLUSTERS,
                               graph_samples: int = GRAPH_SAMPLES,
                               timings: Optional[Dict[str, float]] = None) -> np.ndarray:
    """Spectral clustering of the micro-cluster graph (see the module docstring); labels [N]."""
    import scipy.linalg
    import scipy.sparse
    from sklearn.cluster import KMeans, MiniBatchKMeans
    from sklearn.neighbors import kneighbors_graph
    from threadpoolctl import threadpool_limits

    timings = {} if timings is None else timings
    x = np.asarray(embeddings, dtype=np.float32)
    n = len(x)
    if n <= n_clusters:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    started = time.perf_counter()
    sample = np.sort(rng.choice(n, graph_samples, replace=False)) if graph_samples < n \
        else np.arange(n)
    x_sample = x[sample]
    if micro_clusters >= n:  # one cell per sample: the exact method's eigenproblem
        cell, centres = np.arange(n), x
    else:
        cells = max(n_clusters, min(micro_clusters, len(sample)))
        # about 20 mini-batches: cells only need to be small and compact, not converged
        # (more steps changed the agreement with the exact clustering by < 0.01 ARI)
        epochs = max(2, math.ceil(20 * MINI_BATCH / len(sample)))
        kmeans = MiniBatchKMeans(n_clusters=cells, batch_size=MINI_BATCH, max_iter=epochs,
                                 random_state=seed, n_init=1,
                                 init_size=min(len(sample), 3 * cells), compute_labels=False)
        kmeans.fit(x_sample)
        timings["micro_clusters_fit"] = time.perf_counter() - started
        started = time.perf_counter()
        cell, centres = kmeans.predict(x), kmeans.cluster_centers_
    used, cell = np.unique(cell, return_inverse=True)  # drop cells no sample fell into
    centres, cells = centres[used], len(used)
    sizes = np.bincount(cell, minlength=cells).astype(np.float64)
    timings["micro_clusters_assign"] = time.perf_counter() - started

    started = time.perf_counter()
    graph = kneighbors_graph(x_sample, min(n_neighbors, len(sample) - 1), include_self=True)
    graph = 0.5 * (graph + graph.T)  # the affinity SpectralClustering builds
    member = scipy.sparse.csr_matrix((np.ones(len(sample)), (np.arange(len(sample)),
                                                             cell[sample])),
                                     shape=(len(sample), cells))
    coarse = (member.T @ graph @ member).toarray()
    # the sample graph's self-loops are not edges (scipy's Laplacian ignores them): remove them
    coarse[np.diag_indices(cells)] -= np.bincount(cell[sample], weights=graph.diagonal(),
                                                  minlength=cells)
    timings["graph"] = time.perf_counter() - started

    started = time.perf_counter()
    volume = coarse.sum(axis=1)
    live = volume > 0  # cells with sampled members; the others take their nearest live cell
    coarse, volume = coarse[np.ix_(live, live)], volume[live]
    k = min(n_clusters, len(volume))
    # L v = lambda D v  <=>  D^-1/2 W D^-1/2 u = (1 - lambda) u with v = D^-1/2 u
    scale = 1.0 / np.sqrt(volume)
    normalised = coarse * scale[:, None] * scale[None, :]
    # one BLAS thread: on this small dense problem two threads on 2 cores were 4x slower
    with threadpool_limits(limits=1, user_api="blas"):
        _, vectors = scipy.linalg.eigh(normalised,
                                       subset_by_index=[len(volume) - k, len(volume) - 1])
    coordinates = vectors * scale[:, None]
    timings["eigenproblem"] = time.perf_counter() - started

    started = time.perf_counter()
    live_labels = KMeans(n_clusters=k, random_state=seed, n_init=10).fit_predict(
        coordinates, sample_weight=sizes[live])
    cell_labels = np.empty(cells, dtype=np.int64)
    cell_labels[live] = live_labels
    if not live.all():
        from sklearn.neighbors import NearestNeighbors

        nearest = NearestNeighbors(n_neighbors=1).fit(centres[live]).kneighbors(
            centres[~live], return_distance=False)[:, 0]
        cell_labels[~live] = live_labels[nearest]
    timings["kmeans"] = time.perf_counter() - started
    return cell_labels[cell]


def resolve_method(method: str, n: int, exact_max_samples: int = EXACT_MAX_SAMPLES) -> str:
    if method not in METHODS:
        raise InputError(f"selection.clustering must be one of {', '.join(METHODS)} "
                         f"(got {method!r})")
    if method == "auto":
        return "exact" if n <= exact_max_samples else "scalable"
    return method


def _setting(settings: Mapping[str, Any], key: str, default: Any) -> Any:
    value = settings.get(key)
    return default if value is None else value


def diversity_clusters(embeddings: np.ndarray, settings: Mapping[str, Any],
                       has_image: Optional[np.ndarray] = None) -> DiversityClustering:
    """Diversity clusters from the ``selection`` settings: ``n_clusters``, ``n_neighbors``,
    ``cluster_seed``, ``clustering`` (auto | exact | scalable), ``exact_max_samples``,
    ``micro_clusters``, ``graph_samples`` (absent keys take the defaults above).

    ``has_image`` (the pool's mask, :attr:`~selector.scoring.pool.FeaturePool.has_image`): the
    text-only rows have no image features to cluster (theirs are zero), so they form one cluster
    of their own, labelled after the image clusters (``info["text_only_cluster"]``), and only the
    rows with an image are clustered. None or all True: exactly the clustering without it."""
    if has_image is not None and not np.asarray(has_image, bool).all():
        mask = np.asarray(has_image, dtype=bool)
        found = diversity_clusters(np.asarray(embeddings)[mask], settings) if mask.any() \
            else DiversityClustering(np.zeros(0, np.int64), "none", {})
        own = int(found.labels.max()) + 1 if len(found.labels) else 0
        labels = np.full(len(mask), own, dtype=np.int64)
        labels[mask] = found.labels
        return DiversityClustering(labels, found.method, {**found.info, "text_only_cluster": own,
                                                          "text_only": int((~mask).sum())})
    n = len(embeddings)
    common = {"n_clusters": int(settings.get("n_clusters", 10)),
              "n_neighbors": int(settings.get("n_neighbors", 10)),
              "seed": int(settings.get("cluster_seed", 0))}
    exact_max = int(_setting(settings, "exact_max_samples", EXACT_MAX_SAMPLES))
    method = resolve_method(str(_setting(settings, "clustering", "auto")), n, exact_max)
    info: Dict[str, Any] = {"method": method, "exact_max_samples": exact_max, **common}
    started = time.perf_counter()
    if method == "exact":
        labels = spectral_clusters(embeddings, **common)
    else:
        timings: Dict[str, float] = {}
        scalable = {"micro_clusters": int(_setting(settings, "micro_clusters", MICRO_CLUSTERS)),
                    "graph_samples": int(_setting(settings, "graph_samples", GRAPH_SAMPLES))}
        if not 1 <= scalable["micro_clusters"] <= MAX_MICRO_CLUSTERS:
            raise InputError(f"selection.micro_clusters must be in 1..{MAX_MICRO_CLUSTERS} (the "
                             f"cell graph is dense), not {scalable['micro_clusters']}")
        if scalable["graph_samples"] <= common["n_neighbors"]:
            raise InputError(f"selection.graph_samples must exceed n_neighbors "
                             f"({common['n_neighbors']}), not {scalable['graph_samples']}")
        labels = scalable_spectral_clusters(embeddings, **common, **scalable, timings=timings)
        info.update(scalable, timings={k: round(v, 3) for k, v in timings.items()})
    info["seconds"] = round(time.perf_counter() - started, 3)
    return DiversityClustering(np.asarray(labels), method, info)


def read_clusters(path: Any, pool_ids: Sequence[str], num_samples: Optional[int] = None
                  ) -> Dict[str, List[str]]:
    """A clusters file ``{cluster: [ids]}`` checked against the pool it clusters.

    An id the pool lacks is an error naming the ids, not a sample quietly dropped: a clusters file
    made for another pool (or with mistyped ids) would otherwise select fewer samples, or other
    ones, than asked. With ``num_samples``, the clusters must hold at least that many pool samples
    (the rule only selects clustered samples)."""
    from selector.scoring.pool import read_subsets

    clusters = read_subsets(path, kind="cluster")
    known = set(pool_ids)
    unknown = [sample_id for members in clusters.values() for sample_id in members
               if sample_id not in known]
    if unknown:
        shown = ", ".join(repr(sample_id) for sample_id in unknown[:5])
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        raise InputError(f"{path}: {len(unknown)} ids are not in the pool: {shown}{more} (a "
                         "clusters file may only name the pool's samples)")
    clustered = sum(len(members) for members in clusters.values())
    if num_samples is not None and clustered < num_samples:
        raise InputError(f"{path}: the clusters hold {clustered} of the pool's samples; cannot "
                         f"select {num_samples} (only clustered samples are eligible)")
    return clusters
