"""VQA test sets in Multi-Modality-Arena's on-disk layouts, with the Arena's prompts and sampling.

Every item is the Arena's ``{image_path, question, gt_answers}``. Image paths are built from the
dataset folder exactly as the Arena's ``task_datasets/vqa_datasets.py`` builds them from its
``DATA_DIR/VQA_Datasets/<Name>``, and items come in the Arena's order, so that
``--sample-num N --sample-seed S`` picks the same questions as ``eval.py`` does (sampling draws
positions, so the order is part of the result).

The layouts, one loader per dataset, are :mod:`eval_arena.layouts`; the sampling,
:mod:`eval_arena.sampling`; a question and the checked reading of its record,
:mod:`eval_arena.records`.

Tiny LVLM-eHub (``variant="tiny"``) changes the prompts of IconQA ("Choose the best answer from
the following choices:" with one ``- option`` line each) and VSR (the ``<choice>``/"Answer:"
format), reads ScienceQA from ``annos_test_image_2017samples.jsonl`` (failing that, from the
official files with the prompt of tiny LVLM-eHub's README table), samples 50 questions with
seed 20230719 and without the Arena's ``len > n`` guard, and reads pre-sampled subsets
(``<sampled root>/<Name>/dataset.json``) as they are.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence

from eval_arena.layouts import (FULL, JSONL, TINY, VARIANTS, get_spec, load_jsonl_items,
                                load_presampled_items, locate_root)
from eval_arena.records import VQAItem
from eval_arena.sampling import (MAX_SAMPLE_SEED, TINY_SAMPLE_NUM, TINY_SAMPLE_SEED,
                                 arena_sample_indices, tiny_sample_indices)
from selector.core.errors import InputError
from selector.core.fingerprint import Fingerprint
from selector.core.jsonio import PathLike


@dataclass
class VQADataset:
    """A named list of :class:`VQAItem` in the Arena's order; ``indices`` are the sampled
    positions in the unsampled list (``None``: not sampled)."""

    name: str
    split: str
    variant: str
    root: str
    items: List[VQAItem]
    indices: Optional[List[int]] = None
    full_size: int = 0
    presampled: bool = False
    meta: Dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Dict[str, Any]:
        return self.items[index].as_arena()

    def __iter__(self) -> Iterator[Dict[str, Any]]:
        return (item.as_arena() for item in self.items)

    @property
    def task_type(self) -> str:
        return "VQA"

    def subset(self, indices: Sequence[int]) -> "VQADataset":
        picked = [int(i) for i in indices]
        base = self.indices
        return replace(self, items=[self.items[i] for i in picked],
                       indices=[base[i] for i in picked] if base is not None else picked)

    def fingerprint(self) -> str:
        """Hash of the (image, question) sequence: a resumed run must see the same questions."""
        digest = Fingerprint()
        for item in self.items:
            digest.update([item.image_path, item.question])
        return digest.hexdigest()

    def check_images(self) -> None:
        for item in self.items:
            if not os.path.isfile(item.image_path):
                raise InputError(f"{item.source}: image {item.image_path} not found")

    def describe(self) -> Dict[str, Any]:
        return {"name": self.name, "split": self.split, "variant": self.variant,
                "root": self.root, "questions": len(self.items), "full_size": self.full_size,
                "presampled": self.presampled, "fingerprint": self.fingerprint(), **self.meta}


def build_dataset(name: str, root: PathLike, split: Optional[str] = None, variant: str = FULL,
                  sample_num: Optional[int] = None, sample_seed: Optional[int] = None,
                  check_images: bool = True, directory_order: str = "sorted",
                  tiny_positions: Optional[Dict[str, List[int]]] = None) -> VQADataset:
    """Load one dataset the way the Arena does and sample it like ``eval.py`` (or tiny's).

    ``name`` is an Arena name (case-insensitive: ``gqa``, ``OKVQA``, ...) or ``jsonl`` with
    ``root`` = the file (``jsonl:PATH`` also works, ``root`` then unused). ``split`` defaults
    to the Arena's split. ``sample_num`` / ``sample_seed`` default to ``-1`` / ``0`` (the Arena's
    defaults) or ``50`` / ``20230719`` for the tiny variant. ``check_images`` verifies that every
    kept question's image exists (after sampling, so large test sets stay cheap).
    """
    if variant not in VARIANTS:
        raise InputError(f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    if directory_order not in ("sorted", "os"):
        raise InputError(f"directory_order must be 'sorted' or 'os', got {directory_order!r}")
    if sample_num is None:
        sample_num = TINY_SAMPLE_NUM if variant == TINY else -1
    if sample_seed is None:
        sample_seed = TINY_SAMPLE_SEED if variant == TINY else 0
    if isinstance(sample_num, bool) or not isinstance(sample_num, int) or (
            sample_num != -1 and sample_num < 1):
        raise InputError(f"--sample-num {sample_num!r}: must be a positive number of questions "
                         "or -1 (all)")
    # numpy's RandomState takes seeds 0..2**32-1; anything else is refused, not wrapped
    if isinstance(sample_seed, bool) or not isinstance(sample_seed, int) or not (
            0 <= sample_seed <= MAX_SAMPLE_SEED):
        raise InputError(f"--sample-seed {sample_seed!r}: must be a whole number from 0 to "
                         f"{MAX_SAMPLE_SEED}")
    presampled = False
    if name.lower() == JSONL or name.lower().startswith(JSONL + ":"):
        path = Path(name.split(":", 1)[1] if ":" in name else root).expanduser().absolute()
        if not path.is_file():
            raise InputError(f"{path}: file not found (JSONL VQA set)")
        canonical, split, folder = path.stem, split or "all", path
        items = load_jsonl_items(path)
    else:
        spec = get_spec(name)
        split = split or spec.arena_split
        if split not in spec.splits:
            raise InputError(f"{spec.name} has no split {split!r}; choose from {', '.join(spec.splits)}")
        canonical = spec.name
        folder, presampled = locate_root(spec, root, split, variant)
        if presampled:
            items = load_presampled_items(folder)
        else:
            items = spec.loader(folder, split, variant, {"directory_order": directory_order})
    if not items:
        raise InputError(f"{canonical} ({split}) in {folder}: no questions")
    dataset = VQADataset(canonical, split, variant, str(folder), items, None, len(items), presampled,
                         {"sample_num": sample_num, "sample_seed": sample_seed})
    if not presampled:
        if variant == TINY:
            picked = tiny_sample_indices(len(items), sample_num, sample_seed,
                                         (tiny_positions or {}).get(canonical))
        else:
            picked = arena_sample_indices(len(items), sample_num, sample_seed)
        if picked is not None:
            dataset = dataset.subset(picked)
    if check_images:
        dataset.check_images()
    return dataset
