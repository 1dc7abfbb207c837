"""A MiniGPT-4-shaped model small enough to train on a CPU in seconds, for smoke tests.

Same shape as MiniGPT-4: a frozen vision encoder (a small ViT) -> a trainable linear projection ->
a frozen Llama (built from a config, random weights), fed "###Human: <Img>[image]</Img> prompt
###Assistant: answer###" and trained on the answer tokens only. As in MiniGPT-4's stage 2, only
the projection trains, so a training checkpoint holds the projection alone and the frozen parts are
rebuilt from the config's seed. The tokenizer is byte-level and built in memory (no files, no
download), or any local HF tokenizer folder given as ``tokenizer``.

It reads the same sample keys as MiniGPT-4 (``image``; ``answer`` or v1's ``text_input``;
``instruction_input`` or a prompt from ``prompts``; HEAD's ``conv_q`` / ``conv_a`` rounds), so the
runs it smoke-tests exercise our builders exactly as the real model would. :class:`TinyMiniGPT4` is
framework-free; :func:`tiny_model_class` makes the per-host subclass the registries require.
"""
from __future__ import annotations

import random
from typing import Any, Dict, List, Sequence, Tuple

import torch
from torch import nn

ARCH = "igpt4_tiny_minigpt4"
DEFAULTS: Dict[str, Any] = {
    "image_size": 32, "patch_size": 8, "vision_width": 48, "vision_layers": 2, "vision_heads": 4,
    "llm_hidden": 64, "llm_intermediate": 128, "llm_layers": 2, "llm_heads": 4,
    "max_txt_len": 160, "end_sym": "###", "prompt_template": "###Human: {} ###Assistant: ",
    "prompts": ["<Img><ImageHere></Img> Describe this image in detail."],
    "tokenizer": None, "seed": 0, "ckpt": None,
}
IMAGE_HERE = "<ImageHere>"


