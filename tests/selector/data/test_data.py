"""selector.data: both formats, writers, and every bad-input case (one line, exit 2)."""
from __future__ import annotations

import json

import pytest

from conftest import assert_one_line_error, make_cc_sbu_align, make_conversations, run_cli, write_image
from selector.data.samples import (DEFAULT_INSTRUCTION, read_cc_sbu_align, read_conversations, read_pool,
                           write_cc_sbu_align, write_conversations)
from selector.core.errors import InputError

CAPTIONS = {"2": "A man fishing by a river.", "3": "Two cats on a sofa.", "10": "A red bus."}


def test_cc_sbu_align_reads_samples_in_file_order(tmp_path):
    pool = read_cc_sbu_align(make_cc_sbu_align(tmp_path / "cc", CAPTIONS))
    assert pool.ids == ["2", "3", "10"]
    assert pool.encoding == "utf-8"
    sample = pool.samples[0]
    assert sample.answer == CAPTIONS["2"]
    assert sample.instruction == DEFAULT_INSTRUCTION
    assert sample.image == (tmp_path / "cc" / "image" / "2.jpg").resolve()


def test_integer_image_ids_become_strings(tmp_path):
    root = make_cc_sbu_align(tmp_path / "cc", CAPTIONS)
    (root / "filter_cap.json").write_text(json.dumps(
        {"annotations": [{"image_id": 2, "caption": "x"}]}), encoding="utf-8")
    assert read_cc_sbu_align(root).ids == ["2"]


def test_gb18030_file_is_read_and_named(tmp_path):
    captions = {"2": "图片里有一条河。 A river.", "3": "两只猫。"}
    root = make_cc_sbu_align(tmp_path / "cc", captions, encoding="gb18030")
    pool = read_cc_sbu_align(root)
    assert pool.encoding == "gb18030"
    assert [s.answer for s in pool.samples] == list(captions.values())
    result = run_cli("validate", root)
    assert result.returncode == 0 and "gb18030" in result.stdout


def test_conversations_multi_round(tmp_path):
    pool = read_conversations(make_conversations(tmp_path))
    assert pool.ids == ["a1", "b2"]
    first = pool.samples[0]
    assert first.instructions == ["What is in the picture?", "What colour is it?"]
    assert first.answers == ["A red square.", "Red."]
    assert first.rounds == [("What is in the picture?", "A red square."),
                            ("What colour is it?", "Red.")]
    assert read_pool(tmp_path / "conversations.json").kind == "conversations"


def test_written_selection_is_a_valid_cc_sbu_align_folder(tmp_path):
    pool = read_cc_sbu_align(make_cc_sbu_align(tmp_path / "cc", CAPTIONS))
    for mode in ("link", "copy"):
        out = write_cc_sbu_align(pool.subset(["10", "2"]).samples, tmp_path / mode, mode)
        again = read_cc_sbu_align(out)
        assert again.ids == ["10", "2"]
        assert [s.answer for s in again.samples] == [CAPTIONS["10"], CAPTIONS["2"]]
        assert (out / "image" / "10.jpg").is_symlink() == (mode == "link")


def test_conversations_round_trip_with_images(tmp_path):
    pool = read_conversations(make_conversations(tmp_path / "src"))
    out = write_conversations(pool.samples, tmp_path / "out" / "data.json",
                              image_dir=tmp_path / "out", image_mode="copy")
    again = read_conversations(out)
    assert [s.turns for s in again.samples] == [s.turns for s in pool.samples]


def test_multi_round_cannot_be_written_as_cc_sbu_align(tmp_path):
    pool = read_conversations(make_conversations(tmp_path))
    with pytest.raises(InputError, match="a1"):
        write_cc_sbu_align(pool.samples, tmp_path / "out")


def _cc_with(tmp_path, annotations_json: str, images=("2", "3")):
    root = tmp_path / "bad"
    root.mkdir(parents=True, exist_ok=True)
    (root / "filter_cap.json").write_text(annotations_json, encoding="utf-8")
    for image_id in images:
        write_image(root / "image" / f"{image_id}.jpg")
    return root


def _annotations(*records):
    return json.dumps({"annotations": list(records)})


GOOD = {"image_id": "2", "caption": "fine"}
CC_BAD_CASES = {
    "malformed json": ('{"annotations": [', "malformed JSON at line 1"),
    "wrong top level": ('[1, 2]', "expected {\"annotations\""),
    "missing key": (_annotations(GOOD, {"image_id": "3"}), "sample #1 (image_id '3'): missing key 'caption'"),
    "duplicate id": (_annotations(GOOD, dict(GOOD)), "duplicate image_id (first at sample #0)"),
    "escaping id": (_annotations(GOOD, {"image_id": "../../etc/passwd", "caption": "x"}),
                    "would escape the data folder"),
    "empty caption": (_annotations(GOOD, {"image_id": "3", "caption": "   "}), "empty caption"),
    "missing image": (_annotations(GOOD, {"image_id": "4", "caption": "x"}), "4.jpg is missing"),
}


