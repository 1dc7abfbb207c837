"""Before an ``igpt4`` command writes anything: refuse an output that is, contains or lies inside
one of its inputs.

Each command that writes declares here which of its options it writes and which it reads (flag ->
the attribute of the parsed command line); ``eval`` checks its own (:mod:`eval_arena.cli`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional, Tuple

#: the settings file a command reads: its ``--config``, when that is a path
CONFIG = "--config"

#: command -> (outputs, inputs), each ``{flag: attribute}``, in the order a refusal names them
PATHS: Dict[str, Tuple[Dict[str, str], Dict[str, str]]] = {
    "reference-select": ({"--out": "out"}, {"--repo": "repo", "--data": "data"}),
    "train-selector": ({"--out": "out"}, {"--pool": "pool", "--subsets": "subsets",
                                          "--labels": "labels", "--repo": "repo",
                                          CONFIG: "config"}),
    "select": ({"--out": "out", "--work": "work"},
               {"--pool": "pool", "--checkpoint": "checkpoint", "--clusters": "clusters",
                "--data": "data", "--image-root": "image_root", "--captions": "captions",
                "--subsets": "subsets",
                "--labels": "labels", CONFIG: "config"}),
    "score": ({"--out": "out", "--pool-out": "pool_out", "--work": "work"},
              {"--data": "data", "--image-root": "image_root", "--pca-from": "pca_from",
               CONFIG: "config"}),
    "validate": ({"--report": "report"}, {"data": "data", "--image-root": "image_root"}),
    "parse-gpt": ({"--out": "out"}, {"replies": "replies"}),
    "split": ({"--out": "out"}, {"--pool": "pool", "--subsets": "subsets", "--data": "data",
                                 "--template": "template"}),
    "labels": ({"--out": "out"}, {"PATH": "paths"}),
    # igpt4 study (igpt4 study collect checks its own: its results go inside the study folder)
    "study": ({"--out": "out", "--work": "work"},
              {"--pool": "pool", "--data": "data", "--image-root": "image_root",
               "--checkpoint": "checkpoint",
               "--subsets": "subsets", "--labels": "labels", "--template": "template",
               CONFIG: "config"}),
}


def _settings_file(args: Any) -> Optional[str]:
    """The ``--config`` a command reads, as a path when it is one (a shipped name is no user file)."""
    value = getattr(args, "config", None)
    return value if value and Path(value).expanduser().exists() else None


def _value(args: Any, flag: str, attribute: str, config: Optional[str]) -> Any:
    if flag == CONFIG:
        return config
    value = getattr(args, attribute)
    return list(value) if isinstance(value, (list, tuple)) else value


def refuse_command_overlap(args: Any) -> None:
    """Before a command writes anything: refuse an output that is, contains or lies inside one of
    its inputs (:func:`selector.core.overlap.refuse_overlap`), for every ``igpt4`` command that
    writes (:data:`PATHS`). ``args`` is the parsed command line."""
    from selector.core.overlap import refuse_overlap

    config = _settings_file(args)  # for every command (``run`` too): a bad path fails here
    declared = PATHS.get(args.command)
    if declared is None:  # writes nothing, or checks its own (eval)
        return
    outputs, inputs = declared
    refuse_overlap({flag: _value(args, flag, name, config) for flag, name in outputs.items()},
                   {flag: _value(args, flag, name, config) for flag, name in inputs.items()})
