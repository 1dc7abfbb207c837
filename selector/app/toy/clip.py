"""The toy world's CLIP: a small open_clip ViT trained contrastively on good generated pairs for
the demo (:func:`toy_clip`), and the tests' tiny untrained one (:func:`tiny_clip`), both built by
:func:`clip_model` and saved as an architecture JSON plus a checkpoint, so every process loads
the same model through the scorer's normal ``pretrained=<checkpoint path>`` route."""
from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

from selector.app.toy.training import OneThread, loss_report
from selector.app.toy.world import caption_of, draw, random_truth, sample_rng
from selector.core.atomic import atomic_open, write_text

TOY_CLIP_NAME = "igpt4-toy-clip"
#: a small open_clip ViT (open_clip's own BPE tokenizer, context cut to the toy sentences' length)
TOY_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 48, "head_width": 24, "patch_size": 4},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 48, "heads": 2, "layers": 1},
}
CLIP_TRAINING = {"pairs": 2000, "steps": 200, "batch_size": 64, "lr": 3e-3, "weight_decay": 0.05}
#: the tests' model: 32 px input, one layer of width 16 per tower (random weights)
TINY_CLIP = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 16, "head_width": 8, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1},
}


def _training_pairs(seed: int, n: int, image_size: int) -> Tuple[List[Any], List[str]]:
    """Good (image, caption) pairs from the training stream, never the pool's: JPEG-round-tripped
    like the pool's files so the model sees the same pixels at training and scoring time."""
    from PIL import Image

    images, captions = [], []
    for index in range(n):
        rng = sample_rng("clip-train", seed, index)
        truth = random_truth(rng)
        buffer = io.BytesIO()
        draw(truth, image_size).save(buffer, format="JPEG", quality=92)
        buffer.seek(0)
        images.append(Image.open(buffer).convert("RGB"))
        captions.append(caption_of(truth, rng))
    return images, captions


def train_toy_clip(model: Any, preprocess: Any, tokenizer: Any, seed: int = 0,
                   pairs: int = 2000, steps: int = 200, batch_size: int = 64, lr: float = 3e-3,
                   weight_decay: float = 0.05, image_size: int = 64,
                   progress: bool = True) -> Dict[str, Any]:
    """Contrastive training (open_clip's symmetric InfoNCE, :class:`open_clip.ClipLoss`) on good
    pairs only. The text side is exactly what the CLIP score compares with the image: the mean of
    the normalised embeddings of the caption's ``.``-separated pieces, so training sharpens the
    very number the indicator reports. Returns a small report (losses, seconds)."""
    import open_clip
    import torch
    from tqdm.auto import tqdm

    from selector.scoring.indicators.clip import sentences

    began = time.time()
    images, captions = _training_pairs(seed, pairs, image_size)
    pixels = torch.stack([preprocess(image) for image in images])
    pieces_of = [sentences(caption) for caption in captions]
    unique = sorted({piece for pieces in pieces_of for piece in pieces})
    index_of = {piece: i for i, piece in enumerate(unique)}
    tokens = tokenizer(unique)  # each distinct piece tokenised once
    piece_ids = [[index_of[p] for p in pieces] for pieces in pieces_of]

    def caption_embeddings(rows: List[int]) -> "torch.Tensor":
        flat = torch.tensor([p for r in rows for p in piece_ids[r]])
        owner = torch.tensor([k for k, r in enumerate(rows) for _ in piece_ids[r]])
        needed, where = torch.unique(flat, return_inverse=True)
        embedded = model.encode_text(tokens[needed], normalize=True)[where]
        summed = torch.zeros(len(rows), embedded.shape[1]).index_add_(0, owner, embedded)
        mean = summed / torch.bincount(owner, minlength=len(rows))[:, None]
        return mean / mean.norm(dim=-1, keepdim=True)

    generator = torch.Generator().manual_seed(seed)
    loss_fn = open_clip.ClipLoss()
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=lr, total_steps=steps,
                                                   pct_start=0.1)
    losses: List[float] = []
    model.train()
    with tqdm(range(steps), desc="toy CLIP training", unit="step", disable=not progress) as bar:
        for _ in bar:
            rows = torch.randperm(pairs, generator=generator)[:batch_size]
            image = model.encode_image(pixels[rows], normalize=True)
            text = caption_embeddings(rows.tolist())
            loss = loss_fn(image, text, model.logit_scale.exp())
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, 4.6052)  # temperature >= 0.01, as open_clip's training
            losses.append(float(loss.detach()))
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
    model.eval()
    return {"pairs": pairs, "steps": steps, "batch_size": batch_size, "lr": lr,
            **loss_report(losses, steps, began)}


def clip_model(folder: Path, name: str, architecture: Mapping[str, Any], seed: int = 0,
               train: bool = False, progress: bool = True,
               training: Optional[Mapping[str, Any]] = None, indent: Optional[int] = None
               ) -> Tuple[Path, Path, Dict[str, Any]]:
    """(architecture JSON, checkpoint, report) of an open_clip model of ``architecture``, saved
    in ``folder`` as ``<name>.json`` and ``<name>.pt``: random weights drawn after
    ``torch.manual_seed(seed)``, then trained by :func:`train_toy_clip` when ``train`` is set
    (``training`` overrides :data:`CLIP_TRAINING`). open_clip registers the JSON under its file
    stem; ``indent`` is the JSON's layout (the demo's cached files keep theirs)."""
    from selector.core.compat import ensure_torchvision_importable

    ensure_torchvision_importable()  # open_clip imports torchvision
    import torch

    from selector.scoring.indicators.clip import load_open_clip

    folder.mkdir(parents=True, exist_ok=True)
    config = folder / f"{name}.json"
    write_text(config, json.dumps(architecture, indent=indent))
    checkpoint = folder / f"{name}.pt"
    with OneThread():
        torch.manual_seed(seed)
        import open_clip

        open_clip.add_model_config(str(config))
        model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=None)
        report: Dict[str, Any] = {"trained": False}
        if train:
            report = {"trained": True, **train_toy_clip(
                model, preprocess, open_clip.get_tokenizer(name), seed,
                **{**CLIP_TRAINING, **(training or {})}, progress=progress)}
    with atomic_open(checkpoint, "wb") as handle:
        torch.save(model.state_dict(), handle)
    load_open_clip.cache_clear()  # a cached model of the same path must not outlive new weights
    return config, checkpoint, report


def toy_clip(folder: Path, seed: int = 0, train: bool = True, progress: bool = True,
             training: Optional[Mapping[str, Any]] = None) -> Tuple[Path, Path, Dict[str, Any]]:
    """The demo's CLIP (:data:`TOY_CLIP`), trained on generated good pairs unless ``train`` is
    false (then random weights)."""
    return clip_model(folder, TOY_CLIP_NAME, TOY_CLIP, seed, train, progress, training, indent=2)


def tiny_clip(folder: Path, name: str = "igpt4-tiny-clip", seed: int = 0) -> Tuple[Path, Path]:
    """(architecture JSON, checkpoint) of the tests' tiny untrained open_clip model
    (:data:`TINY_CLIP`, open_clip's bundled BPE tokenizer), registered under ``name``."""
    config, checkpoint, _ = clip_model(folder, name, TINY_CLIP, seed)
    return config, checkpoint
