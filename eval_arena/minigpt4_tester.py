"""MiniGPT-4 under evaluation, answering as Multi-Modality-Arena's MiniGPT-4 tester answers.

One generation path (:class:`MiniGPT4Tester`) serves every MiniGPT-4-shaped model: it uses only
the model's own pieces (``encode_img``, ``llama_tokenizer``, ``llama_model`` and its input
embeddings), which MiniGPT-4 v1 (``mini_gpt4``), HEAD (``minigpt4``) and our tiny model
(``igpt4_tiny_minigpt4``) all have. Two ways to get the model:

* ``--tester minigpt4`` (:meth:`MiniGPT4Tester.from_checkout`, the host's part in
  :mod:`eval_arena.minigpt4_host`): a MiniGPT-4 checkout builds it from
  a training or eval config exactly as its ``train.py`` does (``Config`` from ``--cfg-path`` and
  ``--options``, ``registry.get_model_class(arch).from_config``), then a checkpoint of our training
  (``{"model": trainable weights, "config": ...}``) is merged over it with ``strict=False``, the
  way MiniGPT-4 loads its own ``model.ckpt``.
* ``--tester tiny``: the tiny model from one of our configs, no host at all
  (:func:`lavis_plugins.tiny_tester.load_tiny` builds it; the tester is this one).

What the Arena does (``LVLM_evaluation/models/test_minigpt4.py`` and its
``minigpt4/conversation/conversation.py``), and what mode ``arena`` therefore does:

* prompt: the v0 conversation, ``<system>###Human: <Img><ImageHere></Img> {question}###Assistant:``
  (:func:`arena_prompt`); the text before the image starts with BOS, the image embeddings replace
  ``<ImageHere>``;
* image: ``preprocess.vis_processor.train`` = BLIP-2's train transform (random resized crop, scale
  0.5-1, bicubic; v1's ``blip2_image_train``, not HEAD's, which only resizes) at the training
  image size (224 for the real model);
* batch: prompt embeddings left-padded with zero vectors and *no* attention mask, so padding is
  attended to and an answer depends on the rest of its batch (the Arena's default batch size 1
  avoids that);
* decoding: sampled, ``top_p=0.9, temperature=1.0, num_beams=1, min_length=1,
  repetition_penalty=1.0``, ``max_new_tokens`` from the runner (256, as ``evaluate_VQA``); stop once
  every answer holds ``###``; an answer is the text before ``###``, after the last
  ``Assistant:``, stripped; prompts longer than ``2000 - max_new_tokens`` keep their end;
* float16 on CUDA, float32 on a CPU.

Mode ``deterministic`` changes exactly what makes answers random or batch-dependent: greedy
decoding, BLIP-2's eval transform (resize; the config's eval processor when it names one), padding
masked out (position ids then count from each prompt's first token), torch seeded (``seed``,
default 0) before every batch. An answer then depends on its image and question only.

Deviations from the Arena in both modes, none of which changes a kept answer: special tokens are
dropped when decoding (the Arena keeps the ``</s>`` and padding a row that ended early carries),
and the stop check looks for the stop *text* (the Arena matches Vicuna's ids 835 and 2277 29937,
which only works for Vicuna's tokenizer).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from eval_arena.minigpt4_host import (config_file, find_checkout, host_config, import_host,
                                      with_model_type, working_directory)
from eval_arena.tester_api import DEFAULT_MAX_NEW_TOKENS, Image
from lavis_plugins.model_loading import (blip2_transform, config_node, merge_checkpoint,
                                         pick_device, pick_dtype, read_checkpoint,
                                         read_model_config, vision_config)
from selector.core.compat import ensure_torchvision_importable
from selector.core.errors import InputError
from selector.core.safeload import weights_only_loads

ensure_torchvision_importable()  # transformers imports torchvision

import torch  # noqa: E402
from transformers import StoppingCriteria, StoppingCriteriaList  # noqa: E402

ARENA = "arena"
DETERMINISTIC = "deterministic"
MODES = (ARENA, DETERMINISTIC)
ARENA_SYSTEM = ("Give the following image: <Img>ImageContent</Img>. You will be able to see the "
                "image once I provide it to you. Please answer my questions.")
IMAGE_HERE = "<ImageHere>"
STOP = "###"
ANSWER_MARK = "Assistant:"
ARENA_MAX_LENGTH = 2000  # Chat.answer / batch_answer's max_length



def arena_prompt(question: str) -> str:
    """The Arena's MiniGPT-4 prompt: ``CONV_VISION`` after ``upload_img``, ``ask`` and the empty
    assistant turn (roles ``Human`` / ``Assistant``, separator ``###``)."""
    return f"{ARENA_SYSTEM}###Human: <Img>{IMAGE_HERE}</Img> {question}###{ANSWER_MARK}"


@dataclass(frozen=True)
class Decoding:
    """What a mode decides: sampling, masking of the padding, image transform, default seed."""

    do_sample: bool
    mask_padding: bool
    eval_transform: bool
    default_seed: Optional[int]

    def generate_kwargs(self) -> Dict[str, Any]:
        kwargs: Dict[str, Any] = {"num_beams": 1, "min_length": 1, "repetition_penalty": 1.0,
                                  "do_sample": self.do_sample}
        if self.do_sample:
            kwargs.update(top_p=0.9, temperature=1.0)
        return kwargs


DECODING = {ARENA: Decoding(do_sample=True, mask_padding=False, eval_transform=False, default_seed=None),
            DETERMINISTIC: Decoding(do_sample=False, mask_padding=True, eval_transform=True, default_seed=0)}


class StopWhenAllAnswered(StoppingCriteria):
    """True once every row has produced the stop text or the end-of-sequence token.

    Each row is checked as it grows (only its last few tokens are decoded), and a finished row is
    not looked at again. Returns one bool for the batch, which every transformers version takes.
    """

    def __init__(self, tokenizer: Any, stop: str, rows: int, eos_token_id: Optional[int]) -> None:
        self.tokenizer, self.stop, self.eos = tokenizer, stop, eos_token_id
        self.window = len(tokenizer(stop, add_special_tokens=False)["input_ids"]) + 4
        self.done = [False] * rows

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> bool:
        for row, ids in enumerate(input_ids):
            if self.done[row] or len(ids) == 0:
                continue
            if self.eos is not None and int(ids[-1]) == self.eos:
                self.done[row] = True
            elif self.stop in self.tokenizer.decode(ids[-self.window:], skip_special_tokens=True):
                self.done[row] = True
        return all(self.done)


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise InputError(f"tester mode must be {' or '.join(MODES)}, got {mode!r}")
    return mode


# ---------------------------------------------------------------------------------------- tester
class MiniGPT4Tester:
    """Arena tester (``generate`` / ``batch_generate``) around a MiniGPT-4-shaped ``model``.

    ``model`` needs ``encode_img(pixels)`` (image embeddings, or ``(embeddings, attention)`` as
    v1 and HEAD return), ``llama_tokenizer`` and ``llama_model`` (a causal LM with ``generate``
    and input embeddings). ``vis_processor`` turns a PIL image into a tensor. See the module
    docstring for the modes.
    """

    def __init__(self, model: Any, vis_processor: Callable[[Any], torch.Tensor], mode: str = ARENA,
                 seed: Optional[int] = None, name: str = "MiniGPT-4",
                 max_length: int = ARENA_MAX_LENGTH, settings: Optional[Dict[str, Any]] = None) -> None:
        self.model = model
        self.vis_processor = vis_processor
        self.mode = check_mode(mode)
        self.decoding = DECODING[mode]
        self.seed = seed if seed is not None else self.decoding.default_seed
        self.name = name
        self.max_length = int(max_length)
        self.settings = dict(settings or {}, mode=mode, seed=self.seed)
        self.tokenizer = model.llama_tokenizer
        self._warned_long = False

    def describe(self) -> str:
        """One line on what answers: the settings a reader of the answers needs to know."""
        s = self.settings
        decoding = "sampled: top_p 0.9, temperature 1.0" if self.decoding.do_sample else "greedy"
        padding = "masked padding" if self.decoding.mask_padding else "unmasked padding"
        checkpoint = f"{s['ckpt']} ({s.get('weights_loaded', 0)} weights merged)" if s.get("ckpt") \
            else "none"
        return (f"{self.name}: mode {self.mode} ({decoding}, {padding}, seed {self.seed}), image "
                f"transform {s.get('image_transform', '?')}, checkpoint {checkpoint}, "
                f"{s.get('device', '?')} {s.get('dtype', '?')}")

    # -- inputs -------------------------------------------------------------------------------
    @property
    def embeddings(self) -> torch.nn.Module:
        return self.model.llama_model.get_input_embeddings()

    def load_images(self, images: Sequence[Image]) -> torch.Tensor:
        """Paths or PIL images -> the processed batch, on the model's device and dtype."""
        from PIL import Image as PILImage

        pixels = []
        for image in images:
            if not isinstance(image, PILImage.Image):
                try:
                    image = PILImage.open(image).convert("RGB")
                except (OSError, ValueError) as exc:
                    raise InputError(f"{image}: cannot read the image ({exc})") from None
            pixels.append(self.vis_processor(image))
        weight = self.embeddings.weight
        return torch.stack(pixels).to(weight.device, self._image_dtype())

    def _image_dtype(self) -> torch.dtype:
        encoder = getattr(self.model, "visual_encoder", None)
        parameter = next(iter(encoder.parameters()), None) if encoder is not None else None
        return parameter.dtype if parameter is not None else self.embeddings.weight.dtype

    def image_embeds(self, pixels: torch.Tensor) -> torch.Tensor:
        """``(batch, image tokens, hidden)`` from the model's own ``encode_img``."""
        encoded = self.model.encode_img(pixels)
        return encoded[0] if isinstance(encoded, (tuple, list)) else encoded

    def _ids(self, text: str) -> List[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def context_embeds(self, image_embeds: torch.Tensor, questions: Sequence[str]) -> List[torch.Tensor]:
        """Each question's prompt as ``(length, hidden)`` input embeddings: BOS + the text before
        ``<ImageHere>``, the image's embeddings, the text after (MiniGPT-4's
        ``get_context_emb``). Differentiable in the image embeddings."""
        embed = self.embeddings
        device, dtype = embed.weight.device, embed.weight.dtype
        bos = self.tokenizer.bos_token_id
        rows = []
        for features, question in zip(image_embeds, questions):
            before, _, after = arena_prompt(question).partition(IMAGE_HERE)
            head = ([bos] if bos is not None else []) + self._ids(before)
            rows.append(torch.cat([embed(torch.tensor(head, dtype=torch.long, device=device)),
                                   features.to(device, dtype),
                                   embed(torch.tensor(self._ids(after), dtype=torch.long, device=device))]))
        return rows

    def _fit(self, row: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
        """Keep the end of a prompt too long for ``max_length`` (``Chat.answer``'s cut)."""
        budget = self.max_length - max_new_tokens
        if len(row) <= budget:
            return row
        if not self._warned_long:
            warnings.warn(f"a prompt of {len(row)} tokens exceeds {budget} (max length "
                          f"{self.max_length} - {max_new_tokens} new tokens); its start is cut",
                          stacklevel=3)
            self._warned_long = True
        return row[-max(budget, 1):]

    def pad(self, rows: Sequence[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
        """Left-pad with zero vectors; the mask hides the padding in deterministic mode and, as in
        the Arena, shows it (all ones) in arena mode."""
        width = max(len(row) for row in rows)
        embeds = rows[0].new_zeros((len(rows), width, rows[0].shape[-1]))
        mask = torch.zeros((len(rows), width), dtype=torch.long, device=rows[0].device)
        for i, row in enumerate(rows):
            embeds[i, width - len(row):] = row
            mask[i, width - len(row):] = 1
        if not self.decoding.mask_padding:
            mask.fill_(1)
        return embeds, mask

    # -- outputs ------------------------------------------------------------------------------
    def decode(self, ids: Sequence[int]) -> str:
        """Generated ids -> the answer: up to the end token, without special tokens, before
        ``###``, after the last ``Assistant:``, stripped (the Arena's post-processing)."""
        ids = [int(i) for i in ids]
        eos = self.tokenizer.eos_token_id
        if eos is not None and eos in ids:
            ids = ids[:ids.index(eos)]
        special = set(self.tokenizer.all_special_ids)  # not every tokenizer skips them itself
        text = self.tokenizer.decode([i for i in ids if i not in special])
        return text.split(STOP)[0].split(ANSWER_MARK)[-1].strip()

    @torch.no_grad()
    def batch_generate(self, images: Sequence[Image], questions: Sequence[str],
                       max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS) -> List[str]:
        if len(images) != len(questions):
            raise ValueError(f"{len(images)} images for {len(questions)} questions")
        if not questions:
            return []
        if self.seed is not None:
            torch.manual_seed(self.seed)  # before the images: the arena transform crops at random
        pixels = self.load_images(images)
        rows = [self._fit(row, max_new_tokens)
                for row in self.context_embeds(self.image_embeds(pixels), questions)]
        embeds, mask = self.pad(rows)
        eos = self.tokenizer.eos_token_id
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else eos
        stop = StopWhenAllAnswered(self.tokenizer, STOP, len(rows), eos)
        output = self.model.llama_model.generate(
            inputs_embeds=embeds, attention_mask=mask, max_new_tokens=max_new_tokens,
            stopping_criteria=StoppingCriteriaList([stop]), pad_token_id=pad, eos_token_id=eos,
            **self.decoding.generate_kwargs())
        return [self.decode(row) for row in output]

    def generate(self, image: Image, question: str, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS) -> str:
        return self.batch_generate([image], [question], max_new_tokens=max_new_tokens)[0]

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_checkout(cls, checkout: Optional[str] = None, cfg_path: Optional[str] = None,
                      ckpt: Optional[str] = None, device: Optional[str] = None, mode: str = ARENA,
                      dtype: str = "auto", seed: Optional[int] = None, options: Sequence[str] = (),
                      name: str = "MiniGPT-4") -> "MiniGPT4Tester":
        """Build the model as a MiniGPT-4 checkout's ``train.py`` does (see the module docstring)."""
        check_mode(mode)
        chosen = pick_device(device)
        precision = pick_dtype(dtype, chosen)
        folder = find_checkout(checkout)
        state, saved_config = read_checkpoint(ckpt) if ckpt else (None, None)
        registry = import_host(folder)
        with config_file(cfg_path, saved_config, ckpt) as config_path:
            from omegaconf import OmegaConf

            raw = OmegaConf.merge(read_model_config(config_path), OmegaConf.from_dotlist(list(options)))
            arch = config_node(raw, "model", "arch")
            model_cls = registry.get_model_class(arch) if arch else None
            if model_cls is None:
                known = ", ".join(sorted(registry.mapping["model_name_mapping"]))
                raise InputError(f"{config_path}: model arch {arch!r} is not registered in {folder} "
                                 f"(known: {known}); a config for another MiniGPT-4 version?")
            raw = with_model_type(raw, model_cls, config_path)
            # relative prompt_path etc. resolve as under train.py; the host's own torch.load of
            # model.ckpt (and of any weights the config names) loads weights only, never code
            with working_directory(folder), weights_only_loads():
                config = host_config(raw, options)
                try:
                    model = model_cls.from_config(config.model)
                except (OSError, ValueError) as exc:  # weights / tokenizer paths that do not load
                    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                    raise InputError(f"{config_path}: building the {arch} model failed "
                                     f"({type(exc).__name__}: {first}); check its weight paths "
                                     "(llama_model, ckpt, ...) or pass options=...") from None
        loaded = merge_checkpoint(model, state, ckpt) if state is not None else 0
        model.eval()
        if not getattr(model, "low_resource", False):  # 8-bit models are placed at load time
            model.to(chosen, precision)
        eval_node, size = vision_config(config)
        if DECODING[mode].eval_transform:
            if eval_node is not None and eval_node.get("name"):
                processor_cls = registry.get_processor_class(eval_node.name)
                if processor_cls is None:
                    raise InputError(f"{config_path}: unknown eval vis_processor {eval_node.name!r}")
                processor, transform = processor_cls.from_config(eval_node), str(eval_node.name)
            else:
                processor = registry.get_processor_class("blip2_image_eval").from_config(
                    OmegaConf.create({"image_size": size}))
                transform = "blip2_image_eval"
        else:
            processor, transform = blip2_transform(size, train=True), "arena blip2_image_train"
        settings = {"checkout": str(folder), "cfg_path": str(cfg_path or f"{ckpt} (its config)"),
                    "arch": arch, "ckpt": str(ckpt) if ckpt else None, "weights_loaded": loaded,
                    "device": str(chosen), "dtype": str(precision).replace("torch.", ""),
                    "image_transform": f"{transform} {size}"}
        return cls(model, processor, mode=mode, seed=seed, name=name, settings=settings)


__all__ = ["MiniGPT4Tester", "StopWhenAllAnswered", "arena_prompt", "check_mode", "Decoding",
           "DECODING", "MODES", "ARENA", "DETERMINISTIC"]
