"""The demo's science loop with genuine labels: every subset fine-tuned and evaluated, then the
selector's pick compared with random picks, the best other method and the full pool -- each a
fine-tune of the toy MiniGPT-4 and an evaluation on the toy VQA set (:mod:`.label_runs`).

* :func:`label_world`: the stage-1 toy MiniGPT-4 (cached by fingerprint) and the toy VQA set.
* :func:`fine_tune_subsets`: ``igpt4 split``'s subset folders, each fine-tuned with its own
  ``finetune.yaml`` and evaluated into its ``answers/`` (where ``igpt4 labels collect`` reads);
  one subset's checkpoint is evaluated ``repeats`` more times with other seeds, so the labels'
  evaluation noise is measured beside their spread, as ``labels collect`` reports it.
* :func:`compare_picks`: an ``igpt4 study`` folder (:func:`selector.app.study.write_study`) over
  the selector, random (several seeds), the best other method and the full pool; every run
  fine-tuned and evaluated here, then ``study collect`` (:func:`selector.report.study.collect_study`)
  makes the table with 95% intervals over seeds and the paired differences to random.

Everything is resumable per run (a finished fine-tune or evaluation is never redone, see
:mod:`.label_runs`), so a killed demo resumes where it stopped and a second one recomputes nothing.
"""
from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from selector.app.toy.label_runs import (BATCH_SIZE, MODEL_NAME, ToyEvaluation, epochs_for,
                                         evaluate, finetune, summary_of)
from selector.app.toy.minigpt4 import FINETUNE_CONFIG, Stage1, stage1_model
from selector.app.toy.vqa import DATASET, ToyVQA, make_toy_vqa
from selector.core.errors import InputError
from selector.core.jsonio import read_json

#: the selector's cross-validation rows that name another method (mean X = top:X, linear, ...)
BEST_OTHER = "best"
JUDGE_QUESTIONS = 24  # multi-round questions of the toy judge set (conversation demo)
JUDGE_TOKENS = 16     # answer length per round


#: answer length on the toy VQA set: a word (captions) or a short sentence ("The circle is
#: red.", what a conversation pool teaches), each with the stop marker
MAX_NEW_TOKENS = {"captions": 4, "conversations": 8}


@dataclass(frozen=True)
class LabelWorld:
    stage1: Stage1
    vqa: ToyVQA
    evaluation: ToyEvaluation
    kind: str = "captions"


def label_world(work: Path, seed: int, drawings: int, kind: str = "captions",
                progress: bool = True) -> LabelWorld:
    """The stage-1 model for ``seed`` (user cache) and the toy VQA set in ``work/toy_vqa``."""
    stage1 = stage1_model(seed, progress=progress)
    vqa = make_toy_vqa(work / "toy_vqa", drawings=drawings, seed=seed)
    return LabelWorld(stage1, vqa, ToyEvaluation(vqa.root, vqa.key,
                                                 max_new_tokens=MAX_NEW_TOKENS[kind]), kind)


def _count(data: Path, image_root: Optional[Path] = None) -> int:
    from selector.data.samples import read_pool

    return len(read_pool(data, image_root, skip_invalid=True, check_images=False).samples)


def fine_tune_subsets(subsets_dir: Path, world: LabelWorld, steps: int, seed: int,
                      repeats: int, progress: bool = True) -> Dict[str, Any]:
    """Fine-tune and evaluate every subset of ``subsets_dir`` (``igpt4 split``'s layout); the
    first subset's checkpoint is evaluated ``repeats`` more times (seeds 1..repeats). Returns
    per subset its checkpoint, Arena result file and accuracy, and the noise runs."""
    from tqdm import tqdm

    from selector.scoring.pool import read_subsets

    members = read_subsets(subsets_dir / "subsets.json")
    names = list(members)
    if not names:
        raise InputError(f"{subsets_dir / 'subsets.json'}: no subsets")
    runs: Dict[str, Any] = {}
    noise: List[Dict[str, Any]] = []
    with tqdm(total=len(names) + repeats, desc="label fine-tunes + evaluations", unit="run",
              disable=not progress) as bar:
        for name in names:
            folder = subsets_dir / name
            if not (folder / "finetune.yaml").is_file():
                raise InputError(f"{folder}: no finetune.yaml (made by igpt4 split)")
            checkpoint = finetune(folder / "finetune.yaml", folder / "output", world.stage1,
                                  len(members[name]), steps, seed)
            runs[name] = summary_of(evaluate(checkpoint, folder / "answers", world.evaluation, 0))
            bar.update(1)
        first = names[0]
        for repeat in range(1, repeats + 1):
            result = evaluate(Path(runs[first]["checkpoint"]), subsets_dir / first / "answers",
                              world.evaluation, repeat)
            noise.append(summary_of(result))
            bar.update(1)
    return {"runs": runs, "noise_subset": first, "noise_runs": [runs[first]] + noise}


