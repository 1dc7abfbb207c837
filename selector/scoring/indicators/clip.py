"""CLIP score: how well the answer text matches the image (open_clip).

The paper's formula: ``100 x cos(normalised image embedding, mean of the normalised embeddings of
the caption's first 10 sentences)``, sentences being ``caption.split('.')[:10]`` (empty pieces
after a final period included, as the original). For conversations the score is computed per
assistant turn and averaged.

Default model: ``ViT-bigG-14`` with the ``laion2b_s39b_b160k`` weights, as the paper. Any open_clip
model name with a pretrained tag or a local checkpoint path works; ``model_config`` registers a
custom architecture JSON (tests use a tiny random-initialised one). Images are decoded by
DataLoader workers and scored in batches; fp16/bf16 on CUDA, fp32 on CPU.

A text-only sample has no image to compare with: its value is "not applicable" (``needs_image``;
:func:`selector.scoring.store.score_cached` settles those without calling :meth:`score`).
"""
from __future__ import annotations

import functools
from typing import Any, Dict, List, Optional, Sequence, Tuple

from selector.data.samples import Sample
from selector.core.cache import IndicatorValue
from selector.scoring.indicators import Indicator, register
from selector.scoring.indicators.devices import load_failure, precision_for, resolve_device


def sentences(text: str, limit: int = 10) -> List[str]:
    return text.split(".")[:limit]


class _ImageDataset:
    """Decodes and preprocesses one sample's image; a broken image yields its reason instead."""

    def __init__(self, samples: Sequence[Sample], preprocess) -> None:
        self.samples = samples
        self.preprocess = preprocess

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        import torch
        from PIL import Image

        try:
            with Image.open(self.samples[index].image) as image:
                return index, self.preprocess(image.convert("RGB")), ""
        except OSError as exc:
            if exc.errno is not None:  # the OS failed to read it (EIO, EACCES, EMFILE, ENOENT):
                from selector.core.cache import Failure  # not a property of its bytes: never cached

                return index, torch.zeros(0), Failure(
                    f"image unreadable ({type(exc).__name__}: {exc.strerror}; a rerun retries it)")
            # no errno: PIL could not decode the bytes (the cache key covers them): cached
            return index, torch.zeros(0), f"image unreadable ({type(exc).__name__})"
        except Exception as exc:  # any decoding failure is recorded per sample
            return index, torch.zeros(0), f"image unreadable ({type(exc).__name__})"


@functools.lru_cache(maxsize=2)
def load_open_clip(model: str, pretrained: Optional[str], model_config: Optional[str],
                   device: str, precision: str) -> Tuple[Any, Any, Any]:
    """(model in eval mode, eval preprocess, tokenizer) for an open_clip name + pretrained tag or
    local checkpoint path; ``model_config`` registers a custom architecture JSON first."""
    from selector.core.compat import ensure_torchvision_importable

    ensure_torchvision_importable()
    import open_clip

    if model_config:
        open_clip.add_model_config(model_config)
    from selector.core.safeload import weights_only_loads

    try:
        with weights_only_loads():  # a local checkpoint path never runs code
            network, _, preprocess = open_clip.create_model_and_transforms(
                model, pretrained=pretrained, device=device, precision=precision)
    except (OSError, RuntimeError, ValueError) as exc:
        raise load_failure("open_clip model", f"{model}/{pretrained}", exc) from None
    network.eval()
    return network, preprocess, open_clip.get_tokenizer(model)


def image_batches(samples: Sequence[Sample], preprocess, batch_size: int, num_workers: int):
    """Batches of (index, pixels, problem) decoded by DataLoader workers."""
    from torch.utils.data import DataLoader

    return DataLoader(_ImageDataset(samples, preprocess), batch_size=batch_size,
                      num_workers=num_workers, collate_fn=_collate, worker_init_fn=quiet_worker)


def quiet_worker(worker_id: int) -> None:
    """Every image-loading worker's start: its batches reach the main process as shared-memory
    file descriptors, handed over by a multiprocessing thread in the worker. A Ctrl-C that stops
    the main process in the middle of that hand-over makes the thread print a traceback
    (EOFError, ConnectionResetError) to the user's terminal after "interrupted"; the main
    process has the interrupt in hand, so the worker says nothing about a peer that went away."""
    import sys
    from multiprocessing import AuthenticationError

    previous = sys.excepthook

    def excepthook(kind, value, traceback) -> None:
        if not issubclass(kind, (EOFError, ConnectionError, AuthenticationError)):
            previous(kind, value, traceback)

    sys.excepthook = excepthook


def _collate(batch):
    return batch


