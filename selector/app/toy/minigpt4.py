"""The toy world's MiniGPT-4: the tiny MiniGPT-4-shaped model (:mod:`lavis_plugins.tiny_model`)
pre-trained on separate generated drawings (stage 1), so that stage-2 fine-tuning on a subset
measurably changes what it answers.

MiniGPT-4's stage 2 fine-tunes only the projection between a frozen vision tower (EVA-ViT) and a
frozen language model (Vicuna) that both arrive knowing the world. The tiny model's frozen parts
arrive knowing nothing (random weights from a seed), so stage 2 alone would learn nothing a VQA
set can measure. :func:`stage1_model` first teaches them the toy world, on drawings of their own
stream (``sample_rng("stage1", ...)``: never the pool's, the VQA set's or any model's):

1. the vision tower learns what is in a drawing (counts of each shape, colour, and shape-colour
   pair, from the drawing's truth; a linear head on its mean token, thrown away afterwards);
2. the language model and the projection learn the toy world's words: detailed captions
   ("Describe this image in detail.", the stage-2 instruction) and the colour / count / shape
   questions of :mod:`.questions` answered in one word, half of them behind the Arena's MiniGPT-4
   system prompt (:func:`eval_arena.minigpt4_tester.arena_prompt`), so the model answers the
   Arena's prompt as it answers the training one.

The conversation world (``igpt4 demo --kind conversations``) has its own stage 1
(:data:`STAGE1_BY_KIND`): its questions are answered in the toy conversations' sentences ("There
are two circles."), since stage 2 trains the projection only and cannot teach the frozen language
model a way of answering it never learnt (measured: with one-word stage 1, fine-tuning on clean
conversations hurt the toy VQA answers more than fine-tuning on off-topic ones).

The words are a word-level tokenizer of the toy world's vocabulary (a few hundred words; a
byte-level one would make every caption five times longer). The result is a stage-1 checkpoint
(``{"model": full state dict}``, read weights-only like every checkpoint we read) plus the
tokenizer folder, named in a stage-2 config as ``model.ckpt`` and ``model.tokenizer`` exactly where
MiniGPT-4's stage-2 configs name their stage-1 checkpoint. It is cached in the user cache by the
fingerprint of everything it is made from (architecture, training settings, seed, version), built
in a staging folder and renamed into place, so a second demo (any ``--out``) reuses it.
"""
from __future__ import annotations

import os
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from selector.app.toy.questions import questions_of
from selector.app.toy.training import OneThread, loss_report
from selector.app.toy.world import (BACKGROUNDS, COLOURS, COUNT_WORDS, SHAPES, caption_of, draw,
                                    faulty_caption, off_topic_caption, random_truth, sample_rng)
from selector.core.jsonio import read_json, write_json

#: bumped whenever what :func:`stage1_model` writes changes meaning
STAGE1_VERSION = 1
#: the shipped stage-2 config of the toy fine-tunes; its ``model`` block is the architecture
FINETUNE_CONFIG = "lavis/toy_finetune.yaml"
#: stage-1 training: drawings, vision-tower steps (batch), language steps (batch, share of
#: caption samples), learning rate
STAGE1_TRAINING = {"drawings": 3000, "vision_steps": 600, "vision_batch": 64, "steps": 600,
                   "batch_size": 32, "caption_share": 0.35, "lr": 3e-3}
#: stage 1 per demo kind: the conversation world's language model also answers in the toy
#: conversations' sentences
STAGE1_BY_KIND = {"captions": STAGE1_TRAINING, "conversations": {**STAGE1_TRAINING, "sentences": True}}
#: the instruction of every stage-2 sample (MiniGPT-4's alignment prompts say the same)
DESCRIBE = "<Img><ImageHere></Img> Describe this image in detail."


