"""The ``igpt4`` sub-commands this stage owns: ``select`` and ``reference-select``.

A handler is ``(args) -> exit status``, registered by :mod:`selector.app.cli` with
``set_defaults(run=...)``; it imports its work when it runs, so that building the parser (and
``igpt4 --help``) imports nothing heavy (torch, numpy, scikit-learn).
"""
from __future__ import annotations

import argparse


def _image_mode(args: argparse.Namespace) -> str:
    """``--copy-images``: copy the selected images into OUT/image instead of linking them."""
    return "copy" if args.copy_images else "link"


def select(args: argparse.Namespace) -> int:
    """``igpt4 select``: score a pool with a selection method (the trained selector by default, a
    baseline, or ``--method``) and keep the budget."""
    from selector.core.provenance import log
    from selector.core.settings import settings_from_layers, user_layers
    from selector.model.fit import model_keys_set
    from selector.selection import select as work

    extra = [f"selection.num_samples={args.num}"] if args.num is not None else []
    layers = user_layers(args.config, list(args.overrides) + extra)  # read and parsed once
    selected = work.select(args.out, settings_from_layers("selector/default.yaml", layers),
                           args.pool, args.checkpoint, args.clusters, args.baseline, args.data,
                           args.captions, _image_mode(args), args.skip_invalid,
                           model_keys_set(layers), method=args.method, seed=args.seed,
                           subsets_path=args.subsets, labels_path=args.labels, work=args.work,
                           diversity=args.diversity, image_root=args.image_root)
    log(f"selected {len(selected)} samples -> {args.out}")
    return 0


def reference_select(args: argparse.Namespace) -> int:
    """``igpt4 reference-select``: the released selection, recomputed from the original layout."""
    from selector.core.provenance import log
    from selector.selection import reference_select as work

    selected = work.reference_select(args.repo, args.out, args.data, args.num, _image_mode(args),
                                     args.skip_invalid)
    log(f"selected {len(selected)} samples -> {args.out}/filter_cap.json "
        f"(manifest: {args.out}/manifest.json)")
    return 0
