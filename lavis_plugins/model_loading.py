"""Loading a MiniGPT-4-shaped model for answering, with no host: device and dtype, a training
checkpoint (weights only), the model section of a config, BLIP-2's image transforms.

These are the steps every MiniGPT-4-shaped model goes through before it answers, whoever built it:
the tiny model (:mod:`lavis_plugins.tiny_tester`) and a MiniGPT-4 checkout's model
(``eval_arena.minigpt4_tester``) alike. They live here, beside the runner that writes the
checkpoints they read, so that neither tester imports the other.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple, Union

import torch

from selector.core.errors import InputError

DEFAULT_IMAGE_SIZE = 224
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # BlipImageBaseProcessor's defaults
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16,
          "fp16": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}


def pick_device(device: Optional[str]) -> torch.device:
    if not device:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(device)
    except (RuntimeError, ValueError):
        raise InputError(f"tester device {device!r} is not a torch device (cpu, cuda, cuda:1)") from None
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"tester device {device!r}: CUDA is not available here")
    return chosen


def pick_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """``auto``: float16 on CUDA and float32 on a CPU, as the Arena's ``move_to_device``."""
    if dtype == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if dtype not in DTYPES:
        raise InputError(f"tester dtype must be auto, float32, float16 or bfloat16, got {dtype!r}")
    return DTYPES[dtype]


def blip2_transform(image_size: int, train: bool) -> Callable[[Any], torch.Tensor]:
    """BLIP-2's image transforms without a host: ``train`` is v1's / the Arena's
    ``blip2_image_train`` (random resized crop, scale 0.5-1), otherwise ``blip2_image_eval``
    (resize); both bicubic, then CLIP normalisation."""
    try:
        from torchvision import transforms
        from torchvision.transforms import InterpolationMode
    except ImportError:
        raise InputError("the MiniGPT-4 image transforms need torchvision (pip install torchvision)") from None
    bicubic = InterpolationMode.BICUBIC
    resize = (transforms.RandomResizedCrop(image_size, scale=(0.5, 1.0), interpolation=bicubic)
              if train else transforms.Resize((image_size, image_size), interpolation=bicubic))
    return transforms.Compose([resize, transforms.ToTensor(), transforms.Normalize(CLIP_MEAN, CLIP_STD)])


def config_node(config: Any, *keys: str) -> Any:
    """``config[k1][k2]...``, or None where a level is missing or not a mapping."""
    for key in keys:
        if config is None or not hasattr(config, "get"):
            return None
        config = config.get(key)
    return config


def vision_config(config: Any) -> Tuple[Any, int]:
    """``(eval processor node or None, training image size)`` of a full config: the first
    dataset's ``vis_processor``, then the model defaults' ``preprocess``, then ``model.image_size``."""
    datasets = config_node(config, "datasets") or {}
    first = datasets[next(iter(datasets))] if len(datasets) else None
    processors = config_node(first, "vis_processor")
    preprocess = config_node(config, "preprocess", "vis_processor")
    sizes = [config_node(processors, "train", "image_size"),
             config_node(processors, "eval", "image_size"),
             config_node(preprocess, "train", "image_size"),
             config_node(preprocess, "eval", "image_size"), config_node(config, "model", "image_size")]
    size = next((s for s in sizes if s is not None), DEFAULT_IMAGE_SIZE)
    return config_node(processors, "eval"), int(size)


def read_model_config(path: Union[str, Path]) -> Any:
    """A YAML config with a ``model`` section (a MiniGPT-4 train or eval config, or ours)."""
    from omegaconf import DictConfig, OmegaConf

    path = Path(path).expanduser()
    if not path.is_file():
        raise InputError(f"{path}: config file not found")
    try:
        config = OmegaConf.load(path)
    except Exception as exc:  # yaml and omegaconf errors alike
        raise InputError(f"{path}: not a YAML config ({str(exc).splitlines()[0]})") from None
    if not isinstance(config, DictConfig) or not isinstance(config.get("model"), DictConfig):
        raise InputError(f"{path}: no 'model' section (expected a MiniGPT-4 train or eval config)")
    return config


# ----------------------------------------------------------------------------------- checkpoints
def read_checkpoint(path: Union[str, Path]) -> Tuple[Dict[str, torch.Tensor], Optional[Dict[str, Any]]]:
    """``(weights, config or None)`` of a training checkpoint (``{"model": ..., "config": ...}``,
    as MiniGPT-4's runner and ours save it) or of a bare state dict."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise InputError(f"{path}: checkpoint not found")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors of every kind: not a checkpoint we can read safely
        raise InputError(f"{path}: not a PyTorch checkpoint of weights ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    state = saved.get("model", saved) if isinstance(saved, dict) else None
    if not isinstance(state, dict) or not state or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise InputError(f"{path}: expected {{'model': state_dict}} or a state dict of tensors")
    config = saved.get("config") if isinstance(saved, dict) else None
    return state, config if isinstance(config, dict) and isinstance(config.get("model"), dict) else None


def merge_checkpoint(model: torch.nn.Module, state: Dict[str, torch.Tensor], path: Union[str, Path]) -> int:
    """Load ``state`` over ``model`` with ``strict=False`` (MiniGPT-4's way: a checkpoint holds
    the trained part only); refuse one that shares no weight with the model. Returns how many
    weights were loaded."""
    own = model.state_dict()
    matched = [name for name in state if name in own]
    if not matched:
        raise InputError(f"{path}: none of its {len(state)} weights (e.g. {next(iter(state))}) "
                         "belong to this model; a checkpoint of another model or config?")
    try:
        model.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        detail = next((line.strip() for line in str(exc).splitlines() if "size mismatch" in line),
                      str(exc).splitlines()[0])
        raise InputError(f"{path}: weights do not fit the model built from the config ({detail})") from None
    return len(matched)
