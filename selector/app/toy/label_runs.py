"""Genuine labels in the toy world: fine-tune the toy MiniGPT-4 (:mod:`.minigpt4`) on a subset and
evaluate it on the toy VQA set (:mod:`.vqa`), through the code a MiniGPT-4 user runs.

* Fine-tune: the subset's config (``igpt4 split`` wrote it from ``lavis/toy_finetune.yaml``) runs
  through :func:`lavis_plugins.train.run_lavis` -- LAVIS's ``train.py`` steps: config, task,
  our builders (``cc_sbu_align`` / ``llava_conversations``), the tiny model from the registry,
  our portable runner -- in the calling process (one of :mod:`.loop`'s workers), since a new
  Python per subset would cost more than the fine-tune. The stage-1 checkpoint and tokenizer come in as ``--options`` (``model.ckpt``,
  ``model.tokenizer``), as a MiniGPT-4 user passes theirs.
* Evaluate: the run's last checkpoint answers the toy VQA set through ``--tester tiny``'s
  factory and :func:`eval_arena.runner.evaluate` in the Arena's mode (sampled answers, the
  train transform's random crops), writing ``answers/<model>/<run>/result.json`` where
  ``igpt4 labels collect`` finds it.

Every run is resumable and never stale: a fine-tune that finished leaves ``.igpt4_trained`` (the
checkpoint it wrote and the key of its config, stage 1 and options) in its folder and is not
redone for the same key; an evaluation that finished is not redone (its run folder is named by
the seed and holds result.json; ``.igpt4_evaluated`` clears the runs of another checkpoint or VQA
set); a killed one resumes in the runner's own way. Runs differ only in data, so the number of optimizer steps is kept about the
same for each (``steps``): a run's epochs are ``steps`` divided by its iterations per epoch.
"""
from __future__ import annotations

import contextlib
import io
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

from selector.app.toy.minigpt4 import Stage1
from selector.app.toy.training import OneThread
from selector.app.toy.vqa import DATASET
from selector.core.errors import InputError
from selector.core.jsonio import read_json, write_json
from selector.labels.jobs import TRAINED_MARKER

TRAINED = TRAINED_MARKER  # launch.sh's marker of a finished fine-tune (ours holds its key too)
MODEL_NAME = "toy-minigpt4"  # the answers folder's model name
BATCH_SIZE = 8  # toy_finetune.yaml's run.batch_size_train


@dataclass(frozen=True)
class ToyEvaluation:
    """How every toy checkpoint is evaluated: the VQA set, questions per run, answer length."""

    vqa_root: Path
    vqa_key: str = ""         # the VQA set's fingerprint (ToyVQA.key)
    sample_num: int = -1      # -1: every question
    max_new_tokens: int = 4   # a one-word answer and the stop marker
    batch_size: int = 8       # the Arena's batched generation (2.5x faster than 1 on a CPU)


@dataclass
class RunResult:
    checkpoint: Path
    result: Path
    accuracy: float


