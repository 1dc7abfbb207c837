"""Which questions a run asks: the Arena's sampling (``eval.py``'s ``sample_dataset``) and tiny
LVLM-eHub's, drawn exactly as they draw them (sampling draws positions, so a dataset's order is
part of the result; :mod:`eval_arena.layouts` keeps the Arena's order).
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

from eval_arena.records import json_line
from selector.core.errors import InputError
from selector.core.jsonio import PathLike, read_text

TINY_SAMPLE_NUM = 50
TINY_SAMPLE_SEED = 20230719
MAX_SAMPLE_SEED = 2 ** 32 - 1  # numpy.random.RandomState's largest seed


def arena_sample_indices(size: int, sample_num: int, seed: int) -> Optional[List[int]]:
    """Positions ``eval.py``'s ``sample_dataset`` keeps, in its order; ``None`` = everything.

    The Arena: ``-1`` keeps all; only a dataset longer than ``sample_num`` is sampled, by
    ``np.random.seed(seed)`` then ``np.random.choice(len, sample_num, replace=False)``; a
    ``RandomState(seed)`` draws the same numbers without touching numpy's global state.
    """
    import numpy as np

    if sample_num == -1 or size <= sample_num:
        return None
    if sample_num <= 0:
        raise InputError(f"sample_num must be positive or -1 (all), got {sample_num}")
    return [int(i) for i in np.random.RandomState(seed).choice(size, sample_num, replace=False)]


def tiny_sample_indices(size: int, sample_num: int, seed: int,
                        positions: Optional[Sequence[int]] = None) -> Optional[List[int]]:
    """Tiny LVLM-eHub's ``sample_dataset`` (as released with the paper, Aug 2023).

    Without ``positions``: ``np.random.choice(len, sample_num, replace=False)`` after seeding,
    with no ``len > n`` guard (the Arena fails when the dataset is smaller; so do we, with an
    InputError). With ``positions`` (a dataset's list from the Arena's
    ``bard_RandomSeed20230719_50samples_per_dataset.jsonl``): draw ``max(positions) + 1`` and keep
    those positions, which is how the published 50-sample subsets were chosen.
    """
    import numpy as np

    if sample_num == -1:
        return None
    state = np.random.RandomState(seed)
    if positions:
        drawn = state.choice(size, max(positions) + 1, replace=False)
        return [int(drawn[p]) for p in positions]
    if sample_num <= 0 or sample_num > size:
        raise InputError(f"tiny sampling draws {sample_num} of {size} questions without "
                         f"replacement; choose 1..{size} or -1 (all)")
    return [int(i) for i in state.choice(size, sample_num, replace=False)]


def read_tiny_positions(path: PathLike) -> Dict[str, List[int]]:
    """``{dataset: positions}`` from the Arena's bard_RandomSeed20230719 JSONL file."""
    out: Dict[str, List[int]] = {}
    for number, line in enumerate(read_text(path)[0].splitlines(), 1):
        if not line.strip():
            continue
        record = json_line(path, number, line)
        try:
            out[str(record["dataset"])] = [int(i) for i in record["indices"]]
        except (ValueError, KeyError, TypeError):
            raise InputError(f"{path}: line {number}: expected {{\"dataset\", \"indices\"}}") from None
    return out
