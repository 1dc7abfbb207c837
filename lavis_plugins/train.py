"""``python -m lavis_plugins.train --cfg-path CONFIG [--options k=v ...]``: train with our names
registered, without relying on the autoload hook.

* In a MiniGPT-4 checkout (the current folder, ``--host-dir`` or ``$MINIGPT4_DIR``: a folder with
  ``train.py`` and ``minigpt4/``), the checkout's own, unmodified ``train.py`` runs, as
  ``python train.py`` would run it, after :func:`lavis_plugins.register`.
* Otherwise, with salesforce LAVIS installed (its pip package ships no ``train.py``), the steps of
  LAVIS's ``train.py`` run here through LAVIS's own API: config, distributed setup, seeds, task,
  datasets, model, runner.
"""
from __future__ import annotations

import argparse
import os
import runpy
import sys
from pathlib import Path
from typing import List, Optional

from selector.core.errors import InputError, run_reporting_errors


def find_minigpt4_checkout(explicit: Optional[str] = None) -> Optional[Path]:
    candidates = [explicit, os.environ.get("MINIGPT4_DIR"), os.getcwd()]
    for candidate in candidates:
        if candidate and (Path(candidate) / "train.py").is_file() \
                and (Path(candidate) / "minigpt4").is_dir():
            return Path(candidate).resolve()
    if explicit:
        raise InputError(f"{explicit}: not a MiniGPT-4 checkout (needs train.py and minigpt4/)")
    return None


def run_minigpt4(checkout: Path, argv: List[str]) -> None:
    """Run ``checkout/train.py`` with ``argv`` as ``python train.py`` would (cwd, sys.path)."""
    os.chdir(checkout)
    sys.path.insert(0, str(checkout))
    sys.argv = [str(checkout / "train.py")] + argv
    from lavis_plugins.registration import register

    register(["minigpt4"])
    runpy.run_path(str(checkout / "train.py"), run_name="__main__")


def run_lavis(cfg_path: str, options: List[str]) -> None:
    """LAVIS's train.py steps, with LAVIS's functions."""
    import random
    from datetime import datetime

    import numpy as np
    import torch

    from lavis_plugins.registration import register

    register(["lavis"])
    import importlib

    importlib.import_module("lavis.common.optims")  # registers the lr schedulers (as train.py)
    import lavis.tasks as tasks
    from lavis.common.config import Config
    from lavis.common.dist_utils import get_rank, init_distributed_mode
    from lavis.common.logger import setup_logger
    from lavis.common.registry import registry

    cfg = Config(argparse.Namespace(cfg_path=cfg_path, options=options or None))
    init_distributed_mode(cfg.run_cfg)
    seed = cfg.run_cfg.seed + get_rank()
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    setup_logger()
    cfg.pretty_print()
    task = tasks.setup_task(cfg)
    datasets = task.build_datasets(cfg)
    model = task.build_model(cfg)
    runner_cls = registry.get_runner_class(cfg.run_cfg.get("runner", "runner_base"))
    for name in ("result_dir", "output_dir"):  # an earlier run in this process (the demo's
        registry.mapping["paths"].pop(name, None)  # label runs) registered its own; the runner
    runner = runner_cls(cfg=cfg, job_id=datetime.now().strftime("%Y%m%d%H%M"), task=task,
                        model=model, datasets=datasets)
    runner.train()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lavis_plugins.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cfg-path", required=True, help="training config (YAML)")
    parser.add_argument("--options", nargs="+", default=[], help="config overrides, key=value")
    parser.add_argument("--host", choices=["minigpt4", "lavis"],
                        help="default: minigpt4 when a checkout is found, else lavis")
    parser.add_argument("--host-dir", help="MiniGPT-4 checkout (default: $MINIGPT4_DIR or cwd)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """The entry point, through the one error wrapper every command shares (as ``igpt4``): bad
    input is one line and exit 2 (the traceback with ``--debug``), Ctrl-C one line and 130. A
    bad flag is argparse's usage and error, exit 2, as for ``igpt4``."""
    args = build_parser().parse_args(argv)
    return run_reporting_errors(lambda: _train(args), args.debug, prog="lavis_plugins.train")


def _train(args: argparse.Namespace) -> int:
    """The work of :func:`main`: bad input raises InputError (one line, exit 2)."""
    if not Path(args.cfg_path).is_file():
        raise InputError(f"{args.cfg_path}: config file not found")
    cfg_path = str(Path(args.cfg_path).resolve())
    checkout = find_minigpt4_checkout(args.host_dir) if args.host != "lavis" else None
    if checkout is not None:
        forwarded = ["--cfg-path", cfg_path] + (["--options"] + args.options
                                                if args.options else [])
        run_minigpt4(checkout, forwarded)
    elif args.host == "minigpt4":
        raise InputError("no MiniGPT-4 checkout found: run from its root, or give --host-dir "
                         "or MINIGPT4_DIR")
    else:
        from lavis_plugins.hosts import require_host

        if "lavis" not in require_host():
            raise InputError("salesforce LAVIS is not installed and no MiniGPT-4 checkout "
                             "was found (run from its root, or give --host-dir)")
        run_lavis(cfg_path, args.options)
    return 0


if __name__ == "__main__":
    sys.exit(main())
