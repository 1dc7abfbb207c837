"""Device and precision choice shared by the model-based indicators and embedders: CUDA when
there is one (fp16 unless told otherwise; bf16 on request), else CPU in fp32 (half precision is
slow and inexact on CPU)."""
from __future__ import annotations

from typing import Any, Optional

PRECISIONS = ("fp32", "fp16", "bf16")


def resolve_device(device: Optional[str] = None) -> str:
    import torch

    if device:
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def precision_for(device: str, precision: Optional[str] = None) -> str:
    from selector.core.errors import InputError

    if precision is None:
        return "fp16" if device.startswith("cuda") else "fp32"
    if precision not in PRECISIONS:
        raise InputError(f"precision must be one of {', '.join(PRECISIONS)} (got {precision!r})")
    return precision


def torch_dtype(device: str, precision: Optional[str] = None) -> Any:
    import torch

    return {"fp32": torch.float32, "fp16": torch.float16,
            "bf16": torch.bfloat16}[precision_for(device, precision)]


def load_failure(what: str, name: Any, exc: BaseException) -> Exception:
    """One line for a model that cannot be loaded (a wrong id, no hub access, a bad local path)."""
    from selector.core.errors import InputError

    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return InputError(f"cannot load the {what} {name!r}: {reason} (give a local path, or a name "
                      "in the local cache when the hub is unreachable)")


def load_pretrained(auto_class: str, what: str, source: str, device: str,
                    precision: Optional[str] = None, shown: Optional[str] = None) -> Any:
    """(model in eval mode on ``device``, tokenizer) of a HF model folder or hub id, the one way
    the model-based indicators and embedders load one: the torchvision shim first, weights only
    (a ``pytorch_model.bin`` never runs code), and a failure as one line naming ``what`` and the
    model (``shown``, when the source is a converted copy of what the user named).
    ``auto_class``: the transformers class, e.g. ``AutoModelForSequenceClassification``."""
    from selector.core.compat import ensure_torchvision_importable
    from selector.core.safeload import weights_only_loads

    ensure_torchvision_importable()
    import transformers

    try:
        with weights_only_loads():
            model = getattr(transformers, auto_class).from_pretrained(
                source, torch_dtype=torch_dtype(device, precision))
        tokenizer = transformers.AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError, KeyError) as exc:
        raise load_failure(what, shown or source, exc) from None
    return model.to(device).eval(), tokenizer
