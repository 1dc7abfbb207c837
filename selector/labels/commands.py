"""The ``igpt4`` sub-commands this stage owns: ``split`` and ``labels collect``.

A handler is ``(args) -> exit status``, registered by :mod:`selector.app.cli` with
``set_defaults(run=...)``. The work behind them is :mod:`selector.labels.steps`, which imports
numpy when it loads; these handlers live apart from it and import it when they run, so that
building the parser (and ``igpt4 --help``) imports nothing heavy.
"""
from __future__ import annotations

import argparse


def split(args: argparse.Namespace) -> int:
    """``igpt4 split``: balanced k-means++ subsets (or given ones) exported for fine-tuning."""
    from selector.labels.steps import split_command

    split_command(args.out, args.data, args.pool, args.k, args.seed, args.template, args.slurm,
                  args.subsets, args.drop_remainder, "copy" if args.copy_images else "link")
    return 0


def labels_collect(args: argparse.Namespace) -> int:
    """``igpt4 labels collect PATH...``: the subsets' Arena results -> labels.json."""
    from selector.labels.steps import labels_collect_command

    datasets = ([d.strip() for d in args.datasets.split(",") if d.strip()]
                if args.datasets is not None else None)  # None: labels.datasets of pipeline/base.yaml
    labels_collect_command(args.paths, args.out, datasets, args.allow_missing, args.model)
    return 0
