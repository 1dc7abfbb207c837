"""Fitting the selector on subsets with genuine labels, and leave-one-subset-out validation.

Training data (:class:`SubsetData`): S subsets of samples (features per sample) and one label per
subset (the accuracy of a MiniGPT-4 fine-tuned on that subset). Loss: MSE between the subset's
mean predicted score and its label. The original trained 20 epochs and saved the *last* weights
(its "best" bookkeeping never fired); here the weights of the epoch with the lowest loss on
held-out subsets are kept.

:class:`Selector` is the scikit-learn shaped estimator around the network of
:mod:`selector.model.network`: hyper-parameters in ``__init__`` (the ``model`` and ``training``
settings of configs/selector/default.yaml), ``fit(subsets) -> self``, learned state ending in
``_`` (the network ``model_``, the ``context_size_`` learned from the subsets, ``history_``,
``best_epoch_``), ``predict(features)`` per-sample scores of a pool, ``score(subsets)`` R^2. It
is the one way the commands train, load, score and save a selector.

With 30 labels a selector can easily learn noise. :func:`cross_validate` therefore reports the
selector's leave-one-subset-out Spearman/Pearson correlation beside the same for single-indicator
baselines (the subset's mean CLIP, reward, length, GPT score), a linear model on those means, and
two selection methods (:mod:`selector.model.baselines`): ``linear`` (ridge on the means) and
``cluster-random`` (the subset's cluster mix against the pool's); :meth:`CrossValidation.advice`
names the method to prefer when the selector does not beat them.
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from selector.core.errors import InputError
from selector.core.jsonio import PathLike
from selector.model.baselines import (CLUSTER_RANDOM_ROW, LINEAR_ROW, baseline_settings,
                                      composition_rounds, loso_linear, method_of_row)
from selector.model.network import (SelectorConfig, SelectorNet, build, load_checkpoint,
                                    save_checkpoint, score_features)

#: the ``model`` settings that are the estimator's hyper-parameters (``context_size`` is learned)
MODEL_PARAMETERS = ("mode", "n_heads", "n_layers", "residual", "score_rounds", "score_seed")
#: the ``training`` settings that are hyper-parameters too (``cross_validate`` is train-selector's
#: option, not the estimator's), in the order a checkpoint's ``metadata.training`` lists them
TRAINING_PARAMETERS = ("epochs", "lr", "weight_decay", "val_fraction", "patience", "seed")


@dataclass
class SubsetData:
    """``features`` [S, L, in_dim] (zero-padded), ``mask`` [S, L] (True = real sample),
    ``labels`` [S]. The feature columns are ``image_dim`` image features, ``text_dim`` text
    features, then one per indicator of ``indicator_names``: the layout of the pool they come
    from, which a selector fitted on them learns (and checks a pool against)."""

    features: np.ndarray
    mask: np.ndarray
    labels: np.ndarray
    names: List[str]
    image_dim: int
    text_dim: int
    indicator_names: List[str]

    def __post_init__(self) -> None:
        width = self.image_dim + self.text_dim + len(self.indicator_names)
        if self.features.shape[-1] != width:
            raise InputError(f"subsets: samples have {self.features.shape[-1]} features, but "
                             f"{self.image_dim} image + {self.text_dim} text + "
                             f"{len(self.indicator_names)} indicators make {width}")

    @classmethod
    def from_lists(cls, features: Sequence[np.ndarray], labels: Sequence[float],
                   names: Sequence[str], image_dim: int, text_dim: int,
                   indicator_names: Sequence[str]) -> "SubsetData":
        width = features[0].shape[1]
        longest = max(len(f) for f in features)
        padded = np.zeros((len(features), longest, width), dtype=np.float32)
        mask = np.zeros((len(features), longest), dtype=bool)
        for i, subset in enumerate(features):
            padded[i, :len(subset)] = subset
            mask[i, :len(subset)] = True
        return cls(padded, mask, np.asarray(labels, np.float32), list(names), image_dim,
                   text_dim, list(indicator_names))

    @classmethod
    def from_pool(cls, pool, subsets: Sequence[Sequence[str]], labels: Sequence[float],
                  names: Sequence[str], source: Optional[str] = None) -> "SubsetData":
        """``source``: the subsets file, named in the line for an id the pool lacks."""
        features = pool.features
        where = f"{source}: subset" if source else "subset"
        return cls.from_lists([features[pool.positions(ids, f"{where} {name}")]
                               for name, ids in zip(names, subsets)], labels, names,
                              pool.image.shape[1], pool.text.shape[1], pool.indicator_names)

    def take(self, rows: Sequence[int]) -> "SubsetData":
        rows = list(rows)
        return SubsetData(self.features[rows], self.mask[rows], self.labels[rows],
                          [self.names[i] for i in rows], self.image_dim, self.text_dim,
                          self.indicator_names)

    @property
    def largest(self) -> int:
        """Samples in the largest subset: the context a selector fitted on them scores in."""
        return int(self.mask.sum(axis=1).max())

    def __len__(self) -> int:
        return len(self.labels)


def subset_means(model: SelectorNet, data: SubsetData) -> torch.Tensor:
    """Mean predicted score per subset, honouring padding."""
    x = torch.from_numpy(data.features)
    mask = torch.from_numpy(data.mask)
    if model.config.mode == "reference":
        # The original fed [subsets, samples, d] to sequence-first attention: attention runs
        # across subsets at the same sample position. Reproduced as is (needs equal sizes).
        if not bool(mask.all()):
            raise InputError("reference-mode training needs subsets of equal size")
        return model(x.transpose(0, 1)).transpose(0, 1).mean(dim=1)
    scores = model(x, key_padding_mask=~mask)
    return (scores * mask).sum(dim=1) / mask.sum(dim=1)


def check_labels_vary(labels: np.ndarray, names: Sequence[str], where: str = "labels") -> None:
    """Every subset with the same label leaves nothing to learn: the loss is minimal for any
    constant score, and every correlation of the cross-validation table is undefined (NaN, with
    scipy's ConstantInputWarning). Refused rather than trained."""
    values = np.asarray(labels, dtype=np.float64)
    if len(values) and float(np.ptp(values)) == 0.0:
        raise InputError(f"{where}: all {len(values)} labelled subsets have the same label "
                         f"({values[0]:g}, e.g. subset {names[0]!r}); the selector has nothing "
                         "to learn from constant labels")
    # (checked on the whole labels file, not in fit(): one cross-validation fold may be constant)


class Selector:
    """The selector as a scikit-learn style estimator (see the module docstring).

    Every hyper-parameter is a keyword without a default: :meth:`from_settings` takes them from
    the settings (configs/selector/default.yaml under the user's), :meth:`load` from a checkpoint
    (which keeps the model settings only: its training ones are None). ``fit`` leaves them as
    they are; what it learns ends in ``_``: ``model_`` (the :class:`SelectorNet`),
    ``context_size_`` (the largest subset: the sets a pool is scored in), ``history_`` (per
    epoch ``epoch``, ``train_mse``, ``val_mse``), ``best_epoch_`` (whose weights are kept) and
    ``validation_names_`` (the held-out subsets). The scoring settings (``score_rounds``,
    ``score_seed``) are read when scoring, so a loaded selector can score with others.
    """

    def __init__(self, *, mode: str, n_heads: int, n_layers: int, residual: bool,
                 score_rounds: int, score_seed: int, epochs: Optional[int],
                 lr: Optional[float], weight_decay: Optional[float],
                 val_fraction: Optional[float], patience: Optional[int],
                 seed: Optional[int]) -> None:
        self.mode = mode
        self.n_heads = n_heads
        self.n_layers = n_layers
        self.residual = residual
        self.score_rounds = score_rounds
        self.score_seed = score_seed
        self.epochs = epochs
        self.lr = lr
        self.weight_decay = weight_decay
        self.val_fraction = val_fraction
        self.patience = patience  # epochs without a better held-out loss to stop after (0: never)
        self.seed = seed

    @classmethod
    def from_settings(cls, settings: Dict[str, Any]) -> "Selector":
        """An unfitted selector of the ``model`` and ``training`` settings (``model.context_size``
        is learned by :meth:`fit`, ``training.cross_validate`` is train-selector's)."""
        model = {k: v for k, v in settings["model"].items() if k != "context_size"}
        training = {k: v for k, v in settings["training"].items() if k != "cross_validate"}
        for values, known, what in ((model, MODEL_PARAMETERS, "selector"),
                                    (training, TRAINING_PARAMETERS, "training")):
            unknown = sorted(set(values) - set(known))
            if unknown:
                raise InputError(f"unknown {what} setting(s): {', '.join(unknown)}")
            missing = [name for name in known if name not in values]
            if missing:
                raise InputError(f"missing {what} setting(s): {', '.join(missing)}")
        return cls(**model, **training)

    def hyper_parameters(self) -> Dict[str, Any]:
        """``{name: value}`` of every hyper-parameter (scikit-learn's ``get_params``)."""
        return {name: getattr(self, name) for name in MODEL_PARAMETERS + TRAINING_PARAMETERS}

    def clone(self) -> "Selector":
        """An unfitted selector with the same hyper-parameters (scikit-learn's ``clone``)."""
        return Selector(**self.hyper_parameters())

    # --- fitting ------------------------------------------------------------------------------

    def _network_config(self, data: SubsetData) -> SelectorConfig:
        return SelectorConfig(image_dim=data.image_dim, text_dim=data.text_dim,
                              indicator_names=list(data.indicator_names), n_heads=self.n_heads,
                              n_layers=self.n_layers, residual=self.residual, mode=self.mode,
                              context_size=data.largest, score_rounds=self.score_rounds,
                              score_seed=self.score_seed)

    def fit(self, data: SubsetData, progress: bool = False) -> "Selector":
        """Train on labelled subsets; deterministic on CPU for a given seed. Returns self."""
        from tqdm.auto import tqdm

        config = self._network_config(data)
        unset = [name for name in TRAINING_PARAMETERS if getattr(self, name) is None]
        if unset:
            raise InputError(f"training setting(s) {', '.join(unset)} not set (a selector read "
                             "from a checkpoint keeps only its model settings)")
        if len(data) < 2:
            raise InputError(f"training needs at least 2 labelled subsets, got {len(data)}")
        rng = np.random.default_rng(self.seed)
        order = rng.permutation(len(data))
        n_val = int(round(self.val_fraction * len(data)))
        n_val = min(max(n_val, 1 if self.val_fraction > 0 else 0), len(data) - 1)
        val_rows, train_rows = sorted(order[:n_val]), sorted(order[n_val:])
        training, validation = data.take(train_rows), data.take(val_rows)

        model = build(config, seed=self.seed)
        if config.mode == "default":
            real = training.features[training.mask]
            model.set_normalisation(torch.from_numpy(real), torch.from_numpy(training.labels))
        optimiser = torch.optim.Adam(model.parameters(), lr=self.lr,
                                     weight_decay=self.weight_decay)
        target = torch.from_numpy(training.labels)
        scale = float(model.output_scale) ** 2  # losses in standardised units converge alike
        best_state, best_loss, best_epoch, history = None, float("inf"), -1, []
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            for epoch in tqdm(range(self.epochs), desc="training selector", disable=not progress):
                model.train()
                optimiser.zero_grad()
                loss = torch.nn.functional.mse_loss(subset_means(model, training), target) / scale
                loss.backward()
                optimiser.step()
                record = {"epoch": epoch, "train_mse": loss.item() * scale}
                held_out = validation if len(validation) else training
                model.eval()
                with torch.no_grad():
                    val_mse = float(torch.nn.functional.mse_loss(
                        subset_means(model, held_out), torch.from_numpy(held_out.labels)))
                record["val_mse"] = val_mse
                history.append(record)
                if val_mse < best_loss:
                    best_loss, best_epoch = val_mse, epoch
                    best_state = copy.deepcopy(model.state_dict())
                elif self.patience and epoch - best_epoch >= self.patience:
                    break
        if best_state is None:  # every held-out loss was NaN: never hand back an untrained model
            raise InputError(f"selector training diverged: the held-out loss was not finite in "
                             f"any of {len(history)} epochs (labels or features too large for "
                             f"float32, or lr {self.lr} too high)")
        model.load_state_dict(best_state)
        self.model_ = model.eval()
        self.context_size_ = config.context_size
        self.history_ = history
        self.best_epoch_ = best_epoch
        self.validation_names_ = validation.names
        return self

    def training_metadata(self) -> Dict[str, Any]:
        """What a fitted selector's checkpoint and training report record of its training."""
        self._check_fitted("training_metadata")
        return {"training": {name: getattr(self, name) for name in TRAINING_PARAMETERS},
                "best_epoch": self.best_epoch_, "validation_subsets": self.validation_names_,
                "final": self.history_[self.best_epoch_]}

    # --- using a fitted selector --------------------------------------------------------------

    def _check_fitted(self, what: str) -> None:
        if not hasattr(self, "model_"):
            raise InputError(f"Selector.{what}: this selector is not fitted yet (call fit() "
                             "first, or read one with Selector.load)")

    @property
    def config_(self) -> SelectorConfig:
        """The fitted network's config with this selector's scoring settings (checked): what
        :meth:`predict` scores with and :meth:`save` records."""
        self._check_fitted("config_")
        return dataclasses.replace(self.model_.config, score_rounds=self.score_rounds,
                                   score_seed=self.score_seed)

    def check_fits(self, image_dim: int, text_dim: int, indicator_names: Sequence[str],
                   source: str) -> None:
        """Refuse features laid out otherwise than those the selector was fitted on."""
        config = self.config_
        if (image_dim, text_dim) != (config.image_dim, config.text_dim):
            raise InputError(f"{source}: features are {image_dim}+{text_dim} wide; the selector "
                             f"was trained on {config.image_dim}+{config.text_dim}")
        if list(indicator_names) != list(config.indicator_names):
            raise InputError(f"{source}: indicators {', '.join(indicator_names)} differ from the "
                             f"selector's {', '.join(config.indicator_names)}")

    def predict(self, features: np.ndarray, progress: bool = False) -> np.ndarray:
        """Per-sample float64 scores [N] of a pool's ``features`` [N, in_dim] (see
        :func:`selector.model.network.score_features`)."""
        config = self.config_
        return score_features(self.model_, features, progress=progress,
                              score_rounds=config.score_rounds, score_seed=config.score_seed)

    def predict_subsets(self, data: SubsetData) -> np.ndarray:
        """Per subset, the mean predicted score of its samples (what its label is fitted to)."""
        self.check_fits(data.image_dim, data.text_dim, data.indicator_names, "subsets")
        self.model_.eval()
        with torch.no_grad():
            return subset_means(self.model_, data).double().numpy()

    def score(self, data: SubsetData) -> float:
        """The coefficient of determination R^2 of :meth:`predict_subsets` against the subsets'
        labels (scikit-learn's regressor ``score``): 1 is perfect, 0 no better than the mean
        label; NaN for fewer than 2 subsets."""
        from sklearn.metrics import r2_score

        predicted = self.predict_subsets(data)
        if len(data) < 2:
            return float("nan")
        return float(r2_score(data.labels.astype(np.float64), predicted))

    # --- checkpoints --------------------------------------------------------------------------

    def save(self, folder: PathLike, metadata: Optional[Dict[str, Any]] = None) -> None:
        """Write ``selector.safetensors`` + ``selector.json`` (the config of :attr:`config_`)."""
        config = self.config_  # (refuses an unfitted selector)
        save_checkpoint(self.model_, folder, metadata, config=config)

    @classmethod
    def load(cls, path: PathLike) -> "Selector":
        """A fitted selector from our checkpoint folder or a released ``.pth`` file."""
        return cls.from_network(load_checkpoint(path))

    @classmethod
    def from_network(cls, model: SelectorNet) -> "Selector":
        """A fitted selector around a loaded network: the model hyper-parameters and
        ``context_size_`` from its config; no training settings (a checkpoint does not need
        them to score)."""
        config = model.config
        selector = cls(**{name: getattr(config, name) for name in MODEL_PARAMETERS},
                       **{name: None for name in TRAINING_PARAMETERS})
        selector.model_ = model.eval()
        selector.context_size_ = config.context_size
        return selector


def _correlations(name: str, predicted: np.ndarray, labels: np.ndarray) -> Dict[str, Any]:
    from scipy.stats import pearsonr, spearmanr

    if np.std(predicted) < 1e-12 or np.std(labels) < 1e-12:  # undefined, not a warning
        return {"model": name, "spearman": float("nan"), "spearman_p": float("nan"),
                "pearson": float("nan"), "pearson_p": float("nan")}
    rho, rho_p = spearmanr(predicted, labels)
    r, r_p = pearsonr(predicted, labels)
    return {"model": name, "spearman": float(rho), "spearman_p": float(rho_p),
            "pearson": float(r), "pearson_p": float(r_p)}


def indicator_means(data: SubsetData) -> Dict[str, np.ndarray]:
    """Per subset, the mean of each raw indicator (the single-indicator baselines)."""
    offset = data.image_dim + data.text_dim
    counts = data.mask.sum(axis=1)
    return {name: (data.features[:, :, offset + i] * data.mask).sum(axis=1) / counts
            for i, name in enumerate(data.indicator_names)}


@dataclass
class CrossValidation:
    rows: List[Dict[str, Any]]
    predictions: Dict[str, float]
    labels: Dict[str, float]

    @property
    def selector(self) -> Dict[str, Any]:
        return self.rows[0]

    def warning(self) -> Optional[str]:
        row = self.selector
        n = len(self.labels)
        if not np.isfinite(row["spearman"]) or row["spearman_p"] >= 0.05 or row["spearman"] <= 0:
            return (f"warning: the selector's leave-one-subset-out ranking of the {n} subsets is not "
                    f"significantly better than chance (Spearman {row['spearman']:.3f}, "
                    f"p = {row['spearman_p']:.3g}); with {n} labels it may have learnt noise")
        best_baseline = max((r for r in self.rows[1:] if np.isfinite(r["spearman"])),
                            key=lambda r: r["spearman"], default=None)
        if best_baseline and best_baseline["spearman"] >= row["spearman"]:
            return (f"warning: the baseline '{best_baseline['model']}' ranks the held-out subsets as "
                    f"well as the selector (Spearman {best_baseline['spearman']:.3f} vs "
                    f"{row['spearman']:.3f})")
        return None

    def table(self) -> str:
        lines = [f"{'model':<24} {'spearman':>9} {'p':>8} {'pearson':>9} {'p':>8}"]
        for row in self.rows:
            lines.append(f"{row['model']:<24} {row['spearman']:>9.3f} {row['spearman_p']:>8.3g} "
                         f"{row['pearson']:>9.3f} {row['pearson_p']:>8.3g}")
        return "\n".join(lines)

    def advice(self) -> Optional[str]:
        """The selection method to prefer when one ranks the held-out subsets at least as well
        as the selector (the best positive row that is a method: ``mean X`` is ``top:X``); random
        when that row is no better than chance itself (p >= 0.05), or when neither the selector
        nor any method beats chance; None otherwise."""
        rho = self.selector["spearman"]
        finite = bool(np.isfinite(rho))
        candidates = [(r, method_of_row(r["model"])) for r in self.rows[1:]]
        candidates = [(r, m) for r, m in candidates
                      if m is not None and np.isfinite(r["spearman"]) and r["spearman"] > 0]
        best = max(candidates, key=lambda c: c[0]["spearman"], default=None)
        if best is not None and (not finite or best[0]["spearman"] >= rho):
            row, method = best
            verb = "beats" if not finite or row["spearman"] > rho else "matches"
            said = (f"warning: {method} (Spearman {row['spearman']:.3f}) {verb} the selector "
                    f"({rho:.3f}) in cross-validation")
            if not row["spearman_p"] < 0.05:  # (NaN p: not significant either)
                return (f"{said}, but is no better than chance itself (p = "
                        f"{row['spearman_p']:.3g}): prefer --method random")
            return f"{said}: prefer --method {method}"
        if best is None and (not finite or rho <= 0):
            return (f"warning: neither the selector (Spearman {rho:.3f}) nor any method of the "
                    "table ranks the held-out subsets better than chance: prefer --method random")
        return None

    def to_dict(self) -> Dict[str, Any]:
        return {"method": "leave-one-subset-out", "rows": self.rows,
                "predictions": self.predictions, "labels": self.labels, "warning": self.warning(),
                "advice": self.advice()}


def linear_row(data: SubsetData, alpha: float) -> Tuple[Dict[str, Any], np.ndarray]:
    """The ``linear`` method's leave-one-subset-out row and predictions: a ridge model on the
    subsets' indicator means (:func:`selector.model.baselines.loso_linear`)."""
    stacked = np.stack(list(indicator_means(data).values()), axis=1)
    predictions = loso_linear(stacked, data.labels, alpha)
    return _correlations(LINEAR_ROW, predictions, data.labels), predictions


def cluster_random_row(data: SubsetData, n_clusters: int, seed: int) -> Dict[str, Any]:
    """The ``cluster-random`` row: how well a subset's cluster mix matching the pool's (the mix a
    cluster-random draw has) ranks the subsets (:mod:`selector.model.baselines`), on the image
    features; ``spearman_spread`` is the standard deviation of the Spearman of each clustering
    alone (a random score's is about 1/sqrt(S - 1))."""
    rounds = composition_rounds(data.features[:, :, :data.image_dim], data.mask, n_clusters, seed)
    row = _correlations(CLUSTER_RANDOM_ROW, rounds.mean(axis=0), data.labels)
    alone = [_correlations("", r, data.labels)["spearman"] for r in rounds]
    finite = [value for value in alone if np.isfinite(value)]
    row["spearman_spread"] = float(np.std(finite)) if finite else float("nan")
    return row


def cross_validate(data: SubsetData, selector: Selector, progress: bool = True,
                   settings: Optional[Dict[str, Any]] = None) -> CrossValidation:
    """Leave-one-subset-out: fit a clone of ``selector`` (its hyper-parameters) on S-1
    subsets, predict the held-out subset's mean score. The ``linear`` and ``cluster-random``
    rows take their settings from ``settings`` (:func:`baseline_settings`)."""
    from sklearn.linear_model import LinearRegression
    from sklearn.model_selection import LeaveOneOut, cross_val_predict
    from tqdm.auto import tqdm

    predictions = np.zeros(len(data))
    for held_out in tqdm(range(len(data)), desc="cross-validation", disable=not progress):
        rest = [i for i in range(len(data)) if i != held_out]
        fitted = selector.clone().fit(data.take(rest))
        predictions[held_out] = fitted.predict_subsets(data.take([held_out]))[0]
    rows = [_correlations("selector (LOSO)", predictions, data.labels)]
    means = indicator_means(data)
    for name, values in means.items():
        rows.append(_correlations(f"mean {name}", values, data.labels))
    stacked = np.stack(list(means.values()), axis=1)
    linear = cross_val_predict(LinearRegression(), stacked, data.labels, cv=LeaveOneOut())
    rows.append(_correlations("linear on means (LOSO)", linear, data.labels))
    alpha, n_clusters, cluster_seed = baseline_settings(settings)
    rows.append(linear_row(data, alpha)[0])
    rows.append(cluster_random_row(data, n_clusters, cluster_seed))
    return CrossValidation(rows, dict(zip(data.names, predictions.tolist())),
                           dict(zip(data.names, data.labels.tolist())))
