"""Where commands and training runs write when the user names no place.

Nothing is ever written into a MiniGPT-4 / LAVIS checkout or into a data folder unless the user
gives that path. Two user-level folders take what has no better home:

* :func:`user_cache_dir` (``$IGPT4_CACHE``, else ``$XDG_CACHE_HOME/instructiongpt4``, else
  ``~/.cache/instructiongpt4``): things that can be rebuilt at any time: the smoke set, and a
  training run's selection cache (scores, pool, selections) when its dataset names no
  ``selector.cache_dir``.
* :func:`runs_dir` (``$IGPT4_RUNS``, else ``$XDG_DATA_HOME/instructiongpt4/runs``, else
  ``~/.local/share/instructiongpt4/runs``): training runs whose ``run.output_dir`` is relative.
  Checkpoints are results, not cache, hence the data folder of the XDG layout.
"""
from __future__ import annotations

import os
from pathlib import Path


def _xdg(variable: str, fallback: str) -> Path:
    value = os.environ.get(variable, "")
    # the XDG spec: a relative value is invalid and must be ignored
    return Path(value) if value and os.path.isabs(value) else Path.home() / fallback


def user_cache_dir() -> Path:
    """The cache folder (not created here)."""
    if os.environ.get("IGPT4_CACHE"):
        return Path(os.environ["IGPT4_CACHE"]).expanduser().absolute()
    return _xdg("XDG_CACHE_HOME", ".cache") / "instructiongpt4"


def runs_dir() -> Path:
    """Where a training run with a relative ``run.output_dir`` goes (not created here)."""
    if os.environ.get("IGPT4_RUNS"):
        return Path(os.environ["IGPT4_RUNS"]).expanduser().absolute()
    return _xdg("XDG_DATA_HOME", os.path.join(".local", "share")) / "instructiongpt4" / "runs"
