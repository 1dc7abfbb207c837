"""Before an ``igpt4`` command writes anything: refuse an output that is, contains or lies inside
one of its inputs."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional


def _settings_file(args: Any) -> Optional[str]:
    """The ``--config`` a command reads, as a path when it is one (a shipped name is no user file)."""
    value = getattr(args, "config", None)
    return value if value and Path(value).expanduser().exists() else None


def refuse_command_overlap(args: Any) -> None:
    """Before a command writes anything: refuse an output that is, contains or lies inside one of
    its inputs (:func:`selector.overlap.refuse_overlap`), for every ``igpt4`` command that writes.
    ``args`` is the parsed command line; ``eval`` checks its own (:mod:`eval_arena.cli`)."""
    from selector.core.overlap import refuse_overlap

    command = args.command
    config = _settings_file(args)
    if command == "reference-select":
        refuse_overlap({"--out": args.out}, {"--repo": args.repo, "--data": args.data})
    elif command == "train-selector":
        refuse_overlap({"--out": args.out}, {"--pool": args.pool, "--subsets": args.subsets,
                                             "--labels": args.labels, "--repo": args.repo,
                                             "--config": config})
    elif command == "select":
        refuse_overlap({"--out": args.out}, {
            "--pool": args.pool, "--checkpoint": args.checkpoint, "--clusters": args.clusters,
            "--data": args.data, "--captions": args.captions, "--config": config})
    elif command == "score":
        refuse_overlap({"--out": args.out, "--pool-out": args.pool_out, "--work": args.work},
                       {"--data": args.data, "--image-root": args.image_root,
                        "--pca-from": args.pca_from, "--config": config})
    elif command == "validate":
        refuse_overlap({"--report": args.report}, {"data": args.data,
                                                   "--image-root": args.image_root})
    elif command == "parse-gpt":
        refuse_overlap({"--out": args.out}, {"replies": args.replies})
    elif command == "split":
        refuse_overlap({"--out": args.out}, {"--pool": args.pool, "--subsets": args.subsets,
                                             "--data": args.data, "--template": args.template})
    elif command == "labels":
        refuse_overlap({"--out": args.out}, {"PATH": list(args.paths)})
