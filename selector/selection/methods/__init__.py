"""Selection methods behind one protocol (issue 14): every method scores the pool's rows, and the
one keep step :func:`choose` turns scores into a selection at the same budget for all of them.

A method is a :class:`Method` subclass registered under a name (``@register("random")``); the
modules that hold them are imported lazily through :data:`MODULES`, so ``igpt4 --help`` and a
``--method random`` run never import a language model. A spec is ``NAME`` or ``NAME:ARGUMENT``
(``top:clip``, ``threshold:clip=30``, ``perplexity:low``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import numpy as np

from selector.core.errors import InputError
from selector.core.registry import Registry

# name -> module of this package that registers it (imported on first use)
MODULES: Dict[str, str] = {
    "random": "basic", "cluster-random": "basic", "top": "basic", "bottom": "basic",
    "threshold": "basic", "length": "basic",
    "perplexity": "lm", "ifd": "lm",
    "semdedup": "semdedup",
    "linear": "linear",
    "selector": "learned",
}

#: every method by name; the module holding it is imported on first use
REGISTRY = Registry("selection method", {name: f"{__name__}.{module}"
                                         for name, module in MODULES.items()})


@dataclass
class MethodInputs:
    """What a method may read. ``settings`` is its own YAML block (``methods.<name>``);
    ``selection`` the ``selection`` section (quota_total, clustering settings) for the keep
    step."""

    pool: Any  # selector.scoring.pool.FeaturePool
    num_samples: int
    seed: int
    settings: Dict[str, Any]
    argument: Optional[str] = None
    data: Any = None  # selector.data.samples.DataPool (--data), when given
    work: Optional[Path] = None
    subsets: Optional[Path] = None
    labels: Optional[Path] = None
    checkpoint: Optional[Path] = None
    loaded_model: Any = None
    selection: Dict[str, Any] = field(default_factory=dict)
    pool_path: Optional[str] = None  # named in errors
    model_keys: Any = None  # the model.* keys the user set (selector)
    all_settings: Dict[str, Any] = field(default_factory=dict)  # every section (selector)


@dataclass
class MethodScores:
    scores: np.ndarray  # float64, one per pool row; higher = keep first
    eligible: Optional[np.ndarray] = None  # bool per row; False rows are never kept
    details: Dict[str, Any] = field(default_factory=dict)  # recorded in the manifest
    # the original rule (selector, reference mode): rank by int(score), do not fill up; the one
    # case where fewer than the budget may come back, as the released selection did
    reference_rule: bool = False


class Method:
    """Base class: ``score`` returns one score per pool row (higher = keep first)."""

    name: str = ""
    uses_seed: bool = False  # True: the draw depends on --seed
    diversity: bool = False  # default of the diversity/quota step for this method

    def score(self, inputs: MethodInputs) -> MethodScores:  # pragma: no cover - abstract
        raise NotImplementedError


register = REGISTRY.register


def method_names() -> List[str]:
    """Every method a spec may name (registered or importable on demand)."""
    return REGISTRY.names()


def parse_spec(spec: str) -> Tuple[str, Optional[str]]:
    """``"top:clip"`` -> ``("top", "clip")``; ``"random"`` -> ``("random", None)``."""
    if not isinstance(spec, str) or not spec.strip():
        raise InputError(f"--method: empty method name (one of {', '.join(method_names())})")
    name, sep, argument = spec.strip().partition(":")
    name = name.strip()
    if not REGISTRY.known(name):
        raise REGISTRY.unknown(name)
    if sep and not argument.strip():
        what = "indicator" if name in ("top", "bottom", "threshold") else "argument"
        raise InputError(f"--method {spec}: empty argument after ':' (give {name}:<{what}>)")
    return name, (argument.strip() if sep else None)


def create(spec: str) -> Tuple[Method, Optional[str]]:
    """The method a spec names (its module imported on first use) and its argument."""
    name, argument = parse_spec(spec)
    return REGISTRY.create(name), argument


Clusters = Union[np.ndarray, Mapping[str, List[str]]]


def choose(method_scores: MethodScores, inputs: MethodInputs, diversity: bool,
           clusters: Optional[Clusters] = None, method: str = "method") -> Any:
    """The one keep step for every method, returning a :class:`selector.selection.rule.Selection`.

    Only eligible rows are kept; fewer eligible rows than the budget is one error line naming the
    method. Without diversity: the top ``num_samples`` by score (ties in pool order, as
    ``top_k_by``). With diversity: the paper's rule (per-cluster quotas, global cut, fill-up)
    over the diversity clusters restricted to the eligible rows; ``clusters`` is a label per pool
    row or a clusters file's ``{cluster: [ids]}``, and when absent the pool's image features are
    clustered with the ``selection`` settings. The budget is met exactly, except for the
    selector's reference rule, which keeps the original's truncated, unfilled quotas."""
    from selector.selection.rule import (Selection, id_sort_key, select_diverse_top_k,
                                         select_diverse_top_k_labels)

    pool = inputs.pool
    ids = list(pool.ids)
    num_samples = int(inputs.num_samples)
    scores = np.asarray(method_scores.scores, dtype=np.float64).reshape(-1)
    if scores.shape != (len(ids),):
        raise InputError(f"{method}: {scores.shape[0]} scores for a pool of {len(ids)} samples")
    eligible = method_scores.eligible
    if eligible is None:
        rows = np.arange(len(ids))
    else:
        eligible = np.asarray(eligible, dtype=bool).reshape(-1)
        if eligible.shape != (len(ids),):
            raise InputError(f"{method}: eligibility for {eligible.shape[0]} rows, the pool has "
                             f"{len(ids)}")
        rows = np.flatnonzero(eligible)
    if len(rows) < num_samples:
        raise InputError(f"--method {method}: only {len(rows)} of the pool's {len(ids)} samples "
                         f"are eligible, fewer than the {num_samples} to select")
    bad = ~np.isfinite(scores[rows])
    if bad.any():
        raise InputError(f"--method {method}: sample {ids[int(rows[np.flatnonzero(bad)[0]])]!r} "
                         f"has a non-finite score ({int(bad.sum())} such samples)")
    selection_settings = inputs.selection
    if not diversity:
        order = rows[np.argsort(-scores[rows], kind="stable")[:num_samples]]
        return Selection(selected=sorted((ids[i] for i in order.tolist()), key=id_sort_key),
                         quotas={}, cluster_of={},
                         rule={"k": num_samples, "diversity": False,
                               "eligible": int(len(rows)), "pool_size": len(ids)})
    reference = method_scores.reference_rule
    rule = dict(num_samples=num_samples, quota_total=selection_settings.get("quota_total"),
                truncate_scores=reference, fill_up=not reference)
    sub_ids = ids if eligible is None else [ids[i] for i in rows.tolist()]
    sub_scores = scores[rows]
    info: Optional[Dict[str, Any]] = None
    if clusters is None:
        from selector.selection.clustering import diversity_clusters

        found = diversity_clusters(pool.image, selection_settings, has_image=pool.has_image)
        clusters, info = found.labels, found.info
    if isinstance(clusters, Mapping):
        kept = set(sub_ids) if eligible is not None else None
        restricted = {name: [i for i in members if kept is None or i in kept]
                      for name, members in clusters.items()}
        selection = select_diverse_top_k(sub_ids, sub_scores, restricted, **rule)
    else:
        labels = np.asarray(clusters).reshape(-1)
        if labels.shape != (len(ids),):
            raise InputError(f"clusters: {labels.shape[0]} labels for a pool of {len(ids)} "
                             "samples")
        selection = select_diverse_top_k_labels(sub_ids, sub_scores, labels[rows], **rule)
    if info is not None:  # how the clusters were made, for the manifest
        method_scores.details.setdefault("clustering", info)
    if not reference and len(selection.selected) < num_samples:
        raise InputError(f"--method {method}: the clusters hold only {len(selection.selected)} "
                         f"eligible samples, fewer than the {num_samples} to select")
    return selection
