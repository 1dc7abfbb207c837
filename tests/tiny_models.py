"""Tiny random-initialised models built from configs, saved as real HF folders so the code under
test goes through its normal ``from_pretrained`` loading path (no hub, no downloads)."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

from selector.core.compat import ensure_torchvision_importable

ensure_torchvision_importable()  # transformers' model modules import torchvision

CORPUS = ["a red square on a white background", "two blue circles next to a green triangle",
          "describe this image in detail", "the picture shows a cat sitting on a chair",
          "what colour is the shape", "there are three yellow stars", "a photo of a dog"]


def train_tokenizer(folder: Path, texts: Iterable[str] = CORPUS, vocab_size: int = 300,
                    pair_template: bool = True, bos_eos: bool = False) -> Path:
    """A WordPiece tokenizer trained on the fly, saved as a PreTrainedTokenizerFast folder."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "<s>", "</s>"]
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.train_from_iterator(list(texts) * 3, trainers.WordPieceTrainer(
        vocab_size=vocab_size, special_tokens=special))
    if bos_eos:  # a causal LM's tokenizer: BOS first, as Llama's
        tokenizer.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", 4)])
    elif pair_template:
        tokenizer.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="[PAD]",
                                      unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]",
                                      bos_token="<s>", eos_token="</s>", model_max_length=128)
    folder.mkdir(parents=True, exist_ok=True)
    wrapped.save_pretrained(folder)
    return folder


def tiny_reward_model(folder: Path, seed: int = 0) -> Path:
    """A 2-layer DeBERTa-v2 sequence classifier (1 label), the reward model's architecture."""
    import torch
    from transformers import DebertaV2Config, DebertaV2ForSequenceClassification

    train_tokenizer(folder)
    torch.manual_seed(seed)
    config = DebertaV2Config(vocab_size=300, hidden_size=32, num_hidden_layers=2,
                             num_attention_heads=2, intermediate_size=64,
                             max_position_embeddings=128, relative_attention=True,
                             position_buckets=32, pos_att_type=["p2c", "c2p"], num_labels=1,
                             pad_token_id=0)
    DebertaV2ForSequenceClassification(config).eval().save_pretrained(folder)
    return folder


def tiny_llama(folder: Path, seed: int = 0) -> Path:
    """A 2-layer Llama (hidden 32) with a BOS-adding tokenizer, Llama-2-chat's architecture."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    train_tokenizer(folder, bos_eos=True)
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=300, hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                         max_position_embeddings=128, pad_token_id=0, bos_token_id=4,
                         eos_token_id=5)
    LlamaForCausalLM(config).eval().save_pretrained(folder)
    return folder


TINY_CLIP = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 16, "head_width": 8, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1},
}


def tiny_clip(folder: Path, name: str = "igpt4-tiny-clip", seed: int = 0):
    """(architecture JSON, checkpoint) of a tiny open_clip model with open_clip's bundled BPE
    tokenizer. open_clip registers the JSON under its file stem; the saved random weights make
    every process load the same model (``pretrained=<checkpoint path>``)."""
    import json

    import torch

    from selector.scoring.indicators.clip import load_open_clip

    folder.mkdir(parents=True, exist_ok=True)
    config = folder / f"{name}.json"
    config.write_text(json.dumps(TINY_CLIP))
    torch.manual_seed(seed)
    model = load_open_clip(name, None, str(config), "cpu", "fp32")[0]
    checkpoint = folder / f"{name}.pt"
    torch.save(model.state_dict(), checkpoint)
    return config, checkpoint


def tiny_score_settings(config: Path, checkpoint: Path, llama: Path, pca: int = 3):
    """``--set`` options pointing ``igpt4 score`` at the tiny models (no downloads)."""
    name = config.stem
    options = []
    for block in ("indicators.clip", "features.image"):
        options += [f"{block}.model={name}", f"{block}.pretrained={checkpoint}",
                    f"{block}.model_config={config}", f"{block}.num_workers=0"]
    options += [f"features.text.model={llama}", f"features.pca_components={pca}"]
    return [part for option in options for part in ("--set", option)]
