"""``igpt4 eval judge``: argument parsing only (the work is imported when the command runs, so
``igpt4 --help`` stays instant). ``python -m eval_arena.judge_cli ARGS`` runs it on its own."""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from selector.core.errors import EXIT_BAD_INPUT, run_reporting_errors


def add_judge_parser(eval_subparsers: "argparse._SubParsersAction") -> argparse.ArgumentParser:
    """Add ``judge`` to the ``igpt4 eval`` sub-commands."""
    p = eval_subparsers.add_parser(
        "judge", help="open-ended evaluation: a GPT judge scores answers against reference "
        "answers (LLaVA-Bench relative score), single- and multi-round",
        description="Judge each answer (each round of a conversation, with the earlier rounds "
        "as context) against a reference answer with a GPT model; report mean(model) / "
        "mean(reference) x 100 overall, per category and per round. Cached and resumable: a "
        "rerun sends nothing already judged. The key is read from $OPENAI_API_KEY only.")
    p.add_argument("--questions", required=True, help="questions JSONL: question_id, image, "
                   "category, and text | rounds | conversations")
    p.add_argument("--references", help="reference answers JSONL (question_id, round, text); "
                   "default: the gpt turns of the questions' conversations")
    p.add_argument("--answers", required=True, help="the model's answers: JSONL (question_id, "
                   "round, text) or the Arena's answers JSON")
    p.add_argument("--context", help="LLaVA-Bench context.jsonl ({image, caption}): describes "
                   "each image to the judge")
    p.add_argument("--out", required=True, help="folder for reviews.jsonl and summary.json")
    p.add_argument("--cache", help="folder of the judgement cache (cache.sqlite; default OUT); "
                   "share one across evaluations")
    p.add_argument("--model", default="gpt-4-0613", help="judge model (default gpt-4-0613)")
    p.add_argument("--base-url", help="an OpenAI-compatible server instead of OpenAI's")
    p.add_argument("--mode", choices=("online", "batch"), default="online",
                   help="online requests, or the Batch API (half the price, within 24 h)")
    p.add_argument("--concurrency", type=int, default=16, help="requests in flight (default 16)")
    p.add_argument("--temperature", type=float, default=0.2, help="default 0.2, as LLaVA")
    p.add_argument("--max-tokens", type=int, default=1024, help="reply limit (default 1024)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per attempt")
    p.add_argument("--max-retries", type=int, default=6, help="the SDK's retries (429, 5xx)")
    p.add_argument("--poll-seconds", type=float, default=30.0,
                   help="batch mode: seconds between polls of a batch (default 30)")
    p.add_argument("--input-price", type=float, default=30.0,
                   help="USD per 1M input tokens, for --dry-run (default: gpt-4's 30)")
    p.add_argument("--output-price", type=float, default=60.0,
                   help="USD per 1M output tokens, for --dry-run (default: gpt-4's 60)")
    p.add_argument("--allow-missing", action="store_true", help="judge the rounds that have "
                   "an answer and a reference instead of stopping (missing ones are counted)")
    p.add_argument("--retry-flagged", action="store_true", help="ask again for rounds whose "
                   "cached reply had no usable scores")
    p.add_argument("--dry-run", action="store_true", help="count what would be sent and "
                   "estimate the cost; send and write nothing")
    p.add_argument("--strict", action="store_true", help="exit 2 unless every round got two "
                   "scores (none flagged, failed or missing)")
    p.set_defaults(eval_command="judge")  # whatever dest the eval sub-commands use
    return p


def run_judge(args: argparse.Namespace) -> int:
    from selector.core.overlap import refuse_overlap

    from eval_arena.judge import GptJudge, describe, judge

    refuse_overlap({"--out": args.out, "--cache": args.cache}
                   if args.cache is None or not _same_path(args.cache, args.out)
                   else {"--out": args.out},
                   {"--questions": args.questions, "--references": args.references,
                    "--answers": args.answers, "--context": args.context})

    gpt = GptJudge(model=args.model, base_url=args.base_url, mode=args.mode,
                   concurrency=args.concurrency, temperature=args.temperature,
                   max_tokens=args.max_tokens, timeout=args.timeout,
                   max_retries=args.max_retries, poll_seconds=args.poll_seconds,
                   input_price_per_1m=args.input_price,
                   output_price_per_1m=args.output_price)
    summary = judge(args.questions, args.answers, args.out, references=args.references,
                    context=args.context, judge_model=gpt, cache_dir=args.cache,
                    allow_missing=args.allow_missing, retry_flagged=args.retry_flagged,
                    dry_run=args.dry_run)
    if args.dry_run:
        print(f"dry run (nothing sent): {summary['items']} rounds, {summary['cached']} cached, "
              f"{summary['requests']} to send to {summary['model']} ({summary['mode']}): "
              f"~{summary['input_tokens']:,} input + {summary['output_tokens']:,} output tokens "
              f"({summary['token_count_method']}), estimated cost ${summary['cost_usd']:,.2f}")
        return 0
    print(describe(summary))
    print(f"reviews -> {args.out}/reviews.jsonl, summary -> {args.out}/summary.json")
    clean = summary["flagged"] == 0 and summary["complete"]
    return EXIT_BAD_INPUT if args.strict and not clean else 0


def _same_path(first: str, second: str) -> bool:
    from selector.core.overlap import real_path

    return real_path(first) == real_path(second)  # --cache OUT is the default, spelt out


def main(argv: Optional[List[str]] = None) -> int:
    """``python -m eval_arena.judge_cli ARGS``: as ``igpt4 eval judge ARGS`` (one error line)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv  # igpt4's global option
    parser = argparse.ArgumentParser(prog="igpt4 eval")
    add_judge_parser(parser.add_subparsers(dest="eval_command", required=True))
    args = parser.parse_args(["judge", *(arg for arg in argv if arg != "--debug")])
    return run_reporting_errors(lambda: run_judge(args), debug)


if __name__ == "__main__":
    sys.exit(main())
