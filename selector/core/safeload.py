"""No file we read can run code: the one way this project loads PyTorch files.

A ``.pth`` file is a pickle, and unpickling can call any function the file names, so a
checkpoint, or a config that names one, could run code as the user. Every torch file is therefore
read with ``weights_only=True`` (tensors, numbers, strings and plain containers only; anything else
is refused before it runs). :func:`torch_load` is that call with the error turned into one line.
:func:`weights_only_loads` extends the promise to code we do not own: a MiniGPT-4 or LAVIS model
built from a config loads its ``model.ckpt`` with a bare ``torch.load(path)``, which on torch < 2.6
unpickles anything; inside the block every ``torch.load`` is weights-only, whatever it asks for.

NumPy files are read with ``allow_pickle=False`` at each call site, YAML with OmegaConf /
``yaml.safe_load``; ``tests/selector/core/test_safe_loading.py`` scans the source for any other kind of load.
"""
from __future__ import annotations

import contextlib
import functools
import os
from pathlib import Path
from typing import Any, Iterator, Union

from selector.core.errors import InputError

PathLike = Union[str, "os.PathLike[str]"]
#: torch >= 2.4 reads this variable and then loads weights-only even when a caller passes False
FORCE_ENV = "TORCH_FORCE_WEIGHTS_ONLY_LOAD"


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if "weights only" in text.lower() or "weights_only" in text.lower():
        return ("it holds objects other than weights, which would run code to load "
                "(only tensors, numbers, strings and plain containers are read)")
    return f"{type(exc).__name__}: {text[:160]}" if text else type(exc).__name__


def torch_load(path: PathLike, what: str = "checkpoint") -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)``; a missing, unreadable or
    code-carrying file is one :class:`InputError` line naming it."""
    import torch

    path = Path(path).expanduser()
    if not path.is_file():
        raise InputError(f"{path}: {what} not found")
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except TypeError as exc:
        if "weights_only" in str(exc):  # torch < 1.13 cannot load safely at all
            raise InputError(f"{path}: loading a {what} safely needs torch >= 1.13 "
                             "(weights_only)") from None
        raise InputError(f"{path}: not a loadable {what} ({_reason(exc)})") from None
    except Exception as exc:  # pickle, zip, EOF and torch errors of every kind
        raise InputError(f"{path}: not a loadable {what} ({_reason(exc)})") from None


@contextlib.contextmanager
def weights_only_loads() -> Iterator[None]:
    """Within the block, every ``torch.load`` (ours or a host's) loads weights only.

    ``torch.load`` is replaced by a wrapper that forces ``weights_only=True`` (host code looks the
    function up on the module at call time), and :data:`FORCE_ENV` is set for code that imported
    the function itself. Both are restored afterwards. A refused file raises an
    :class:`InputError` naming it."""
    import torch

    original = torch.load
    previous = os.environ.get(FORCE_ENV)

    @functools.wraps(original)
    def safe(f: Any, *args: Any, **kwargs: Any) -> Any:
        kwargs["weights_only"] = True
        kwargs.pop("pickle_module", None)  # a custom unpickler would bypass the restriction
        args = args[:1]  # map_location only; a positional pickle_module is dropped likewise
        try:
            return original(f, *args, **kwargs)
        except Exception as exc:
            if "weights only" in str(exc).lower() or "weights_only" in str(exc).lower():
                raise InputError(f"{f}: not a loadable checkpoint ({_reason(exc)})") from None
            raise

    torch.load = safe
    os.environ[FORCE_ENV] = "1"
    try:
        yield
    finally:
        torch.load = original
        if previous is None:
            os.environ.pop(FORCE_ENV, None)
        else:
            os.environ[FORCE_ENV] = previous