@dataclass(frozen=True)
class Stage1:
    """A pre-trained toy MiniGPT-4: the checkpoint and tokenizer a stage-2 config names."""

    folder: Path
    checkpoint: Path
    tokenizer: Path
    report: Dict[str, Any]

    def model_options(self) -> List[str]:
        """The ``--options`` that point a stage-2 config's model at this stage 1."""
        return [f"model.ckpt={self.checkpoint}", f"model.tokenizer={self.tokenizer}"]


def architecture() -> Dict[str, Any]:
    """The model block of the shipped toy fine-tune config (:data:`FINETUNE_CONFIG`): one
    architecture for stage 1, the fine-tunes and the evaluations."""
    from omegaconf import OmegaConf

    from selector.core.settings import config_dir

    block = OmegaConf.to_container(OmegaConf.load(config_dir() / FINETUNE_CONFIG).model)
    return {k: v for k, v in block.items() if k not in ("arch", "model_type", "ckpt", "tokenizer")}


def world_texts(seed: int) -> List[str]:
    """Every word the toy world can say: captions (faithful and faulty), questions, answers,
    off-topic captions, and the prompts around them."""
    from eval_arena.minigpt4_tester import arena_prompt

    texts = [arena_prompt(DESCRIBE), "###Human: ###Assistant: <Img></Img> Describe the image.",
             " ".join(SHAPES) + " " + " ".join(f"{s}s" for s in SHAPES),
             " ".join(COLOURS) + " " + " ".join(BACKGROUNDS) + " " + " ".join(COUNT_WORDS)]
    for index in range(400):
        rng = sample_rng("stage1-vocabulary", seed, index)
        truth = random_truth(rng)
        clean = caption_of(truth, rng)
        texts.append(clean)
        texts += [f"{q.text} {q.answer}" for q in questions_of(truth, rng)]
        for kind in ("wrong_colour", "wrong_count", "truncated", "repetitive"):
            texts.append(faulty_caption(kind, truth, clean, rng)[0])
        texts.append(off_topic_caption(rng))
    return texts


def word_tokenizer(texts: Sequence[str], folder: Path) -> Path:
    """A word-level tokenizer of ``texts`` saved as an HF tokenizer folder (``<pad> <s> </s>
    <unk>`` first, then the words sorted, so ids are the same in every process)."""
    from selector.core.compat import ensure_torchvision_importable

    ensure_torchvision_importable()
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    splitter = pre_tokenizers.Whitespace()
    words = {word for text in texts for word, _ in splitter.pre_tokenize_str(text)}
    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    vocab = {word: n for n, word in enumerate(specials + sorted(words - set(specials)))}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = splitter
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", bos_token="<s>",
                                        eos_token="</s>", unk_token="<unk>")
    tokenizer.save_pretrained(str(folder))
    return folder


def _drawings(seed: int, n: int, image_size: int) -> List[Tuple[Any, Dict[str, Any], str, list]]:
    """(image, truth, caption, questions) of stage 1's own drawings, JPEG-round-tripped like the
    pool's files."""
    import io

    from PIL import Image

    drawn = []
    for index in range(n):
        rng = sample_rng("stage1", seed, index)
        truth = random_truth(rng)
        buffer = io.BytesIO()
        draw(truth, image_size).save(buffer, format="JPEG", quality=92)
        image = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
        drawn.append((image, truth, caption_of(truth, rng), questions_of(truth, rng)))
    return drawn


def _vision_targets(truth: Mapping[str, Any]) -> List[int]:
    """Counts (capped at 4) of each shape, each colour and each shape-colour pair."""
    shapes = [s["shape"] for s in truth["shapes"]]
    colours = [s["colour"] for s in truth["shapes"]]
    pairs = list(zip(shapes, colours))
    return ([min(shapes.count(s), 4) for s in SHAPES]
            + [min(colours.count(c), 4) for c in sorted(COLOURS)]
            + [min(pairs.count((s, c)), 4) for s in SHAPES for c in sorted(COLOURS)])


