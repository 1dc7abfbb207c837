"""``igpt4``: the command line. Parsing only: every sub-command registers its handler with
``set_defaults(run=...)``, a small ``(args) -> exit status`` function in the package that owns
the work (``selector/<stage>/commands.py``, ``eval_arena.cli``); :func:`main` runs it. Handlers
import their work when they run, so that ``igpt4 --help`` stays instant. Bad input: one line on
stderr and exit status 2 (``--debug`` for the traceback)."""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from eval_arena.cli import add_parsers as add_eval_parsers
from selector.app import commands as app_commands
from selector.core.errors import InputError, run_reporting_errors
from selector.data import commands as data_commands
from selector.labels import commands as labels_commands
from selector.model import commands as model_commands
from selector.report import commands as report_commands
from selector.scoring import commands as scoring_commands
from selector.selection import commands as selection_commands


def _add_settings(parser: argparse.ArgumentParser, base: str = "selector/default.yaml") -> None:
    parser.add_argument("--config", help=f"YAML settings merged over the shipped {base} "
                        "(a path, or a shipped name such as selector/reference.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override one setting, e.g. "
                        "--set training.epochs=50 (repeatable)")


def _add_encoding(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--encoding", metavar="ENC", help="decode the text files this command "
                        "reads with ENC (e.g. gb18030, latin-1) instead of detecting UTF-8 or "
                        "GB18030 and refusing text that reads as mojibake")


