"""The methods the selector is compared with in cross-validation, as plain functions of subset means.

Two rows of train-selector's leave-one-subset-out table are selection methods of their own
(``igpt4 select --method ...``), so the table and the method share one implementation here:

- ``linear``: a ridge model on the indicators. Inputs are the subsets' mean indicator values,
  standardised (over the subsets it is fitted on); the target is the subset labels. Because the
  model is linear, applying it to one sample's indicator values scores that sample, and the mean
  of a subset's sample scores is exactly the model's prediction for the subset: the same relation
  between samples and subsets as the selector's (a subset's label ~ the mean of its scores).
- ``cluster-random``: random samples drawn with the selector's per-cluster quotas. The expected
  correlation of a random score with anything is 0, so a row of random scores measures nothing
  but noise. What cluster-random adds over random is its *composition*: its draw mirrors the
  pool's mix of clusters. Its row therefore asks whether subsets whose cluster mix is closer to
  the pool's score better: each subset is scored by minus the total-variation distance between
  its cluster histogram and that of all labelled samples together (0 = exactly the mix a
  cluster-random draw has). It uses no labels, so, like the single-indicator rows, it needs no
  held-out fitting.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np


@dataclass
class LinearFit:
    """A fitted ridge model on standardised indicators, in raw units for scoring samples:
    ``score = intercept + values @ coefficients``."""

    names: List[str]
    alpha: float
    mean: np.ndarray  # [k] of the standardiser (the subsets' means)
    scale: np.ndarray  # [k] (1 where a column is constant)
    standardised: np.ndarray  # [k] ridge coefficients on standardised inputs
    ridge_intercept: float

    @property
    def coefficients(self) -> np.ndarray:
        """Per indicator, the score's change for one raw unit of it."""
        return self.standardised / self.scale

    @property
    def intercept(self) -> float:
        return float(self.ridge_intercept - np.sum(self.coefficients * self.mean))

    def predict(self, values: np.ndarray) -> np.ndarray:
        """float64 scores of rows of indicator values [N, k] (subset means or single samples)."""
        x = (np.asarray(values, dtype=np.float64) - self.mean) / self.scale
        return x @ self.standardised + self.ridge_intercept

    def to_dict(self) -> Dict[str, object]:
        return {"alpha": self.alpha, "intercept": self.intercept,
                "coefficients": dict(zip(self.names, self.coefficients.tolist())),
                "standardised_coefficients": dict(zip(self.names, self.standardised.tolist()))}


def fit_linear(means: np.ndarray, labels: Sequence[float], alpha: float,
               names: Sequence[str]) -> LinearFit:
    """Ridge (scikit-learn ``StandardScaler`` + ``Ridge(alpha)``) of ``labels`` [S] on
    ``means`` [S, k]."""
    from sklearn.linear_model import Ridge
    from sklearn.preprocessing import StandardScaler

    x = np.asarray(means, dtype=np.float64)
    scaler = StandardScaler().fit(x)
    ridge = Ridge(alpha=float(alpha)).fit(scaler.transform(x), np.asarray(labels, np.float64))
    return LinearFit(list(names), float(alpha), scaler.mean_.copy(), scaler.scale_.copy(),
                     np.asarray(ridge.coef_, np.float64).copy(), float(ridge.intercept_))


def loso_linear(means: np.ndarray, labels: Sequence[float], alpha: float) -> np.ndarray:
    """Leave-one-subset-out predictions [S]: each subset predicted by the ridge model fitted on
    the others (standardiser included)."""
    x = np.asarray(means, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    names = [str(i) for i in range(x.shape[1])]
    predictions = np.zeros(len(y))
    for held_out in range(len(y)):
        rest = np.arange(len(y)) != held_out
        predictions[held_out] = fit_linear(x[rest], y[rest], alpha, names).predict(
            x[held_out:held_out + 1])[0]
    return predictions


#: clusterings the cluster-random row averages over (one k-means draw is too noisy a predictor:
#: on the 30 released subsets one clustering's Spearman ranges over -0.15..0.26 with the seed
#: alone; the mean of 5 gives 0.04..0.07 for base seeds 0, 5, 10)
COMPOSITION_ROUNDS = 5


def composition_rounds(embeddings: np.ndarray, mask: np.ndarray, n_clusters: int, seed: int,
                       rounds: int = COMPOSITION_ROUNDS) -> np.ndarray:
    """[rounds, S]: per clustering and subset, minus the total-variation distance between the
    subset's cluster histogram and that of all real samples together (``embeddings`` [S, L, d],
    ``mask`` [S, L]). Clustering r: k-means (scikit-learn, ``random_state=seed + r``) on the
    L2-normalised embeddings of every real sample, ``n_clusters`` clusters (at most the number
    of distinct samples). The row's predictor is their mean (:func:`composition_scores`)."""
    import warnings

    from sklearn.cluster import KMeans

    subsets = embeddings.shape[0]
    real = np.asarray(embeddings[mask], dtype=np.float64)
    if real.shape[1] == 0:
        return np.zeros((rounds, subsets))
    norms = np.linalg.norm(real, axis=1, keepdims=True)
    real = real / np.where(norms > 0, norms, 1.0)
    k = int(min(n_clusters, len(np.unique(np.round(real, 12), axis=0))))
    if k <= 1:
        return np.zeros((rounds, subsets))
    owner = np.repeat(np.arange(subsets), mask.sum(axis=1))
    result = np.zeros((rounds, subsets))
    for r in range(rounds):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            labels = KMeans(n_clusters=k, n_init=1, random_state=seed + r).fit_predict(real)
        counts = np.zeros((subsets, k))
        np.add.at(counts, (owner, labels), 1.0)
        shares = counts / counts.sum(axis=1, keepdims=True)
        overall = counts.sum(axis=0) / counts.sum()
        result[r] = -0.5 * np.abs(shares - overall).sum(axis=1)
    return result


def composition_scores(embeddings: np.ndarray, mask: np.ndarray, n_clusters: int,
                       seed: int) -> np.ndarray:
    """Per subset, the mean over :data:`COMPOSITION_ROUNDS` clusterings of
    :func:`composition_rounds`: the cluster-random row's predictor (higher = closer to the mix a
    cluster-random draw has)."""
    return composition_rounds(embeddings, mask, n_clusters, seed).mean(axis=0)


#: the rows of the table that are selection methods of their own (besides ``mean X``: ``top:X``)
LINEAR_ROW = "linear (ridge, LOSO)"
CLUSTER_RANDOM_ROW = "cluster-random (mix)"


def method_of_row(name: str) -> Optional[str]:
    """The ``--method`` spec a row of the table stands for (None: no method, e.g. the OLS row)."""
    if name == LINEAR_ROW:
        return "linear"
    if name == CLUSTER_RANDOM_ROW:
        return "cluster-random"
    if name.startswith("mean "):
        return f"top:{name[len('mean '):]}"
    return None


def baseline_settings(settings: Optional[Dict[str, Any]] = None) -> Tuple[float, int, int]:
    """``(methods.linear.alpha, selection.n_clusters, selection.cluster_seed)`` of ``settings``
    (the selector settings), the shipped values where absent."""
    from selector.core.settings import shipped

    def value(*key: str) -> Any:
        node: Any = settings
        for name in key:
            node = node.get(name) if isinstance(node, dict) else None
        return shipped("selector/default.yaml", *key) if node is None else node

    return (float(value("methods", "linear", "alpha")), int(value("selection", "n_clusters")),
            int(value("selection", "cluster_seed")))
