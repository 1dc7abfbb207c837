"""The ``igpt4`` sub-command this stage owns: ``report``.

A handler is ``(args) -> exit status``, registered by :mod:`selector.app.cli` with
``set_defaults(run=...)``; it imports its work when it runs, so that building the parser (and
``igpt4 --help``) imports nothing heavy (numpy, matplotlib).
"""
from __future__ import annotations

import argparse


def report(args: argparse.Namespace) -> int:
    """``igpt4 report``: one self-contained HTML report of a selection."""
    from selector.core.provenance import log
    from selector.report.page import report_command

    from selector.core.settings import shipped

    examples = args.examples if args.examples is not None else shipped("pipeline/base.yaml",
                                                                       "report", "examples")
    path = report_command(args.selection, args.pool, args.checkpoint, args.data, args.out,
                          examples)
    log(f"report -> {path}")
    return 0
