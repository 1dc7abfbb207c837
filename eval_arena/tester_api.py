"""What a tester is: the interface every model under evaluation offers, and its shared constants.

Its own module so that the testers (:mod:`eval_arena.testers`, :mod:`eval_arena.minigpt4_tester`)
and the runner can all name it without importing one another. An Arena tester
(``LVLM_evaluation/models/test_*.py``) has ``generate(image, question, max_new_tokens=...)`` and
``batch_generate(image_list, question_list, max_new_tokens=...)``; images are paths (or PIL
images) and answers are strings. Any object with those two methods is a tester (the check is
structural, so the Arena's own testers pass it without importing this module).
"""
from __future__ import annotations

from typing import Any, List, Protocol, Sequence, runtime_checkable

DEFAULT_MAX_NEW_TOKENS = 256  # LVLM_evaluation/utils/vqa.py evaluate_VQA's default
Image = Any  # a path (str) or a PIL image, as the Arena passes them


@runtime_checkable
class Tester(Protocol):
    """What the runner needs from a model. ``name`` (optional) names the answers folder."""

    def generate(self, image: Image, question: str,
                 max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS) -> str:
        ...

    def batch_generate(self, images: Sequence[Image], questions: Sequence[str],
                       max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS) -> List[str]:
        ...
