"""CLIP score: how well the answer text matches the image (open_clip).

The paper's formula: ``100 x cos(normalised image embedding, mean of the normalised embeddings of
the caption's first 10 sentences)``, sentences being ``caption.split('.')[:10]`` (empty pieces
after a final period included, as the original). For conversations the score is computed per
assistant turn and averaged.

Default model: ``ViT-bigG-14`` with the ``laion2b_s39b_b160k`` weights, as the paper. Any open_clip
model name with a pretrained tag or a local checkpoint path works; ``model_config`` registers a
custom architecture JSON (tests use a tiny random-initialised one). Images are decoded by
DataLoader workers and scored in batches; fp16/bf16 on CUDA, fp32 on CPU.
"""
from __future__ import annotations

import functools
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..data import Sample
from . import Indicator, IndicatorValue, register
from .devices import load_failure, precision_for, resolve_device


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
        except Exception as exc:  # any decoding failure is recorded per sample
            return index, torch.zeros(0), f"image unreadable ({type(exc).__name__})"


@functools.lru_cache(maxsize=2)
def load_open_clip(model: str, pretrained: Optional[str], model_config: Optional[str],
                   device: str, precision: str) -> Tuple[Any, Any, Any]:
    """(model in eval mode, eval preprocess, tokenizer) for an open_clip name + pretrained tag or
    local checkpoint path; ``model_config`` registers a custom architecture JSON first."""
    from ..compat import ensure_torchvision_importable

    ensure_torchvision_importable()
    import open_clip

    if model_config:
        open_clip.add_model_config(model_config)
    try:
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
                      num_workers=num_workers, collate_fn=_collate)


def _collate(batch):
    return batch


@register("clip")
class ClipScore(Indicator):
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
        model, preprocess, tokenizer = self.load()
        device = next(model.parameters()).device
        loader = image_batches(samples, preprocess, self.batch_size, self.num_workers)
        return self._score_batches(samples, model, tokenizer, device, loader)

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

        dtype = next(model.parameters()).dtype
        pixels = torch.stack([p for _, p in good]).to(device=device, dtype=dtype)
        image = model.encode_image(pixels).float()
        image = image / image.norm(dim=-1, keepdim=True)
        pieces: List[str] = []
        spans: List[Tuple[int, int, int]] = []  # (row in batch, start, end) per assistant turn
        for row, (i, _) in enumerate(good):
            for answer in samples[i].answers:
                chunk = sentences(answer, self.max_sentences)
                spans.append((row, len(pieces), len(pieces) + len(chunk)))
                pieces.extend(chunk)
        text = model.encode_text(tokenizer(pieces).to(device)).float()
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
