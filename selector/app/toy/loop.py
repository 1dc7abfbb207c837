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
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from selector.app.toy.label_runs import (BATCH_SIZE, MODEL_NAME, ToyEvaluation, epochs_for,
                                         evaluate, finetune, summary_of)
from selector.app.toy.minigpt4 import FINETUNE_CONFIG, Stage1, stage1_model
from selector.app.toy.training import exit_with_parent
from selector.app.toy.vqa import DATASET, ToyVQA, make_toy_vqa
from selector.core.errors import InputError
from selector.core.jsonio import read_json, write_json

#: the selector's cross-validation rows that name another method (mean X = top:X, linear, ...)
BEST_OTHER = "best"
NOISE_ANSWERS = "noise_answers"  # beside a subset's answers/: its checkpoint's repeated evaluations
JUDGE_QUESTIONS = 24  # multi-round questions of the toy judge set (conversation demo)
JUDGE_TOKENS = 16     # answer length per round


#: answer length on the toy VQA set, with the stop marker: a word (the caption world's stage 1
#: answers in words) or a short sentence ("There are two circles.": the conversation world's)
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
    from selector.app.toy.minigpt4 import STAGE1_BY_KIND

    stage1 = stage1_model(seed, training=STAGE1_BY_KIND[kind], progress=progress)
    vqa = make_toy_vqa(work / "toy_vqa", drawings=drawings, seed=seed)
    return LabelWorld(stage1, vqa, ToyEvaluation(vqa.root, vqa.key,
                                                 max_new_tokens=MAX_NEW_TOKENS[kind]), kind)


def _count(data: Path, image_root: Optional[Path] = None) -> int:
    from selector.data.samples import read_pool

    return len(read_pool(data, image_root, skip_invalid=True, check_images=False).samples)


def run_job(config: Path, folder: Path, stage1: Stage1, samples: int, steps: int, seed: int,
            evaluation: ToyEvaluation, eval_seeds: Sequence[int]) -> List[Dict[str, Any]]:
    """One fine-tune (``folder/output``) and its evaluations (``folder/answers``, one per seed
    of ``eval_seeds``): what each worker of :func:`run_jobs` does."""
    checkpoint = finetune(config, folder / "output", stage1, samples, steps, seed)
    return [summary_of(evaluate(checkpoint, folder / "answers", evaluation, s))
            for s in eval_seeds]


def run_jobs(jobs: Sequence[Dict[str, Any]], workers: int, desc: str, progress: bool = True
             ) -> List[List[Dict[str, Any]]]:
    """:func:`run_job` for each job (its keyword arguments), in ``workers`` processes (1: in
    this one). Every job trains on one thread, and each one's seeds are its own, so the
    results are the same whichever worker runs it; a failing job stops the others."""
    from tqdm import tqdm

    results: List[Any] = [None] * len(jobs)  # in job order; each filled, or run_jobs raised
    with tqdm(total=len(jobs), desc=desc, unit="run", disable=not progress) as bar:
        if workers <= 1 or len(jobs) <= 1:
            for index, job in enumerate(jobs):
                results[index] = run_job(**job)
                bar.update(1)
        else:
            import multiprocessing
            from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait

            from concurrent.futures.process import BrokenProcessPool

            context = multiprocessing.get_context("spawn")  # torch after fork is unsafe
            count = max(1, min(workers, len(jobs), os.cpu_count() or 1))
            pool = ProcessPoolExecutor(count, mp_context=context, initializer=exit_with_parent,
                                       initargs=(os.getpid(),))
            try:
                futures = {pool.submit(run_job, **job): index for index, job in enumerate(jobs)}
                pending = set(futures)
                while pending:
                    done, pending = wait(pending, return_when=FIRST_EXCEPTION)
                    for future in done:
                        if future.exception() is not None:
                            raise future.exception()
                        results[futures[future]] = future.result()
                        bar.update(1)
            except BrokenProcessPool:
                raise InputError(f"{desc}: a worker process died (out of memory? fewer "
                                 "demo.workers use less); a rerun resumes") from None
            finally:
                pool.shutdown(wait=True, cancel_futures=True)
    return results


