"""``igpt4``: the command line. Parsing only; each command imports its work lazily so that
``igpt4 --help`` stays instant. Bad input: one line on stderr and exit status 2 (``--debug`` for
the traceback)."""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from selector.core.errors import EXIT_BAD_INPUT, InputError, run_reporting_errors


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
    p.add_argument("--repo", required=True, help="checkout of the original repository's data")
    p.add_argument("--out", required=True)
    p.add_argument("--num", type=int, default=200, help="samples to keep (default 200)")
    _add_data_out(p)
    _add_encoding(p)

    p = commands.add_parser("train-selector", help="fit the selector on labelled subsets, "
                            "with leave-one-subset-out cross-validation")
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
    p.add_argument("--pool", required=True, help="pool file (features + indicators)")
    p.add_argument("--checkpoint", help="selector checkpoint folder (or a released .pth)")
    p.add_argument("--clusters", help="diversity clusters {cluster: [ids]} instead of spectral "
                   "clustering of the image features")
    p.add_argument("--baseline", help="ablation instead of the selector: random, or "
                   "top:<indicator> (e.g. top:clip)")
    p.add_argument("--captions", metavar="CC_SBU_ALIGN_DIR", help="take captions from this "
                   "folder's filter_cap.json without linking images")
    p.add_argument("--num", type=int, help="samples to keep (default: selection.num_samples)")
    p.add_argument("--out", required=True)
    _add_data_out(p)
    _add_settings(p)
    _add_encoding(p)

    p = commands.add_parser("score", help="compute indicators for every sample (cached, "
                            "resumable) and export a flat table")
    p.add_argument("--data", required=True, help="cc_sbu_align folder or conversation JSON")
    p.add_argument("--image-root", help="image folder of conversation JSON")
    p.add_argument("--work", default="work", help="work dir holding the cache (cache.sqlite)")
    p.add_argument("--indicators", default="clip,reward,length,gpt",
                   help="comma-separated names (default: the paper's four)")
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
    p.add_argument("data", help="cc_sbu_align folder, or LLaVA-style conversation JSON")
    p.add_argument("--image-root", help="image folder of conversation JSON (default: its folder)")
    p.add_argument("--skip-invalid", action="store_true", help="report every invalid sample "
                   "instead of stopping at the first")
    p.add_argument("--report", help="write the skip report here (JSON)")
    _add_encoding(p)

    p = commands.add_parser("parse-gpt", help="parse GPT judge replies into scores")
    p.add_argument("replies", help="JSON with {annotations: [{image_id, caption, gpt_score: "
                   "reply text}]} (UTF-8 or GB18030)")
    p.add_argument("--out", required=True, help="JSON with the integer gpt_score per sample")
    p.add_argument("--strict", action="store_true", help="exit 2 when any reply has no score")
    _add_encoding(p)

    p = commands.add_parser("split", help="balanced k-means++ subsets of the pool, each a "
                            "cc_sbu_align folder + MiniGPT-4 fine-tune config, and a launcher "
                            "that fine-tunes and evaluates them (the paper's labelled subsets)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--pool", help="pool file (.safetensors): k-means++ on its image features")
    source.add_argument("--subsets", help="ready subsets {subset: [ids]} instead, e.g. the "
                        "released cluster/kmeans++/modified.json")
    p.add_argument("--data", required=True, metavar="CC_SBU_ALIGN_DIR",
                   help="the cc_sbu_align folder (filter_cap.json + image/) of the pool")
    p.add_argument("--out", required=True, help="folder for subsets.json, <NN>/cc_sbu_align, "
                   "<NN>/finetune.yaml and launch.sh")
    p.add_argument("--k", type=int, default=30, help="number of subsets (default 30)")
    p.add_argument("--seed", type=int, default=0, help="k-means++ seed (default 0, as the original)")
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
    q.add_argument("paths", nargs="+", metavar="PATH", help="a split folder (from igpt4 split), "
                   "subset or answers folders, a labels JSON, or the original layout")
    q.add_argument("--out", required=True, help="labels file to write (JSON)")
    q.add_argument("--datasets", default="gqa,iconqa,okvqa,scienceqa",
                   help="comma-separated datasets averaged into the label (default: the paper's "
                   "four)")
    q.add_argument("--allow-missing", action="store_true", help="average the datasets a subset "
                   "has instead of stopping when one is missing (recorded in the file)")
    q.add_argument("--model", help="use the runs of this model (the {model} folder of "
                   "answers/{model}/{time}/) where subsets were evaluated with several")

    p = commands.add_parser("run", help="the whole pipeline from one YAML recipe; stages whose "
                            "inputs and settings are unchanged are skipped")
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
    p.add_argument("name", nargs="?", help="e.g. minigpt4/instructiongpt4_stage2_finetune.yaml")

    p = commands.add_parser("report", help="one self-contained HTML report of a selection: "
                            "indicator plots, correlations, cluster quotas, cross-validation, "
                            "examples")
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
    p.add_argument("--examples", type=int, default=12, metavar="N",
                   help="examples shown per group (selected, near misses, rejected; default 12)")

    from eval_arena.cli import add_parsers as add_eval_parsers

    add_eval_parsers(commands)  # igpt4 eval ..., eval rerun DIR, eval judge ...

    p = commands.add_parser("demo", help="every stage on a generated TOY pool (drawn images with "
                            "planted bad captions, tiny models, oracle labels), minutes on a CPU")
    p.add_argument("--out", default="demo_out")
    p.add_argument("--samples", type=int, help="toy pool size (default: configs/pipeline/demo.yaml's "
                   "demo.samples, 600)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a demo recipe setting, e.g. --set select.num_samples=20")
    return parser


