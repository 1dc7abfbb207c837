"""No command writes into, over or inside its own inputs.

Every command names its inputs (data folder, pool, checkpoint, answers, subsets, ...) and its
outputs, and calls :func:`refuse_overlap` before it writes anything. An output that is an input,
lies inside an input folder, or is a folder that contains an input is refused with one line naming
both. Paths are compared after resolving symlinks, so a link to the data folder is the data
folder, and ``out/..`` or ``~`` are what they name.

What this cannot see from paths alone (a data folder whose images are links into the output) is
checked where the images are placed (:func:`selector.data.write_cc_sbu_align`).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from selector.core.errors import InputError

PathLike = Union[str, "os.PathLike[str]"]
#: one path, several paths (``labels collect PATH...``), or None (an option not given)
Paths = Union[PathLike, Sequence[PathLike], None]


def real_path(path: PathLike) -> Path:
    """``path`` with ``~`` expanded and every symlink and ``..`` resolved (it need not exist)."""
    return Path(os.path.realpath(os.path.expanduser(str(path))))


def _absolute(path: PathLike) -> Path:
    return Path(os.path.abspath(os.path.expanduser(str(path))))


def _inside(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def _each(paths: Paths) -> Iterable[PathLike]:
    if paths is None:
        return []
    if isinstance(paths, (str, os.PathLike)):
        return [paths]
    return [p for p in paths if p is not None]


def overlap(outputs: Mapping[str, Paths], inputs: Mapping[str, Paths]) -> Optional[str]:
    """The first overlap as a message, or None. See :func:`refuse_overlap`. Two outputs that are
    the same path count too (``score --out X --pool-out X``); one inside another is fine
    (``--work work --out work/scores.csv``)."""
    real_outputs: List[Tuple[str, PathLike, Path]] = [
        (name, path, real_path(path)) for name, paths in outputs.items() for path in _each(paths)]
    for n, (first_name, first, first_real) in enumerate(real_outputs):
        for second_name, second, second_real in real_outputs[n + 1:]:
            if first_real == second_real:
                return (f"{first_name} {first} and {second_name} {second} are the same path: "
                        "each output needs its own")
    real_inputs: List[Tuple[str, PathLike, Path]] = [
        (name, path, real_path(path)) for name, paths in inputs.items() for path in _each(paths)]
    for out_name, out_path, target in real_outputs:
        for in_name, in_path, source in real_inputs:
            if target == source:
                how = "is"
            elif _inside(target, source):
                how = "lies inside"
            elif _inside(source, target):
                how = "contains"
            else:
                continue
            plain = _absolute(out_path) == target and _absolute(in_path) == source
            via = "" if plain else f" ({target} and {source} once links are followed)"
            return (f"{out_name} {out_path} {how} the input {in_name} {in_path}{via}: "
                    "a command never writes into, over or inside its own inputs; choose an "
                    "output outside every input")
    return None


def refuse_overlap(outputs: Mapping[str, Paths], inputs: Mapping[str, Paths]) -> None:
    """Raise :class:`InputError` when an output equals, contains or lies inside an input.

    ``outputs`` and ``inputs`` map a flag or role name (``"--out"``, ``"--data"``) to a path, a
    list of paths, or ``None`` (ignored). Call it before the command writes anything."""
    message = overlap(outputs, inputs)
    if message is not None:
        raise InputError(message)
