"""The selector's inputs: per-sample features and indicators, subsets and their labels.

File formats (documented in the README, written by ``igpt4 score`` and the reference reader):

* **pool file** (``*.safetensors``): tensors ``image`` [N, d_img], ``text`` [N, d_txt] and
  ``indicators`` [N, k] (float32, rows in the order of ``ids``); metadata ``format`` =
  ``igpt4-pool/1``, ``ids`` (JSON list of sample ids) and ``indicator_names`` (JSON list, e.g.
  ``["clip", "reward", "length", "gpt"]``). Raw indicator values: any scaling is the model's job.
  ``igpt4 score`` also saves the pool-wide PCAs (tensors ``pca.image.*`` and ``pca.text.*``: mean,
  components, explained_variance_ratio) and, in metadata ``info``, the settings that made them.
  Text-only samples (conversations without an image): metadata ``text_only`` (JSON list of their
  ids; absent in files without any, and in every older file: then all rows have an image) gives
  :attr:`FeaturePool.has_image`; their ``image`` rows are zero (see :mod:`selector.scoring.score`).
* **subsets file** (JSON): ``{subset_name: [sample ids]}`` (the layout of the original
  ``cluster/kmeans++/modified.json``).
* **labels file** (JSON): ``{"labels": {subset_name: value}}``, or a plain ``{subset_name: value}``,
  or the original ``{"subset_labels": [v0, v1, ...]}`` where subset i is named ``str(i)``.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from selector.core.errors import InputError
from selector.core.jsonio import PathLike, read_json

POOL_FORMAT = "igpt4-pool/1"
#: the largest label magnitude accepted: squares of labels and of their errors must stay far
#: inside float32 (3.4e38), where the selector trains
MAX_LABEL = 1e12


@dataclass
class FeaturePool:
    """Features and indicators for every sample of a pool, row i belonging to ``ids[i]``."""

    ids: List[str]
    image: np.ndarray
    text: np.ndarray
    indicators: np.ndarray
    indicator_names: List[str]
    extra: Dict[str, np.ndarray] = field(default_factory=dict)  # e.g. the saved PCAs
    info: Dict[str, Any] = field(default_factory=dict)  # how the features were made
    source: str = field(default="pool", repr=False, compare=False)  # named in errors
    #: [N] bool, False for a text-only row (zero image features); None: every row has an image
    has_image: Optional[np.ndarray] = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        n = len(self.ids)
        if self.has_image is not None:
            mask = np.asarray(self.has_image, dtype=bool)
            if mask.shape != (n,):
                raise InputError(f"{self.source}: has_image has shape {mask.shape}, expected "
                                 f"({n},): one flag per sample id")
            self.has_image = None if mask.all() else mask
        for name in ("image", "text", "indicators"):
            array = np.asarray(getattr(self, name))
            if array.ndim != 2 or array.shape[0] != n:
                raise InputError(f"{self.source}: tensor {name!r} has shape {array.shape}, "
                                 f"expected ({n}, d): one row per sample id")
            if array.dtype.kind not in "biuf":
                raise InputError(f"{self.source}: tensor {name!r} holds {array.dtype}, not "
                                 "numbers")
            setattr(self, name, array.astype(np.float32, copy=False))
        if self.indicators.shape[1] != len(self.indicator_names):
            raise InputError(f"{self.source}: {len(self.indicator_names)} indicator_names for "
                             f"{self.indicators.shape[1]} indicator columns")

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def image_mask(self) -> np.ndarray:
        """[N] bool: which rows have an image (all of them for pools without text-only rows)."""
        return np.ones(len(self), bool) if self.has_image is None else self.has_image

    @property
    def text_only_ids(self) -> List[str]:
        return [] if self.has_image is None else [i for i, has in zip(self.ids, self.has_image)
                                                  if not has]

    @property
    def features(self) -> np.ndarray:
        """The selector's per-sample input: image, text, indicators (the original's order)."""
        return np.concatenate([self.image, self.text, self.indicators], axis=1)

    def indicator(self, name: str) -> np.ndarray:
        if name not in self.indicator_names:
            named = "" if self.source == "pool" else f"{self.source}: "  # the file, when read
            raise InputError(f"{named}pool has no indicator {name!r} (has "
                             f"{', '.join(self.indicator_names)})")
        return self.indicators[:, self.indicator_names.index(name)]

    def positions(self, ids: Sequence[str], where: str = "pool") -> np.ndarray:
        index = {sample_id: i for i, sample_id in enumerate(self.ids)}
        missing = [sample_id for sample_id in ids if sample_id not in index]
        if missing:
            raise InputError(f"{where}: sample id {missing[0]!r} is not in the pool "
                             f"({len(missing)} unknown ids)")
        return np.array([index[sample_id] for sample_id in ids], dtype=np.int64)

    def take(self, ids: Sequence[str]) -> "FeaturePool":
        rows = self.positions(ids)
        return FeaturePool(list(ids), self.image[rows], self.text[rows], self.indicators[rows],
                           list(self.indicator_names), dict(self.extra), dict(self.info),
                           self.source, None if self.has_image is None else self.has_image[rows])

    def content_digest(self) -> str:
        """sha256 of what the pool holds (ids, indicator names, the arrays and their shapes), not
        of the file's bytes: safetensors writes its metadata keys in a different order in every
        process, so an unchanged rewritten pool keeps its digest while any changed value does
        not. The one pool digest: selections record it, reports and cached selections compare
        it."""
        from selector.core.fingerprint import Fingerprint

        digest = Fingerprint().update([self.ids, self.indicator_names])
        for array in (self.image, self.text, self.indicators):
            array = np.ascontiguousarray(array, dtype=np.float32)
            digest.update(list(array.shape)).update_bytes(array.tobytes())
        if self.has_image is not None:  # only then: every earlier pool keeps its digest
            digest.update({"text_only": self.text_only_ids})
        return digest.hexdigest()

    def check_finite(self, source: str = "pool") -> None:
        bad = ~np.isfinite(self.features).all(axis=1)
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            raise InputError(f"{source}: sample {self.ids[first]!r} has a NaN or infinite feature "
                             f"({int(bad.sum())} such samples)")

    def save(self, path: PathLike) -> Path:
        from safetensors.numpy import save

        from selector.core.atomic import write_bytes

        tensors = {**self.extra, "image": self.image, "text": self.text,
                   "indicators": self.indicators}
        # safetensors writes the raw buffer: a strided view (e.g. sklearn's components_) must be
        # made contiguous first or it is saved scrambled
        metadata = {"format": POOL_FORMAT, "ids": json.dumps(self.ids),
                    "indicator_names": json.dumps(self.indicator_names),
                    "info": json.dumps(self.info, default=str)}
        if self.has_image is not None:
            metadata["text_only"] = json.dumps(self.text_only_ids)
        data = save({name: np.ascontiguousarray(array) for name, array in tensors.items()},
                    metadata=metadata)
        return write_bytes(path, data)

    @classmethod
    def load(cls, path: PathLike) -> "FeaturePool":
        """Read a pool file; anything damaged (truncated file, missing or malformed metadata,
        tensors that do not match the ids) is one :class:`InputError` line naming the file."""
        from safetensors import SafetensorError, safe_open

        from selector.core.atomic import os_error_line

        path = Path(path)
        if path.is_dir():
            raise InputError(f"{path}: is a folder, expected a pool file (.safetensors)")
        if not path.is_file():
            raise InputError(f"{path}: pool file not found")
        try:
            with safe_open(str(path), framework="numpy") as handle:
                metadata = handle.metadata() or {}
                if metadata.get("format") != POOL_FORMAT:
                    raise InputError(f"{path}: not an {POOL_FORMAT} pool file "
                                     f"(format {metadata.get('format')!r})")
                arrays = {name: handle.get_tensor(name) for name in handle.keys()}
        except SafetensorError as exc:
            raise InputError(f"{path}: not a safetensors file "
                             f"({' '.join(str(exc).split())[:160]})") from None
        except OSError as exc:
            raise os_error_line(path, exc, "cannot read") from None
        except (ValueError, TypeError) as exc:  # e.g. a dtype numpy has no type for
            raise InputError(f"{path}: unreadable tensors ({' '.join(str(exc).split())[:160]})"
                             ) from None
        lacking = [name for name in ("image", "text", "indicators") if name not in arrays]
        if lacking:
            raise InputError(f"{path}: pool file lacks tensor {lacking[0]!r}")
        ids = _metadata_list(path, metadata, "ids")
        names = _metadata_list(path, metadata, "indicator_names")
        if len(set(ids)) != len(ids):
            duplicate = next(i for i, count in Counter(ids).items() if count > 1)
            raise InputError(f"{path}: sample id {duplicate!r} appears twice in the pool")
        if len(set(names)) != len(names):
            raise InputError(f"{path}: an indicator name appears twice in indicator_names")
        try:
            info = json.loads(metadata.get("info", "{}"))
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}: metadata 'info' is not valid JSON ({exc.msg})") from None
        if not isinstance(info, dict):
            raise InputError(f"{path}: metadata 'info' must be a JSON object")
        main = [arrays.pop(name) for name in ("image", "text", "indicators")]
        has_image = None
        if "text_only" in metadata:
            text_only = set(_metadata_list(path, metadata, "text_only"))
            unknown = text_only - set(ids)
            if unknown:
                raise InputError(f"{path}: metadata 'text_only' names sample "
                                 f"{sorted(unknown)[0]!r}, which is not in the pool")
            has_image = np.array([i not in text_only for i in ids], dtype=bool)
        pool = cls(ids, *main, names, arrays, info, source=str(path), has_image=has_image)
        pool.check_finite(str(path))
        return pool


def _metadata_list(path: Path, metadata: Dict[str, str], key: str) -> List[str]:
    """A pool file's JSON list of strings in metadata ``key`` (sample ids, indicator names)."""
    if key not in metadata:
        raise InputError(f"{path}: pool file metadata lacks {key!r}")
    try:
        value = json.loads(metadata[key])
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: metadata {key!r} is not valid JSON ({exc.msg} at column "
                         f"{exc.colno})") from None
    if not isinstance(value, list):
        raise InputError(f"{path}: metadata {key!r} must be a JSON list, not "
                         f"{type(value).__name__}")
    bad = [v for v in value if not isinstance(v, str) or not v]
    if bad:
        raise InputError(f"{path}: metadata {key!r} must list non-empty strings (holds "
                         f"{bad[0]!r})")
    return value


