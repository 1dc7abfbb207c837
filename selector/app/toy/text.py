"""The toy world's text models: word-level and WordPiece tokenizers, the DeBERTa reward model and
the Llama text embedder, each in two variants built by one implementation: the demo's (a
vocabulary of the toy world's words, the reward model trained on preference pairs) and the tests'
tiny untrained ones (a WordPiece vocabulary of a few sentences, fixed seeds). Saved as real HF
folders, so the code under test goes through its normal ``from_pretrained`` loading path."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from selector.app.toy.training import OneThread, loss_report
from selector.app.toy.world import (caption_of, faulty_caption, off_topic_caption, random_truth,
                                    sample_rng)

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "<s>", "</s>"]
#: the tests' tokenizer corpus (:func:`train_tokenizer`)
CORPUS = ["a red square on a white background", "two blue circles next to a green triangle",
          "describe this image in detail", "the picture shows a cat sitting on a chair",
          "what colour is the shape", "there are three yellow stars", "a photo of a dog"]


# -- tokenizers --------------------------------------------------------------------------------

def _text_splitters() -> Tuple[Any, Any]:
    """(normaliser, pre-tokeniser) every toy tokenizer uses: lower-cased BERT words."""
    from tokenizers import normalizers, pre_tokenizers

    return normalizers.BertNormalizer(lowercase=True), pre_tokenizers.BertPreTokenizer()


def _save_tokenizer(folder: Path, tokenizer: Any, template: Optional[str],
                    max_length: int) -> Path:
    """Give ``tokenizer`` its template (``pair``: ``[CLS] a [SEP] b [SEP]`` for the reward
    model; ``causal``: ``<s>`` first, as Llama's; None: none) and save it as a
    PreTrainedTokenizerFast folder."""
    from selector.core.compat import ensure_torchvision_importable

    ensure_torchvision_importable()  # transformers' model modules import torchvision
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    if template == "causal":
        tokenizer.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", 4)])
    elif template == "pair":
        tokenizer.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="[PAD]",
                                      unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]",
                                      bos_token="<s>", eos_token="</s>",
                                      model_max_length=max_length)
    folder.mkdir(parents=True, exist_ok=True)
    wrapped.save_pretrained(folder)
    return folder


def word_tokenizer(folder: Path, texts: Sequence[str], causal: bool = False,
                   max_length: int = 512) -> Tuple[Path, int]:
    """(folder, vocabulary size) of a word-level tokenizer over ``texts`` (the demo's): pairs
    for the reward model, ``<s>``-first for a causal LM. The vocabulary is every lower-cased
    word, most frequent first (ties by spelling), so the same texts always give the same ids
    (the subword trainers of ``tokenizers`` break frequency ties differently from run to run)."""
    from collections import Counter

    from tokenizers import Tokenizer, models

    normalizer, pre_tokenizer = _text_splitters()
    counts = Counter(word for text in texts for word, _ in
                     pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text)))
    words = sorted(counts, key=lambda word: (-counts[word], word))
    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS + words)}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.normalizer = normalizer
    tokenizer.pre_tokenizer = pre_tokenizer
    return _save_tokenizer(folder, tokenizer, "causal" if causal else "pair",
                           max_length), len(vocab)


def train_tokenizer(folder: Path, texts: Iterable[str] = CORPUS, vocab_size: int = 300,
                    pair_template: bool = True, bos_eos: bool = False) -> Path:
    """A WordPiece tokenizer trained on the fly (the tests'; its vocabulary may differ from run
    to run, see :func:`word_tokenizer`): ``bos_eos`` for a causal LM, else ``pair_template``
    for a pair classifier, else no template."""
    from tokenizers import Tokenizer, models, trainers

    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer, tokenizer.pre_tokenizer = _text_splitters()
    tokenizer.train_from_iterator(list(texts) * 3, trainers.WordPieceTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS))
    template = "causal" if bos_eos else "pair" if pair_template else None
    return _save_tokenizer(folder, tokenizer, template, 128)


def _tokenizer_corpus(seed: int, n: int = 400) -> List[str]:
    """Text in the toy world's vocabulary (captions of the training stream, off-topic captions
    and the default instruction) to build the demo models' vocabularies from."""
    from selector.data.samples import DEFAULT_INSTRUCTION

    texts = [DEFAULT_INSTRUCTION]
    for index in range(n):
        rng = sample_rng("tokenizer", seed, index)
        texts.append(caption_of(random_truth(rng), rng))
        texts.append(off_topic_caption(rng))
    return texts


# -- the reward model --------------------------------------------------------------------------

def reward_network(vocab_size: int, max_positions: int, seed: int) -> Any:
    """A 2-layer DeBERTa-v2 sequence classifier with one label (the reward model's
    architecture), random weights drawn after ``torch.manual_seed(seed)``."""
    from selector.core.compat import ensure_torchvision_importable

    ensure_torchvision_importable()  # transformers' model modules import torchvision
    import torch
    from transformers import DebertaV2Config, DebertaV2ForSequenceClassification

    torch.manual_seed(seed)
    config = DebertaV2Config(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2,
                             num_attention_heads=2, intermediate_size=64,
                             max_position_embeddings=max_positions, relative_attention=True,
                             position_buckets=32, pos_att_type=["p2c", "c2p"], num_labels=1,
                             pad_token_id=0)
    return DebertaV2ForSequenceClassification(config)


REWARD_TRAINING = {"pairs": 800, "steps": 80, "batch_size": 16, "lr": 2e-3, "max_length": 128}
#: the faults a text-only reward model can see and human raters punish whatever the image shows
TEXT_FAULTS = ("truncated", "repetitive")


def train_toy_reward(model: Any, tokenizer: Any, seed: int = 0, pairs: int = 800,
                     steps: int = 80, batch_size: int = 16, lr: float = 2e-3,
                     max_length: int = 128, progress: bool = True) -> Dict[str, Any]:
    """Train the reward model the way real ones are (a Bradley-Terry pairwise loss,
    ``-log sigmoid(r_chosen - r_rejected)``, as OpenAssistant's) on preference pairs from a
    separate generated stream (never the pool): a faithful caption is preferred over the same
    caption truncated or with a sentence repeated. Those are the faults a text-only model can
    see and preference data punishes; it never sees a colour, count or topic fault, which only
    the image reveals. Returns a small report."""
    import torch
    from tqdm.auto import tqdm

    from selector.data.samples import DEFAULT_INSTRUCTION

    began = time.time()
    chosen, rejected = [], []
    for index in range(pairs):
        rng = sample_rng("reward-train", seed, index)
        truth = random_truth(rng)
        clean = caption_of(truth, rng)
        chosen.append(clean)
        rejected.append(faulty_caption(TEXT_FAULTS[index % len(TEXT_FAULTS)], truth, clean,
                                       rng)[0])
    generator = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    losses: List[float] = []
    model.train()
    with tqdm(range(steps), desc="toy reward training", unit="step",
              disable=not progress) as bar:
        for _ in bar:
            rows = torch.randperm(pairs, generator=generator)[:batch_size].tolist()
            texts = [chosen[r] for r in rows] + [rejected[r] for r in rows]
            inputs = tokenizer([DEFAULT_INSTRUCTION] * len(texts), texts, padding=True,
                               truncation="only_second", max_length=max_length,
                               return_tensors="pt")
            rewards = model(**inputs).logits[:, 0]
            loss = -torch.nn.functional.logsigmoid(rewards[:len(rows)] - rewards[len(rows):]
                                                   ).mean()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            losses.append(float(loss.detach()))
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
    model.eval()
    return {"pairs": pairs, "steps": steps, "rejected": list(TEXT_FAULTS),
            **loss_report(losses, steps, began)}


def toy_reward_model(folder: Path, seed: int = 0, train: bool = True, progress: bool = True,
                     training: Optional[Mapping[str, Any]] = None) -> Tuple[Path, Dict[str, Any]]:
    """(HF folder, report): the demo's reward model over a word-level tokenizer of the toy
    vocabulary, trained by :func:`train_toy_reward` unless ``train`` is false (then random
    weights, i.e. noise)."""
    _, vocab_size = word_tokenizer(folder, _tokenizer_corpus(seed))
    model = reward_network(vocab_size, 512, seed)
    report: Dict[str, Any] = {"trained": False}
    if train:
        from transformers import AutoTokenizer

        with OneThread():
            report = {"trained": True, **train_toy_reward(
                model, AutoTokenizer.from_pretrained(folder), seed,
                **{**REWARD_TRAINING, **(training or {})}, progress=progress)}
    model.eval().save_pretrained(folder)
    return folder, report


def tiny_reward_model(folder: Path, seed: int = 0) -> Path:
    """The tests' reward model: untrained, over a WordPiece tokenizer of :data:`CORPUS`."""
    train_tokenizer(folder)
    reward_network(300, 128, seed).eval().save_pretrained(folder)
    return folder


# -- the text embedder -------------------------------------------------------------------------

def _save_llama(folder: Path, vocab_size: int, max_positions: int, seed: int) -> Path:
    """A 2-layer Llama (hidden 32, random weights after ``torch.manual_seed(seed)``): the text
    embedder's architecture, Llama-2-chat's in miniature."""
    from selector.core.compat import ensure_torchvision_importable

    ensure_torchvision_importable()  # transformers' model modules import torchvision
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                         max_position_embeddings=max_positions, pad_token_id=0, bos_token_id=4,
                         eos_token_id=5)
    LlamaForCausalLM(config).eval().save_pretrained(folder)
    return folder


def toy_llama(folder: Path, seed: int = 0) -> Path:
    """The demo's text embedder when no sentence-transformers model is installed: the tiny Llama
    over a ``<s>``-first word-level tokenizer of the toy vocabulary."""
    _, vocab_size = word_tokenizer(folder, _tokenizer_corpus(seed), causal=True)
    return _save_llama(folder, vocab_size, 512, seed)


def tiny_llama(folder: Path, seed: int = 0) -> Path:
    """The tests' text embedder: the tiny Llama over a BOS-adding WordPiece tokenizer."""
    train_tokenizer(folder, bos_eos=True)
    return _save_llama(folder, 300, 128, seed)