def fine_tune_subsets(subsets_dir: Path, world: LabelWorld, steps: int, seed: int,
                      repeats: int, workers: int = 1, progress: bool = True) -> Dict[str, Any]:
    """Fine-tune and evaluate every subset of ``subsets_dir`` (``igpt4 split``'s layout); the
    first subset's checkpoint is evaluated ``repeats`` more times (seeds 1..repeats). Returns
    per subset its checkpoint, Arena result file and accuracy, and the noise runs."""
    from selector.scoring.pool import read_subsets

    members = read_subsets(subsets_dir / "subsets.json")
    names = list(members)
    if not names:
        raise InputError(f"{subsets_dir / 'subsets.json'}: no subsets")
    for name in names:
        if not (subsets_dir / name / "finetune.yaml").is_file():
            raise InputError(f"{subsets_dir / name}: no finetune.yaml (made by igpt4 split)")
    jobs = [{"config": subsets_dir / name / "finetune.yaml", "folder": subsets_dir / name,
             "stage1": world.stage1, "samples": len(members[name]), "steps": steps,
             "seed": seed, "evaluation": world.evaluation, "eval_seeds": [0]} for name in names]
    done = run_jobs(jobs, workers, "label fine-tunes + evaluations", progress)
    runs = {name: results[0] for name, results in zip(names, done)}
    # the noise: the first subset's checkpoint evaluated again, beside its answers/ (so its
    # label, like every other, is one evaluation)
    first = names[0]
    noise_answers = subsets_dir / first / NOISE_ANSWERS
    noise = [runs[first]] + [summary_of(evaluate(Path(runs[first]["checkpoint"]), noise_answers,
                                                 world.evaluation, repeat))
                             for repeat in range(1, repeats + 1)]
    return {"runs": runs, "noise_subset": first, "noise_answers": str(noise_answers),
            "noise_runs": noise}


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
                  image_root: Optional[Path] = None, workers: int = 1,
                  progress: bool = True) -> Dict[str, Any]:
    """The study of the selection (see the module docstring) in ``out``: every run fine-tuned
    (seed: the run's, 0 for an unseeded one) for the epochs that make about ``steps`` steps on
    ``num_samples`` samples -- the full pool for as many epochs, as the study's schedule says --
    and evaluated ``evaluations`` times (seeds 0..; the repeats measure the evaluation noise the
    table compares differences with); returns ``study collect``'s document with the chosen
    methods' notes. A conversation pool (``world.kind``): every run's multi-round answers to
    the toy judge set are judged too (:func:`judge_runs`)."""
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
    jobs = []
    for run in study["runs"]:
        samples = num_samples if run["method"] != "full" else _count(data, image_root)
        jobs.append({"config": out / run["folder"] / "finetune.yaml", "folder": out / run["folder"],
                     "stage1": world.stage1, "samples": samples,
                     "steps": epochs * max(1, samples // BATCH_SIZE),
                     "seed": int(run["seed"] or 0), "evaluation": world.evaluation,
                     "eval_seeds": list(range(evaluations))})
    # the longest (the full pool) first, so that the other worker takes the rest meanwhile
    order = sorted(range(len(jobs)), key=lambda i: -jobs[i]["samples"])
    run_jobs([jobs[i] for i in order], workers, "compare fine-tunes + evaluations", progress)
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
    with ToyJudgeServer() as server, tqdm(total=len(runs), desc="toy judge", unit="run",
                                          disable=not progress) as bar:
        # a variable no one sets: the local toy judge gets the SDK's dummy key, never a real one
        gpt = GptJudge(model=TOY_JUDGE_MODEL, base_url=server.base_url, concurrency=4,
                       max_retries=0, api_key_env="IGPT4_TOY_JUDGE_KEY")
        for run in runs:
            folder = out / run["folder"]
            answers = folder / "judge_answers.jsonl"  # an input of the judge: not in its --out
            checkpoint = _checkpoint_of(folder)
            made = folder / "judge_answers.json"  # the checkpoint the answers are of
            if not (answers.is_file() and made.is_file() and read_json(made)[0] == {
                    "checkpoint": str(checkpoint), "judge_set": judge_set.n}):
                with OneThread(), contextlib.redirect_stderr(io.StringIO()):
                    tester = build_tester("tiny", {"ckpt": str(checkpoint), "seed": "0",
                                                   "device": "cpu", "name": MODEL_NAME})
                    answer_judge_set(tester, judge_set, answers, max_new_tokens=JUDGE_TOKENS)
                write_json(made, {"checkpoint": str(checkpoint), "judge_set": judge_set.n})
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
