"""selector.indicators: length (exact on the released captions) and CLIP (tiny open_clip model)."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from conftest import make_cc_sbu_align, make_conversations
from selector.data.samples import Sample, Turn, read_cc_sbu_align, read_conversations
from selector.core.errors import InputError
from selector.scoring.indicators import create
from selector.scoring.indicators.clip import sentences
from selector.scoring.reference import ReferenceRepo

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


# ------------------------------------------------------------- CLIP: text batches, loaders, dtypes
SENTENCES = ["A dog", "", " a much longer sentence with several more words in it than the rest",
             "two cats. three birds", "word " * 100]  # the last one fills the 77-token context


def test_clip_text_batch_cut_to_its_longest_sentence_is_exact(tiny_clip, monkeypatch):
    import torch

    from selector.scoring.indicators.clip import encode_text, text_length

    model, _, tokenizer = tiny_clip.load()
    tokens = tokenizer(SENTENCES[:4])
    longest = int(tokens.argmax(dim=-1).max()) + 1  # the EOT token closes each sentence
    assert text_length(model, tokens) == longest < tokens.shape[1] == 77
    with torch.no_grad():
        full = model.encode_text(tokens)
        widths = []
        original = model.encode_text
        monkeypatch.setattr(model, "encode_text", lambda t: widths.append(t.shape[1])
                            or original(t), raising=False)
        cut = encode_text(model, tokens)
        monkeypatch.undo()
        assert widths == [longest]  # the towers really ran on the cut batch
        assert torch.allclose(cut, full, rtol=0, atol=1e-5)
        one = encode_text(model, tokenizer(SENTENCES[:1]))  # one short sentence, 4 tokens
        assert torch.allclose(one, full[:1], rtol=0, atol=1e-5)
        assert text_length(model, tokenizer(SENTENCES)) == 77  # nothing to cut
        assert torch.equal(encode_text(model, tokenizer(SENTENCES)),
                           model.encode_text(tokenizer(SENTENCES)))
    # the shared model is untouched: the cut holds for that call only
    assert model.positional_embedding.shape[0] == 77 and model.attn_mask.shape == (77, 77)


@pytest.mark.parametrize("text_cfg", [{"no_causal_mask": True}, {"pool_type": "last"}],
                         ids=["bidirectional", "last-token-pool"])
def test_clip_text_is_not_cut_where_padding_matters(text_cfg, tmp_path):
    """A bidirectional mask sees the padding; 'last' pooling reads the last (pad) position."""
    if importlib.util.find_spec("open_clip") is None:
        pytest.skip("open_clip is not installed (make test installs it)")
    import torch

    from selector.scoring.indicators.clip import encode_text, load_open_clip, text_length

    name = f"igpt4-nocut-{'-'.join(text_cfg)}"
    config = {**TINY_CLIP, "text_cfg": {**TINY_CLIP["text_cfg"], **text_cfg}}
    (tmp_path / f"{name}.json").write_text(json.dumps(config))
    model, _, tokenizer = load_open_clip(name, None, str(tmp_path / f"{name}.json"), "cpu", "fp32")
    tokens = tokenizer(SENTENCES[:4])
    assert text_length(model, tokens) is None
    with torch.no_grad():
        assert torch.equal(encode_text(model, tokens), model.encode_text(tokens))


@pytest.mark.parametrize("precision,tolerance", [("fp16", 0.1), ("bf16", 1.0)])
def test_clip_scores_in_half_precision(precision, tolerance, tiny_clip_files, tmp_path):
    """fp16/bf16 (the CUDA defaults) keep open_clip's norms and embeddings in fp32: the pixels
    must take the convolution's dtype, not the first parameter's."""
    config, checkpoint = tiny_clip_files
    captions = {str(i): f"A picture number {i}. It has colours. And shapes" for i in range(5)}
    pool = read_cc_sbu_align(make_cc_sbu_align(tmp_path / "cc", captions))

    def scores(chosen):
        indicator = create("clip", model=config.stem, pretrained=str(checkpoint),
                           model_config=str(config), precision=chosen, device="cpu",
                           num_workers=0, progress=False)
        return [v.value for v in indicator.score(pool.samples)]

    exact, half = scores("fp32"), scores(precision)
    assert all(v is not None for v in half)
    assert max(abs(a - b) for a, b in zip(exact, half)) < tolerance


def test_clip_keeps_one_dataloader_and_its_workers_for_every_call(tiny_clip_files, tmp_path,
                                                                  monkeypatch):
    import torch.utils.data

    created = []

    class Counted(torch.utils.data.DataLoader):
        def __init__(self, *args, **kwargs):
            created.append(kwargs)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(torch.utils.data, "DataLoader", Counted)
    config, checkpoint = tiny_clip_files
    captions = {str(i): f"Picture {i}. Shapes and colours" for i in range(7)}
    pool = read_cc_sbu_align(make_cc_sbu_align(tmp_path / "cc", captions))
    indicator = create("clip", model=config.stem, pretrained=str(checkpoint),
                       model_config=str(config), batch_size=2, num_workers=1, progress=False)
    first = indicator.score(pool.samples[:3])
    workers = indicator._image_loader[1].loader._iterator._workers
    second = indicator.score(pool.samples[3:])  # as igpt4 score's next chunk
    assert len(created) == 1 and created[0]["persistent_workers"] is True
    assert indicator._image_loader[1].loader._iterator._workers == workers  # not restarted
    assert [v.sample_id for v in first + second] == [s.id for s in pool.samples]
    indicator.num_workers = 0  # a changed setting gets a new loader
    again = indicator.score(pool.samples)
    assert len(created) == 2
    assert [v.value for v in again] == pytest.approx([v.value for v in first + second], abs=1e-5)