def _add_data_out(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", metavar="CC_SBU_ALIGN_DIR",
                        help="the cc_sbu_align folder: OUT becomes a complete cc_sbu_align folder "
                        "(filter_cap.json + image/)")
    parser.add_argument("--copy-images", action="store_true",
                        help="copy images into OUT/image instead of symlinking them")
    parser.add_argument("--skip-invalid", action="store_true",
                        help="skip invalid samples of --data (report in OUT/skipped.json) "
                        "instead of stopping at the first")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="igpt4", description="InstructionGPT-4: select a small, high-quality instruction set "
        "for MiniGPT-4 fine-tuning.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = commands.add_parser("reference-select", help="recompute the released InstructionGPT-4 "
                            "selection from the original repository's data layout")
    p.set_defaults(run=selection_commands.reference_select)
    p.add_argument("--repo", required=True, help="checkout of the original repository's data")
    p.add_argument("--out", required=True)
    p.add_argument("--num", type=int, help="samples to keep (default: selection.num_samples of "
                   "selector/default.yaml, the released 200)")
    _add_data_out(p)
    _add_encoding(p)

    p = commands.add_parser("train-selector", help="fit the selector on labelled subsets, "
                            "with leave-one-subset-out cross-validation")
    p.set_defaults(run=model_commands.train_selector)
    p.add_argument("--pool", help="pool file (features + indicators, .safetensors)")
    p.add_argument("--subsets", help="subsets file: {subset: [sample ids]}")
    p.add_argument("--labels", help="labels file: {\"labels\": {subset: value}}")
    p.add_argument("--repo", help="train on the original layout instead (fitting.json, "
                   "image_matrix.pt, text_matrix.pt, labels.json)")
    p.add_argument("--out", required=True, help="checkpoint folder to write")
    _add_settings(p)
    _add_encoding(p)

    p = commands.add_parser("select", help="score a pool with a trained selector and keep a "
                            "diverse high-quality subset")
    p.set_defaults(run=selection_commands.select)
    p.add_argument("--pool", required=True, help="pool file (features + indicators)")
    p.add_argument("--checkpoint", help="selector checkpoint folder (or a released .pth)")
    p.add_argument("--clusters", help="diversity clusters {cluster: [ids]} instead of spectral "
                   "clustering of the image features")
    p.add_argument("--baseline", help="ablation instead of the selector: random, or "
                   "top:<indicator> (e.g. top:clip); the draws of earlier releases")
    p.add_argument("--method", metavar="NAME[:ARG]", help="selection method instead of the "
                   "trained selector: random, cluster-random, top:<indicator>, "
                   "bottom:<indicator>, threshold:<indicator>=<value>, length (needs --data), "
                   "perplexity[:low|middle|high], ifd, semdedup, linear (--subsets, --labels), "
                   "selector (--checkpoint; the default); settings: methods.<name>")
    p.add_argument("--seed", type=int, help="seed of the methods that draw at random "
                   "(random, cluster-random, threshold; default 0); the others ignore it")
    p.add_argument("--diversity", action=argparse.BooleanOptionalAction, default=None,
                   help="the selector's per-cluster quota step on or off for the method "
                   "(default: methods.<name>.diversity)")
    p.add_argument("--subsets", help="subsets file (--method linear)")
    p.add_argument("--labels", help="labels file (--method linear)")
    p.add_argument("--work", help="cache folder of methods that compute values "
                   "(perplexity, ifd)")
    p.add_argument("--captions", metavar="CC_SBU_ALIGN_DIR", help="take captions from this "
                   "folder's filter_cap.json without linking images")
    p.add_argument("--num", type=int, help="samples to keep (default: selection.num_samples)")
    p.add_argument("--out", required=True)
    _add_data_out(p)
    p.add_argument("--image-root", help="images of a conversation JSON given as --data (default: "
                   "beside it); OUT then holds conversations.json + image/")
    _add_settings(p)
    _add_encoding(p)

    p = commands.add_parser("score", help="compute indicators for every sample (cached, "
                            "resumable) and export a flat table")
    p.set_defaults(run=scoring_commands.score)
    p.add_argument("--data", required=True, help="cc_sbu_align folder or conversation JSON")
    p.add_argument("--image-root", help="image folder of conversation JSON")
    p.add_argument("--work", default="work", help="work dir holding the cache (cache.sqlite)")
    p.add_argument("--indicators", help="comma-separated names (default: pool.indicators of "
                   "the settings, the paper's four)")
    p.add_argument("--out", help="flat table to write (.jsonl, .csv or .parquet)")
    p.add_argument("--pool-out", help="also compute image/text embeddings and write the "
                   "selector's pool file (.safetensors: PCA features + indicators)")
    p.add_argument("--pca-from", help="reuse the PCA saved in this pool file instead of fitting "
                   "one (score a subset or new samples in the same feature space)")
    p.add_argument("--skip-invalid", action="store_true",
                   help="skip invalid samples (report in WORK/skipped.json)")
    p.add_argument("--dry-run", action="store_true", help="show what would be computed and the "
                   "estimated GPT cost; compute and send nothing")
    p.add_argument("--strict", action="store_true", help="exit 2 when any sample has no value "
                   "for an indicator or an embedding")
    _add_settings(p, "indicators/default.yaml")
    _add_encoding(p)

    p = commands.add_parser("validate", help="check a data set (cc_sbu_align folder or "
                            "conversation JSON) and report invalid samples")
    p.set_defaults(run=data_commands.validate)
    p.add_argument("data", help="cc_sbu_align folder, or LLaVA-style conversation JSON")
    p.add_argument("--image-root", help="image folder of conversation JSON (default: its folder)")
    p.add_argument("--skip-invalid", action="store_true", help="report every invalid sample "
                   "instead of stopping at the first")
    p.add_argument("--report", help="write the skip report here (JSON)")
    _add_encoding(p)

    p = commands.add_parser("parse-gpt", help="parse GPT judge replies into scores")
    p.set_defaults(run=scoring_commands.parse_gpt)
    p.add_argument("replies", help="JSON with {annotations: [{image_id, caption, gpt_score: "
                   "reply text}]} (UTF-8 or GB18030)")
    p.add_argument("--out", required=True, help="JSON with the integer gpt_score per sample")
    p.add_argument("--strict", action="store_true", help="exit 2 when any reply has no score")
    _add_encoding(p)

    p = commands.add_parser("split", help="balanced k-means++ subsets of the pool, each a "
                            "cc_sbu_align folder + MiniGPT-4 fine-tune config, and a launcher "
                            "that fine-tunes and evaluates them (the paper's labelled subsets)")
    p.set_defaults(run=labels_commands.split)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--pool", help="pool file (.safetensors): k-means++ on its image features")
    source.add_argument("--subsets", help="ready subsets {subset: [ids]} instead, e.g. the "
                        "released cluster/kmeans++/modified.json")
    p.add_argument("--data", required=True, metavar="CC_SBU_ALIGN_DIR",
                   help="the cc_sbu_align folder (filter_cap.json + image/) of the pool")
    p.add_argument("--out", required=True, help="folder for subsets.json, <NN>/cc_sbu_align, "
                   "<NN>/finetune.yaml and launch.sh")
    p.add_argument("--k", type=int, help="number of subsets (default: split.k of "
                   "pipeline/base.yaml, the paper's 30)")
    p.add_argument("--seed", type=int, help="k-means++ seed (default: split.seed of "
                   "pipeline/base.yaml, 0 as the original)")
    p.add_argument("--template", help="MiniGPT-4 train config copied per subset (default: the "
                   "shipped minigpt4/subset_finetune.yaml)")
    p.add_argument("--slurm", action="store_true", help="also write slurm_array.sh, one array "
                   "task per subset")
    p.add_argument("--drop-remainder", action="store_true", help="the original's sizes: N // k "
                   "each, the N %% k surplus samples dropped (default: sizes differ by one)")
    p.add_argument("--copy-images", action="store_true",
                   help="copy images into the subset folders instead of symlinking them")
    _add_encoding(p)

    p = commands.add_parser("labels", help="subset labels from evaluation results")
    actions = p.add_subparsers(dest="labels_command", metavar="ACTION", required=True)
    q = actions.add_parser("collect", help="Arena result.json files (answers/{model}/{time}/) -> "
                           "labels.json: mean accuracy x 100, noise of repeated runs")
    q.set_defaults(run=labels_commands.labels_collect)
    q.add_argument("paths", nargs="+", metavar="PATH", help="a split folder (from igpt4 split), "
                   "subset or answers folders, a labels JSON, or the original layout")
    q.add_argument("--out", required=True, help="labels file to write (JSON)")
    q.add_argument("--datasets", help="comma-separated datasets averaged into the label "
                   "(default: labels.datasets of pipeline/base.yaml, the paper's four)")
    q.add_argument("--allow-missing", action="store_true", help="average the datasets a subset "
                   "has instead of stopping when one is missing (recorded in the file)")
    q.add_argument("--model", help="use the runs of this model (the {model} folder of "
                   "answers/{model}/{time}/) where subsets were evaluated with several")

    p = commands.add_parser("study", help="a grid of selection methods x seeds at one budget "
                            "(+ the full data), each a cc_sbu_align selection with its fine-tune "
                            "config, and a resumable launcher; then: igpt4 study collect DIR")
    p.set_defaults(run=app_commands.study)
    p.add_argument("--pool", help="pool file (features + indicators)")
    p.add_argument("--data", metavar="DATA", help="the pool's cc_sbu_align folder or conversation "
                   "JSON (its selections: conversations.json + image/, llava_conversations)")
    p.add_argument("--image-root", help="images of a conversation JSON (default: its folder)")
    p.add_argument("--methods", metavar="SPEC,...", help="comma-separated methods of igpt4 select "
                   "--method, e.g. selector,random,cluster-random,top:clip,ifd")
    p.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1 of the methods that draw "
                   "at random (default 5); the others get one run")
    p.add_argument("--num", type=int, help="the budget: samples per selection (default: "
                   "selection.num_samples)")
    p.add_argument("--out", help="the study folder (DIR/<method>/<seed>/, DIR/full/, "
                   "DIR/launch.sh, DIR/study.json)")
    p.add_argument("--checkpoint", help="selector checkpoint folder (--methods selector)")
    p.add_argument("--subsets", help="subsets file (linear)")
    p.add_argument("--labels", help="labels file (linear)")
    p.add_argument("--work", help="cache folder of methods that compute values (perplexity, ifd)")
    p.add_argument("--template", help="MiniGPT-4 train config copied per run (default: the "
                   "shipped minigpt4/subset_finetune.yaml)")
    p.add_argument("--datasets", help="comma-separated Arena datasets launch.sh evaluates on "
                   "(default: gqa,iconqa,okvqa,scienceqa)")
    p.add_argument("--slurm", action="store_true", help="also write slurm_array.sh, one array "
                   "task per run")
    p.add_argument("--full", action=argparse.BooleanOptionalAction, default=True,
                   help="also the full-data run, DIR/full (default: on)")
    p.add_argument("--force", action="store_true", help="rerun into a study made with other "
                   "arguments: rewrite the runs they change")
    _add_settings(p)
    actions = p.add_subparsers(dest="study_command", metavar="ACTION")
    q = actions.add_parser("collect", help="Arena results of every run -> per method mean "
                           "accuracy, 95%% interval over seeds, paired difference to random; "
                           "DIR/study_results.json and the study page")
    q.set_defaults(run=app_commands.study_collect)
    q.add_argument("study_dir", metavar="DIR", help="the folder igpt4 study wrote")
    q.add_argument("--out", dest="results_out", help="results file (default: "
                   "DIR/study_results.json)")
    q.add_argument("--html", help="the study page (default: study_report.html beside the "
                   "results; its plot as <name>_methods.png)")
    q.add_argument("--model", help="use the runs of this model (the {model} folder of "
                   "answers/{model}/{time}/) where runs were evaluated with several")

    p = commands.add_parser("run", help="the whole pipeline from one YAML recipe; stages whose "
                            "inputs and settings are unchanged are skipped")
    p.set_defaults(run=app_commands.run)
    p.add_argument("--config", required=True, help="a recipe: a path, or a shipped name "
                   "(instructiongpt4.yaml, llava_conversations.yaml, demo.yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one recipe setting, e.g. --set pipeline.data=/data/cc "
                   "(repeatable)")
    p.add_argument("--from", dest="start", metavar="STAGE", help="start at this stage (the "
                   "stages before it must be current)")
    p.add_argument("--until", metavar="STAGE", help="stop after this stage")
    p.add_argument("--force", action="store_true", help="rerun the stages in range even when "
                   "current")

    p = commands.add_parser("configs", help="list the shipped configs, or print one's path "
                            "(for train.py --cfg-path)")
    p.set_defaults(run=app_commands.configs)
    p.add_argument("name", nargs="?", help="e.g. minigpt4/instructiongpt4_stage2_finetune.yaml")

    p = commands.add_parser("report", help="one self-contained HTML report of a selection: "
                            "indicator plots, correlations, cluster quotas, cross-validation, "
                            "examples")
    p.set_defaults(run=report_commands.report)
    p.add_argument("--selection", required=True, metavar="OUT_DIR",
                   help="the folder igpt4 select wrote (manifest.json)")
    p.add_argument("--pool", required=True, help="the pool file the selection was made from")
    p.add_argument("--checkpoint", help="selector checkpoint folder, for its cross-validation "
                   "table (default: the one the manifest records, when it still exists)")
    p.add_argument("--data", help="cc_sbu_align folder or conversation JSON: captions and "
                   "thumbnails of the examples (default: the selection's own filter_cap.json, "
                   "selected samples only)")
    p.add_argument("--out", help="HTML file to write (default: OUT_DIR/report.html); the plots "
                   "(PNG) and the numbers (<name>_data.json) are written beside it")
    p.add_argument("--examples", type=int, metavar="N", help="examples shown per group "
                   "(selected, near misses, rejected; default: report.examples of "
                   "pipeline/base.yaml, 12)")

    add_eval_parsers(commands)  # igpt4 eval ..., eval rerun DIR, eval judge ...

    p = commands.add_parser("demo", help="every stage on a generated TOY world (drawn images with "
                            "planted bad captions, tiny models, labels from fine-tunes of a toy "
                            "MiniGPT-4), minutes on a CPU")
    p.set_defaults(run=app_commands.demo)
    p.add_argument("--out", default="demo_out")
    p.add_argument("--samples", type=int, help="toy pool size (default: configs/pipeline/demo.yaml's "
                   "demo.samples, 600)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--kind", choices=["captions", "conversations"], default="captions",
                   help="captions (default): a cc_sbu_align pool; conversations: a multi-round "
                   "LLaVA-format pool (llava_conversations builder), its picks also judged with "
                   "igpt4 eval judge against a toy judge on 127.0.0.1")
    p.add_argument("--labels", choices=["toy_finetune", "oracle"], default="toy_finetune",
                   help="toy_finetune (default, demo.yaml): each subset fine-tuned and evaluated; "
                   "oracle (demo_oracle.yaml): the fast path, labels from a synthetic oracle and "
                   "no comparison fine-tunes")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a demo recipe setting, e.g. --set select.num_samples=20")
    return parser


#: counts given on the command line that must be whole numbers >= 1 (0 never means "the default")
_COUNTS = {"num": "--num", "k": "--k", "samples": "--samples"}


def _check_counts(args: argparse.Namespace) -> None:
    for name, flag in _COUNTS.items():
        value = getattr(args, name, None)
        if value is not None and value < 1:
            raise InputError(f"{flag} must be a whole number >= 1, not {value}")


def run_command(args: argparse.Namespace) -> int:
    """What every command goes through before its handler (``args.run``): ``--encoding`` holds
    for every text file it reads (one setting, not a parameter threaded through every reader),
    an output that overlaps an input is refused before anything is written, counts are checked."""
    from selector.app.command_overlap import refuse_command_overlap
    from selector.core.jsonio import text_encoding

    with text_encoding(getattr(args, "encoding", None)):
        refuse_command_overlap(args)  # before anything is written: outputs vs inputs
        _check_counts(args)
        return args.run(args)


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    return run_reporting_errors(lambda: run_command(args), args.debug)


if __name__ == "__main__":
    sys.exit(main())