def best_other_method(selector_dir: Path) -> Optional[str]:
    """The method of the selector's cross-validation table (``training_report.json``'s
    ``cross_validation``) that ranked the held-out subsets best, other than the selector and
    random (``mean X`` is ``top:X``): the best candidate the study issue's methods offer for
    this data; None without one."""
    import math

    from selector.model.baselines import method_of_row

    path = selector_dir / "training_report.json"
    if not path.is_file():
        return None
    document, _ = read_json(path)
    table = document.get("cross_validation") if isinstance(document, dict) else None
    rows = table.get("rows", []) if isinstance(table, dict) else []
    candidates = [(row["spearman"], method_of_row(row["model"])) for row in rows[1:]
                  if isinstance(row, dict) and isinstance(row.get("spearman"), (int, float))
                  and math.isfinite(row["spearman"])]
    candidates = [(rho, m) for rho, m in candidates if m not in (None, "random", "selector")]
    return max(candidates, key=lambda c: c[0])[1] if candidates else None


def compare_methods(methods: Sequence[str], selector_dir: Path) -> Tuple[List[str], Dict[str, str]]:
    """The study's method specs (``best`` replaced by :func:`best_other_method`) and notes."""
    specs: List[str] = []
    notes: Dict[str, str] = {}
    for spec in methods:
        if spec == BEST_OTHER:
            chosen = best_other_method(selector_dir)
            if chosen is None:
                notes[BEST_OTHER] = "no other method in the selector's cross-validation table"
                continue
            notes[BEST_OTHER] = (f"{chosen}: the best other method of the selector's "
                                 f"cross-validation ({selector_dir / 'training_report.json'})")
            spec = chosen
        if spec not in specs:
            specs.append(spec)
    return specs, notes