class _KeyedImages(_ImageDataset):
    """:class:`_ImageDataset` addressed by ``(index, sample)`` keys instead of positions, so that
    one DataLoader, whose persistent workers got this object once, serves every ``score`` call of
    a run: the sampler in the main process hands the workers each call's samples."""

    def __init__(self, preprocess) -> None:
        super().__init__((), preprocess)

    def __getitem__(self, key):
        index, sample = key
        _, pixels, problem = _ImageDataset((sample,), self.preprocess)[0]
        return index, pixels, problem


class _Keys:
    """The sampler of :class:`ImageLoader`: the current call's ``(index, sample)`` keys."""

    def __init__(self) -> None:
        self.keys: List[Tuple[int, Sample]] = []

    def __iter__(self):
        return iter(self.keys)

    def __len__(self) -> int:
        return len(self.keys)


class ImageLoader:
    """One DataLoader for a whole run: its workers start on the first call and persist, where a
    DataLoader per ``score`` call (one per chunk of ``igpt4 score``) forked and tore down
    ``num_workers`` processes per chunk."""

    def __init__(self, preprocess, batch_size: int, num_workers: int) -> None:
        from torch.utils.data import DataLoader

        self._keys = _Keys()
        self.loader = DataLoader(_KeyedImages(preprocess), sampler=self._keys,
                                 batch_size=batch_size, num_workers=num_workers,
                                 collate_fn=_collate, persistent_workers=num_workers > 0,
                                 worker_init_fn=quiet_worker)

    def batches(self, samples: Sequence[Sample]):
        """Batches of (index, pixels, problem) of ``samples``, in order."""
        self._keys.keys = list(enumerate(samples))
        return iter(self.loader)


def input_dtype(model) -> Any:
    """The dtype the image tower takes: that of its first convolution or linear weight. In fp16 and
    bf16 open_clip keeps embeddings and norms in fp32, so the first parameter (an fp32 positional
    embedding) would feed fp32 pixels to an fp16 convolution."""
    import torch

    for module in model.visual.modules():
        if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
            return module.weight.dtype
    return next(model.parameters()).dtype


def _text_tower(model) -> Optional[Tuple[str, Any]]:
    """(attribute prefix, module) holding the causal text transformer's positional embedding and
    mask: the model itself (``CLIP``) or its ``text`` (``CustomTextCLIP`` with open_clip's own
    ``TextTransformer``); None for anything else (HF text towers, unknown layouts)."""
    for prefix, tower in (("", model), ("text.", getattr(model, "text", None))):
        if tower is not None and hasattr(tower, "positional_embedding") \
                and hasattr(tower, "token_embedding"):
            return prefix, tower
    return None


def text_length(model, tokens) -> Optional[int]:
    """The shortest length the ``[n, context_length]`` tokens can be cut to with the same
    ``encode_text`` output, or None when cutting would change it.

    open_clip's tokenizer pads every sentence to the context length (77), most of it padding.
    With a causal mask, the state at a position depends only on the tokens up to it, and the
    text embedding is the state at the pooled position (the EOT token: ``argmax`` of the ids, or
    the first ``eos`` id), so everything after the batch's last pooled position can go. Not so
    for a bidirectional mask, ``first``/``last`` pooling or an appended class token (CoCa)."""
    import torch

    found = _text_tower(model)
    if found is None:
        return None
    prefix, tower = found
    pool = getattr(tower, "text_pool_type", getattr(tower, "pool_type", "argmax"))
    mask = getattr(tower, "attn_mask", None)
    names = {name for name, _ in model.named_buffers()}
    if mask is None or f"{prefix}attn_mask" not in names or getattr(tower, "cls_emb", None) \
            is not None or getattr(tower, "use_pad_mask", False) \
            or tokens.ndim != 2 or mask.shape != (tokens.shape[1],) * 2 \
            or not torch.equal(torch.isinf(mask), torch.ones_like(mask, dtype=torch.bool).triu(1)):
        return None
    if pool == "argmax":
        pooled = tokens.argmax(dim=-1)
    elif pool == "eos" and getattr(model, "text_eos_id", None) is not None:
        pooled = (tokens == model.text_eos_id).int().argmax(dim=-1)
    else:
        return None
    return int(pooled.max()) + 1 if len(tokens) else None


def encode_text(model, tokens):
    """``model.encode_text(tokens)`` on the tokens cut to :func:`text_length` (the batch's
    longest sentence), with the positional embedding and causal mask cut to match for that call
    only (``torch.func.functional_call``: the shared model is not changed). The full call where
    cutting is not exact."""
    import torch

    length = text_length(model, tokens)
    if length is None or length >= tokens.shape[1]:
        return model.encode_text(tokens)
    prefix, tower = _text_tower(model)
    cut = {f"model.{prefix}positional_embedding": tower.positional_embedding[:length],
           f"model.{prefix}attn_mask": tower.attn_mask[:length, :length]}
    return torch.func.functional_call(_encode_text_module()(model), cut,
                                      (tokens[:, :length],))


