"""selector.indicators.reward: a tiny DeBERTa-v2 reward model saved as a HF folder."""
from __future__ import annotations

import pytest

from conftest import make_cc_sbu_align, make_conversations
from selector.data.samples import DEFAULT_INSTRUCTION, read_cc_sbu_align, read_conversations
from selector.scoring.indicators import create

pytest.importorskip("transformers", reason="transformers is not installed (make test installs it)")


@pytest.fixture(scope="module")
def reward(tmp_path_factory):
    from selector.app.toy.text import tiny_reward_model

    folder = tiny_reward_model(tmp_path_factory.mktemp("reward"))
    return create("reward", model=str(folder), batch_size=3, progress=False)


def _one_pair(indicator, question, answer):
    import torch

    model, tokenizer = indicator.load()
    with torch.no_grad():
        return float(model(**tokenizer(question, answer, return_tensors="pt")).logits[0, 0])


def test_reward_is_the_models_logit_on_the_default_instruction(reward, tmp_path):
    captions = {str(i): "a red square " * (i + 1) + "on a white background" for i in range(7)}
    pool = read_cc_sbu_align(make_cc_sbu_align(tmp_path / "cc", captions))
    values = reward.score(pool.samples)
    assert DEFAULT_INSTRUCTION == "Describe this image in detail."
    for sample, value in zip(pool.samples, values):
        # the original, one unpadded pair at a time: padding in our batches changes nothing
        assert value.problem is None
        assert value.value == pytest.approx(_one_pair(reward, DEFAULT_INSTRUCTION, sample.answer),
                                            abs=1e-4)
    assert len({round(v.value, 5) for v in values}) > 1  # not a constant


def test_reward_conversations_use_their_own_instructions_per_round(reward, tmp_path):
    pool = read_conversations(make_conversations(tmp_path))
    first = reward.score(pool.samples)[0]
    expected = [_one_pair(reward, "What is in the picture?", "A red square."),
                _one_pair(reward, "What colour is it?", "Red.")]
    assert first.detail["per_turn"] == pytest.approx(expected, abs=1e-4)
    assert first.value == pytest.approx(sum(expected) / 2, abs=1e-4)


def test_reward_settings_change_with_the_model(reward):
    assert reward.settings() != create("reward").settings()
    assert create("reward").settings()["model"] == "OpenAssistant/reward-model-deberta-v3-large-v2"