def compare_picks(out: Path, work: Path, data: Path, world: LabelWorld, methods: Sequence[str],
                  seeds: int, num_samples: int, steps: int, full: bool,
                  selector_overrides: Sequence[str] = (), evaluations: int = 2,
                  image_root: Optional[Path] = None, progress: bool = True) -> Dict[str, Any]:
    """The study of the selection (see the module docstring) in ``out``: every run fine-tuned
    (seed: the run's, 0 for an unseeded one) for the epochs that make about ``steps`` steps on
    ``num_samples`` samples -- the full pool for as many epochs, as the study's schedule says --
    and evaluated ``evaluations`` times (seeds 0..; the repeats measure the evaluation noise the
    table compares differences with); returns ``study collect``'s document with the chosen
    methods' notes. A conversation pool (``world.kind``): every run's multi-round answers to
    the toy judge set are judged too (:func:`judge_runs`)."""
    from tqdm import tqdm

    from selector.app.study import write_study
    from selector.report.study import collect_study, results_table

    specs, notes = compare_methods(methods, work / "selector")
    if not specs:
        raise InputError("compare.methods: no method to compare")
    study = write_study(out, work / "pool.safetensors", data, ",".join(specs), seeds,
                        num=num_samples, checkpoint=work / "selector",
                        subsets=work / "subsets" / "subsets.json", labels=work / "labels.json",
                        work=work / "cache", template=FINETUNE_CONFIG, datasets=DATASET,
                        full=full, overrides=list(selector_overrides), force=True,
                        image_root=image_root)
    epochs = epochs_for(num_samples, steps)
    with tqdm(total=len(study["runs"]), desc="compare fine-tunes + evaluations", unit="run",
              disable=not progress) as bar:
        for run in study["runs"]:
            folder = out / run["folder"]
            samples = num_samples if run["method"] != "full" else _count(data, image_root)
            checkpoint = finetune(folder / "finetune.yaml", folder / "output", world.stage1,
                                  samples, epochs * max(1, samples // BATCH_SIZE),
                                  int(run["seed"] or 0))
            for repeat in range(evaluations):
                evaluate(checkpoint, folder / "answers", world.evaluation, repeat)
            bar.update(1)
    document = collect_study(out, MODEL_NAME)
    if world.kind == "conversations":
        document["judge"] = judge_runs(out, study["runs"], world, progress)
    document["chosen"] = notes
    document["table"] = results_table(document)
    return document


def _checkpoint_of(folder: Path) -> Path:
    from selector.app.toy.label_runs import TRAINED

    document, _ = read_json(folder / "output" / TRAINED)
    return Path(document["checkpoint"])


@contextlib.contextmanager
def _local_without_proxy() -> Any:
    """An HTTP(S)_PROXY of the user's would route the requests to 127.0.0.1 through the proxy:
    the toy judge is reached directly (NO_PROXY gains 127.0.0.1 while it runs)."""
    import os

    saved = {name: os.environ.get(name) for name in ("NO_PROXY", "no_proxy")}
    for name, value in saved.items():
        os.environ[name] = ",".join(filter(None, [value, "127.0.0.1"]))
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def judge_runs(out: Path, runs: Sequence[Dict[str, Any]], world: LabelWorld,
               progress: bool = True) -> Dict[str, Any]:
    """Each run's checkpoint answers the toy judge set's multi-round questions (each later round
    with its own earlier answers as context), and ``igpt4 eval judge``'s code scores them against
    the reference answers through the OpenAI-compatible toy judge the demo serves on 127.0.0.1
    (:mod:`.judge_server`: a scripted judge, named as toy). Returns per run the relative score
    (model / reference x 100) and per method its mean."""
    from tqdm import tqdm

    from eval_arena.judge import GptJudge, judge
    from eval_arena.testers import build_tester
    from selector.app.toy.conversations import answer_judge_set, make_judge_set
    from selector.app.toy.judge_server import TOY_JUDGE_MODEL, ToyJudgeServer
    from selector.app.toy.training import OneThread

    judge_set = make_judge_set(out / "judge_set", n=JUDGE_QUESTIONS)
    scores: Dict[str, Optional[float]] = {}
    with _local_without_proxy(), ToyJudgeServer() as server, tqdm(total=len(runs), desc="toy judge", unit="run",
                                          disable=not progress) as bar:
        # a variable no one sets: the local toy judge gets the SDK's dummy key, never a real one
        gpt = GptJudge(model=TOY_JUDGE_MODEL, base_url=server.base_url, concurrency=4,
                       max_retries=0, api_key_env="IGPT4_TOY_JUDGE_KEY")
        for run in runs:
            folder = out / run["folder"]
            answers = folder / "judge_answers.jsonl"  # an input of the judge: not in its --out
            if not answers.is_file():
                with OneThread(), contextlib.redirect_stderr(io.StringIO()):
                    tester = build_tester("tiny", {"ckpt": str(_checkpoint_of(folder)),
                                                   "seed": "0", "device": "cpu",
                                                   "name": MODEL_NAME})
                    answer_judge_set(tester, judge_set, answers, max_new_tokens=JUDGE_TOKENS)
            summary = judge(judge_set.questions, answers, folder / "judge", judge_set.references,
                            judge_set.context, judge_model=gpt, allow_missing=True)
            scores[run["name"]] = summary["relative_score"]
            bar.update(1)
    by_method: Dict[str, List[float]] = {}
    for run in runs:
        if scores[run["name"]] is not None:
            by_method.setdefault(run["method"], []).append(float(scores[run["name"]]))
    return {"model": TOY_JUDGE_MODEL, "questions": judge_set.n, "runs": scores,
            "methods": {m: sum(v) / len(v) for m, v in by_method.items()},
            "note": "relative score (model / reference x 100) of igpt4 eval judge against the "
                    "scripted toy judge on 127.0.0.1 (selector/app/toy/judge_server.py)"}