@pytest.mark.parametrize("case", sorted(CC_BAD_CASES))
def test_cc_sbu_align_bad_input_is_one_line_exit_2(tmp_path, case):
    text, fragment = CC_BAD_CASES[case]
    root = _cc_with(tmp_path, text)
    line = assert_one_line_error(run_cli("validate", root), fragment)
    assert "filter_cap.json" in line


def test_zero_byte_and_corrupt_images(tmp_path):
    root = _cc_with(tmp_path, _annotations(GOOD, {"image_id": "3", "caption": "x"},
                                           {"image_id": "5", "caption": "y"}))
    (root / "image" / "3.jpg").write_bytes(b"")
    (root / "image" / "5.jpg").write_bytes(b"\xff\xd8 this is not a jpeg")
    assert_one_line_error(run_cli("validate", root), "sample #1", "empty (0 bytes)")
    report = tmp_path / "report.json"
    result = run_cli("validate", root, "--skip-invalid", "--report", report)
    assert result.returncode == 2 and "1 valid samples, 2 invalid" in result.stdout
    skipped = json.loads(report.read_text())["skipped"]
    assert [s["sample"] for s in skipped] == ["sample #1 (image_id '3')",
                                              "sample #2 (image_id '5')"]
    assert "corrupt" in skipped[1]["reason"]


def test_mis_encoded_file_names_the_problem(tmp_path):
    root = _cc_with(tmp_path, "")
    (root / "filter_cap.json").write_bytes(b'{"annotations": [\xff\xfe\x80]}')
    assert_one_line_error(run_cli("validate", root), "neither UTF-8 nor GB18030", "offset 17")


def test_skip_invalid_keeps_the_good_samples(tmp_path):
    root = _cc_with(tmp_path, _annotations(GOOD, dict(GOOD), {"image_id": "3", "caption": ""}))
    pool = read_cc_sbu_align(root, skip_invalid=True)
    assert pool.ids == ["2"]
    assert [s.reason for s in pool.skipped] == ["duplicate image_id (first at sample #0)",
                                                "empty caption"]


def _conversation(**changes):
    record = {"id": "x", "image": "imgs/x.jpg", "conversations": [
        {"from": "human", "value": "<image> what?"}, {"from": "gpt", "value": "that."}]}
    record.update(changes)
    return record


CONV_BAD_CASES = {
    "missing key": ([{"id": "x", "image": "imgs/x.jpg"}], "missing key 'conversations'"),
    "empty conversation": ([_conversation(conversations=[])], "empty conversation"),
    "no gpt turn": ([_conversation(conversations=[{"from": "human", "value": "<image> hi"}])],
                    "no gpt answer"),
    "no image token": ([_conversation(conversations=[{"from": "human", "value": "hi"},
                                                     {"from": "gpt", "value": "yo"}])],
                       "no <image> token"),
    "bad role": ([_conversation(conversations=[{"from": "system", "value": "<image>"}])],
                 "expected 'human' or 'gpt'"),
    "escaping image": ([_conversation(image="../outside.jpg")], "escapes the image folder"),
    "absolute image": ([_conversation(image="/etc/passwd")], "escapes the image folder"),
    "duplicate id": ([_conversation(), _conversation()], "sample #1 (id 'x'): duplicate id"),
    "missing image": ([_conversation(image="imgs/none.jpg")], "none.jpg is missing"),
    "not a list": ({"id": "x"}, "expected a JSON list"),
}


@pytest.mark.parametrize("case", sorted(CONV_BAD_CASES))
def test_conversation_bad_input_is_one_line_exit_2(tmp_path, case):
    records, fragment = CONV_BAD_CASES[case]
    write_image(tmp_path / "imgs" / "x.jpg")
    path = tmp_path / "conversations.json"
    path.write_text(json.dumps(records), encoding="utf-8")
    line = assert_one_line_error(run_cli("validate", path), fragment)
    assert "conversations.json" in line


def test_missing_folder_and_file(tmp_path):
    assert_one_line_error(run_cli("validate", tmp_path / "nope.json"), "file not found")
    (tmp_path / "empty").mkdir()
    assert_one_line_error(run_cli("validate", tmp_path / "empty"), "no filter_cap.json")
