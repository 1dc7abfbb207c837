"""Reader for a checkout of the original InstructionGPT-4 repository's data layout.

The released files (see ``../shared/reference/instructiongpt4/README.md`` in this project) are the
paper's yardstick: the pool's indicators and PCA features, the spectral diversity clusters, the 30
k-means++ subsets with their genuine labels, and the released selector checkpoint.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List

import numpy as np

from selector.core.errors import InputError
from selector.core.jsonio import read_json
from selector.scoring.pool import FeaturePool, read_labels, read_subsets

FULL_SCORES = "cc_sbu_align_test/full_score_data.json"
FITTING = "cc_sbu_align_test/fitting.json"
SCORES = "selector/dataset/scores.json"
IMAGE_MATRIX, TEXT_MATRIX = "selector/dataset/all_image_matrix.pt", "selector/dataset/all_text_matrix.pt"
SUBSET_IMAGE_MATRIX = "selector/dataset/image_matrix.pt"
SUBSET_TEXT_MATRIX = "selector/dataset/text_matrix.pt"
SPECTRAL = "cluster/spectral/clustering_results.json"
KMEANS_SUBSETS = "cluster/kmeans++/modified.json"
LABELS = "labels.json"
CHECKPOINT = "selector/ckpt/nhead4_res0_LayerNum2_featsize6_epoch20/best_model.pth"
GPT_REPLIES = "cc_sbu_align_test/gpt4score/gpt4_score_new.json"
GPT_SCORES = "cc_sbu_align_test/gpt4score/gpt_final_score.json"
#: the released indicator columns, in the order of the released feature tensors
REFERENCE_INDICATORS = ("clip", "reward", "length", "gpt")


def load_tensor(path: Path) -> np.ndarray:
    """A released ``.pt`` tensor, loaded weights-only (a file that would run code is refused)."""
    import torch

    from selector.core.safeload import torch_load

    value = torch_load(path, "tensor file")
    if not isinstance(value, torch.Tensor):
        raise InputError(f"{path}: expected a tensor, found a {type(value).__name__}")
    return value.numpy()


@dataclass
class ReferenceRepo:
    root: Path

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        if not (self.root / FULL_SCORES).is_file():
            raise InputError(f"{self.root}: not an InstructionGPT-4 data layout "
                             f"(no {FULL_SCORES})")

    def path(self, relative: str) -> Path:
        return self.root / relative

    def annotations(self) -> List[dict]:
        document, _ = read_json(self.path(FULL_SCORES))
        try:
            return [{**a, "image_id": str(a["image_id"])} for a in document["annotations"]]
        except (KeyError, TypeError):
            raise InputError(f"{self.path(FULL_SCORES)}: expected annotations with image_id") from None

    def captions(self) -> Dict[str, str]:
        return {a["image_id"]: a["caption"] for a in self.annotations()}

    def pool(self) -> FeaturePool:
        """The 3439 samples in int(image_id) order: PCA(6) image and text features fitted on the
        whole pool, and the raw indicators clip, reward, length, gpt."""
        ids = [a["image_id"] for a in self.annotations()]
        scores, _ = read_json(self.path(SCORES))
        try:
            indicators = np.stack([np.asarray(scores[name], dtype=np.float32)
                                   for name in REFERENCE_INDICATORS], axis=1)
        except KeyError as exc:
            raise InputError(f"{self.path(SCORES)}: missing indicator {exc}") from None
        return FeaturePool(ids, load_tensor(self.path(IMAGE_MATRIX)),
                           load_tensor(self.path(TEXT_MATRIX)), indicators,
                           list(REFERENCE_INDICATORS))

    def spectral_clusters(self) -> Dict[str, List[str]]:
        return read_subsets(self.path(SPECTRAL))

    def kmeans_subsets(self) -> Dict[str, List[str]]:
        return read_subsets(self.path(KMEANS_SUBSETS))

    def labels(self) -> Dict[str, float]:
        return read_labels(self.path(LABELS))

    def checkpoint(self) -> Path:
        return self.path(CHECKPOINT)

    def fitting_sets(self) -> np.ndarray:
        """The original training input [30, 114, 16]: per-subset PCA features (refitted per
        subset, as released) and the four indicators of ``fitting.json``."""
        fitting, _ = read_json(self.path(FITTING))
        indicators = np.stack([np.asarray(fitting[name], dtype=np.float32)
                               for name in REFERENCE_INDICATORS], axis=2)
        image = load_tensor(self.path(SUBSET_IMAGE_MATRIX))
        text = load_tensor(self.path(SUBSET_TEXT_MATRIX))
        return np.concatenate([image, text, indicators], axis=2)

    def fitting_labels(self) -> np.ndarray:
        labels = self.labels()
        return np.array([labels[str(i)] for i in range(len(labels))], dtype=np.float32)