def _settings(args: argparse.Namespace, extra: Optional[List[str]] = None):
    from selector.core.settings import load_settings

    return load_settings(args.config, list(args.overrides) + list(extra or []))


#: counts given on the command line that must be whole numbers >= 1 (0 never means "the default")
_COUNTS = {"num": "--num", "k": "--k", "samples": "--samples"}


def _check_counts(args: argparse.Namespace) -> None:
    for name, flag in _COUNTS.items():
        value = getattr(args, name, None)
        if value is not None and value < 1:
            raise InputError(f"{flag} must be a whole number >= 1, not {value}")


def _run(args: argparse.Namespace) -> int:
    from selector.app.command_overlap import refuse_command_overlap
    from selector.core.provenance import log

    refuse_command_overlap(args)  # before anything is written: outputs vs inputs
    _check_counts(args)
    image_mode = "copy" if getattr(args, "copy_images", False) else "link"
    if args.command == "reference-select":
        from selector.selection.reference_select import reference_select

        selected = reference_select(args.repo, args.out, args.data, args.num, image_mode,
                                             args.skip_invalid)
        log(f"selected {len(selected)} samples -> {args.out}/filter_cap.json "
                     f"(manifest: {args.out}/manifest.json)")
    elif args.command == "train-selector":
        from selector.model.fit import train_selector

        report = train_selector(args.out, _settings(args), args.pool, args.subsets,
                                         args.labels, args.repo)
        log(f"selector checkpoint -> {args.out} (best epoch {report['best_epoch']}, "
                     f"held-out MSE {report['final'].get('val_mse', float('nan')):.4f})")
    elif args.command == "select":
        from selector.core.settings import settings_from_layers, user_layers

        extra = [f"selection.num_samples={args.num}"] if args.num is not None else []
        layers = user_layers(args.config, list(args.overrides) + extra)  # read and parsed once
        from selector.model.fit import model_keys_set
        from selector.selection import select as select_command

        selected = select_command.select(args.out, settings_from_layers("selector/default.yaml", layers),
                                   args.pool, args.checkpoint, args.clusters, args.baseline,
                                   args.data, args.captions, image_mode, args.skip_invalid,
                                   model_keys_set(layers))
        log(f"selected {len(selected)} samples -> {args.out}")
    elif args.command == "score":
        from selector.scoring.score import score
        from selector.core.settings import load_settings

        settings = load_settings(args.config, args.overrides, base="indicators/default.yaml")
        names = [n.strip() for n in args.indicators.split(",") if n.strip()]
        if not (args.out or args.pool_out or args.dry_run):
            raise InputError("score needs --out (a table) and/or --pool-out (the pool file)")
        summary = score(args.data, args.work, args.out, names, settings, args.image_root,
                        args.skip_invalid, args.pool_out, args.pca_from, args.dry_run)
        return EXIT_BAD_INPUT if args.strict and not summary.complete else 0
    elif args.command == "validate":
        from selector.data.samples import read_pool

        pool = read_pool(args.data, args.image_root, skip_invalid=args.skip_invalid)
        if args.report:
            pool.write_skip_report(args.report)
        for skipped in pool.skipped:
            log(skipped.line())
        print(f"{pool.source} ({pool.kind}, {pool.encoding}): {len(pool)} valid samples, "
              f"{len(pool.skipped)} invalid")
        return EXIT_BAD_INPUT if pool.skipped else 0
    elif args.command == "parse-gpt":
        from selector.scoring.gpt_reply import parse_reply_file
        from selector.core.jsonio import write_json

        parsed, flagged = parse_reply_file(args.replies)
        write_json(args.out, {"annotations": parsed, "flagged": flagged}, indent=4)
        for item in flagged:
            log(f"{args.replies}: sample {item['sample']}: {item['problem']}")
        print(f"{len(parsed)} scores -> {args.out}; {len(flagged)} replies flagged")
        return EXIT_BAD_INPUT if flagged and args.strict else 0
    elif args.command == "report":
        from selector.report.page import report_command

        path = report_command(args.selection, args.pool, args.checkpoint, args.data, args.out,
                              args.examples)
        log(f"report -> {path}")
    elif args.command == "eval":
        from eval_arena.cli import run as run_eval

        return run_eval(args)
    elif args.command == "split":
        from selector.labels.commands import split_command

        split_command(args.out, args.data, args.pool, args.k, args.seed, args.template,
                      args.slurm, args.subsets, args.drop_remainder, image_mode)
    elif args.command == "labels":
        from selector.labels.commands import labels_collect_command

        datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
        labels_collect_command(args.paths, args.out, datasets, args.allow_missing, args.model)
    elif args.command == "run":
        from selector.app.pipeline import run_pipeline

        pipeline = run_pipeline(args.config, args.overrides, args.start, args.until, args.force)
        log(f"pipeline -> {pipeline.work} (run_manifest.json)")
    elif args.command == "configs":
        from selector.core.settings import config_dir

        root = config_dir()
        if args.name is None:
            for path in sorted(root.rglob("*.yaml")):
                print(path.relative_to(root).as_posix())
        elif not (root / args.name).is_file():
            raise InputError(f"no shipped config {args.name!r} (igpt4 configs lists them)")
        else:
            print(root / args.name)
    elif args.command == "demo":
        from selector.app.demo import run_demo

        run_demo(args.out, args.samples, args.seed, args.overrides)
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    return run_reporting_errors(lambda: _run_decoding(args), args.debug)


def _run_decoding(args: argparse.Namespace) -> int:
    """``--encoding`` holds for every text file the command reads (one setting, not a parameter
    threaded through every reader)."""
    from selector.core.jsonio import text_encoding

    with text_encoding(getattr(args, "encoding", None)):
        return _run(args)


if __name__ == "__main__":
    sys.exit(main())