def read_subsets(path: PathLike, kind: str = "subset") -> Dict[str, List[str]]:
    """``{subset_name: [ids]}``; ids are compared as strings. ``kind`` names the groups in
    errors (``"cluster"`` for a clusters file)."""
    document, _ = read_json(path)
    if not isinstance(document, dict) or not all(isinstance(v, list) for v in document.values()):
        raise InputError(f"{path}: expected {{{kind}_name: [sample ids]}}")
    from selector.data.samples import sample_id_problem

    for name, members in document.items():  # true or 1.5 are not ids (not "True", "1.5")
        problem = next(filter(None, (sample_id_problem(i, "sample id") for i in members)), None)
        if problem is not None:
            raise InputError(f"{path}: {kind} {name!r}: {problem}")
    subsets = {str(name): [str(i) for i in members] for name, members in document.items()}
    seen: Dict[str, str] = {}
    for name, members in subsets.items():
        if not members:
            raise InputError(f"{path}: {kind} {name!r} is empty")
        repeated = next((i for i, n in Counter(members).items() if n > 1), None)
        if repeated is not None:  # it would count twice in the subset's mean
            raise InputError(f"{path}: {kind} {name!r} lists sample {repeated!r} more than once")
        for sample_id in members:
            if sample_id in seen and seen[sample_id] != name:
                raise InputError(f"{path}: sample {sample_id!r} is in {kind}s {seen[sample_id]!r} "
                                 f"and {name!r}")
            seen[sample_id] = name
    return subsets


