"""Settings from the shipped YAML configs, a user's YAML and ``--set key=value`` overrides,
merged with OmegaConf (the config system of LAVIS and MiniGPT-4)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional, Sequence

from .errors import InputError


def config_dir() -> Path:
    """The shipped ``configs/`` folder (installed as the ``igpt4_configs`` package)."""
    import igpt4_configs

    return Path(list(igpt4_configs.__path__)[0])


def load_settings(config: Optional[str] = None, overrides: Sequence[str] = (),
                  base: str = "selector/default.yaml") -> Dict[str, Any]:
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    layers = [OmegaConf.load(config_dir() / base)]
    try:
        if config:
            path = Path(config)
            if not path.is_file():
                path = config_dir() / config  # a shipped config by relative name
            if not path.is_file():
                raise InputError(f"{config}: config file not found")
            layers.append(OmegaConf.load(path))
        layers.append(OmegaConf.from_dotlist(list(overrides)))
        merged = OmegaConf.merge(*layers)
    except (OmegaConfBaseException, ValueError) as exc:
        raise InputError(f"settings: {' '.join(str(exc).split())[:200]}") from None
    return OmegaConf.to_container(merged, resolve=True)
