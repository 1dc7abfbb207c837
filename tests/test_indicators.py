"""selector.indicators: length (exact on the released captions) and CLIP (tiny open_clip model)."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from conftest import make_cc_sbu_align, make_conversations
from selector.data import Sample, Turn, read_cc_sbu_align, read_conversations
from selector.errors import InputError
from selector.indicators import create
from selector.indicators.clip import sentences
from selector.reference import ReferenceRepo

TINY_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def test_length_score_matches_all_released_values(reference_dir):
    annotations = ReferenceRepo(reference_dir).annotations()
    samples = [Sample(a["image_id"], Path("x.jpg"), (Turn("gpt", a["caption"]),), "x.jpg")
               for a in annotations]
    values = create("length").score(samples)
    assert len(values) == 3439
    assert [v.value for v in values] == [a["length_score"] for a in annotations]


def test_length_score_conversations_and_settings(tmp_path):
    pool = read_conversations(make_conversations(tmp_path))
    values = create("length", normaliser=10).score(pool.samples)
    assert values[0].detail["per_turn"] == [10 * 13 / 10, 10 * 4 / 10]
    assert values[0].value == pytest.approx((13 + 4) / 2)
    assert create("length", normaliser=10).settings() != create("length").settings()
    with pytest.raises(InputError, match="unknown indicator"):
        create("nope")


def test_sentences_keep_the_originals_empty_tail():
    assert sentences("A dog. A cat.") == ["A dog", " A cat", ""]
    assert len(sentences(". " * 30)) == 10


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    if importlib.util.find_spec("open_clip") is None:
        pytest.skip("open_clip is not installed (make test installs it)")
    import torch

    folder = tmp_path_factory.mktemp("clipcfg")
    (folder / "igpt4-tiny-clip.json").write_text(json.dumps(TINY_CLIP))
    torch.manual_seed(0)
    indicator = create("clip", model="igpt4-tiny-clip", pretrained=None,
                       model_config=str(folder / "igpt4-tiny-clip.json"), batch_size=3,
                       num_workers=0, progress=False)
    indicator.load()
    return indicator


def test_clip_batched_equals_one_at_a_time_and_the_formula(tiny_clip, tmp_path):
    import torch
    from PIL import Image

    captions = {str(i): f"A picture number {i}. It has colours. And shapes" for i in range(7)}
    pool = read_cc_sbu_align(make_cc_sbu_align(tmp_path / "cc", captions))
    batched = tiny_clip.score(pool.samples)
    tiny_clip.batch_size = 1
    single = tiny_clip.score(pool.samples)
    tiny_clip.batch_size = 3
    for a, b in zip(batched, single):
        assert a.problem is None and a.value == pytest.approx(b.value, abs=1e-4)
    model, preprocess, tokenizer = tiny_clip.load()
    sample = pool.samples[4]
    with torch.no_grad():
        image = model.encode_image(preprocess(Image.open(sample.image).convert("RGB"))[None])
        image = image / image.norm(dim=-1, keepdim=True)
        text = model.encode_text(tokenizer(sample.answer.split(".")[:10]))
        text = (text / text.norm(dim=-1, keepdim=True)).mean(dim=0, keepdim=True)
        expected = float((100.0 * image @ text.T).sum())
    assert batched[4].value == pytest.approx(expected, abs=1e-4)


def test_clip_records_bad_images_and_scores_conversation_turns(tiny_clip, tmp_path):
    pool = read_conversations(make_conversations(tmp_path))
    (tmp_path / "imgs" / "b2.jpg").write_bytes(b"\xff\xd8 broken")
    values = tiny_clip.score(pool.samples)
    assert values[0].problem is None and len(values[0].detail["per_turn"]) == 2
    assert values[0].value == pytest.approx(sum(values[0].detail["per_turn"]) / 2)
    assert values[1].value is None and "image unreadable" in values[1].problem
