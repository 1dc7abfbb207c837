"""The self-attention data selector.

Per sample the input is ``[image features, text features, indicator scores]``; two layers of
multi-head self-attention, each followed by a linear layer (residual ``x + attn(x)``), then a linear
head to one score. Attention runs *within sets* of samples; how samples are grouped into sets is
what the two modes differ in:

* ``reference`` reproduces the released InstructionGPT-4 selector exactly: sequence-first attention
  modules, inputs unstandardised and scaled as the original (``10 * reward``, ``10 * length``), and at
  scoring time the whole pool is one sequence, so every sample attends to every other one
  (memory O(N^2)).
* ``default`` fixes that: inputs and labels standardised with statistics of the training data,
  and the pool is scored in random sets of ``context_size`` samples (the subset size the selector
  was trained on), averaged over ``score_rounds`` random partitions, so time and memory grow
  linearly with the pool. Scores stay floats.

Our own checkpoints are a folder with ``selector.safetensors`` and ``selector.json`` (the config).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import torch
from torch import nn

from selector.core.errors import InputError
from selector.scoring.reference import REFERENCE_INDICATORS
from selector.core.jsonio import PathLike, read_json, write_json

MODES = ("default", "reference")
#: The released ``best_model.pth`` holds weights only; these settings describe the network it
#: was saved from (4 heads, residual attention, trained on subsets of 114 samples). The two
#: scoring settings are not used in reference mode (the whole pool is one sequence); they are
#: the values every earlier version gave a released checkpoint, so its records stay the same.
RELEASED_SETTINGS: Dict[str, Any] = {"n_heads": 4, "residual": True, "context_size": 114,
                                     "score_rounds": 4, "score_seed": 0}
#: The original multiplied these indicators by 10 before the network.
REFERENCE_INDICATOR_SCALE = {"clip": 1.0, "reward": 10.0, "length": 10.0, "gpt": 1.0}
WEIGHTS_FILE, CONFIG_FILE = "selector.safetensors", "selector.json"


@dataclass
class SelectorConfig:
    """A selector network's settings, as its checkpoint's ``selector.json`` holds them (in this
    field order). No defaults: the shipped ones live in configs/selector/default.yaml, the
    feature widths and ``context_size`` are learned from the data
    (:class:`selector.model.training.Selector`), and a released ``.pth`` gets its own
    (:data:`RELEASED_SETTINGS`)."""

    image_dim: int
    text_dim: int
    indicator_names: List[str]
    n_heads: int
    n_layers: int
    residual: bool
    mode: str
    context_size: int
    score_rounds: int
    score_seed: int

    def __post_init__(self) -> None:
        self._check_types()
        if self.mode not in MODES:
            raise InputError(f"selector mode must be one of {', '.join(MODES)}, not {self.mode!r}")
        if self.mode == "reference":
            if list(self.indicator_names) != list(REFERENCE_INDICATORS):
                raise InputError("reference mode needs the indicators clip, reward, length, gpt "
                                 f"in that order (got {', '.join(self.indicator_names)})")
            if self.d_model != self.in_dim:
                raise InputError(f"reference mode: {self.n_heads} heads do not divide the input "
                                 f"width {self.in_dim}")
        for name in ("n_heads", "n_layers", "context_size", "score_rounds"):
            if int(getattr(self, name)) < 1:
                raise InputError(f"selector setting {name} must be >= 1")

    def _check_types(self) -> None:
        """Types first: a checkpoint's JSON or a settings dict may hold anything."""
        for name in ("image_dim", "text_dim", "n_heads", "n_layers", "context_size",
                     "score_rounds", "score_seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InputError(f"selector setting {name} must be a non-negative integer "
                                 f"(got {value!r})")
        if not isinstance(self.residual, bool):
            raise InputError(f"selector setting residual must be true or false "
                             f"(got {self.residual!r})")
        names = self.indicator_names
        if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
            raise InputError(f"selector setting indicator_names must be a list of names "
                             f"(got {names!r})")
        if not isinstance(self.mode, str):
            raise InputError(f"selector setting mode must be a string (got {self.mode!r})")
        if self.in_dim < 1:
            raise InputError("selector: no input features (image_dim + text_dim + indicators "
                             "is 0)")

    @property
    def in_dim(self) -> int:
        return self.image_dim + self.text_dim + len(self.indicator_names)

    @property
    def d_model(self) -> int:
        """Input width padded with zero columns to a multiple of ``n_heads``."""
        return int(math.ceil(self.in_dim / self.n_heads) * self.n_heads)

    @classmethod
    def from_dict(cls, values: Dict[str, Any]) -> "SelectorConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise InputError(f"unknown selector setting(s): {', '.join(unknown)}")
        return cls(**values)