@functools.lru_cache(maxsize=None)
def _encode_text_module() -> type:
    """``encode_text`` as a module's forward, for ``functional_call`` (built on first use: torch
    is imported lazily)."""
    import torch

    class EncodeText(torch.nn.Module):
        def __init__(self, model) -> None:
            super().__init__()
            self.model = model

        def forward(self, tokens):
            return self.model.encode_text(tokens)

    return EncodeText


@register("clip")
class ClipScore(Indicator):
    needs_image = True  # text-only samples: not applicable (never loaded, never an error)

    def __init__(self, model: str = "ViT-bigG-14", pretrained: Optional[str] = "laion2b_s39b_b160k",
                 model_config: Optional[str] = None, batch_size: int = 32, num_workers: int = 2,
                 device: Optional[str] = None, precision: Optional[str] = None,
                 max_sentences: int = 10, progress: bool = True) -> None:
        self.model_name = model
        self.pretrained = pretrained
        self.model_config = model_config
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.device = device
        self.precision = precision
        self.max_sentences = max_sentences
        self.progress = progress
        self._loaded: Optional[Tuple[Any, Any, Any]] = None
        self._image_loader: Optional[Tuple[Tuple[int, int, int], ImageLoader]] = None

    def settings(self) -> Dict[str, Any]:
        return {"model": self.model_name, "pretrained": self.pretrained,
                "model_config": self.model_config, "max_sentences": self.max_sentences}

    def load(self):
        """(model, preprocess, tokenizer), created once per process and shared with the image
        embedder when it names the same model."""
        if self._loaded is None:
            device = resolve_device(self.device)
            self._loaded = load_open_clip(self.model_name, self.pretrained, self.model_config,
                                          device, precision_for(device, self.precision))
        return self._loaded

    def score(self, samples: Sequence[Sample]) -> List[IndicatorValue]:
        from selector.scoring.store import not_applicable

        with_image = [i for i, sample in enumerate(samples) if sample.has_image]
        results = [not_applicable(sample) for sample in samples]
        if with_image:
            model, preprocess, tokenizer = self.load()
            device = next(model.parameters()).device
            chosen = [samples[i] for i in with_image]
            for i, value in zip(with_image, self._score_batches(
                    chosen, model, tokenizer, device, self._images(preprocess).batches(chosen))):
                results[i] = value
        return results

    def _images(self, preprocess) -> ImageLoader:
        """The run's one :class:`ImageLoader` (a new one only when its settings change)."""
        key = (id(preprocess), self.batch_size, self.num_workers)
        if self._image_loader is None or self._image_loader[0] != key:
            self._image_loader = (key, ImageLoader(preprocess, self.batch_size, self.num_workers))
        return self._image_loader[1]

    def _score_batches(self, samples, model, tokenizer, device, loader) -> List[IndicatorValue]:
        import torch
        from tqdm.auto import tqdm

        results: List[Optional[IndicatorValue]] = [None] * len(samples)
        with torch.no_grad(), tqdm(total=len(samples), desc="clip score", unit="sample",
                                   disable=not self.progress) as bar:
            for batch in loader:
                good = [(i, pixels) for i, pixels, problem in batch if not problem]
                for i, _, problem in batch:
                    if problem:
                        results[i] = IndicatorValue(samples[i].id, None, problem)
                if good:
                    self._score_batch(model, tokenizer, device, samples, good, results)
                bar.update(len(batch))
        return results  # type: ignore[return-value]

    def _score_batch(self, model, tokenizer, device, samples, good, results) -> None:
        import torch

        pixels = torch.stack([p for _, p in good]).to(device=device, dtype=input_dtype(model))
        image = model.encode_image(pixels).float()
        image = image / image.norm(dim=-1, keepdim=True)
        pieces: List[str] = []
        spans: List[Tuple[int, int, int]] = []  # (row in batch, start, end) per assistant turn
        for row, (i, _) in enumerate(good):
            for answer in samples[i].answers:
                chunk = sentences(answer, self.max_sentences)
                spans.append((row, len(pieces), len(pieces) + len(chunk)))
                pieces.extend(chunk)
        text = encode_text(model, tokenizer(pieces).to(device)).float()
        text = text / text.norm(dim=-1, keepdim=True)
        per_turn: Dict[int, List[float]] = {}
        for row, start, end in spans:
            similarity = 100.0 * image[row] @ text[start:end].mean(dim=0)
            per_turn.setdefault(row, []).append(float(similarity))
        for row, (i, _) in enumerate(good):
            turns = per_turn[row]
            value = sum(turns) / len(turns)
            if value != value:  # NaN
                results[i] = IndicatorValue(samples[i].id, None, "model output is NaN")
            else:
                results[i] = IndicatorValue(samples[i].id, value, None,
                                            {"per_turn": turns} if len(turns) > 1 else {})
