"""Optional dependencies and the extras that bring them.

Every optional dependency is imported lazily, where it is needed. When one is missing the user
gets one line naming the extra to install (``needs the [indicators] extra: pip install ...``), not
an ImportError traceback: :func:`missing_extra_line` turns the ``ModuleNotFoundError`` into that
line, and :func:`selector.errors.run_reporting_errors` (every entry point) calls it. A missing
module that belongs to no extra is a bug and keeps its traceback.
"""
from __future__ import annotations

from typing import Optional

#: top-level module -> the extra of setup.py that installs it
MODULE_EXTRAS = {
    "open_clip": "indicators", "timm": "indicators", "ftfy": "indicators",
    "transformers": "indicators", "tokenizers": "indicators", "accelerate": "indicators",
    "sentence_transformers": "indicators", "torchvision": "indicators",
    "huggingface_hub": "indicators",
    "openai": "gpt", "matplotlib": "report", "pandas": "parquet", "pyarrow": "parquet",
    "lavis": "lavis", "iopath": "lavis", "webdataset": "lavis", "decord": "lavis",
    "fairscale": "lavis", "pycocotools": "lavis", "spacy": "lavis", "einops": "lavis",
}


def install_hint(extra: str) -> str:
    """The install line of ``extra`` (in a MiniGPT-4 environment, with its constraints file)."""
    return (f"pip install 'instructiongpt4[{extra}]' (in a MiniGPT-4 environment: "
            f"pip install -c constraints-minigpt4.txt ...)")


def missing_extra_line(exc: BaseException) -> Optional[str]:
    """One line for a missing optional module, or None when ``exc`` is something else."""
    if not isinstance(exc, ModuleNotFoundError) or not exc.name:
        return None
    module = exc.name.split(".")[0]
    extra = MODULE_EXTRAS.get(module)
    if extra is None:
        return None
    return f"needs the [{extra}] extra (no module named {module!r}): {install_hint(extra)}"
