"""The tiny model under evaluation (``--tester tiny``), with no host framework.

The tiny tester is the one MiniGPT-4 generation path of ``eval_arena.minigpt4_tester`` over the
tiny model (:mod:`lavis_plugins.tiny_model`): that path asks of a model only MiniGPT-4's shape
(``encode_img``, ``llama_tokenizer``, ``llama_model``), which the tiny model has. What is the tiny
model's own is how it is built, and that lives here, beside the model: :func:`load_tiny` turns
one of our configs and/or a checkpoint of a tiny run into the model, its image transform and the
settings a reader of the answers needs. This package never imports eval_arena; the ``tiny``
factory of ``eval_arena.testers`` hands what :func:`load_tiny` returns to the generation path.

``cfg_path``: one of our training configs (its ``model`` block and first dataset's image size) or
``configs/models/igpt4_tiny_minigpt4.yaml`` (the default; also the base every model block is
merged over); ``ckpt``: a ``checkpoint_N.pth`` of a tiny run (whose saved config is used when
``cfg_path`` is not given).
"""
from __future__ import annotations

from typing import Any, Callable, Dict, NamedTuple, Optional

from lavis_plugins.model_loading import (blip2_transform, config_node, merge_checkpoint,
                                         pick_device, pick_dtype, read_checkpoint,
                                         read_model_config, vision_config)
from selector.core.errors import InputError
from selector.core.safeload import weights_only_loads

#: the eval image transforms the tiny tester can make without a host (BLIP-2's, by either name)
EVAL_TRANSFORMS = ("blip2_image_eval", "blip_image_eval")


class TinyForAnswering(NamedTuple):
    """The tiny model ready to answer: in eval mode on its device, with its image transform."""

    model: Any
    vis_processor: Callable[[Any], Any]
    settings: Dict[str, Any]


def load_tiny(cfg_path: Optional[str] = None, ckpt: Optional[str] = None,
              device: Optional[str] = None, dtype: str = "auto",
              eval_transform: bool = False) -> TinyForAnswering:
    """Build the tiny model from ``cfg_path`` / ``ckpt`` (see the module docstring) on
    ``device`` in ``dtype``; ``eval_transform``: BLIP-2's eval transform (the config's eval
    processor size), else the Arena's train transform (random resized crop)."""
    from omegaconf import OmegaConf

    from lavis_plugins.tiny_model import ARCH, TinyMiniGPT4, model_config_path

    chosen = pick_device(device)
    precision = pick_dtype(dtype, chosen)
    state, saved_config = read_checkpoint(ckpt) if ckpt else (None, None)
    if cfg_path:
        source, config = str(cfg_path), read_model_config(cfg_path)
    elif saved_config is not None:
        source, config = f"{ckpt} (its config)", OmegaConf.create(saved_config)
    else:
        source, config = model_config_path(), read_model_config(model_config_path())
    arch = config_node(config, "model", "arch") or ARCH
    if arch != ARCH:
        raise InputError(f"{source}: model arch {arch!r} is not the tiny model ({ARCH}); "
                         "evaluate it with --tester minigpt4")
    full = OmegaConf.merge(OmegaConf.load(model_config_path()), config)
    try:
        with weights_only_loads():  # model.ckpt named by the config or a checkpoint's config
            model = TinyMiniGPT4.build(full.model)
    except (ValueError, AssertionError, RuntimeError) as exc:
        raise InputError(f"{source}: cannot build the tiny model ({exc})") from None
    loaded = merge_checkpoint(model, state, ckpt) if state is not None else 0
    model.eval().to(chosen, precision)
    eval_node, size = vision_config(full)
    if eval_transform:
        transform = str(eval_node.get("name")) if eval_node is not None and eval_node.get("name") \
            else "blip2_image_eval"
        if transform not in EVAL_TRANSFORMS:
            raise InputError(f"{source}: the tiny tester knows the blip2_image_eval transform "
                             f"only, not {transform!r}")
        size = int(eval_node.get("image_size") or size) if eval_node is not None else size
        processor = blip2_transform(size, train=False)
    else:
        processor, transform = blip2_transform(size, train=True), "arena blip2_image_train"
    settings = {"cfg_path": source, "ckpt": str(ckpt) if ckpt else None, "weights_loaded": loaded,
                "device": str(chosen), "dtype": str(precision).replace("torch.", ""),
                "image_transform": f"{transform} {size}"}
    return TinyForAnswering(model, processor, settings)
