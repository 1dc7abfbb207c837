"""The smoke set: what ``configs/minigpt4/cpu_smoke.yaml`` and ``configs/lavis/cpu_smoke.yaml``
train on when nothing else is given, so that ``python train.py --cfg-path $(igpt4 configs
minigpt4/cpu_smoke.yaml)`` runs with no ``--options`` at all.

Those configs name it ``igpt4:smoke`` (``build_info.storage``, ``selector.checkpoint``,
``selector.pool``); the builder calls :func:`resolve`, which materialises it on first use under
``<user cache>/smoke/<version>/`` (:mod:`selector.selection.smoke` makes it).

``python -m lavis_plugins.smoke [--out DIR]`` builds it (into DIR, or the cache) and prints where.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from selector.selection.smoke import default_folder, smoke_set

#: the value of build_info.storage / selector.checkpoint / selector.pool that means "the smoke set"
SMOKE = "igpt4:smoke"


def _is_smoke(value: Any) -> bool:
    return isinstance(value, str) and value.strip() == SMOKE


def resolve(storage: str, options: Dict[str, Any]) -> Tuple[str, Dict[str, Any]]:
    """``build_info.storage`` and the ``selector`` options with ``igpt4:smoke`` replaced by the
    smoke set's paths. The smoke checkpoint and pool only fit the smoke data."""
    from selector.core.errors import InputError

    named = [key for key in ("checkpoint", "pool") if _is_smoke(options.get(key))]
    if not _is_smoke(storage):
        if named:
            raise InputError(f"selector.{named[0]}: {SMOKE} only goes with build_info.storage: "
                             f"{SMOKE} (set selector.checkpoint and selector.pool for your data)")
        return storage, options
    folder = smoke_set()
    resolved = dict(options)
    for key, path in (("checkpoint", folder / "selector"), ("pool", folder / "pool.safetensors")):
        if _is_smoke(resolved.get(key)) or not resolved.get(key):
            resolved[key] = str(path)
    return str(folder / "data"), resolved


def main(argv: Optional[List[str]] = None) -> int:
    from selector.core.errors import run_reporting_errors

    parser = argparse.ArgumentParser(prog="python -m lavis_plugins.smoke",
                                     description="build the smoke set and print where it is")
    parser.add_argument("--out", help=f"folder to build it in (default: {default_folder()})")
    args = parser.parse_args(argv)

    def work() -> int:
        if args.out:
            from selector.core.errors import InputError

            if Path(args.out).exists():  # a new folder only: never built over anything
                raise InputError(f"{args.out}: already exists (give a new folder)")
        folder = smoke_set(Path(args.out) if args.out else None)
        print(json.dumps({"data": str(folder / "data"), "checkpoint": str(folder / "selector"),
                          "pool": str(folder / "pool.safetensors")}))
        return 0

    return run_reporting_errors(work, prog="lavis_plugins.smoke")


if __name__ == "__main__":
    sys.exit(main())
