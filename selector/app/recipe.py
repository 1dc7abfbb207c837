"""A pipeline recipe (``igpt4 run --config``): the YAML file, flags and ``--set`` overrides
merged and validated, its path settings resolved (the rules: :mod:`selector.app.pipeline`)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Sequence

from selector.core.errors import InputError
from selector.core.jsonio import PathLike

from selector.core.schema import STAGES  # noqa: F401  (the stages in their order)

#: recipe settings that are paths, resolved when the recipe is loaded (see the module docstring)
PATH_KEYS = (("pipeline", "work"), ("pipeline", "data"), ("pipeline", "image_root"),
             ("score", "pca_from"), ("split", "template"), ("labels", "file"),
             ("labels", "subsets"), ("train_config", "template"))
#: path settings that may instead name a shipped config (relative to configs/)
SHIPPED_NAME_KEYS = (("split", "template"), ("train_config", "template"))


@dataclass
class Recipe:
    settings: Dict[str, Any]
    source: str
    work: Path
    stages: List[str]
    #: where the settings came from (the recipe file, each --set): nested blocks validated again
    #: with the layers a stage adds (the demo's toy models) name their source in errors
    layers: List[Any] = field(default_factory=list)

    @classmethod
    def load(cls, config: PathLike, overrides: Sequence[str] = (),
             flags: Sequence[Any] = ()) -> "Recipe":
        """The recipe file, then ``flags`` (settings :class:`Layer` s labelled by the
        command-line flag that gave them, e.g. ``--seed -1``, so an error names what the user
        typed), then ``--set`` overrides, merged and validated; path settings resolved."""
        from selector.core.settings import config_dir, file_layer, override_layers, settings_from_layers

        path = Path(config)
        if not path.is_file() and (config_dir() / "pipeline" / str(config)).is_file():
            path = config_dir() / "pipeline" / str(config)  # a shipped recipe by name
        elif not path.is_file():
            shipped = sorted(p.name for p in (config_dir() / "pipeline").glob("*.yaml"))
            raise InputError(f"{config}: recipe not found (a YAML file, or a shipped recipe: "
                             f"{', '.join(n for n in shipped if n != 'base.yaml')})")
        recipe_layer = file_layer(path, str(config))
        layers = [recipe_layer, *flags, *override_layers(overrides)]
        settings = settings_from_layers("pipeline/base.yaml", layers)
        _resolve_paths(settings, layers, recipe_layer, path)
        block = settings["pipeline"]
        stages = [s for s in STAGES if s in block["stages"]]
        return cls(settings, str(path), Path(block["work"]).expanduser().resolve(), stages,
                   layers)

    @property
    def generated_conversations(self) -> bool:
        """The demo's generated pool is LLaVA-style conversations (``demo.kind``)."""
        return "generate" in self.stages and self.settings["demo"]["kind"] == "conversations"

    def data_path(self) -> Path:
        data = self.settings["pipeline"].get("data")
        if self.generated_conversations:
            from selector.app.toy.conversations import CONVERSATIONS_FILE

            return self.work / "data" / CONVERSATIONS_FILE
        if "generate" in self.stages:
            return self.work / "data"
        if not data:
            raise InputError(f"{self.source}: pipeline.data is not set (a cc_sbu_align folder or "
                             "a conversation JSON)")
        return Path(data).expanduser().resolve()

    def image_root(self) -> Any:
        """The images of a conversation JSON: the generated pool's own folder, else
        ``pipeline.image_root`` (None: the JSON's folder)."""
        if self.generated_conversations:
            return str(self.work / "data" / "image")
        return self.settings["pipeline"].get("image_root")


def _resolve_paths(settings: Dict[str, Any], layers: Sequence[Any], recipe_layer: Any,
                   recipe: Path) -> None:
    """Make every path setting absolute, in place: against the recipe file's folder when the
    value comes from the recipe file (or base.yaml's defaults) of a user's recipe, against the
    current folder when it comes from ``--set`` / a flag, or from a shipped recipe."""
    from selector.core.settings import _ABSENT, config_dir

    shipped = config_dir().resolve()
    recipe_dir = recipe.resolve().parent
    file_base = Path.cwd() if (recipe_dir == shipped or shipped in recipe_dir.parents) \
        else recipe_dir
    for key in PATH_KEYS:
        section = settings.get(key[0])
        value = section.get(key[1]) if isinstance(section, dict) else None
        if value is None or str(value) == "":
            continue
        origin = next((layer for layer in reversed(layers) if layer.get(key) is not _ABSENT),
                      None)
        base = file_base if origin is None or origin is recipe_layer else Path.cwd()
        path = Path(str(value)).expanduser()
        if not path.is_absolute():
            candidate = base / path
            if key in SHIPPED_NAME_KEYS and not candidate.exists() and \
                    (config_dir() / path).is_file():
                continue  # a shipped config by name (resolved by the stage)
            path = candidate
        section[key[1]] = os.path.abspath(str(path))
