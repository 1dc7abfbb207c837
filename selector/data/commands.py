"""The ``igpt4`` sub-command this stage owns: ``validate``.

A handler is ``(args) -> exit status``, registered by :mod:`selector.app.cli` with
``set_defaults(run=...)``; it imports its work when it runs, so that building the parser (and
``igpt4 --help``) imports nothing heavy.
"""
from __future__ import annotations

import argparse

from selector.core.errors import EXIT_BAD_INPUT


def validate(args: argparse.Namespace) -> int:
    """``igpt4 validate DATA``: read the data set, report each invalid sample; exit 2 when any."""
    from selector.core.provenance import log
    from selector.data.samples import read_pool

    pool = read_pool(args.data, args.image_root, skip_invalid=args.skip_invalid)
    if args.report:
        pool.write_skip_report(args.report)
    for skipped in pool.skipped:
        log(skipped.line())
    text_only = pool.text_only  # conversations without an image (a line only when there are)
    print(f"{pool.source} ({pool.kind}, {pool.encoding}): {len(pool)} valid samples, "
          f"{len(pool.skipped)} invalid"
          + (f"; {text_only} of the valid are text-only (no image)" if text_only else ""))
    return EXIT_BAD_INPUT if pool.skipped else 0
