"""Fitting the selector on subsets with genuine labels, and leave-one-subset-out validation.

Training data: S subsets of samples (features per sample) and one label per subset (the accuracy of
a MiniGPT-4 fine-tuned on that subset). Loss: MSE between the subset's mean predicted score and its
label. The original trained 20 epochs and saved the *last* weights (its "best" bookkeeping never
fired); here the weights of the epoch with the lowest loss on held-out subsets are kept.

With 30 labels a selector can easily learn noise. :func:`cross_validate` therefore reports the
selector's leave-one-subset-out Spearman/Pearson correlation beside the same for single-indicator
baselines (the subset's mean CLIP, reward, length, GPT score) and a linear model on those means.
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch

from selector.core.errors import InputError
from selector.model.network import SelectorConfig, SelectorNet, build


@dataclass
class TrainConfig:
    epochs: int = 200
    lr: float = 0.01
    weight_decay: float = 0.0
    val_fraction: float = 0.2
    patience: int = 20  # stop after this many epochs without a better held-out loss (0 = never)
    seed: int = 42

    @classmethod
    def from_dict(cls, values: Dict[str, Any]) -> "TrainConfig":
        unknown = sorted(set(values) - set(cls.__dataclass_fields__))
        if unknown:
            raise InputError(f"unknown training setting(s): {', '.join(unknown)}")
        return cls(**values)


@dataclass
class SubsetData:
    """``features`` [S, L, in_dim] (zero-padded), ``mask`` [S, L] (True = real sample), ``labels`` [S]."""

    features: np.ndarray
    mask: np.ndarray
    labels: np.ndarray
    names: List[str]

    @classmethod
    def from_lists(cls, features: Sequence[np.ndarray], labels: Sequence[float],
                   names: Sequence[str]) -> "SubsetData":
        width = features[0].shape[1]
        longest = max(len(f) for f in features)
        padded = np.zeros((len(features), longest, width), dtype=np.float32)
        mask = np.zeros((len(features), longest), dtype=bool)
        for i, subset in enumerate(features):
            padded[i, :len(subset)] = subset
            mask[i, :len(subset)] = True
        return cls(padded, mask, np.asarray(labels, np.float32), list(names))

    @classmethod
    def from_pool(cls, pool, subsets: Sequence[Sequence[str]], labels: Sequence[float],
                  names: Sequence[str]) -> "SubsetData":
        features = pool.features
        return cls.from_lists([features[pool.positions(ids, f"subset {name}")]
                               for name, ids in zip(names, subsets)], labels, names)

    def take(self, rows: Sequence[int]) -> "SubsetData":
        rows = list(rows)
        return SubsetData(self.features[rows], self.mask[rows], self.labels[rows],
                          [self.names[i] for i in rows])

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


@dataclass
class FitResult:
    model: SelectorNet
    best_epoch: int
    history: List[Dict[str, float]] = field(default_factory=list)
    validation_names: List[str] = field(default_factory=list)


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


def fit(data: SubsetData, config: SelectorConfig, train: TrainConfig = TrainConfig(),
        progress: bool = False) -> FitResult:
    """Train a selector; deterministic on CPU for a given seed."""
    from tqdm.auto import tqdm

    if len(data) < 2:
        raise InputError(f"training needs at least 2 labelled subsets, got {len(data)}")
    rng = np.random.default_rng(train.seed)
    order = rng.permutation(len(data))
    n_val = int(round(train.val_fraction * len(data)))
    n_val = min(max(n_val, 1 if train.val_fraction > 0 else 0), len(data) - 1)
    val_rows, train_rows = sorted(order[:n_val]), sorted(order[n_val:])
    training, validation = data.take(train_rows), data.take(val_rows)

    model = build(config, seed=train.seed)
    if config.mode == "default":
        real = training.features[training.mask]
        model.set_normalisation(torch.from_numpy(real), torch.from_numpy(training.labels))
    optimiser = torch.optim.Adam(model.parameters(), lr=train.lr, weight_decay=train.weight_decay)
    target = torch.from_numpy(training.labels)
    scale = float(model.output_scale) ** 2  # losses in standardised units converge alike
    best_state, best_loss, best_epoch, history = None, float("inf"), -1, []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(train.seed)
        for epoch in tqdm(range(train.epochs), desc="training selector", disable=not progress):
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
            elif train.patience and epoch - best_epoch >= train.patience:
                break
    if best_state is None:  # every held-out loss was NaN: never hand back an untrained model
        raise InputError(f"selector training diverged: the held-out loss was not finite in any "
                         f"of {len(history)} epochs (labels or features too large for float32, "
                         f"or lr {train.lr} too high)")
    model.load_state_dict(best_state)
    return FitResult(model.eval(), best_epoch, history, validation.names)


def predict_subsets(model: SelectorNet, data: SubsetData) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        return subset_means(model, data).double().numpy()


def _correlations(name: str, predicted: np.ndarray, labels: np.ndarray) -> Dict[str, Any]:
    from scipy.stats import pearsonr, spearmanr

    if np.std(predicted) < 1e-12 or np.std(labels) < 1e-12:  # undefined, not a warning
        return {"model": name, "spearman": float("nan"), "spearman_p": float("nan"),
                "pearson": float("nan"), "pearson_p": float("nan")}
    rho, rho_p = spearmanr(predicted, labels)
    r, r_p = pearsonr(predicted, labels)
    return {"model": name, "spearman": float(rho), "spearman_p": float(rho_p),
            "pearson": float(r), "pearson_p": float(r_p)}


def indicator_means(data: SubsetData, config: SelectorConfig) -> Dict[str, np.ndarray]:
    """Per subset, the mean of each raw indicator (the single-indicator baselines)."""
    offset = config.image_dim + config.text_dim
    counts = data.mask.sum(axis=1)
    return {name: (data.features[:, :, offset + i] * data.mask).sum(axis=1) / counts
            for i, name in enumerate(config.indicator_names)}


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

    def to_dict(self) -> Dict[str, Any]:
        return {"method": "leave-one-subset-out", "rows": self.rows,
                "predictions": self.predictions, "labels": self.labels, "warning": self.warning()}


def cross_validate(data: SubsetData, config: SelectorConfig, train: TrainConfig = TrainConfig(),
                   progress: bool = True) -> CrossValidation:
    """Leave-one-subset-out: train on S-1 subsets, predict the held-out subset's mean score."""
    from sklearn.linear_model import LinearRegression
    from sklearn.model_selection import LeaveOneOut, cross_val_predict
    from tqdm.auto import tqdm

    predictions = np.zeros(len(data))
    for held_out in tqdm(range(len(data)), desc="cross-validation", disable=not progress):
        rest = [i for i in range(len(data)) if i != held_out]
        result = fit(data.take(rest), config, train)
        predictions[held_out] = predict_subsets(result.model, data.take([held_out]))[0]
    rows = [_correlations("selector (LOSO)", predictions, data.labels)]
    means = indicator_means(data, config)
    for name, values in means.items():
        rows.append(_correlations(f"mean {name}", values, data.labels))
    stacked = np.stack(list(means.values()), axis=1)
    linear = cross_val_predict(LinearRegression(), stacked, data.labels, cv=LeaveOneOut())
    rows.append(_correlations("linear on means (LOSO)", linear, data.labels))
    return CrossValidation(rows, dict(zip(data.names, predictions.tolist())),
                           dict(zip(data.names, data.labels.tolist())))


def training_metadata(result: FitResult, train: TrainConfig) -> Dict[str, Any]:
    return {"training": asdict(train), "best_epoch": result.best_epoch,
            "validation_subsets": result.validation_names,
            "final": result.history[result.best_epoch] if result.history else {}}
