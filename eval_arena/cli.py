"""``igpt4 eval``: Multi-Modality-Arena-compatible evaluation from the command line.

    igpt4 eval --tester NAME [--tester-arg k=v ...] --datasets gqa,okvqa,... --data-root DIR
               [--split val] [--sample-num N] [--sample-seed S] [--batch-size B]
               [--out answers/] [--run-name TIME] [--metric arena|vqa] [--variant full|tiny]
    igpt4 eval rerun ANSWERS_DIR [--metric arena|vqa] [--print-only]
    igpt4 eval judge ...   (eval_arena.judge_cli, when present: GPT-judged open-ended answers)

Each sub-command registers its handler with ``set_defaults(run=...)`` (:func:`run_eval`,
:func:`run_rerun`, ``judge_cli.run_judge``), as every ``igpt4`` command does. Importing this module
costs nothing beyond argparse: the work is imported inside the handlers. Bad input raises
:class:`selector.core.errors.InputError` (``igpt4`` prints it as one line, exit 2).
"""
from __future__ import annotations

import argparse
import sys
from typing import Any, Dict, List, Optional

METRIC_CHOICES = ("arena", "vqa")


def add_parsers(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``eval`` command (with its ``rerun`` sub-command) to ``subparsers``."""
    p = subparsers.add_parser(
        "eval", help="answer VQA test sets with a model and score them like Multi-Modality-Arena",
        description="Run a tester over Arena-layout datasets; writes OUT/MODEL/TIME/{Dataset}.json "
        "and result.json. Rerun with the same --run-name to resume an interrupted run: only "
        "questions without a saved answer are asked. A run resumes only with the settings it was "
        "started with (tester, its arguments and resolved settings, the bytes of every file they "
        "name, --max-new-tokens, --batch-size, the datasets' questions); other settings are "
        "refused, naming the keys that differ, unless --new-run is given.")
    p.set_defaults(run=run_eval)
    p.add_argument("--tester", help="model to evaluate (e.g. scripted, minigpt4)")
    p.add_argument("--tester-arg", dest="tester_args", action="append", default=[],
                   metavar="KEY=VALUE", help="tester setting (repeatable), e.g. answers=FILE")
    p.add_argument("--model-name", help="answers folder and model_name field (default: the "
                   "tester's name)")
    p.add_argument("--datasets", help="comma-separated: GQA, OKVQA, IconQA, ScienceQA, VQAv2, "
                   "TextVQA, VizWiz, DocVQA, VSR, OCRVQA (any case), or jsonl:PATH")
    p.add_argument("--data-root", help="the Arena's DATA_DIR (VQA_Datasets/<Name>/...), a folder "
                   "of <Name>/ folders, or one dataset's folder")
    p.add_argument("--split", help="split for every dataset (default: each dataset's Arena split; "
                   "the paper validates on val)")
    p.add_argument("--variant", choices=("full", "tiny"), default="full",
                   help="prompts and sampling of LVLM-eHub (full) or Tiny LVLM-eHub (tiny)")
    p.add_argument("--sample-num", type=int, help="questions per dataset (default: all, or 50 "
                   "for --variant tiny); sampled as the Arena samples")
    p.add_argument("--sample-seed", type=int, help="sampling seed (default 0, or 20230719 for "
                   "--variant tiny)")
    p.add_argument("--tiny-indices", metavar="JSONL", help="tiny variant: the Arena's "
                   "bard_RandomSeed20230719_50samples_per_dataset.jsonl (published subsets)")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--out", default="answers", help="answers root (default: answers)")
    p.add_argument("--run-name", help="run folder name (default: the start time, %%Y%%m%%d%%H%%M%%S); "
                   "an existing one is resumed when its settings are the same")
    p.add_argument("--new-run", action="store_true", help="never resume: when the run folder "
                   "exists, start a new one beside it (NAME-2, NAME-3, ...)")
    p.add_argument("--metric", choices=METRIC_CHOICES, default="arena",
                   help="arena: the Arena's word match (default); vqa: official VQA accuracy")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--directory-order", choices=("sorted", "os"), default="sorted",
                   help="IconQA sample folders: sorted (default, reproducible) or os.listdir "
                   "order (the Arena's, file-system dependent)")

    judge = _judge_cli()
    sub = p.add_subparsers(dest="eval_command", metavar="{rerun,judge}" if judge else "{rerun}")
    r = sub.add_parser("rerun", help="rescore saved answers without a model",
                       description="Rescore ANSWERS_DIR/*.json (the answers files) with --metric "
                       "and write the accuracies to ANSWERS_DIR/result.METRIC.json (e.g. "
                       "result.vqa.json), beside the run's own result.json, which is never "
                       "changed.")
    r.set_defaults(run=run_rerun)
    r.add_argument("answers_dir", help="a run folder: OUT/MODEL/TIME")
    r.add_argument("--metric", dest="rerun_metric", choices=METRIC_CHOICES, default="arena")
    r.add_argument("--print-only", action="store_true", help="print only; write no file")
    if judge is not None:  # ``eval judge`` (GPT-judged open-ended answers) lives in its own module
        judge.add_judge_parser(sub).set_defaults(run=judge.run_judge)
    return p


def _judge_cli() -> Any:
    try:
        from . import judge_cli
    except ImportError:
        return None
    return judge_cli


def _key_values(pairs: List[str]) -> Dict[str, str]:
    from selector.core.errors import InputError

    out: Dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--tester-arg {pair!r}: expected KEY=VALUE")
        out[key.strip()] = value
    return out


def _tester_settings(name: str, arguments: Dict[str, str], tester: Any) -> Dict[str, Any]:
    """What run.json records of the tester: its name and arguments, the settings it resolved
    them to (checkpoint, mode, device...) when it reports them, and the sha256 of every file an
    argument or a resolved setting names (``files``: a checkpoint overwritten in place is
    another model; the same bytes under another path are the same one)."""
    from pathlib import Path

    from selector.core.atomic import os_error_line

    from selector.core.fingerprint import file_sha256

    settings: Dict[str, Any] = {"name": name, "args": arguments}
    resolved = getattr(tester, "settings", None)
    if resolved:
        settings["resolved"] = resolved
    files: Dict[str, str] = {}
    hashed: Dict[Path, str] = {}  # each file read once (the checkpoint is both arg and resolved)
    named = list(arguments.items())
    named += [(f"resolved.{key}", value) for key, value in dict(resolved or {}).items()
              if isinstance(value, str)]
    for key, value in named:
        path = Path(value).expanduser() if value else None
        if path is not None and path.is_file():
            try:
                if path.resolve() not in hashed:
                    hashed[path.resolve()] = file_sha256(path)
            except OSError as exc:
                raise os_error_line(path, exc, "cannot read") from None
            files[key] = hashed[path.resolve()]
    if files:
        settings["files"] = files
    return settings


def _refuse_eval_overlap(args: argparse.Namespace, names: List[str],
                         tester_args: Dict[str, str]) -> None:
    """``--out`` (the answers root) never is, holds or lies inside an input: the data root, a
    JSONL dataset, the tiny indices, or any file or folder a tester argument names (checkpoint,
    config, scripted answers, checkout)."""
    from pathlib import Path

    from selector.core.overlap import refuse_overlap

    named = {f"--tester-arg {key}": value for key, value in tester_args.items()
             if value and Path(value).expanduser().exists()}
    refuse_overlap({"--out": args.out}, {
        "--data-root": args.data_root, "--tiny-indices": args.tiny_indices,
        "--datasets": [n.split(":", 1)[1] for n in names if n.lower().startswith("jsonl:")],
        **named})


def _refuse_rerun_overlap(answers_dir: str, metric: str) -> None:
    """``eval rerun`` writes a result file: it must not be one of the answers it reads."""
    from pathlib import Path

    from selector.core.overlap import refuse_overlap

    from .runner import _answer_files, rerun_result_path

    folder = Path(answers_dir)
    if folder.is_dir():
        refuse_overlap({"result": rerun_result_path(folder, metric)},
                       {"answers": _answer_files(folder)})


def run(args: argparse.Namespace) -> int:
    """Execute a parsed ``eval`` command (its handler); returns the exit status."""
    return args.run(args)


def run_rerun(args: argparse.Namespace) -> int:
    """``igpt4 eval rerun ANSWERS_DIR``: rescore saved answers with ``--metric``."""
    from .runner import rerun, rerun_result_path

    if not args.print_only:
        _refuse_rerun_overlap(args.answers_dir, args.rerun_metric)

    results = rerun(args.answers_dir, args.rerun_metric, write=not args.print_only)
    for name, value in results.items():
        print(f"{name}:{value}")
    if not args.print_only:
        print(f"{args.rerun_metric} accuracies -> "
              f"{rerun_result_path(args.answers_dir, args.rerun_metric)}", file=sys.stderr)
    return 0


def run_eval(args: argparse.Namespace) -> int:
    """``igpt4 eval --tester ... --datasets ...``: answer the datasets' questions (resumable) and
    score them."""
    from selector.core.errors import InputError

    missing = [flag for flag, value in (("--tester", args.tester), ("--datasets", args.datasets))
               if not value]
    if missing:
        raise InputError(f"eval needs {' and '.join(missing)} (or: eval rerun ANSWERS_DIR)")
    names = [n.strip() for n in args.datasets.split(",") if n.strip()]
    if any(not n.lower().startswith("jsonl:") for n in names) and not args.data_root:
        raise InputError("eval needs --data-root for the Arena datasets")

    from .datasets import build_dataset
    from .sampling import read_tiny_positions
    from .runner import RESULT_FILE, check_folder_name, check_max_new_tokens, evaluate
    from .testers import build_tester, tester_name

    # settings checked before any model is loaded (the tester's own limits once it is built)
    check_max_new_tokens(args.max_new_tokens)
    if args.run_name is not None:
        check_folder_name(args.run_name, "--run-name")
    if args.model_name is not None:
        check_folder_name(args.model_name, "--model-name")
    tester_args = _key_values(args.tester_args)
    _refuse_eval_overlap(args, names, tester_args)
    positions = read_tiny_positions(args.tiny_indices) if args.tiny_indices else None
    datasets = [build_dataset(name, args.data_root or ".", split=args.split, variant=args.variant,
                              sample_num=args.sample_num, sample_seed=args.sample_seed,
                              directory_order=args.directory_order, tiny_positions=positions)
                for name in names]
    tester = build_tester(args.tester, tester_args)
    model_name = args.model_name or tester_name(tester, args.tester)
    results, folder = evaluate(tester, datasets, args.out, model_name, args.run_name,
                               args.batch_size, args.metric, args.max_new_tokens,
                               progress=not args.no_progress,
                               tester_settings=_tester_settings(args.tester, tester_args, tester),
                               log=lambda line: print(line, flush=True),
                               new_run=getattr(args, "new_run", False))
    print(f"{args.metric} accuracies -> {folder / RESULT_FILE}", file=sys.stderr)
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    """Stand-alone entry point (``python -m eval_arena.cli eval ...``), as ``igpt4`` runs it."""
    from selector.core.errors import run_reporting_errors

    parser = argparse.ArgumentParser(prog="igpt4")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    add_parsers(parser.add_subparsers(dest="command", metavar="COMMAND", required=True))
    args = parser.parse_args(argv)
    return run_reporting_errors(lambda: args.run(args), args.debug)


if __name__ == "__main__":
    sys.exit(main())
