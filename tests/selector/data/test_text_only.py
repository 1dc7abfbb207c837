"""Text-only samples (no ``image`` key), as LLaVA-mix-665K has about 40k: read, validated,
counted, written back; ``<image>`` token rules; cc_sbu_align still needs its images."""
from __future__ import annotations

import json

import pytest

from conftest import assert_one_line_error, make_cc_sbu_align, make_conversations, run_cli
from selector.core.errors import InputError
from selector.data.samples import (IMAGE, TEXT_ONLY, read_cc_sbu_align, read_conversations,
                                   write_cc_sbu_align, write_conversations)

IMAGE_RECORD = {"id": "img1", "image": "imgs/img1.jpg", "conversations": [
    {"from": "human", "value": "<image>\nWhat is it?"}, {"from": "gpt", "value": "A red cube."}]}
TEXT_RECORD = {"id": "txt1", "conversations": [
    {"from": "human", "value": "Write a haiku about rain."},
    {"from": "gpt", "value": "Soft rain on the roof."},
    {"from": "human", "value": "Another one?"}, {"from": "gpt", "value": "Grey clouds drift away."}]}


def _data(tmp_path, *extra):
    return make_conversations(tmp_path, [IMAGE_RECORD, TEXT_RECORD, *extra])


def test_a_record_without_image_is_a_text_only_sample(tmp_path):
    pool = read_conversations(_data(tmp_path))
    assert pool.ids == ["img1", "txt1"] and pool.text_only == 1
    image, text = pool.samples
    assert (image.has_image, image.kind) == (True, IMAGE)
    assert (text.has_image, text.kind, text.image, text.image_ref) == (False, TEXT_ONLY, None, None)
    assert text.rounds == [("Write a haiku about rain.", "Soft rain on the roof."),
                           ("Another one?", "Grey clouds drift away.")]


def test_validate_counts_the_text_only_samples(tmp_path):
    result = run_cli("validate", _data(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "2 valid samples, 0 invalid; 1 of the valid are text-only (no image)" in result.stdout
    plain = run_cli("validate", make_conversations(tmp_path / "plain"))  # none: the line as before
    assert plain.returncode == 0 and plain.stdout.rstrip().endswith("2 valid samples, 0 invalid")


def test_two_image_tokens_in_the_first_turn_are_one_line_naming_file_and_sample(tmp_path):
    twice = {"id": "two", "image": "imgs/two.jpg", "conversations": [
        {"from": "human", "value": "<image>\n<image>\nCompare."}, {"from": "gpt", "value": "Same."}]}
    path = _data(tmp_path, twice)
    line = assert_one_line_error(run_cli("validate", path), str(path), "sample #2 (id 'two')",
                                 "first human turn holds <image> 2 times, expected once")
    assert line.count("\n") == 0


@pytest.mark.parametrize("turns, where", [
    ([{"from": "human", "value": "<image>\nWhat?"}, {"from": "gpt", "value": "A."}], "turn 0 (human)"),
    ([{"from": "human", "value": "What?"}, {"from": "gpt", "value": "An <image> of it."}], "turn 1 (gpt)"),
])
def test_an_image_token_without_an_image_is_refused(tmp_path, turns, where):
    path = _data(tmp_path, {"id": "bad", "conversations": turns})
    with pytest.raises(InputError) as caught:
        read_conversations(path)
    assert str(caught.value) == (f"{path}: sample #2 (id 'bad'): {where} holds an <image> token "
                                 "but the sample has no 'image' key (a text-only sample has no "
                                 "image to place)")
    assert read_conversations(path, skip_invalid=True).ids == ["img1", "txt1"]


def test_an_image_sample_still_needs_its_token(tmp_path):
    """LLaVA moves a token it finds and adds none: without one the image would go unused."""
    no_token = {"id": "nt", "image": "imgs/nt.jpg", "conversations": [
        {"from": "human", "value": "What?"}, {"from": "gpt", "value": "A."}]}
    assert_one_line_error(run_cli("validate", _data(tmp_path, no_token)), "sample #2 (id 'nt')",
                          "first human turn has no <image> token")


def test_an_image_key_that_is_null_is_not_text_only(tmp_path):
    path = _data(tmp_path, {**IMAGE_RECORD, "id": "n", "image": None})
    with pytest.raises(InputError, match=r"sample #2 \(id 'n'\): image is a JSON null"):
        read_conversations(path)


def test_cc_sbu_align_still_refuses_a_missing_image(tmp_path):
    root = make_cc_sbu_align(tmp_path / "cc", {"1": "A cat.", "2": "A dog."})
    (root / "image" / "2.jpg").unlink()
    assert_one_line_error(run_cli("validate", root), "filter_cap.json", "sample #1 (image_id '2')",
                          "2.jpg is missing")
    (root / "filter_cap.json").write_text(json.dumps({"annotations": [{"image_id": "1"}]}))
    with pytest.raises(InputError, match="missing key 'caption'"):
        read_cc_sbu_align(root)


def test_text_only_samples_survive_a_round_trip_and_refuse_cc_sbu_align(tmp_path):
    pool = read_conversations(_data(tmp_path / "src"))
    out = write_conversations(pool.samples, tmp_path / "out" / "data.json",
                              image_dir=tmp_path / "out", image_mode="copy")
    records = json.loads(out.read_text())
    assert "image" not in records[1] and records[0]["image"] == "imgs/img1.jpg"
    again = read_conversations(out)
    assert [(s.id, s.has_image, s.turns) for s in again.samples] == \
        [(s.id, s.has_image, s.turns) for s in pool.samples]
    with pytest.raises(InputError, match="sample 'txt1' is text-only; cc_sbu_align holds an image"):
        write_cc_sbu_align(pool.subset(["txt1"]).samples, tmp_path / "cc")