def read_labels(path: PathLike) -> Dict[str, float]:
    """Subset labels by subset name, from any of the three accepted layouts."""
    document, _ = read_json(path)
    if isinstance(document, dict) and isinstance(document.get("subset_labels"), list):
        values = {str(i): v for i, v in enumerate(document["subset_labels"])}
    elif isinstance(document, dict) and isinstance(document.get("labels"), dict):
        values = {str(k): v for k, v in document["labels"].items()}
    elif isinstance(document, dict):
        values = {str(k): v for k, v in document.items()}
    else:
        raise InputError(f"{path}: expected {{\"labels\": {{subset: value}}}} or "
                         "{\"subset_labels\": [...]}")
    labels = {}
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
            raise InputError(f"{path}: label of subset {name!r} is not a finite number "
                             f"({str(value)[:40]!r})")
        if abs(value) > MAX_LABEL:
            raise InputError(f"{path}: label of subset {name!r} is {value:g}, beyond "
                             f"+-{MAX_LABEL:g} (training computes in float32; labels are e.g. "
                             "accuracy x 100)")
        labels[name] = float(value)
    return labels


def match_labels(subsets: Dict[str, List[str]], labels: Dict[str, float],
                 where: str = "labels") -> Tuple[List[str], List[List[str]], np.ndarray]:
    """Subsets that have a label, in subset-file order: (names, member ids, labels)."""
    names = [name for name in subsets if name in labels]
    unlabeled = [name for name in subsets if name not in labels]
    unknown = [name for name in labels if name not in subsets]
    if unknown:
        raise InputError(f"{where}: label for subset {unknown[0]!r}, which the subsets file lacks")
    if len(names) < 3:
        left = f" (unlabelled: {', '.join(unlabeled[:5])})" if unlabeled else ""
        raise InputError(f"{where}: {len(names)} labelled subsets; training needs at least 3{left}")
    return names, [subsets[n] for n in names], np.array([labels[n] for n in names], np.float32)
