"""The ``igpt4`` sub-commands the app owns: ``run`` (the pipeline), ``configs`` and ``demo``.

A handler is ``(args) -> exit status``, registered by :mod:`selector.app.cli` with
``set_defaults(run=...)``; it imports its work when it runs, so that building the parser (and
``igpt4 --help``) imports nothing heavy.
"""
from __future__ import annotations

import argparse

from selector.core.errors import InputError


def run(args: argparse.Namespace) -> int:
    """``igpt4 run --config RECIPE``: the whole pipeline; current stages are skipped."""
    from selector.app.pipeline import run_pipeline
    from selector.core.provenance import log

    pipeline = run_pipeline(args.config, args.overrides, args.start, args.until, args.force)
    log(f"pipeline -> {pipeline.work} (run_manifest.json)")
    return 0


def configs(args: argparse.Namespace) -> int:
    """``igpt4 configs [NAME]``: list the shipped configs, or print one's path."""
    from selector.core.settings import config_dir

    root = config_dir()
    if args.name is None:
        for path in sorted(root.rglob("*.yaml")):
            print(path.relative_to(root).as_posix())
    elif not (root / args.name).is_file():
        raise InputError(f"no shipped config {args.name!r} (igpt4 configs lists them)")
    else:
        print(root / args.name)
    return 0


def demo(args: argparse.Namespace) -> int:
    """``igpt4 demo``: every stage on a generated toy pool."""
    from selector.app.demo import run_demo

    run_demo(args.out, args.samples, args.seed, args.overrides)
    return 0
