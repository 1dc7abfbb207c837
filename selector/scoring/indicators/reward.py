"""Reward score: a HF sequence-classification reward model's logit for (instruction, answer).

Default model: ``OpenAssistant/reward-model-deberta-v3-large-v2``, as the paper; any HF id or
local folder works. The instruction is the sample's own human turn; cc_sbu_align has none, so it
gets "Describe this image in detail." (the original's question). Conversations are scored per
round and averaged.

Pairs are sorted by length and scored in padded batches (the original ran one pair at a time);
padding is masked, so a pair's score does not depend on its batch. fp16/bf16 on CUDA, fp32 on CPU.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

from selector.data.samples import Sample
from selector.core.cache import IndicatorValue
from selector.scoring.indicators import Indicator, register
from selector.scoring.indicators.devices import load_pretrained, resolve_device


@register("reward")
class RewardScore(Indicator):
    def __init__(self, model: str = "OpenAssistant/reward-model-deberta-v3-large-v2",
                 batch_size: int = 16, max_length: int = 512, device: Optional[str] = None,
                 precision: Optional[str] = None, progress: bool = True) -> None:
        self.model_name = model
        self.batch_size = batch_size
        self.max_length = max_length
        self.device = device
        self.precision = precision
        self.progress = progress
        self._loaded: Optional[Tuple[Any, Any]] = None

    def settings(self) -> Dict[str, Any]:
        return {"model": self.model_name, "max_length": self.max_length}

    def load(self) -> Tuple[Any, Any]:
        """(model, tokenizer), created once."""
        if self._loaded is None:
            self._loaded = load_pretrained("AutoModelForSequenceClassification", "reward model",
                                           self.model_name, resolve_device(self.device),
                                           self.precision)
        return self._loaded

    def score(self, samples: Sequence[Sample]) -> List[IndicatorValue]:
        import torch
        from tqdm.auto import tqdm

        model, tokenizer = self.load()
        pairs: List[Tuple[int, int, str, str]] = [
            (i, turn, question, answer) for i, sample in enumerate(samples)
            for turn, (question, answer) in enumerate(sample.rounds)]
        pairs.sort(key=lambda pair: len(pair[2]) + len(pair[3]))  # less padding per batch
        per_sample: Dict[int, Dict[int, float]] = {}
        with torch.no_grad(), tqdm(total=len(pairs), desc="reward score", unit="pair",
                                   disable=not self.progress) as bar:
            for start in range(0, len(pairs), self.batch_size):
                batch = pairs[start:start + self.batch_size]
                inputs = tokenizer([q for _, _, q, _ in batch], [a for _, _, _, a in batch],
                                   padding=True, truncation="only_second",
                                   max_length=self.max_length, return_tensors="pt")
                logits = model(**inputs.to(model.device)).logits[:, 0].float().cpu()
                for (i, turn, _, _), value in zip(batch, logits.tolist()):
                    per_sample.setdefault(i, {})[turn] = value
                bar.update(len(batch))
        results = []
        for i, sample in enumerate(samples):
            by_turn = per_sample.get(i, {})
            turns = [by_turn[turn] for turn in sorted(by_turn)]
            if not turns or not any(a.strip() for a in sample.answers):
                results.append(IndicatorValue(sample.id, None, "empty answer"))
            elif any(t != t for t in turns):
                results.append(IndicatorValue(sample.id, None, "model output is NaN"))
            else:
                results.append(IndicatorValue(sample.id, sum(turns) / len(turns), None,
                                              {"per_turn": turns} if len(turns) > 1 else {}))
        return results
