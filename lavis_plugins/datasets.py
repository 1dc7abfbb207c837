"""Dataset classes our builders return. Framework-free (torch only): the hosts need a map-style
dataset with a ``collater``; they set ``name`` (and MiniGPT-4 ``sample_ratio``) on it.

Every sample carries ``image``, ``answer`` and ``text_input`` (the same text): MiniGPT-4 v1 and
HEAD read ``answer``, LAVIS captioning models read ``text_input``. ``instruction_input`` is only
set for conversation data: MiniGPT-4 HEAD prefers it over the config's prompt list, which is what
cc_sbu_align training relies on.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

from torch.utils.data import Dataset
from torch.utils.data.dataloader import default_collate

from selector.data.samples import Sample


class _Base(Dataset):
    def __init__(self, samples: Sequence[Sample], vis_processor: Optional[Callable] = None,
                 text_processor: Optional[Callable] = None) -> None:
        self.samples = list(samples)
        self.vis_processor = vis_processor
        self.text_processor = text_processor
        self.img_ids = {sample.id: n for n, sample in enumerate(self.samples)}

    def __len__(self) -> int:
        return len(self.samples)

    def collater(self, samples: List[Dict[str, Any]]) -> Dict[str, Any]:
        return default_collate(samples)

    def set_processors(self, vis_processor: Callable, text_processor: Callable) -> None:
        self.vis_processor, self.text_processor = vis_processor, text_processor

    def _image(self, path: Path) -> Any:
        from PIL import Image

        with Image.open(path) as image:
            image = image.convert("RGB")
        return self.vis_processor(image) if self.vis_processor is not None else image


class SelectedCCSBUAlignDataset(_Base):
    """cc_sbu_align samples (image + detailed description), the selected ones only. The caption is
    passed raw, as MiniGPT-4's own CCSBUAlignDataset does (its text processor is not applied)."""

    def __getitem__(self, index: int) -> Dict[str, Any]:
        sample = self.samples[index]
        return {"image": self._image(sample.image), "answer": sample.answer,
                "text_input": sample.answer, "image_id": self.img_ids[sample.id]}


class ConversationDataset(_Base):
    """LLaVA-style multi-round conversations, one sample per conversation, in the layout
    MiniGPT-4 HEAD's own conversation datasets use: ``conv_q`` / ``conv_a`` (the rounds' questions
    and answers joined by ``connect_sym``; the first question carries the image placeholder). HEAD
    formats every question with its prompt template and trains on the answers only. MiniGPT-4 v1
    has no conversation support: for it, ``instruction_input`` is the first question and
    ``answer`` lays the later rounds out with the same template (``end_sym`` between rounds), so
    v1 also learns the later questions' tokens.

    Every sample needs an image (the placeholder opens every first question): the builder leaves
    text-only samples out (:func:`lavis_plugins.builders.with_images`); given one, this refuses
    it by name rather than fail on its first batch."""

    connect_sym = "!@#"

    def __init__(self, samples: Sequence[Sample], vis_processor: Optional[Callable] = None,
                 text_processor: Optional[Callable] = None,
                 prompt_template: str = "###Human: {} ###Assistant: ", end_sym: str = "###",
                 image_placeholder: str = "<Img><ImageHere></Img>") -> None:
        text_only = [sample.id for sample in samples if not sample.has_image]
        if text_only:
            from selector.core.errors import InputError

            raise InputError(f"sample {text_only[0]!r} is text-only ({len(text_only)} such): "
                             "MiniGPT-4 trains on an image per sample; leave them out first")
        super().__init__(samples, vis_processor, text_processor)
        self.prompt_template = prompt_template
        self.end_sym = end_sym
        self.image_placeholder = image_placeholder

    def layout(self, sample: Sample) -> Dict[str, str]:
        rounds = sample.rounds
        questions = [f"{self.image_placeholder} {rounds[0][0]} "] + [f"{q} " for q, _ in rounds[1:]]
        answers = [a for _, a in rounds]
        flat = answers[0] + "".join(f"{self.end_sym}{self.prompt_template.format(q.strip())}{a}"
                                    for q, a in zip(questions[1:], answers[1:]))
        return {"conv_q": self.connect_sym.join(questions),
                "conv_a": self.connect_sym.join(answers), "connect_sym": self.connect_sym,
                "instruction_input": questions[0], "answer": flat, "text_input": flat}

    def __getitem__(self, index: int) -> Dict[str, Any]:
        sample = self.samples[index]
        return {"image": self._image(sample.image), **self.layout(sample),
                "image_id": self.img_ids[sample.id]}
