"""The toy VQA set: questions about the colours, counts and shapes of held-out drawings, written
in the Arena's GQA layout, so our Arena-style runner (:func:`eval_arena.datasets.build_dataset`
with ``gqa``, :func:`eval_arena.runner.evaluate`) reads, samples, answers and scores it exactly as
it does the real GQA, with the Arena's word-match metric.

Layout (:mod:`eval_arena.layouts`): ``ROOT/VQA_Datasets/GQA/questions/testdev_balanced_questions.json``
= ``{qid: {imageId, question, answer}}`` and ``ROOT/VQA_Datasets/GQA/images/{imageId}.jpg``.
The drawings come from their own stream (``sample_rng("vqa", ...)``), never the pool's or stage
1's. Every question is answerable from its image alone and has a one-word answer
(:mod:`.questions`); a fixed share of each kind keeps the set balanced.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict

from selector.app.toy.questions import QUESTION_KINDS, questions_of
from selector.app.toy.world import draw, random_truth, sample_rng
from selector.core.atomic import atomic_open
from selector.core.fingerprint import fingerprint
from selector.core.jsonio import PathLike, read_json, write_json

VQA_VERSION = 1
DATASET = "gqa"  # the Arena layout the toy set is written in (and its name in result.json)


@dataclass(frozen=True)
class ToyVQA:
    root: Path        # the dataset folder (ROOT/VQA_Datasets/GQA), what build_dataset reads
    questions: int
    by_kind: Dict[str, int]
    key: str = ""     # the fingerprint of what it was made from

def make_toy_vqa(out: PathLike, drawings: int = 120, per_kind: int = 1, seed: int = 0,
                 image_size: int = 64) -> ToyVQA:
    """Draw ``drawings`` held-out images and ask up to ``per_kind`` questions of each kind
    (colour, count, shape) about each; written once (``toy_vqa.json`` records what it was made
    from, so the same call reuses it)."""
    import random

    root = Path(out) / "VQA_Datasets" / "GQA"
    key = {"version": VQA_VERSION, "drawings": drawings, "per_kind": per_kind, "seed": seed,
           "image_size": image_size}
    manifest = Path(out) / "toy_vqa.json"
    if manifest.is_file():
        document, _ = read_json(manifest)
        if isinstance(document, dict) and document.get("key") == key:
            return ToyVQA(root, int(document["questions"]), dict(document["by_kind"]),
                          fingerprint(key, length=20))
    manifest.unlink(missing_ok=True)  # a kill while rewriting leaves no claim to the old key
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "questions").mkdir(parents=True, exist_ok=True)
    questions: Dict[str, Dict[str, str]] = {}
    by_kind = {kind: 0 for kind in QUESTION_KINDS}
    for index in range(drawings):
        rng = sample_rng("vqa", seed, index)
        truth = random_truth(rng)
        image_id = f"toy{index:05d}"
        with atomic_open(root / "images" / f"{image_id}.jpg", "wb", encoding=None) as handle:
            draw(truth, image_size).save(handle, format="JPEG", quality=92)
        asked = questions_of(truth, rng)
        chooser = random.Random(f"igpt4-toy:vqa-questions:{seed}:{index}")
        for kind in QUESTION_KINDS:
            of_kind = [q for q in asked if q.kind == kind]
            for number, question in enumerate(chooser.sample(of_kind, min(per_kind, len(of_kind)))):
                questions[f"{image_id}-{kind}-{number}"] = {
                    "imageId": image_id, "question": question.text, "answer": question.answer,
                    "kind": kind}
                by_kind[kind] += 1
    write_json(root / "questions" / "testdev_balanced_questions.json", questions, indent=1)
    write_json(manifest, {"key": key, "questions": len(questions), "by_kind": by_kind})
    return ToyVQA(root, len(questions), by_kind, fingerprint(key, length=20))
