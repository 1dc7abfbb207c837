"""Length score: ``10 * len(answer) / normaliser`` characters (normaliser 1009, the longest
cc_sbu_align caption, as the paper). Conversations: the mean over assistant turns."""
from __future__ import annotations

from typing import Any, Dict, List, Sequence

from selector.data.samples import Sample
from selector.core.cache import IndicatorValue
from selector.scoring.indicators import Indicator, register


@register("length")
class LengthScore(Indicator):
    def __init__(self, normaliser: float = 1009.0, scale: float = 10.0) -> None:
        self.normaliser = float(normaliser)
        self.scale = float(scale)

    def settings(self) -> Dict[str, Any]:
        return {"normaliser": self.normaliser, "scale": self.scale}

    def score(self, samples: Sequence[Sample]) -> List[IndicatorValue]:
        values = []
        for sample in samples:
            per_turn = [self.scale * len(answer) / self.normaliser for answer in sample.answers]
            if not per_turn or not any(answer.strip() for answer in sample.answers):
                values.append(IndicatorValue(sample.id, None, "empty answer"))
                continue
            detail = {"per_turn": per_turn} if len(per_turn) > 1 else {}
            values.append(IndicatorValue(sample.id, sum(per_turn) / len(per_turn), None, detail))
        return values
