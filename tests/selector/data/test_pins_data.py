"""Pins for selector.data (found by tests/mutation_score.py), in process: the sample model's
properties, every refusal of the readers with its reason, and what the writers produce. The CLI
tests in tests/selector/data/test_data.py check the same refusals as one line and exit 2."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import make_cc_sbu_align, write_image
from selector.data.images import image_problem
from selector.data.samples import (DEFAULT_INSTRUCTION, Sample, Skipped, Turn,
                           read_cc_sbu_align, read_conversations, read_pool, write_cc_sbu_align,
                           write_conversations)
from selector.core.errors import InputError


def _conv(tmp_path, records, images=("x.jpg",), name="conv.json"):
    for image in images:
        write_image(tmp_path / image)
    path = tmp_path / name
    path.write_text(json.dumps(records), encoding="utf-8")
    return path


def _record(turns, sample_id="s1", image="x.jpg"):
    return {"id": sample_id, "image": image,
            "conversations": [{"from": role, "value": value} for role, value in turns]}


def test_sample_properties():
    sample = Sample("1", Path("/i.jpg"), (Turn("human", "<image>\n What is it? "), Turn("gpt", "A"),
                                         Turn("human", "And then?"), Turn("gpt", "B"),
                                         Turn("gpt", "C")), "i.jpg")
    assert sample.instructions == ["What is it?", "And then?"]
    assert sample.instruction == "What is it?" and sample.answers == ["A", "B", "C"]
    assert sample.answer == "A"
    assert sample.rounds == [("What is it?", "A"), ("And then?", "B"), ("And then?", "C")]
    caption = Sample("2", Path("/j.jpg"), (Turn("gpt", "a caption"),), "j.jpg")
    assert caption.instructions == [DEFAULT_INSTRUCTION] and caption.rounds == \
        [(DEFAULT_INSTRUCTION, "a caption")]
    assert Skipped("f.json", "sample #3", "empty caption").line() == "f.json: sample #3: empty caption"


def test_pool_subset_by_id_and_skip_report(tmp_path):
    pool = read_cc_sbu_align(make_cc_sbu_align(tmp_path / "cc", {"2": "two", "3": "three",
                                                                  "10": "ten"}))
    assert len(pool) == 3 and pool.ids == ["2", "3", "10"] and pool.kind == "cc_sbu_align"
    assert pool.source == tmp_path / "cc" / "filter_cap.json"
    assert pool.image_root == tmp_path / "cc" / "image"
    assert set(pool.by_id()) == {"2", "3", "10"} and pool.by_id()["3"].answer == "three"
    sub = pool.subset(["10", "2"])
    assert sub.ids == ["10", "2"] and (sub.kind, sub.source, sub.image_root, sub.encoding) == \
        (pool.kind, pool.source, pool.image_root, pool.encoding)
    with pytest.raises(InputError, match=r"filter_cap\.json: no sample with id '7'$"):
        pool.subset(["2", "7"])
    pool.skipped.append(Skipped("f", "sample #1", "why"))
    pool.write_skip_report(tmp_path / "skip.json")
    assert json.loads((tmp_path / "skip.json").read_text()) == {
        "source": str(pool.source), "kept": 3,
        "skipped": [{"file": "f", "sample": "sample #1", "reason": "why"}]}


@pytest.mark.parametrize("turns, reason", [
    ([("gpt", "<image> hi"), ("human", "q")],
     "conversation starts with a gpt turn, expected human first"),
    ([("human", "<image>"), ("gpt", "a")], "turn 0 holds only the <image> token"),
    ([("human", "<image> q"), ("gpt", "  ")], "turn 1 is empty"),
    ([("human", "<image> q"), ("gpt", 5)], "turn 1 value is a JSON number, not text"),
    ([("human", "<image> q"), ("human", "q2"), ("gpt", "a")],
     "turn 1 is a second human turn in a row (turns must alternate human, gpt)"),
    ([("human", "<image> q"), ("gpt", "a"), ("gpt", "b")],
     "turn 2 is a second gpt turn in a row (turns must alternate human, gpt)"),
    ([("human", "<image> q"), ("gpt", "a"), ("human", "more?")],
     "turn 2 (human) has no gpt answer after it"),
    ([("human", "<image> q")], "conversation has no gpt answer"),
    ([("human", "q"), ("gpt", "a")], "first human turn has no <image> token"),
    ([("human", "<image> <image> q"), ("gpt", "a")],
     "first human turn holds <image> 2 times, expected once"),
    ([("human", "<image> q"), ("gpt", "<image> a")],
     "turn 1 (gpt) holds an <image> token; only the first human turn may"),
    ([("system", "<image> q"), ("gpt", "a")], "turn 0 is from 'system', expected 'human' or 'gpt'"),
])
def test_conversation_refusals(tmp_path, turns, reason):
    path = _conv(tmp_path, [_record(turns)])
    with pytest.raises(InputError) as caught:
        read_conversations(path)
    assert str(caught.value) == f"{path}: sample #0 (id 's1'): {reason}"
    assert read_conversations(path, skip_invalid=True).ids == []


@pytest.mark.parametrize("conversations, reason", [
    ([], "empty conversation"),
    ("hi", "conversations is a JSON string, expected a list of turns"),
    (None, "conversations is a JSON null, expected a list of turns"),
    ({"from": "human"}, "conversations is a JSON object, expected a list of turns"),
    ([{"from": "human"}], "turn 0 needs 'from' and 'value'"),
    (["text"], "turn 0 needs 'from' and 'value'"),
    ([5], "turn 0 needs 'from' and 'value'"),
    (["from value"], "turn 0 needs 'from' and 'value'"),  # a string holding both words
])
def test_malformed_conversations(tmp_path, conversations, reason):
    path = _conv(tmp_path, [{"id": "s1", "image": "x.jpg", "conversations": conversations}])
    with pytest.raises(InputError) as caught:
        read_conversations(path)
    assert str(caught.value) == f"{path}: sample #0 (id 's1'): {reason}"


def test_check_sample_ids_names_where_and_which():
    from selector.data.samples import check_sample_ids, sample_id_problem

    check_sample_ids(["a", 7, "b-c"], "clusters.json")
    with pytest.raises(InputError) as caught:
        check_sample_ids(["a", "b c"], "clusters.json")
    assert str(caught.value).startswith("clusters.json: sample #1: id 'b c' holds space U+0020")
    with pytest.raises(InputError, match=r"^pool\.json: sample #0: id \(1, 2\) is a JSON tuple; "):
        check_sample_ids([(1, 2)], "pool.json")
    assert sample_id_problem({}) == "id {} is a JSON object; ids are strings or integers"
    assert sample_id_problem("x") is None


@pytest.mark.parametrize("value, reason", [
    (True, "id True is a JSON boolean; ids are strings or integers"),
    (1.5, "id 1.5 is a JSON number with a fraction"),
    (None, "id None is a JSON null"),
    (["a"], "is a JSON list"),
    ("", "id is empty"),
    ("a b", "ids may not hold whitespace or control characters"),
    ("a\nb", "U+000A"),
    ("..", "is not a plain file name"),
    ("a/b", "is not a plain file name"),
    ("a\\b", "is not a plain file name"),
    ("é" * 126, "id is 252 bytes long"),
])
def test_unusable_ids(tmp_path, value, reason):
    path = _conv(tmp_path, [_record([("human", "<image> q"), ("gpt", "a")], sample_id=value)])
    with pytest.raises(InputError, match=None) as caught:
        read_conversations(path)
    assert reason in str(caught.value)
    if isinstance(value, bool):
        assert "sample #0: " in str(caught.value) and "(id" not in str(caught.value)


def test_ids_that_are_fine(tmp_path):
    records = [_record([("human", "<image> q"), ("gpt", "a")], sample_id=i) for i in (7, "a" * 250, ".x")]
    assert read_conversations(_conv(tmp_path, records)).ids == ["7", "a" * 250, ".x"]


def test_a_long_id_is_shortened_in_the_message(tmp_path):
    records = [_record([("human", "<image> q"), ("gpt", "a")], sample_id="z" * 100)] * 2
    with pytest.raises(InputError) as caught:
        read_conversations(_conv(tmp_path, records))
    assert "sample #1 (id 'zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz...' (100 characters)): duplicate" \
        in str(caught.value)


def test_records_that_are_not_objects_or_miss_keys(tmp_path):
    path = _conv(tmp_path, ["text", {"id": "a", "image": "x.jpg"}])
    pool = read_conversations(path, skip_invalid=True)
    assert [(s.sample, s.reason) for s in pool.skipped] == [
        ("sample #0", "is not a JSON object"), ("sample #1 (id 'a')", "missing key 'conversations'")]
    assert pool.skipped[0].file == str(path)
    with pytest.raises(InputError, match="missing key 'conversations'"):  # no image: text-only
        read_conversations(_conv(tmp_path, [{"id": "a"}]))


def test_image_paths_stay_inside_the_image_folder(tmp_path):
    for image in ("../x.jpg", "/etc/passwd", "", "a\x00b"):
        path = _conv(tmp_path, [_record([("human", "<image> q"), ("gpt", "a")], image=image)])
        with pytest.raises(InputError, match="escapes the image folder"):
            read_conversations(path)
    path = _conv(tmp_path, [_record([("human", "<image> q"), ("gpt", "a")], image=5)])
    with pytest.raises(InputError, match=r"sample #0 \(id 's1'\): image is a JSON number, "
                                         r"expected a relative path$"):
        read_conversations(path)
    with pytest.raises(InputError, match=r"conv\.json: expected a JSON list of conversation "
                                         r"samples$"):
        read_conversations(_conv(tmp_path, {"id": "s1"}))
    (tmp_path / "imgs").mkdir()
    write_image(tmp_path / "imgs" / "y.jpg")
    path = _conv(tmp_path, [_record([("human", "<image> q"), ("gpt", "a")], image="y.jpg")])
    pool = read_conversations(path, image_root=tmp_path / "imgs")
    assert pool.samples[0].image == tmp_path / "imgs" / "y.jpg" and pool.image_root == tmp_path / "imgs"
    assert pool.samples[0].image_ref == "y.jpg" and pool.kind == "conversations"
    inside = _conv(tmp_path, [_record([("human", "<image> q"), ("gpt", "a")], image="imgs/../x.jpg")])
    assert read_conversations(inside).samples[0].image == tmp_path / "x.jpg"


def test_duplicate_ids_after_a_skipped_one(tmp_path):
    records = [_record([("human", "<image> q"), ("gpt", "a")], sample_id="a"),
               _record([("gpt", "bad")], sample_id="b"),
               _record([("human", "<image> q"), ("gpt", "a")], sample_id="b"),
               _record([("human", "<image> q"), ("gpt", "a")], sample_id="a")]
    pool = read_conversations(_conv(tmp_path, records), skip_invalid=True)
    assert pool.ids == ["a", "b"]  # the first "b" was bad, so the second is no duplicate
    assert pool.skipped[-1].reason == "duplicate id (first at sample #0)"


def test_cc_sbu_align_refusals(tmp_path):
    with pytest.raises(InputError, match="cc_sbu_align folder not found"):
        read_cc_sbu_align(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"not a cc_sbu_align folder \(no filter_cap.json\)"):
        read_cc_sbu_align(tmp_path / "empty")
    root = make_cc_sbu_align(tmp_path / "cc", {"2": "two"})
    for document in ({"annotations": {}}, [], {"other": []}):
        (root / "filter_cap.json").write_text(json.dumps(document))
        with pytest.raises(InputError, match="expected {\"annotations\": \\[...\\]} at the top level"):
            read_cc_sbu_align(root)
    (root / "filter_cap.json").write_text(json.dumps({"annotations": [
        {"image_id": "2", "caption": 5}, {"image_id": "2", "caption": " "}]}))
    pool = read_cc_sbu_align(root, skip_invalid=True)
    assert [s.reason for s in pool.skipped] == ["caption is a JSON number, not text", "empty caption"]


def test_cc_sbu_align_without_image_checks(tmp_path):
    root = make_cc_sbu_align(tmp_path / "cc", {"2": "two", "3": "three"}, images=False)
    pool = read_cc_sbu_align(root, check_images=False)
    assert pool.ids == ["2", "3"] and pool.samples[1].image == root / "image" / "3.jpg"
    assert pool.samples[1].image_ref == "3.jpg" and pool.samples[1].turns == (Turn("gpt", "three"),)
    with pytest.raises(InputError, match="2.jpg is missing"):
        read_cc_sbu_align(root)


def test_images_are_checked_by_default_and_options_pass_through(tmp_path):
    root = make_cc_sbu_align(tmp_path / "cc", {"2": "two", "3": " "}, images=False)
    for where in (root, root / "filter_cap.json"):
        with pytest.raises(InputError, match="image .*2.jpg is missing"):
            read_pool(where)
        assert read_pool(where, check_images=False, skip_invalid=True).ids == ["2"]
        with pytest.raises(InputError, match="empty caption"):
            read_pool(where, check_images=False)
    path = tmp_path / "conv.json"
    path.write_text(json.dumps([_record([("human", "<image> q"), ("gpt", "a")], image="none.jpg"),
                                _record([("gpt", "a")], sample_id="s2")]))
    for read in (read_conversations, read_pool):
        with pytest.raises(InputError, match="none.jpg is missing"):
            read(path)
        assert read(path, check_images=False, skip_invalid=True).ids == ["s1"]
        with pytest.raises(InputError, match="starts with a gpt turn"):
            read(path, check_images=False)


def test_read_pool_tells_the_formats_apart(tmp_path):
    root = make_cc_sbu_align(tmp_path / "cc", {"2": "two"})
    assert read_pool(root).kind == "cc_sbu_align"
    assert read_pool(root / "filter_cap.json").kind == "cc_sbu_align"
    path = _conv(tmp_path, [_record([("human", "<image> q"), ("gpt", "a")])])
    assert read_pool(path).kind == "conversations"
    (tmp_path / "imgs").mkdir()
    write_image(tmp_path / "imgs" / "x.jpg")
    assert read_pool(path, image_root=tmp_path / "imgs").image_root == tmp_path / "imgs"
    assert read_pool(path, skip_invalid=True, check_images=False).ids == ["s1"]


def test_image_problems(tmp_path):
    good = write_image(tmp_path / "good.jpg", size=(64, 64))
    assert image_problem(good) is None
    assert image_problem(tmp_path / "none.jpg") == f"image {tmp_path / 'none.jpg'} is missing"
    (tmp_path / "empty.jpg").write_bytes(b"")
    assert image_problem(tmp_path / "empty.jpg") == f"image {tmp_path / 'empty.jpg'} is empty (0 bytes)"
    (tmp_path / "cut.jpg").write_bytes(good.read_bytes()[:-200])
    assert "is corrupt" in image_problem(tmp_path / "cut.jpg")
    (tmp_path / "junk.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    assert image_problem(tmp_path / "junk.jpg").startswith(f"image {tmp_path / 'junk.jpg'} is corrupt (")


def test_writers(tmp_path):
    root = make_cc_sbu_align(tmp_path / "cc", {"2": "two", "3": "three"})
    pool = read_cc_sbu_align(root)
    out = write_cc_sbu_align(pool.samples, tmp_path / "out", "copy", extra={"3": {"score": 1.5}})
    assert out == tmp_path / "out"
    document = json.loads((out / "filter_cap.json").read_text())
    assert document == {"annotations": [{"image_id": "2", "caption": "two"},
                                        {"image_id": "3", "caption": "three", "score": 1.5}]}
    assert (out / "filter_cap.json").read_text().startswith('{\n    "annotations"')  # indent 4
    assert (out / "image" / "3.jpg").read_bytes() == (root / "image" / "3.jpg").read_bytes()
    assert not (out / "image" / "3.jpg").is_symlink()
    linked = write_cc_sbu_align(pool.samples, tmp_path / "linked")
    assert (linked / "image" / "2.jpg").resolve() == (root / "image" / "2.jpg").resolve()
    assert (linked / "image" / "2.jpg").is_symlink()
    with pytest.raises(ValueError, match="image mode must be 'link' or 'copy', not 'move'"):
        write_cc_sbu_align(pool.samples, tmp_path / "moved", "move")
    with pytest.raises(InputError, match="is the source image"):
        write_cc_sbu_align(pool.samples, root)
    twins = [pool.samples[0], Sample("2", pool.samples[1].image, pool.samples[1].turns, "3.jpg")]
    with pytest.raises(InputError, match="two samples' images would land on the same file"):
        write_cc_sbu_align(twins, tmp_path / "twins")
    multi = Sample("m", pool.samples[0].image, (Turn("human", "<image> q"), Turn("gpt", "a"),
                                                Turn("human", "q2"), Turn("gpt", "b")), "m.jpg")
    with pytest.raises(InputError, match="sample 'm' has 2 answers; cc_sbu_align holds one"):
        write_cc_sbu_align([multi], tmp_path / "multi")

    out_json = write_conversations([multi], tmp_path / "conv" / "data.json")
    assert out_json == tmp_path / "conv" / "data.json"
    assert json.loads(out_json.read_text()) == [{"id": "m", "image": "m.jpg", "conversations": [
        {"from": "human", "value": "<image> q"}, {"from": "gpt", "value": "a"},
        {"from": "human", "value": "q2"}, {"from": "gpt", "value": "b"}]}]
    assert not (tmp_path / "conv" / "m.jpg").exists()
    write_conversations([multi], tmp_path / "conv2" / "data.json", image_dir=tmp_path / "conv2")
    assert (tmp_path / "conv2" / "m.jpg").is_symlink()
    write_conversations([multi], tmp_path / "conv3" / "data.json", image_dir=tmp_path / "conv3",
                        image_mode="copy")
    assert not (tmp_path / "conv3" / "m.jpg").is_symlink()
    assert (tmp_path / "conv3" / "m.jpg").read_bytes() == pool.samples[0].image.read_bytes()


def test_files_without_samples_and_what_a_pool_records(tmp_path):
    root = make_cc_sbu_align(tmp_path / "cc", {}, images=False)
    with pytest.raises(InputError) as caught:
        read_cc_sbu_align(root)
    assert str(caught.value) == f"{root / 'filter_cap.json'}: holds no samples"
    path = _conv(tmp_path, [_record([("human", "<image> q"), ("gpt", "a")])])
    pool = read_conversations(path)
    assert (pool.source, pool.encoding, pool.kind) == (path, "utf-8", "conversations")
    empty = _conv(tmp_path, [], name="empty.json")
    with pytest.raises(InputError, match=r"empty\.json: holds no samples$"):
        read_conversations(empty)


def test_skipping_goes_on_after_each_kind_of_bad_record(tmp_path):
    good = _record([("human", "<image> q"), ("gpt", "a")], sample_id="ok")
    for bad in ("text", {"id": "m", "image": "x.jpg"}, dict(good, id=True), dict(good, id="a b"),
                _record([("gpt", "a")], sample_id="g"), dict(good, image="none.jpg", id="n")):
        path = _conv(tmp_path, [bad, good])
        pool = read_conversations(path, skip_invalid=True)
        assert pool.ids == ["ok"] and len(pool.skipped) == 1, bad


def test_cc_sbu_align_messages_name_the_file_the_sample_and_the_key(tmp_path):
    root = make_cc_sbu_align(tmp_path / "cc", {"2": "two"})
    source = root / "filter_cap.json"
    cases = [({"image_id": True, "caption": "x"},
              "sample #0: image_id True is a JSON boolean; ids are strings or integers"),
             ({"image_id": "2", "caption": 5}, "sample #0 (image_id '2'): caption is a JSON number, "
                                               "not text"),
             ({"image_id": "9", "caption": "x"}, f"sample #0 (image_id '9'): image "
                                                 f"{root / 'image' / '9.jpg'} is missing")]
    for record, message in cases:
        source.write_text(json.dumps({"annotations": [record]}))
        with pytest.raises(InputError) as caught:
            read_cc_sbu_align(root)
        assert str(caught.value) == f"{source}: {message}"


def test_image_problem_messages(tmp_path, monkeypatch):
    from PIL import Image

    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"\xff\xd8 not a jpeg")
    assert image_problem(junk) == \
        f"image {junk} is corrupt (UnidentifiedImageError: cannot identify image file {str(junk)!r})"
    long_name = tmp_path / ("n" * 300 + ".jpg")
    assert image_problem(long_name) == f"image {long_name} cannot be read (File name too long)"
    big = write_image(tmp_path / "big.png", size=(40, 40))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 1600 pixels: a warning, made an error
    assert image_problem(big).startswith(
        f"image {big} is too large to decode safely (a possible decompression bomb: Image size "
        "(1600 pixels) exceeds limit of 1000 pixels")


@pytest.mark.parametrize("error, message", [
    (ValueError("bad\n   header " + "x" * 200), "is corrupt (ValueError: bad header " + "x" * 109 + ")"),
    (OSError("truncated\tdata " + "y" * 200), "is corrupt (OSError: truncated data " + "y" * 105 + ")"),
    (MemoryError(), "is too large to decode in memory"),
])
def test_decoder_errors_are_one_line(tmp_path, monkeypatch, error, message):
    from PIL import Image

    image = write_image(tmp_path / "a.jpg")

    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(Image, "open", fail)
    assert image_problem(image) == f"image {image} {message}"


def test_a_bomb_message_is_shortened(tmp_path, monkeypatch):
    from PIL import Image

    image = write_image(tmp_path / "a.jpg")

    def fail(*args, **kwargs):
        raise Image.DecompressionBombError("z" * 300)

    monkeypatch.setattr(Image, "open", fail)
    assert image_problem(image) == (f"image {image} is too large to decode safely (a possible "
                                    f"decompression bomb: {'z' * 160})")


def test_writer_messages_and_shared_images(tmp_path):
    root = make_cc_sbu_align(tmp_path / "cc", {"2": "two"})
    pool = read_cc_sbu_align(root)
    target = root / "image" / "2.jpg"
    with pytest.raises(InputError) as caught:
        write_cc_sbu_align(pool.samples, root)
    assert str(caught.value) == (f"{target}: is the source image {pool.samples[0].image} itself "
                                 "(the output lies over the data, through a link); write the "
                                 "selection elsewhere")
    multi = Sample("m", pool.samples[0].image, (Turn("human", "<image> q"), Turn("gpt", "a"),
                                                Turn("human", "q2"), Turn("gpt", "b")), "2.jpg")
    with pytest.raises(InputError) as caught:
        write_cc_sbu_align([multi], tmp_path / "multi")
    assert str(caught.value) == ("sample 'm' has 2 answers; cc_sbu_align holds one caption per "
                                 "image (write it as conversations instead)")
    # two conversations about the same image file share it: not a clash
    other = Sample("o", pool.samples[0].image, multi.turns, "2.jpg")
    write_conversations([multi, other], tmp_path / "out" / "data.json", image_dir=tmp_path / "out")
    assert (tmp_path / "out" / "2.jpg").is_symlink()
