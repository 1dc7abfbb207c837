"""Where a run came from and what it says: messages on stderr, and the package versions every
manifest and checkpoint records (so a result names the code that made it)."""
from __future__ import annotations

import sys
from typing import Dict, Sequence


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def package_versions(names: Sequence[str] = ("instructiongpt4", "torch", "numpy", "scikit-learn",
                                             "safetensors")) -> Dict[str, str]:
    from importlib import metadata

    versions = {"python": sys.version.split()[0]}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions
