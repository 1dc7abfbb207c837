"""A MiniGPT-4 checkout as ``--tester minigpt4`` uses it: finding it, importing its
``minigpt4`` package (with our names registered), and building its config as its ``train.py``
does (``Config`` from ``--cfg-path`` and ``--options``), in the checkout's working directory.

Apart from the generation path (:mod:`eval_arena.minigpt4_tester`) because this is the part that
knows the host's modules and layout; nothing here is imported before a checkout is asked for.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import shlex
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence

from lavis_plugins.model_loading import config_node
from selector.core.errors import InputError

CHECKOUT_ENV = "MINIGPT4_DIR"


def find_checkout(checkout: Optional[str]) -> Path:
    value = checkout or os.environ.get(CHECKOUT_ENV)
    if not value:
        raise InputError(f"the minigpt4 tester needs a MiniGPT-4 checkout: --tester-arg checkout=DIR "
                         f"or {CHECKOUT_ENV}=DIR")
    folder = Path(value).expanduser().resolve()
    if not (folder / "minigpt4" / "__init__.py").is_file():
        raise InputError(f"{folder}: not a MiniGPT-4 checkout (no minigpt4/__init__.py)")
    return folder


def import_host(folder: Path) -> Any:
    """Import the checkout's ``minigpt4`` (which registers our names through the import hook;
    registering again here covers IGPT4_AUTOLOAD=0) and return its registry."""
    loaded = sys.modules.get("minigpt4")
    if loaded is not None:
        where = Path(getattr(loaded, "__file__", "") or ".").resolve().parent.parent
        if where != folder:
            raise InputError(f"minigpt4 is already imported from {where}, not {folder}: one "
                             "MiniGPT-4 checkout per process")
    else:
        sys.path.insert(0, str(folder))
        try:
            importlib.import_module("minigpt4")
        except ImportError as exc:
            raise InputError(f"{folder}: importing minigpt4 failed ({exc}); run igpt4 with the "
                             "Python environment of that checkout") from None
    from lavis_plugins.registration import register

    register(["minigpt4"])
    return importlib.import_module("minigpt4.common.registry").registry


@contextlib.contextmanager
def config_file(cfg_path: Optional[str], saved: Optional[Dict[str, Any]],
                 ckpt: Optional[str]) -> Iterator[Path]:
    """``cfg_path`` as an absolute path, or the checkpoint's saved config written to a temporary
    YAML file (MiniGPT-4's ``Config`` reads a file)."""
    if cfg_path:
        yield Path(cfg_path).expanduser().absolute()
        return
    if saved is None:
        raise InputError("the minigpt4 tester needs cfg_path=CONFIG (the training config, or a "
                         "MiniGPT-4 eval config), or a ckpt that holds its config")
    from omegaconf import OmegaConf

    with tempfile.TemporaryDirectory(prefix="igpt4-cfg-") as folder:
        path = Path(folder) / "config.yaml"
        OmegaConf.save(OmegaConf.create(saved), path)
        yield path


def with_model_type(raw: Any, model_cls: type, config_path: Path) -> Any:
    """Check ``model.model_type``; a config without one (a model-only YAML such as
    configs/models/igpt4_tiny_minigpt4.yaml) gets the model's only type, if it has one."""
    from omegaconf import OmegaConf

    types = sorted(getattr(model_cls, "PRETRAINED_MODEL_CONFIG_DICT", None) or {})
    model_type = config_node(raw, "model", "model_type")
    if not model_type:
        if len(types) != 1:
            raise InputError(f"{config_path}: model.model_type is missing (one of: {', '.join(types)})")
        return OmegaConf.merge(raw, {"model": {"model_type": types[0]}})
    if types and model_type not in types:
        raise InputError(f"{config_path}: model_type {model_type!r} is not one of {model_cls.__name__}'s "
                         f"({', '.join(types)})")
    return raw


def host_config(raw: Any, options: Sequence[str]) -> Any:
    """The merged config as ``train.py`` builds it (``Config`` from a file and ``--options``;
    ``raw`` is the user's config with the options and model type applied, written to a
    temporary file); a config without ``datasets`` / ``run`` (a model-only YAML) gets the model
    part only, by the same ``Config.build_model_config``."""
    from omegaconf import OmegaConf

    from minigpt4.common.config import Config

    if "datasets" not in raw or "run" not in raw:
        return Config.build_model_config(raw)
    with tempfile.TemporaryDirectory(prefix="igpt4-cfg-") as folder:
        path = Path(folder) / "config.yaml"
        OmegaConf.save(raw, path)
        return Config(argparse.Namespace(cfg_path=str(path), options=list(options))).config


@contextlib.contextmanager
def working_directory(folder: Path) -> Iterator[None]:
    previous = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(previous)


def parse_options(options: str) -> List[str]:
    """``options="model.ckpt=/x run.seed=1"`` -> ``["model.ckpt=/x", "run.seed=1"]``."""
    pairs = shlex.split(options or "")
    bad = [p for p in pairs if "=" not in p]
    if bad:
        raise InputError(f"tester options: expected KEY=VALUE pairs, got {bad[0]!r}")
    return pairs
