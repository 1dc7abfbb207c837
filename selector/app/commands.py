"""The ``igpt4`` sub-commands the app owns: ``run`` (the pipeline), ``configs``, ``demo`` and
``study`` (with ``study collect``).

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

    run_demo(args.out, args.samples, args.seed, args.overrides, args.labels, args.kind)
    return 0


def study(args: argparse.Namespace) -> int:
    """``igpt4 study``: a grid of selection methods x seeds at one budget, ready to fine-tune and
    evaluate (``DIR/launch.sh``), resumable."""
    from selector.app.study import write_study

    needed = [flag for flag, value in (("--pool", args.pool), ("--data", args.data),
                                       ("--methods", args.methods), ("--out", args.out))
              if value is None]
    if needed:
        raise InputError(f"study needs {', '.join(needed)} (or: igpt4 study collect DIR)")
    write_study(args.out, args.pool, args.data, args.methods, args.seeds, args.num,
                args.checkpoint, args.subsets, args.labels, args.work, args.template,
                args.datasets, args.slurm, args.full, args.config, args.overrides, args.force,
                args.image_root)
    return 0


def study_collect(args: argparse.Namespace) -> int:
    """``igpt4 study collect DIR``: per method the mean accuracy, its interval over seeds and the
    paired difference to random -> DIR/study_results.json, a table, and the study page."""
    from selector.app.study import collect_command

    collect_command(args.study_dir, args.results_out, args.html, args.model)
    return 0