def _train_vision(model: Any, pixels: Any, truths: Sequence[Mapping[str, Any]],
                  training: Mapping[str, Any], rng: random.Random, bar: Any) -> List[float]:
    import torch

    targets = torch.tensor([_vision_targets(t) for t in truths])
    heads = targets.shape[1]
    head = torch.nn.Linear(model.visual_encoder.norm.normalized_shape[0], heads * 5)
    parameters = list(model.visual_encoder.parameters()) + list(head.parameters())
    optimizer = torch.optim.AdamW(parameters, lr=float(training["lr"]))
    model.visual_encoder.requires_grad_(True).train()
    losses = []
    for _ in range(int(training["vision_steps"])):
        batch = [rng.randrange(len(truths)) for _ in range(int(training["vision_batch"]))]
        logits = head(model.visual_encoder(pixels[batch]).mean(1)).view(-1, 5)
        loss = torch.nn.functional.cross_entropy(logits, targets[batch].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        bar.update(1)
    model.visual_encoder.requires_grad_(False).eval()
    return losses


def _train_language(model: Any, pixels: Any, drawn: Sequence[Tuple[Any, Any, str, list]],
                    training: Mapping[str, Any], rng: random.Random, bar: Any) -> List[float]:
    """The language model and the projection, the vision tower frozen (as it stays). With
    ``training["sentences"]`` (the conversation world) questions are answered as the toy
    conversations answer them ("The circle is red."), so stage 2 on conversations aligns the
    projection to answers the language model can give."""
    import torch

    from selector.app.toy.conversations import answer_sentence

    from eval_arena.minigpt4_tester import ARENA_SYSTEM

    model.llama_model.requires_grad_(True).train()
    parameters = list(model.llama_model.parameters()) + list(model.llama_proj.parameters())
    optimizer = torch.optim.AdamW(parameters, lr=float(training["lr"]), weight_decay=0.0)
    templates = (model.prompt_template, ARENA_SYSTEM + model.prompt_template)
    losses = []
    for _ in range(int(training["steps"])):
        batch = [rng.randrange(len(drawn)) for _ in range(int(training["batch_size"]))]
        instructions, answers = [], []
        for index in batch:
            _, _, caption, questions = drawn[index]
            if rng.random() < float(training["caption_share"]) or not questions:
                instructions.append(DESCRIBE)
                answers.append(caption)
            else:
                question = rng.choice(questions)
                instructions.append(f"<Img><ImageHere></Img> {question.text}")
                answers.append(answer_sentence(question) if training.get("sentences")
                               else question.answer)
        model.prompt_template = templates[rng.random() < 0.5]
        loss = model({"image": pixels[batch], "instruction_input": instructions,
                      "answer": answers})["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        bar.update(1)
    model.prompt_template = templates[0]
    model.llama_model.requires_grad_(False).eval()
    return losses


def stage1_key(seed: int, training: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    return {"version": STAGE1_VERSION, "seed": seed, "architecture": architecture(),
            "training": dict(training or STAGE1_TRAINING)}


def _cached(seed: int, cache: Optional[Path], training: Optional[Mapping[str, Any]]
            ) -> Tuple[Dict[str, Any], Path, Optional[Stage1]]:
    from selector.core.fingerprint import fingerprint
    from selector.core.paths import user_cache_dir

    key = stage1_key(seed, training)
    folder = Path(cache or user_cache_dir() / "toy_minigpt4") / fingerprint(key, length=16)
    manifest = folder / "stage1.json"
    if manifest.is_file():
        from selector.core.errors import InputError
        from selector.core.fingerprint import file_sha256

        try:
            document, _ = read_json(manifest)
            usable = (isinstance(document, dict) and document.get("key") == key
                      and isinstance(document.get("report"), dict)
                      and (folder / "tokenizer" / "tokenizer.json").is_file()
                      and (folder / "stage1.pth").is_file()
                      and file_sha256(folder / "stage1.pth") == document.get("sha256"))
        except (InputError, OSError):  # unreadable: a cache entry is rebuilt, never trusted
            usable = False
        if usable:
            return key, folder, Stage1(folder, folder / "stage1.pth", folder / "tokenizer",
                                       document["report"])
    return key, folder, None


def stage1_in_background(seed: int = 0, kind: str = "captions") -> Optional[Any]:
    """Start training the stage-1 model for ``seed`` in another process (a daemon: it ends with
    this one) unless it is cached, so that it overlaps the demo's first stages; None when
    cached. :func:`stage1_model` afterwards finds it in the cache (``process.join()`` first)."""
    if _cached(seed, None, STAGE1_BY_KIND[kind])[2] is not None:
        return None
    import multiprocessing

    process = multiprocessing.get_context("spawn").Process(
        target=_train_quietly, args=(seed, os.getpid(), kind), daemon=True,
        name="igpt4-toy-stage1")
    process.start()
    return process


def _train_quietly(seed: int, parent: int, kind: str) -> None:
    """The background training: no output, ended with the demo; a failure is left to the
    demo's own :func:`stage1_model` call, which trains again and reports it in one line."""
    import contextlib
    import io

    from selector.app.toy.training import exit_with_parent

    exit_with_parent(parent)
    try:
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            stage1_model(seed, training=STAGE1_BY_KIND[kind], progress=False)
    except BaseException:  # noqa: B902 - reported by the foreground call
        os._exit(1)


def stage1_model(seed: int = 0, cache: Optional[Path] = None,
                 training: Optional[Mapping[str, Any]] = None, progress: bool = True) -> Stage1:
    """The pre-trained toy MiniGPT-4 for ``seed`` (see the module docstring), from the cache
    (``cache``, default ``<user cache>/toy_minigpt4``) or trained now (about a minute on one
    core) and cached by fingerprint."""
    from selector.core.atomic import publish_folder

    key, folder, found = _cached(seed, cache, training)
    if found is not None:
        return found
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = folder.with_name(f".{folder.name}.{os.getpid()}.new")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    report = _pretrain(staging, seed, key, progress)
    from selector.core.fingerprint import file_sha256

    write_json(staging / "stage1.json", {"key": key, "report": report,
                                         "sha256": file_sha256(staging / "stage1.pth")})
    publish_folder(staging, folder)
    return Stage1(folder, folder / "stage1.pth", folder / "tokenizer", report)


def _pretrain(folder: Path, seed: int, key: Mapping[str, Any], progress: bool) -> Dict[str, Any]:
    import torch
    from tqdm import tqdm

    from lavis_plugins.model_loading import blip2_transform
    from lavis_plugins.tiny_model import TinyMiniGPT4
    from selector.core.atomic import atomic_open

    began = time.time()
    training = key["training"]
    settings = dict(key["architecture"])
    tokenizer = word_tokenizer(world_texts(seed), folder / "tokenizer")
    with OneThread():
        model = TinyMiniGPT4(**settings, tokenizer=str(tokenizer), seed=seed)
        drawn = _drawings(seed, int(training["drawings"]), 64)
        transform = blip2_transform(int(settings["image_size"]), train=True)
        generator = torch.random.get_rng_state()
        torch.manual_seed(seed)
        try:
            pixels = torch.stack([transform(image) for image, *_ in drawn])
            rng = random.Random(f"igpt4-toy:stage1-training:{seed}")
            total = int(training["vision_steps"]) + int(training["steps"])
            with tqdm(total=total, desc="toy MiniGPT-4 stage 1", disable=not progress) as bar:
                vision = _train_vision(model, pixels, [t for _, t, _, _ in drawn], training,
                                       rng, bar)
                language = _train_language(model, pixels, drawn, training, rng, bar)
        finally:
            torch.random.set_rng_state(generator)
    with atomic_open(folder / "stage1.pth", "wb", encoding=None) as handle:
        torch.save({"model": model.state_dict(), "stage": 1}, handle)
    return {"vision": loss_report(vision, len(vision), began),
            "language": loss_report(language, len(language), began),
            "vocabulary": len(model.tokenizer), "seconds": round(time.time() - began, 1)}