def byte_level_tokenizer() -> Any:
    """A byte-level tokenizer (256 byte symbols + <pad> <s> </s> <unk>), built in memory.

    The symbols are sorted: ``ByteLevel.alphabet()`` lists them in an order that changes from one
    process to the next, and the ids must not, or a checkpoint would meet other token embeddings
    in the process that evaluates it than in the one that trained it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    vocab = {token: n for n, token in enumerate(specials + sorted(pre_tokenizers.ByteLevel.alphabet()))}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", bos_token="<s>",
                                   eos_token="</s>", unk_token="<unk>")


class TinyViT(nn.Module):
    """Patch embedding + a few transformer layers: the stand-in for EVA-ViT-g."""

    def __init__(self, image_size: int, patch_size: int, width: int, layers: int,
                 heads: int) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, width, patch_size, stride=patch_size)
        self.position = nn.Parameter(torch.randn((image_size // patch_size) ** 2, width) * 0.02)
        layer = nn.TransformerEncoderLayer(width, heads, 2 * width, dropout=0.0,
                                           batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        tokens = self.patch(images).flatten(2).transpose(1, 2) + self.position
        return self.norm(self.blocks(tokens))


class TinyMiniGPT4(nn.Module):
    """The model; see the module docstring. ``config`` takes the keys of :data:`DEFAULTS`."""

    def __init__(self, **config: Any) -> None:
        super().__init__()
        from selector.core.compat import ensure_torchvision_importable

        ensure_torchvision_importable()  # transformers imports torchvision
        from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

        unknown = set(config) - set(DEFAULTS)
        if unknown:
            raise ValueError(f"unknown tiny model settings: {sorted(unknown)}")
        self.settings = {**DEFAULTS, **config}
        s = self.settings
        self.tokenizer = (AutoTokenizer.from_pretrained(s["tokenizer"]) if s["tokenizer"]
                          else byte_level_tokenizer())
        self.tokenizer.padding_side = "right"
        generator_state = torch.random.get_rng_state()
        torch.manual_seed(int(s["seed"]))  # the frozen parts are rebuilt identically from it
        try:
            self.visual_encoder = TinyViT(s["image_size"], s["patch_size"], s["vision_width"],
                                          s["vision_layers"], s["vision_heads"])
            self.llama_model = LlamaForCausalLM(LlamaConfig(
                vocab_size=len(self.tokenizer), hidden_size=s["llm_hidden"],
                intermediate_size=s["llm_intermediate"], num_hidden_layers=s["llm_layers"],
                num_attention_heads=s["llm_heads"], max_position_embeddings=1024,
                pad_token_id=self.tokenizer.pad_token_id, bos_token_id=self.tokenizer.bos_token_id,
                eos_token_id=self.tokenizer.eos_token_id))
            self.llama_proj = nn.Linear(s["vision_width"], s["llm_hidden"])
        finally:
            torch.random.set_rng_state(generator_state)
        for module in (self.visual_encoder, self.llama_model):
            module.requires_grad_(False)
            module.eval()
        self.prompt_template = s["prompt_template"]
        self.end_sym = s["end_sym"]
        self.max_txt_len = int(s["max_txt_len"])
        self.prompts = list(s["prompts"])

    def train(self, mode: bool = True) -> "TinyMiniGPT4":
        super().train(mode)
        self.visual_encoder.eval()  # frozen parts stay in eval mode, as MiniGPT-4 keeps them
        self.llama_model.eval()
        return self

    @property
    def device(self) -> torch.device:
        return self.llama_proj.weight.device

    @property
    def llama_tokenizer(self) -> Any:
        """MiniGPT-4's name for the tokenizer (v1 and HEAD), so that code written against
        MiniGPT-4 (e.g. eval_arena's MiniGPT-4 tester) runs on this model unchanged."""
        return self.tokenizer

    # -- inputs -------------------------------------------------------------------------------
    def encode_img(self, images: torch.Tensor) -> torch.Tensor:
        """Image embeddings ``(batch, tokens, llm_hidden)``; MiniGPT-4's own ``encode_img``
        returns them with an attention mask, ``(embeds, atts)``."""
        with torch.no_grad():
            features = self.visual_encoder(images.to(self.device, self.llama_proj.weight.dtype))
        return self.llama_proj(features)

    def _ids(self, text: str) -> List[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _segments(self, samples: Dict[str, Any], i: int) -> List[Tuple[str, bool]]:
        """(text, is_target) pieces of sample i, in order; the first piece holds <ImageHere>."""
        if "conv_q" in samples:
            symbol = samples["connect_sym"][i]
            questions = samples["conv_q"][i].split(symbol)
            answers = samples["conv_a"][i].split(symbol)
            pieces: List[Tuple[str, bool]] = []
            for question, answer in zip(questions, answers):
                pieces += [(self.prompt_template.format(question), False),
                           (answer + self.end_sym, True)]
            return pieces
        instruction = (samples["instruction_input"][i] if "instruction_input" in samples
                       else random.choice(self.prompts))
        answer = samples["answer"][i] if "answer" in samples else samples["text_input"][i]
        return [(self.prompt_template.format(instruction), False), (answer + self.end_sym, True)]

    def _sequence(self, pieces: Sequence[Tuple[str, bool]], image: torch.Tensor,
                  budget: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """Input embeddings and labels (-100 where nothing is learned) of one sample; at most
        ``budget`` text tokens after the image (MiniGPT-4's max_txt_len)."""
        embed = self.llama_model.get_input_embeddings()
        first, _ = pieces[0]
        before, _, after = first.partition(IMAGE_HERE)
        ids, targets = [], []
        for text, is_target in [(after, False)] + list(pieces[1:]):
            piece = self._ids(text)
            ids += piece
            targets += piece if is_target else [-100] * len(piece)
        ids, targets = ids[:budget], targets[:budget]
        head = [self.tokenizer.bos_token_id] + self._ids(before)
        device = self.device
        parts = [embed(torch.tensor(head, device=device)), image,
                 embed(torch.tensor(ids, device=device, dtype=torch.long))]
        labels = [-100] * (len(head) + len(image)) + targets
        return torch.cat(parts), torch.tensor(labels, device=device)

    @staticmethod
    def _pad(rows: Sequence[torch.Tensor], value: float, left: bool = False) -> torch.Tensor:
        width = max(len(row) for row in rows)
        padded = []
        for row in rows:
            fill = row.new_full((width - len(row),) + tuple(row.shape[1:]), value)
            padded.append(torch.cat([fill, row] if left else [row, fill]))
        return torch.stack(padded)

    # -- training -----------------------------------------------------------------------------
    def forward(self, samples: Dict[str, Any]) -> Dict[str, torch.Tensor]:
        images = self.encode_img(samples["image"])
        rows = [self._sequence(self._segments(samples, i), images[i], self.max_txt_len)
                for i in range(len(images))]
        embeds = self._pad([r[0] for r in rows], 0.0)
        labels = self._pad([r[1] for r in rows], -100)
        mask = self._pad([torch.ones(len(r[1]), dtype=torch.long, device=self.device)
                          for r in rows], 0)
        output = self.llama_model(inputs_embeds=embeds, attention_mask=mask, labels=labels)
        return {"loss": output.loss}

    # -- inference ----------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, images: torch.Tensor, questions: Sequence[str], max_new_tokens: int = 32,
                 do_sample: bool = False, top_p: float = 0.9, temperature: float = 1.0) -> List[str]:
        """Answers to ``questions`` about ``images`` (processed tensors). Prompts are left-padded
        with an attention mask, so an answer does not depend on the rest of the batch."""
        features = self.encode_img(images)
        rows = []
        for i, question in enumerate(questions):
            text = question if IMAGE_HERE in question else f"<Img>{IMAGE_HERE}</Img> {question}"
            rows.append(self._sequence([(self.prompt_template.format(text), False)],
                                       features[i], self.max_txt_len)[0])
        embeds = self._pad(rows, 0.0, left=True)
        mask = self._pad([torch.ones(len(r), dtype=torch.long, device=self.device) for r in rows],
                         0, left=True)
        output = self.llama_model.generate(
            inputs_embeds=embeds, attention_mask=mask, max_new_tokens=max_new_tokens,
            do_sample=do_sample, top_p=top_p if do_sample else None,
            temperature=temperature if do_sample else None,
            pad_token_id=self.tokenizer.pad_token_id, eos_token_id=self.tokenizer.eos_token_id)
        texts = self.tokenizer.batch_decode(output, skip_special_tokens=True)
        return [text.split(self.end_sym)[0].strip() for text in texts]

    # -- checkpoints --------------------------------------------------------------------------
    def load_trained(self, path: str) -> None:
        """Load a runner checkpoint (``{"model": state_dict of the trainable part, ...}``),
        weights only: a checkpoint named in a config (or in another checkpoint's saved config)
        never runs code."""
        from selector.core.safeload import torch_load

        state = torch_load(path, "tiny model checkpoint")
        if not isinstance(state, dict):
            raise ValueError(f"{path}: not a checkpoint of this tiny model (a "
                             f"{type(state).__name__}, expected a state dict)")
        missing, unexpected = self.load_state_dict(state.get("model", state), strict=False)
        if unexpected or any(name.startswith("llama_proj") for name in missing):
            raise ValueError(f"{path}: not a checkpoint of this tiny model "
                             f"(unexpected {unexpected[:3]}, missing {missing[:3]})")

    @classmethod
    def settings_from(cls, cfg: Any) -> Dict[str, Any]:
        """The model settings from a host config node (or a dict); other keys (arch, ...) are
        ignored."""
        from omegaconf import OmegaConf

        values = OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) \
            else dict(cfg)
        return {key: values[key] for key in DEFAULTS if key in values}

    @classmethod
    def build(cls, cfg: Any) -> "TinyMiniGPT4":
        settings = cls.settings_from(cfg)
        checkpoint = settings.pop("ckpt", None)
        model = cls(**settings)
        if checkpoint:
            model.load_trained(checkpoint)
        return model


def model_config_path() -> str:
    from selector.core.settings import config_dir

    return str(config_dir() / "models" / f"{ARCH}.yaml")


def tiny_model_class(host: Any) -> type:
    """The tiny model as a subclass of ``host``'s BaseModel (the registries insist on it)."""

    class HostTinyMiniGPT4(TinyMiniGPT4, host.BaseModel):
        PRETRAINED_MODEL_CONFIG_DICT = {"tiny": model_config_path()}

        @classmethod
        def from_config(cls, cfg: Any) -> "HostTinyMiniGPT4":
            return cls.build(cfg)

    HostTinyMiniGPT4.__name__ = HostTinyMiniGPT4.__qualname__ = "TinyMiniGPT4"
    return HostTinyMiniGPT4
