"""The ``igpt4`` sub-commands this stage owns: ``score`` and ``parse-gpt``.

A handler is ``(args) -> exit status``, registered by :mod:`selector.app.cli` with
``set_defaults(run=...)``; it imports its work when it runs, so that building the parser (and
``igpt4 --help``) imports nothing heavy.
"""
from __future__ import annotations

import argparse

from selector.core.errors import EXIT_BAD_INPUT, InputError


def score(args: argparse.Namespace) -> int:
    """``igpt4 score``: indicators for every sample (cached), a flat table and/or the pool file;
    with ``--strict``, exit 2 when a sample lacks a value."""
    from selector.core.settings import load_settings
    from selector.scoring.score import score as compute_scores

    settings = load_settings(args.config, args.overrides, base="indicators/default.yaml")
    names = ([n.strip() for n in args.indicators.split(",") if n.strip()]
             if args.indicators is not None else list(settings["pool"]["indicators"]))
    if not (args.out or args.pool_out or args.dry_run):
        raise InputError("score needs --out (a table) and/or --pool-out (the pool file)")
    summary = compute_scores(args.data, args.work, args.out, names, settings, args.image_root,
                             args.skip_invalid, args.pool_out, args.pca_from, args.dry_run)
    return EXIT_BAD_INPUT if args.strict and not summary.complete else 0


def parse_gpt(args: argparse.Namespace) -> int:
    """``igpt4 parse-gpt REPLIES``: GPT judge replies -> integer scores; with ``--strict``, exit 2
    when a reply has none."""
    from selector.core.jsonio import write_json
    from selector.core.provenance import log
    from selector.scoring.gpt_reply import parse_reply_file

    parsed, flagged = parse_reply_file(args.replies)
    write_json(args.out, {"annotations": parsed, "flagged": flagged}, indent=4)
    for item in flagged:
        log(f"{args.replies}: sample {item['sample']}: {item['problem']}")
    print(f"{len(parsed)} scores -> {args.out}; {len(flagged)} replies flagged")
    return EXIT_BAD_INPUT if flagged and args.strict else 0