class SelectorNet(nn.Module):
    """Scores each sample of each set: ``forward(x[B, L, in_dim]) -> scores[B, L]``.

    Attention runs along L within each of the B sets. Module names match the released checkpoint
    (``multihead_attns``, ``linears``, ``linear``) so it loads by stripping ``module.``.
    """

    def __init__(self, config: SelectorConfig) -> None:
        super().__init__()
        self.config = config
        batch_first = config.mode == "default"
        d = config.d_model
        self.multihead_attns = nn.ModuleList(
            nn.MultiheadAttention(d, config.n_heads, batch_first=batch_first)
            for _ in range(config.n_layers))
        self.linears = nn.ModuleList(nn.Linear(d, d) for _ in range(config.n_layers))
        self.linear = nn.Linear(d, 1)
        # x_in = (x - input_shift) * input_scale; score = head * output_scale + output_shift
        self.register_buffer("input_shift", torch.zeros(config.in_dim))
        self.register_buffer("input_scale", self._reference_input_scale(config))
        self.register_buffer("output_shift", torch.zeros(()))
        self.register_buffer("output_scale", torch.ones(()))

    @staticmethod
    def _reference_input_scale(config: SelectorConfig) -> torch.Tensor:
        scale = torch.ones(config.in_dim)
        if config.mode == "reference":
            offset = config.image_dim + config.text_dim
            for i, name in enumerate(config.indicator_names):
                scale[offset + i] = REFERENCE_INDICATOR_SCALE[name]
        return scale

    def set_normalisation(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        """Default mode: standardise inputs and labels with statistics of the training data."""
        std = features.std(dim=0)
        self.input_shift.copy_(features.mean(dim=0))
        self.input_scale.copy_(torch.where(std > 1e-8, 1.0 / std, torch.ones_like(std)))
        label_std = labels.std() if labels.numel() > 1 else torch.tensor(1.0)
        self.output_shift.copy_(labels.mean())
        self.output_scale.copy_(label_std if label_std > 1e-8 else torch.tensor(1.0))

    def forward(self, x: torch.Tensor, key_padding_mask: Optional[torch.Tensor] = None,
                query_chunk: Optional[int] = None, progress: bool = False) -> torch.Tensor:
        """``query_chunk`` (reference mode, scoring): attend for that many query positions at a
        time, each against the whole sequence, so memory is O(query_chunk x L) instead of
        O(L x L); the result is the same (each query's attention row is computed the same way).
        ``progress`` shows a bar over those chunks (O(L^2) time: minutes past ~50k samples)."""
        x = (x - self.input_shift) * self.input_scale
        pad = self.config.d_model - self.config.in_dim
        if pad:
            x = nn.functional.pad(x, (0, pad))
        reference = self.config.mode == "reference"
        if reference:  # sequence-first modules, as the original
            x = x.transpose(0, 1)
        chunk = query_chunk if reference and query_chunk and query_chunk < len(x) else None
        for layer, (attention, linear) in enumerate(zip(self.multihead_attns, self.linears)):
            # reference: the original's call (need_weights=True takes the same kernel path)
            if chunk is None:
                attended, _ = attention(x, x, x, key_padding_mask=key_padding_mask,
                                        need_weights=reference)
            else:
                from tqdm.auto import tqdm

                starts = tqdm(range(0, len(x), chunk), disable=not progress,
                              desc=f"whole-pool attention, layer {layer + 1}")
                attended = torch.cat([attention(x[start:start + chunk], x, x,
                                                key_padding_mask=key_padding_mask,
                                                need_weights=True)[0] for start in starts])
            x = x + attended if self.config.residual else attended
            x = linear(x) if self.config.n_layers > 1 else x
        scores = self.linear(x).squeeze(-1)
        if reference:
            scores = scores.transpose(0, 1)
        return scores * self.output_scale + self.output_shift


def _partition(n: int, context: int, rng: np.random.Generator) -> np.ndarray:
    """A random partition of range(n) into sets of ``context`` (rows of the result). The last set
    is filled up with samples from the start of the permutation, so every set has the size the
    selector was trained on; duplicates are ignored when scores are gathered."""
    order = rng.permutation(n)
    if n <= context:
        return order[None, :]
    n_sets = int(math.ceil(n / context))
    padded = np.concatenate([order, order[: n_sets * context - n]])
    return padded.reshape(n_sets, context)


#: rows (samples) per forward pass when scoring in default mode: bounds the activations
#: (a few KB per row) whatever the pool size
CHUNK_ROWS = 1 << 17
#: bytes of attention weights one reference-mode forward may hold (heads x queries x pool x 4
#: bytes, about three such buffers live at once)
REFERENCE_ATTENTION_BYTES = 256 << 20
#: sets per forward are a multiple of this, so every forward's row count is a multiple of the
#: CPU kernels' row blocking: scores then do not depend on the chunking, bit for bit
SET_ALIGNMENT = 64


def default_sets_per_batch(context_size: int, chunk_rows: int = CHUNK_ROWS) -> int:
    sets = max(1, chunk_rows // context_size)
    return max(SET_ALIGNMENT, sets // SET_ALIGNMENT * SET_ALIGNMENT)


def reference_query_chunk(n: int, n_heads: int,
                          budget_bytes: int = REFERENCE_ATTENTION_BYTES) -> Optional[int]:
    """Queries per reference-mode attention call: None (the whole pool at once, the original's
    call) while the full N x N weights fit the budget; else the most that fit (a multiple of 64
    when that is >= 64, and at least 8: single-row calls take other CPU kernels)."""
    per_query = 3 * n_heads * n * 4
    if per_query * n <= budget_bytes:
        return None
    chunk = budget_bytes // per_query
    return chunk // SET_ALIGNMENT * SET_ALIGNMENT if chunk >= SET_ALIGNMENT else max(8, chunk)


@torch.inference_mode()
def score_features(model: SelectorNet, features: np.ndarray,
                   sets_per_batch: Optional[int] = None, progress: bool = False,
                   chunk_rows: int = CHUNK_ROWS,
                   reference_budget_bytes: int = REFERENCE_ATTENTION_BYTES,
                   score_rounds: Optional[int] = None,
                   score_seed: Optional[int] = None) -> np.ndarray:
    """Score every row of ``features`` [N, in_dim]; returns float64 scores [N]. The network
    layer of :meth:`selector.model.training.Selector.predict`, which passes its scoring
    settings (``score_rounds``, ``score_seed``; None: those of ``model.config``).

    Memory is bounded whatever N: default mode runs ``sets_per_batch`` sets per forward pass
    (by default as many as fit ``chunk_rows`` rows, a multiple of 64); reference mode, whose
    every score depends on the whole pool, attends for a chunk of queries at a time against the
    whole pool (``reference_budget_bytes`` of attention weights; time stays O(N^2)). Chunking
    changes neither the sets nor what attends to what, so the scores are those of one pass.
    """
    config = model.config
    rounds = config.score_rounds if score_rounds is None else score_rounds
    seed = config.score_seed if score_seed is None else score_seed
    features = np.asarray(features, dtype=np.float32)
    if features.ndim != 2 or features.shape[1] != config.in_dim:
        raise InputError(f"selector expects {config.in_dim} input features per sample, got "
                         f"{features.shape[-1] if features.ndim else 0}")
    model.eval()
    data = torch.from_numpy(features)
    if config.mode == "reference":
        chunk = reference_query_chunk(len(features), config.n_heads, reference_budget_bytes)
        return model(data[None], query_chunk=chunk, progress=progress)[0].double().numpy()
    from tqdm.auto import tqdm

    n = len(features)
    sets_per_batch = sets_per_batch or default_sets_per_batch(config.context_size, chunk_rows)
    total = np.zeros(n, dtype=np.float64)
    rng = np.random.default_rng(seed)
    for _ in tqdm(range(rounds), desc="scoring rounds", disable=not progress):
        sets = _partition(n, config.context_size, rng)
        for start in range(0, len(sets), sets_per_batch):
            rows = sets[start:start + sets_per_batch]
            scores = model(data[torch.from_numpy(rows)]).double().numpy().reshape(-1)
            flat = rows.reshape(-1)
            # positions past n are the samples repeated to fill the last set: not counted twice
            keep = start * rows.shape[1] + np.arange(flat.size) < n
            total[flat[keep]] += scores[keep]
    return total / rounds


def build(config: SelectorConfig, seed: int = 0) -> SelectorNet:
    """A freshly initialised selector; initialisation is seeded and leaves global RNG untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return SelectorNet(config)


def load_reference_checkpoint(path: PathLike, **overrides: Any) -> SelectorNet:
    """Load the released ``best_model.pth`` (state_dict with ``module.*`` keys) in reference mode."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: selector checkpoint not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for unreadable files
        raise InputError(f"{path}: not a loadable torch checkpoint "
                         f"({type(exc).__name__}: {' '.join(str(exc).split())[:160]})") from None
    if not isinstance(state, dict):
        raise InputError(f"{path}: expected a state_dict")
    state = {key[len("module."):] if key.startswith("module.") else key: value
             for key, value in state.items()}
    wrong = next((key for key, value in state.items() if not isinstance(value, torch.Tensor)),
                 None)
    if wrong is not None:
        raise InputError(f"{path}: entry {wrong!r} is not a tensor (not a selector state_dict)")
    head = state.get("linear.weight")
    width = head.shape[1] if head is not None and head.ndim == 2 else 0
    if width <= len(REFERENCE_INDICATORS) or (width - len(REFERENCE_INDICATORS)) % 2:
        raise InputError(f"{path}: not a released selector state_dict (linear.weight "
                         f"{tuple(head.shape) if head is not None else 'missing'}; expected "
                         f"[1, 2 x feature width + {len(REFERENCE_INDICATORS)}])")
    n_layers = len({key.split(".")[1] for key in state if key.startswith("multihead_attns.")})
    image_dim = text_dim = (width - len(REFERENCE_INDICATORS)) // 2
    values = dict(RELEASED_SETTINGS, image_dim=image_dim, text_dim=text_dim,
                  indicator_names=list(REFERENCE_INDICATORS), n_layers=n_layers, mode="reference")
    values.update(overrides)
    return _load_state(_config_from(values, path), state, path, strict=False)


def _config_from(values: Any, path: Path) -> SelectorConfig:
    """A checkpoint's selector config; a wrong one is one line naming the checkpoint."""
    if not isinstance(values, dict):
        raise InputError(f"{path}: the selector config must be a JSON object")
    try:
        return SelectorConfig.from_dict(values)
    except InputError as exc:
        raise InputError(f"{path}: {exc}") from None


def _load_state(config: SelectorConfig, state: Dict[str, Any], path: Path,
                strict: bool = True) -> SelectorNet:
    """The selector of ``config`` with the weights of ``state``: weights that are missing, of
    another shape, or not finite are one line naming the checkpoint, never a traceback or a
    selector that scores NaN."""
    wrong = next((key for key, value in state.items() if not isinstance(value, torch.Tensor)),
                 None)
    if wrong is not None:
        raise InputError(f"{path}: entry {wrong!r} is not a tensor")
    model = SelectorNet(config)
    expected = model.state_dict()
    for key, value in state.items():
        if key in expected and tuple(value.shape) != tuple(expected[key].shape):
            raise InputError(f"{path}: weight {key!r} has shape {tuple(value.shape)}, the "
                             f"selector of its config needs {tuple(expected[key].shape)} "
                             "(truncated, or made for another selector)")
    missing = [key for key in expected if key not in state
               and (strict or not key.startswith(("input_", "output_")))]
    unexpected = [key for key in state if key not in expected]
    if missing or unexpected:
        raise InputError(f"{path}: checkpoint does not fit the selector "
                         f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    bad = next((key for key, value in state.items()
                if value.is_floating_point() and not bool(torch.isfinite(value).all())), None)
    if bad is not None:
        raise InputError(f"{path}: weight {bad!r} holds NaN or infinite values")
    try:
        model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # any other mismatch torch finds
        raise InputError(f"{path}: checkpoint does not fit the selector "
                         f"({' '.join(str(exc).split())[:200]})") from None
    return model.eval()


def save_checkpoint(model: SelectorNet, folder: PathLike, metadata: Optional[Dict] = None,
                    config: Optional[SelectorConfig] = None) -> Path:
    """Write ``selector.safetensors`` + ``selector.json`` (config and training metadata);
    ``config``: the one to record (default ``model.config``; a :class:`Selector` passes its own,
    whose scoring settings may differ from the network's)."""
    from safetensors.torch import save

    from selector.core.atomic import write_bytes

    folder = Path(folder)
    state = {key: value.detach().contiguous() for key, value in model.state_dict().items()}
    write_bytes(folder / WEIGHTS_FILE, save(state, metadata={"format": "igpt4-selector/1"}))
    write_json(folder / CONFIG_FILE, {"config": asdict(config or model.config),
                                      "metadata": metadata or {}})
    return folder


def load_checkpoint(path: PathLike) -> SelectorNet:
    """Our checkpoint folder, or a released ``.pth`` file (reference mode)."""
    path = Path(path)
    if path.is_file() and path.suffix in (".pth", ".pt", ".bin"):
        return load_reference_checkpoint(path)
    if not path.is_dir():
        raise InputError(f"{path}: selector checkpoint not found (a folder with {CONFIG_FILE} "
                         f"and {WEIGHTS_FILE}, or a released .pth file)")
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not (path / name).is_file():
            raise InputError(f"{path / name}: missing: not a selector checkpoint folder (needs "
                             f"{CONFIG_FILE} and {WEIGHTS_FILE})")
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from selector.core.atomic import os_error_line

    document, _ = read_json(path / CONFIG_FILE)
    if not isinstance(document, dict) or "config" not in document:
        raise InputError(f"{path / CONFIG_FILE}: expected {{\"config\": {{...}}, \"metadata\": "
                         "...} (written by igpt4 train-selector)")
    config = _config_from(document["config"], path / CONFIG_FILE)
    weights = path / WEIGHTS_FILE
    try:
        state = load_file(str(weights))
    except SafetensorError as exc:
        raise InputError(f"{weights}: not a safetensors file "
                         f"({' '.join(str(exc).split())[:160]})") from None
    except OSError as exc:
        raise os_error_line(weights, exc, "cannot read") from None
    return _load_state(config, state, weights)
