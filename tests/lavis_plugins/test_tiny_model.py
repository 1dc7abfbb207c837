"""lavis_plugins.tiny_model: the MiniGPT-4-shaped smoke-test model, framework-free."""
from __future__ import annotations

import math

import pytest
import torch

from lavis_plugins.tiny_model import TinyMiniGPT4, byte_level_tokenizer


@pytest.fixture(scope="module")
def model():
    return TinyMiniGPT4()


def _batch(n=3, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return {"image": torch.randn(n, 3, 32, 32, generator=generator),
            "answer": ["a red circle", "two blue squares on a table", "three green dots"][:n]}


def test_byte_level_tokenizer_round_trips_any_text():
    tokenizer = byte_level_tokenizer()
    text = "Ünïcode, emoji 🎨 and ###Human: tags"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == text and len(tokenizer) == 260


def test_only_the_projection_trains(model):
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"llama_proj.weight", "llama_proj.bias"}
    model.train()
    assert not model.llama_model.training and not model.visual_encoder.training


def test_frozen_parts_are_rebuilt_identically_from_the_seed(model):
    again = TinyMiniGPT4()
    other = TinyMiniGPT4(seed=1)
    name = "llama_model.model.layers.0.self_attn.q_proj.weight"
    assert torch.equal(again.state_dict()[name], model.state_dict()[name])
    assert not torch.equal(other.state_dict()[name], model.state_dict()[name])


def test_loss_is_on_the_answer_and_falls_when_the_projection_trains():
    model = TinyMiniGPT4()
    batch = _batch()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(15):
        loss = model(batch)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]
    # v1's key (text_input) is read when there is no answer
    v1 = {"image": batch["image"], "text_input": batch["answer"]}
    torch.manual_seed(0)
    a = model(v1)["loss"]
    torch.manual_seed(0)
    assert torch.isclose(a, model(batch)["loss"])


def test_conversation_rounds_train_on_answers_only(model):
    samples = {"image": torch.randn(1, 3, 32, 32),
               "conv_q": ["<Img><ImageHere></Img> What is it? !@#And the colour? "],
               "conv_a": ["A square.!@#Red."], "connect_sym": ["!@#"]}
    pieces = model._segments(samples, 0)
    assert [target for _, target in pieces] == [False, True, False, True]
    _, labels = model._sequence(pieces, model.encode_img(samples["image"])[0], 160)
    learned = model.tokenizer.decode([t for t in labels.tolist() if t != -100])
    assert learned == "A square.###Red.###"
    assert math.isfinite(model(samples)["loss"].item())


def test_generation_does_not_depend_on_the_batch(model):
    batch = _batch()
    together = model.generate(batch["image"], ["What is it?", "Describe it in detail please.",
                                               "Colour?"], max_new_tokens=6)
    alone = model.generate(batch["image"][1:2], ["Describe it in detail please."],
                           max_new_tokens=6)
    assert together[1] == alone[0] and len(together) == 3


def test_trained_projection_round_trips_through_a_runner_checkpoint(tmp_path, model):
    state = {k: v for k, v in model.state_dict().items() if k.startswith("llama_proj")}
    state = {k: v + 1.0 for k, v in state.items()}
    torch.save({"model": state, "epoch": 0}, tmp_path / "checkpoint_0.pth")
    loaded = TinyMiniGPT4.build({"seed": 0, "ckpt": str(tmp_path / "checkpoint_0.pth"),
                                 "arch": "ignored"})
    assert torch.equal(loaded.llama_proj.weight, state["llama_proj.weight"])
    torch.save({"model": {"other.weight": torch.zeros(1)}}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="not a checkpoint of this tiny model"):
        TinyMiniGPT4.build({"ckpt": str(tmp_path / "bad.pth")})
