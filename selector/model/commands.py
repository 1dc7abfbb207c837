"""The ``igpt4`` sub-command this stage owns: ``train-selector``.

A handler is ``(args) -> exit status``, registered by :mod:`selector.app.cli` with
``set_defaults(run=...)``; it imports its work when it runs, so that building the parser (and
``igpt4 --help``) imports nothing heavy (torch).
"""
from __future__ import annotations

import argparse


def train_selector(args: argparse.Namespace) -> int:
    """``igpt4 train-selector``: fit the selector on labelled subsets and write the checkpoint."""
    from selector.core.provenance import log
    from selector.core.settings import load_settings
    from selector.model import fit

    settings = load_settings(args.config, list(args.overrides))
    report = fit.train_selector(args.out, settings, args.pool, args.subsets, args.labels,
                                args.repo)
    log(f"selector checkpoint -> {args.out} (best epoch {report['best_epoch']}, "
        f"held-out MSE {report['final'].get('val_mse', float('nan')):.4f})")
    return 0