def epochs_for(samples: int, steps: int, batch_size: int = BATCH_SIZE) -> int:
    """Epochs that make about ``steps`` optimizer steps over ``samples`` (LAVIS: one pass over
    the data per epoch, the last partial batch dropped)."""
    per_epoch = max(1, samples // batch_size)
    return max(1, int(round(steps / per_epoch)))


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """LAVIS logs its whole config and a line per step, and torch warns about CPU-only settings
    (pin_memory, cuda autocast) once per run; keep the demo's output readable (a failure still
    raises, and is reported)."""
    import warnings

    logging.disable(logging.INFO)
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(logging.NOTSET)


def _training_key(config: Path, stage1: Stage1, options: List[str]) -> str:
    from selector.core.fingerprint import file_sha256, fingerprint

    return fingerprint({"config": file_sha256(config), "stage1": stage1.folder.name,
                        "options": [o for o in options if not o.startswith("run.output_dir=")]},
                       length=20)


def _epoch_of(path: Path) -> Tuple[int, str]:
    """``checkpoint_N.pth`` -> (N, its folder): the last epoch last (mtimes can tie)."""
    number = path.stem.rsplit("_", 1)[-1]
    return (int(number) if number.isdigit() else -1, str(path.parent))


def finetune(config: Path, output: Path, stage1: Stage1, samples: int, steps: int,
             seed: int = 0, extra: Optional[List[str]] = None) -> Path:
    """Fine-tune with ``config`` (a subset's finetune.yaml) into ``output``; the last
    checkpoint. Done before with the same config, stage 1 and options (``output/.igpt4_trained``
    records them): that checkpoint, nothing redone; anything else changed: trained again."""
    if samples < BATCH_SIZE:  # LAVIS drops the last partial batch: no step at all
        raise InputError(f"{config}: {samples} samples is less than one batch of {BATCH_SIZE} "
                         "(run.batch_size_train): the fine-tune would make no step")
    epochs = epochs_for(samples, steps)
    options = stage1.model_options() + [f"run.output_dir={output}", f"run.max_epoch={epochs}",
                                        f"run.seed={seed}", f"run.iters_per_epoch="
                                        f"{max(1, samples // BATCH_SIZE)}"] + list(extra or [])
    key = _training_key(config, stage1, options)
    marker = output / TRAINED
    if marker.is_file():
        document, _ = read_json(marker)
        if isinstance(document, dict) and document.get("key") == key:
            checkpoint = Path(str(document.get("checkpoint", "")))
            if checkpoint.is_file():
                return checkpoint
    from lavis_plugins.train import run_lavis

    before = set(output.glob("*/checkpoint_*.pth"))
    with OneThread(), _quiet():
        run_lavis(str(config), options)
    written = sorted(set(output.glob("*/checkpoint_*.pth")) - before, key=_epoch_of)
    if not written:
        raise InputError(f"{config}: the fine-tune wrote no checkpoint under {output}")
    checkpoint = written[-1]
    write_json(marker, {"checkpoint": str(checkpoint), "key": key, "epochs": epochs,
                        "seed": seed, "steps": epochs * max(1, samples // BATCH_SIZE)})
    return checkpoint


EVALUATED = ".igpt4_evaluated"  # what the answers folder's runs evaluated (checkpoint, VQA set)


def _answers_for(answers: Path, checkpoint: Path, evaluation: ToyEvaluation) -> None:
    """Every result.json under ``answers/<model>`` is a run of one checkpoint on one VQA set
    (``labels collect`` averages them all): a new checkpoint or VQA set clears the old runs."""
    import shutil

    from selector.core.fingerprint import fingerprint

    key = fingerprint({"checkpoint": str(checkpoint), "vqa": evaluation.vqa_key,
                       "max_new_tokens": evaluation.max_new_tokens,
                       "batch_size": evaluation.batch_size,
                       "sample_num": evaluation.sample_num}, length=20)
    marker = answers / EVALUATED
    if marker.is_file() and read_json(marker)[0] == {"key": key}:
        return
    shutil.rmtree(answers / MODEL_NAME, ignore_errors=True)
    write_json(marker, {"key": key})


def evaluate(checkpoint: Path, answers: Path, evaluation: ToyEvaluation, seed: int = 0
             ) -> RunResult:
    """Answer the toy VQA set with ``checkpoint`` (Arena mode, tester seed and question-sampling
    seed ``seed``) into ``answers/<model>/seed<seed>/``; a finished run is read back, not redone
    (runs of another checkpoint or VQA set are removed first: :func:`_answers_for`)."""
    _answers_for(answers, checkpoint, evaluation)
    run_name = f"seed{seed}"
    result = answers / MODEL_NAME / run_name / "result.json"
    if result.is_file():
        document, _ = read_json(result)
        if isinstance(document, dict) and DATASET.upper() in document:
            return RunResult(checkpoint, result, float(document[DATASET.upper()]))
    from eval_arena.datasets import build_dataset
    from eval_arena.runner import evaluate as arena_evaluate
    from eval_arena.testers import build_tester

    dataset = build_dataset(DATASET, evaluation.vqa_root, sample_num=evaluation.sample_num,
                            sample_seed=seed)
    with OneThread(), contextlib.redirect_stderr(io.StringIO()):
        tester = build_tester("tiny", {"ckpt": str(checkpoint), "seed": str(seed),
                                       "device": "cpu", "name": MODEL_NAME})
        accuracies, folder = arena_evaluate(tester, [dataset], out=answers, model_name=MODEL_NAME,
                                            run_name=run_name, progress=False,
                                            batch_size=evaluation.batch_size,
                                            max_new_tokens=evaluation.max_new_tokens)
    if not math.isfinite(accuracies[dataset.name]):
        raise InputError(f"{folder}: evaluation gave no accuracy")
    return RunResult(checkpoint, folder / "result.json", float(accuracies[dataset.name]))


def summary_of(result: RunResult) -> Dict[str, Any]:
    return {"checkpoint": str(result.checkpoint), "result": str(result.result),
            "accuracy": round(100.0 * result.accuracy, 2)}
