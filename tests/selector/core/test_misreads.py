"""Silent misreads (issue 11, item 5) and the data layer's pins (item 9): every input that used to be
read some way that could be wrong is either read right or refused with one line naming the file
and the sample (exit 2, no traceback), or skipped and reported with --skip-invalid."""
from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path
from typing import Tuple

import numpy as np
import pytest

from conftest import (assert_one_line_error, make_cc_sbu_align, make_conversations,
                      one_line_error, run_cli,
                      write_image)
from selector.app.cli import main
from selector.data.images import image_problem
from selector.data.samples import check_sample_ids, read_cc_sbu_align, read_conversations
from selector.core.errors import InputError
from selector.core.jsonio import decode_text, read_json, text_encoding

GOOD_TURNS = [{"from": "human", "value": "<image>\nWhat is shown?"},
              {"from": "gpt", "value": "A square."}]


def cli(capsys, *args) -> Tuple[int, str, str]:
    """``igpt4 ARGS`` in this process (fast): (exit status, stdout, stderr)."""
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


one_line = one_line_error


def cc_file(tmp_path: Path, raw: bytes, ids=("1",)) -> Path:
    """A cc_sbu_align folder whose filter_cap.json holds exactly these bytes."""
    root = tmp_path / "cc"
    root.mkdir(parents=True, exist_ok=True)
    (root / "filter_cap.json").write_bytes(raw)
    for sample_id in ids:
        write_image(root / "image" / f"{sample_id}.jpg")
    return root


def captions_doc(*captions: str) -> str:
    return json.dumps({"annotations": [{"image_id": str(i + 1), "caption": c}
                                       for i, c in enumerate(captions)]}, ensure_ascii=False)


# --- decoding ----------------------------------------------------------------------------------

GENUINE = {
    "chinese": "图片里有一条河，两只猫坐在沙发上。",
    "japanese": "東京タワーへ行きました",
    "korean": "한국어 漢字",
    "russian": "Привет мир, это тест",
    "greek": "Καλημέρα κόσμε, 5 μm",
    "arabic": "مَرْحَبًا بالعالم",
    "hebrew": "שָׁלוֹם עולם",
    "hindi": "क्षत्रिय हिन्दी",
    "emoji": "I ❤️ it 1️⃣ 👍🏽 👨‍👩‍👧",
    "french": "très bien, voilà. Ça va? Où est l'été? Noël",
    "german": "Herr Müller aus Württemberg",
    "pinyin": "Zhōngguó nǚrén lǜsè",
    "polish": "Łódź, Žluťoučký kůň úpěl ďábelské ódy",
    "math": "ϕ = 2π, ∑ x² ≤ ∞, 30°C, ±3, ½",
}


@pytest.mark.parametrize("name", sorted(GENUINE))
def test_genuine_utf8_reads_unchanged(tmp_path, name, capsys):
    text = captions_doc(GENUINE[name])
    decoded, encoding = decode_text(text.encode("utf-8"), tmp_path / "f.json")
    assert (decoded, encoding) == (text, "utf-8")
    assert capsys.readouterr().err == ""  # no note for UTF-8


@pytest.mark.parametrize("caption", ["图片里有一条河。", "我用Python写代码, iPhone或Android 手机app",
                                     "Café 咖啡 Württemberg façade – — ’ “quoted”"])
def test_gb18030_reads_and_says_so(tmp_path, capsys, caption):
    root = make_cc_sbu_align(tmp_path / "cc", {"1": caption}, encoding="gb18030")
    pool = read_cc_sbu_align(root)
    assert pool.encoding == "gb18030" and pool.samples[0].answer == caption
    err = capsys.readouterr().err
    assert "filter_cap.json" in err and "read as GB18030" in err and len(err.splitlines()) == 1


def test_gb18030_note_through_the_cli(tmp_path):
    root = make_cc_sbu_align(tmp_path / "cc", {"2": "两只猫。"}, encoding="gb18030")
    result = run_cli("validate", root)
    assert result.returncode == 0 and "gb18030" in result.stdout
    assert "note:" in result.stderr and "read as GB18030" in result.stderr


@pytest.mark.parametrize("caption", ["图片", "只猫", "注炉"])
def test_gb18030_that_is_also_valid_utf8_is_read_as_gb18030(tmp_path, capsys, caption):
    raw = captions_doc(caption).encode("gb18030")
    raw.decode("utf-8")  # the trap: these bytes are valid UTF-8 (图片 reads ͼƬ)
    pool = read_cc_sbu_align(cc_file(tmp_path, raw))
    assert pool.encoding == "gb18030" and pool.samples[0].answer == caption
    assert "valid UTF-8, but as UTF-8 it reads as mojibake" in capsys.readouterr().err


def test_ambiguous_bytes_are_refused_and_encoding_decides(tmp_path, capsys):
    raw = captions_doc("却茫").encode("gb18030")  # as UTF-8: 'ȴã' (rare, not impossible)
    root = cc_file(tmp_path, raw)
    one_line(*cli(capsys, "validate", root)[::2], "filter_cap.json", "neither reading is sure",
             "--encoding gb18030")
    code, out, _ = cli(capsys, "validate", root, "--encoding", "gb18030")
    assert code == 0 and "gb18030" in out
    with text_encoding("gb18030"):
        assert read_cc_sbu_align(root).samples[0].answer == "却茫"
    with text_encoding("utf-8"):
        assert read_cc_sbu_align(root).samples[0].answer == "ȴã"


LATIN1 = {"Herr Müller": "'M黮ler'", "naïve": "na", "Émile Zola": "ile", "señor": "se",
          "MÜLLER": "LER"}


@pytest.mark.parametrize("caption", sorted(LATIN1))
def test_latin1_that_decodes_as_gb18030_is_refused(tmp_path, capsys, caption):
    raw = captions_doc(caption).encode("latin-1")
    raw.decode("gb18030")  # the trap: valid GB18030, as garbage
    root = cc_file(tmp_path, raw)
    one_line(*cli(capsys, "validate", root)[::2], "filter_cap.json", "as GB18030 it reads as "
             "mojibake at line 1 column", "Latin-1", LATIN1[caption], "--encoding")
    code, out, err = cli(capsys, "validate", root, "--encoding", "latin-1")
    assert code == 0 and "iso8859-1" in out, err
    with text_encoding("latin1"):
        assert read_cc_sbu_align(root).samples[0].answer == caption


def test_latin1_that_is_not_gb18030_names_the_byte(tmp_path, capsys):
    raw = captions_doc("un café noir").encode("latin-1")
    offset = raw.index("é".encode("latin-1"))
    one_line(*cli(capsys, "validate", cc_file(tmp_path, raw))[::2],
             "neither UTF-8 nor GB18030", f"offset {offset}", "line 1 column")


@pytest.mark.parametrize("bad, fragment", [
    ("caf\ufffd", "replacement character U+FFFD"),
    ("a\u0085b", "C1 control character U+0085"),
    ("it\u0092s", "C1 control character U+0092"),
    ("caf\u00c3\u00a9", "'Ã©' (UTF-8 read as Latin-1"),
    ("it\u00e2\u20ac\u2122s", "'â€'"),
    ("icon \ue000", "private-use character U+E000"),
])
def test_mojibake_in_utf8_is_refused_with_position(tmp_path, capsys, bad, fragment):
    root = cc_file(tmp_path, captions_doc("fine", bad).encode("utf-8"), ids=("1", "2"))
    line = one_line(*cli(capsys, "validate", root)[::2], "filter_cap.json", "as UTF-8 it reads as "
                    "mojibake at line 1 column", fragment)
    assert "--encoding" in line
    code, _, _ = cli(capsys, "validate", root, "--encoding", "utf-8")  # the escape hatch
    assert code == 0


@pytest.mark.parametrize("escaped, fragment", [
    ("\\ufffd", "replacement character"), ("caf\\u00c3\\u00a9", "UTF-8 read as Latin-1"),
    ("\\ud800", "unpaired surrogate \\ud800"), ("x\\udfff", "unpaired surrogate")])
def test_mojibake_behind_json_escapes_is_refused_naming_the_field(tmp_path, capsys, escaped,
                                                                   fragment):
    raw = ('{"annotations": [{"image_id": "1", "caption": "ok"}, '
           '{"image_id": "2", "caption": "%s"}]}' % escaped).encode()
    one_line(*cli(capsys, "validate", cc_file(tmp_path, raw, ("1", "2")))[::2],
             "$['annotations'][1]['caption']", fragment)


def test_escaped_emoji_pair_is_fine(tmp_path):
    path = tmp_path / "f.json"
    path.write_bytes(b'{"a": "\\ud83d\\ude00"}')
    assert read_json(path) == ({"a": "\U0001f600"}, "utf-8")


def test_damaged_utf8_is_refused_not_read_as_gb18030(tmp_path, capsys):
    raw = captions_doc("Württemberg façade, sautéed crème", "caf").encode("utf-8")
    raw = raw.replace(b'"caf"', b'"caf\xe9s"')  # one Latin-1 byte in a UTF-8 file
    offset = raw.index(b"\xe9s")
    one_line(*cli(capsys, "validate", cc_file(tmp_path, raw, ("1", "2")))[::2],
             "damaged UTF-8", f"byte {offset}", "are valid UTF-8")


def test_utf8_bom_utf16_and_nul_bytes(tmp_path, capsys):
    text = captions_doc("café")
    assert decode_text(b"\xef\xbb\xbf" + text.encode(), "f") == (text, "utf-8")
    root = cc_file(tmp_path, text.encode("utf-16"))
    one_line(*cli(capsys, "validate", root)[::2], "UTF-16 text (byte-order mark)",
             "--encoding utf-16")
    assert cli(capsys, "validate", root, "--encoding", "utf-16")[0] == 0
    (root / "filter_cap.json").write_bytes(text.encode("utf-16-le"))
    one_line(*cli(capsys, "validate", root)[::2], "NUL byte at offset 1")


@pytest.mark.parametrize("name", ["no-such-codec", "base64", "rot13"])
def test_unknown_or_non_text_encoding_is_one_line(tmp_path, capsys, name):
    root = make_cc_sbu_align(tmp_path / "cc", {"1": "x"})
    one_line(*cli(capsys, "validate", root, "--encoding", name)[::2], f"--encoding {name!r}",
             "unknown text encoding")


def test_forced_encoding_that_fails_names_the_byte(tmp_path, capsys):
    root = make_cc_sbu_align(tmp_path / "cc", {"1": "图片里有一条河"}, encoding="gb18030")
    one_line(*cli(capsys, "validate", root, "--encoding", "utf-8")[::2], "not utf-8 text: byte")


def test_encoding_reaches_every_command_that_reads_text(tmp_path, capsys):
    replies = tmp_path / "replies.json"
    replies.write_bytes(json.dumps({"annotations": [{"image_id": "1", "caption": "Müller",
                                                     "gpt_score": "80 fine"}]},
                                   ensure_ascii=False).encode("latin-1"))
    one_line(*cli(capsys, "parse-gpt", replies, "--out", tmp_path / "s.json")[::2], "replies.json")
    code, _, err = cli(capsys, "parse-gpt", replies, "--out", tmp_path / "s.json",
                       "--encoding", "latin-1")
    assert code == 0, err
    assert json.loads((tmp_path / "s.json").read_text())["annotations"][0]["caption"] == "Müller"
    for command in ("validate", "score", "select", "reference-select", "train-selector",
                    "parse-gpt", "split"):
        assert "--encoding" in run_help(command)


def run_help(command: str) -> str:
    from selector.app.cli import build_parser

    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return action.choices[command].format_help()


def test_released_reply_files(reference_dir, capsys):
    replies = reference_dir / "cc_sbu_align_test/gpt4score/gpt4_score_new.json"
    document, encoding = read_json(replies)
    assert encoding == "gb18030" and len(document["annotations"]) == 3439
    assert "’" in json.dumps(document, ensure_ascii=False)
    final = reference_dir / "cc_sbu_align_test/gpt4score/gpt_final_score.json"
    # UTF-8 cut short at one byte (a euro sign) and saved as such: read as GB18030 it would turn
    # Württemberg into W眉rttemberg; refused, and readable when forced
    with pytest.raises(InputError, match="damaged UTF-8: byte 445599"):
        read_json(final)
    assert read_json(final, encoding="gb18030")[1] == "gb18030"


def test_generated_chinese_round_trips_exactly():
    rng = np.random.default_rng(0)
    checked = 0
    for _ in range(400):
        chars = []
        while len(chars) < rng.integers(3, 12):
            try:
                chars.append(bytes([rng.integers(0xB0, 0xD8), rng.integers(0xA1, 0xFF)])
                             .decode("gb2312"))
            except UnicodeDecodeError:
                pass
        text = captions_doc("".join(chars), "mixed " + "".join(chars[:2]) + " text")
        assert decode_text(text.encode("utf-8"), "f") == (text, "utf-8")
        raw = text.encode("gb18030")
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:  # the usual case: must read back exactly as GB18030
            assert decode_text(raw, "f") == (text, "gb18030")
            checked += 1
    assert checked > 350


# --- counts: 0 is never "the default" ------------------------------------------------------------

@pytest.fixture(scope="module")
def small_pool(tmp_path_factory):
    from selector.model.synthetic import synthetic_feature_pool

    root = tmp_path_factory.mktemp("pool")
    pool, _, _ = synthetic_feature_pool(40, seed=1)
    pool.save(root / "pool.safetensors")
    return root / "pool.safetensors", pool


@pytest.mark.parametrize("num", ["0", "-3"])
@pytest.mark.parametrize("baseline", ["random", "top:clip"])
def test_select_num_zero_or_negative_is_refused(small_pool, tmp_path, capsys, num, baseline):
    path, _ = small_pool
    one_line(*cli(capsys, "select", "--pool", path, "--baseline", baseline, "--num", num,
                  "--out", tmp_path / "o")[::2], f"--num must be a whole number >= 1, not {num}")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("args, fragment", [
    (["reference-select", "--repo", "REPO", "--out", "OUT", "--num", "0"], "--num"),
    (["reference-select", "--repo", "REPO", "--out", "OUT", "--num", "-1"], "--num"),
    (["split", "--pool", "P", "--data", "D", "--out", "OUT", "--k", "0"], "--k"),
    (["demo", "--out", "OUT", "--samples", "0"], "--samples"),
])
def test_other_counts_zero_are_refused(tmp_path, capsys, args, fragment):
    args = [str(tmp_path / a) if a in ("REPO", "OUT", "P", "D") else a for a in args]
    one_line(*cli(capsys, *args)[::2], f"{fragment} must be a whole number >= 1")


def test_num_samples_setting_zero_is_refused(small_pool, tmp_path, capsys):
    path, _ = small_pool
    code, _, err = cli(capsys, "select", "--pool", path, "--baseline", "random", "--set",
                       "selection.num_samples=0", "--out", tmp_path / "o")
    one_line(code, err, "num_samples")


def test_library_counts():
    from selector.selection.rule import random_k, select_diverse_top_k, top_k_by

    ids = [str(i) for i in range(10)]
    for num_samples in (0, -2, True, 2.5):
        with pytest.raises(InputError, match="whole number >= 1"):
            random_k(ids, num_samples)
        with pytest.raises(InputError, match="whole number >= 1"):
            top_k_by(ids, np.arange(10.0), num_samples)
        with pytest.raises(InputError, match="whole number >= 1"):
            select_diverse_top_k(ids, np.arange(10.0), {"a": ids}, num_samples=num_samples)
    with pytest.raises(InputError, match="cannot select 11"):
        top_k_by(ids, np.arange(10.0), 11)
    assert len(top_k_by(ids, np.arange(10.0), 3)) == 3


# --- clusters files --------------------------------------------------------------------------------

def test_clusters_naming_ids_absent_from_the_pool(tmp_path):
    from selector.selection.clustering import read_clusters

    ids = ["1", "2", "3", "4"]
    with pytest.raises(InputError, match=r"2 ids are not in the pool: 'x', 'y'"):
        read_clusters(_clusters(tmp_path, {"a": ["1", "x"], "b": ["2", "y"]}), ids)
    many = _clusters(tmp_path, {"a": [f"g{i}" for i in range(8)]})
    with pytest.raises(InputError, match="8 ids are not in the pool: 'g0'.*and 3 more"):
        read_clusters(many, ids)
    with pytest.raises(InputError, match="hold 2 of the pool's samples; cannot select 3"):
        read_clusters(_clusters(tmp_path, {"a": ["1"], "b": ["2"]}), ids, num_samples=3)
    assert read_clusters(_clusters(tmp_path, {"a": ["1", "2"], "b": [3]}), ids,
                         num_samples=3) == \
        {"a": ["1", "2"], "b": ["3"]}


@pytest.mark.parametrize("member, fragment", [(True, "True is a JSON boolean"),
                                               (1.5, "1.5 is a JSON number with a fraction"),
                                               (None, "is a JSON null"), ([1], "JSON list"),
                                               ("a\nb", "line feed")])
def test_clusters_with_unusable_ids(tmp_path, member, fragment):
    from selector.selection.clustering import read_clusters

    path = _clusters(tmp_path, {"a": ["1", member]})
    with pytest.raises(InputError, match="cluster 'a'") as error:
        read_clusters(path, ["1"])
    assert fragment in str(error.value)


def _clusters(folder: Path, document) -> Path:
    path = folder / "clusters.json"
    path.write_text(json.dumps(document))
    return path


def test_select_with_clusters_of_another_pool_is_one_line(selected_data, tmp_path, capsys):
    root, _ = selected_data
    from selector.scoring.pool import FeaturePool

    ids = FeaturePool.load(root / "pool.safetensors").ids
    clusters = tmp_path / "clusters.json"
    clusters.write_text(json.dumps({"a": ids[:60] + ["ghost-1"], "b": ids[60:] + ["ghost-2"]}))
    one_line(*cli(capsys, "select", "--pool", root / "pool.safetensors", "--checkpoint",
                  root / "ckpt", "--clusters", clusters, "--num", "10", "--out",
                  tmp_path / "o")[::2], "clusters.json", "2 ids are not in the pool",
             "'ghost-1', 'ghost-2'")
    clusters.write_text(json.dumps({"a": ids[:4], "b": ids[4:8]}))
    one_line(*cli(capsys, "select", "--pool", root / "pool.safetensors", "--checkpoint",
                  root / "ckpt", "--clusters", clusters, "--num", "10", "--out",
                  tmp_path / "o")[::2], "hold 8 of the pool's samples; cannot select 10")
    assert not (tmp_path / "o").exists()
    clusters.write_text(json.dumps({"a": ids[:60], "b": ids[60:]}))
    code, _, err = cli(capsys, "select", "--pool", root / "pool.safetensors", "--checkpoint",
                       root / "ckpt", "--clusters", clusters, "--num", "10", "--out",
                       tmp_path / "o")
    assert code == 0, err
    assert len((tmp_path / "o" / "selected.txt").read_text().splitlines()) == 10


# --- sample ids ---------------------------------------------------------------------------------------

BAD_IDS = {
    "newline": ("a\nb", "line feed U+000A"),
    "carriage return": ("a\rb", "U+000D"),
    "tab": ("a\tb", "U+0009"),
    "space": ("a b", "space U+0020"),
    "leading space": (" 2", "space U+0020"),
    "line separator": ("a\u2028b", "U+2028"),
    "zero width": ("a\u200bb", "U+200B"),
    "nul": ("a\x00b", "U+0000"),
    "empty": ("", "image_id is empty"),
    "boolean": (True, "image_id True is a JSON boolean; ids are strings or integers"),
    "false": (False, "JSON boolean"),
    "float": (2.0, "image_id 2.0 is a JSON number with a fraction"),
    "null": (None, "JSON null"),
    "list": (["2"], "JSON list"),
    "object": ({"a": 1}, "JSON object"),
    "too long": ("x" * 300, "image_id is 300 bytes long"),
    "too long in bytes": ("图" * 90, "270 bytes long"),
    "slash": ("a/b", "would escape the data folder"),
    "dot dot": ("..", "would escape the data folder"),
}


@pytest.mark.parametrize("case", sorted(BAD_IDS))
def test_unusable_ids_are_refused_naming_file_and_sample(tmp_path, case):
    value, fragment = BAD_IDS[case]
    root = cc_file(tmp_path, json.dumps({"annotations": [
        {"image_id": "1", "caption": "fine"}, {"image_id": value, "caption": "x"}]}).encode())
    with pytest.raises(InputError) as error:
        read_cc_sbu_align(root)
    message = str(error.value)
    assert "filter_cap.json: sample #1" in message and fragment in message, message
    assert "\n" not in message and len(message) < 400
    skipped = read_cc_sbu_align(root, skip_invalid=True)
    assert skipped.ids == ["1"] and fragment in skipped.skipped[0].reason


def test_c1_control_in_an_id_is_refused_as_mojibake(tmp_path):
    root = cc_file(tmp_path, json.dumps({"annotations": [
        {"image_id": "1", "caption": "fine"}, {"image_id": "a\u0085b", "caption": "x"}]},
        ensure_ascii=False).encode())
    with pytest.raises(InputError, match="C1 control character U[+]0085"):
        read_cc_sbu_align(root)
    (root / "filter_cap.json").write_text(json.dumps({"annotations": [  # escaped: \u0085
        {"image_id": "1", "caption": "fine"}, {"image_id": "a\u0085b", "caption": "x"}]}))
    with pytest.raises(InputError, match=r"\['annotations'\]\[1\]\['image_id'\]: C1 control"):
        read_cc_sbu_align(root)


def test_integer_ids_are_fine_and_strings_kept_verbatim(tmp_path):
    root = cc_file(tmp_path, json.dumps({"annotations": [
        {"image_id": 1, "caption": "a"}, {"image_id": "-2", "caption": "b"}]}).encode(),
        ids=("1", "-2"))
    assert read_cc_sbu_align(root).ids == ["1", "-2"]


@pytest.mark.parametrize("value", ["a\nb", True, "x" * 300])
def test_bad_ids_through_the_cli(tmp_path, value):
    root = cc_file(tmp_path, json.dumps({"annotations": [
        {"image_id": value, "caption": "x"}]}).encode())
    assert_one_line_error(run_cli("validate", root), "filter_cap.json", "sample #0")


def test_conversation_ids_follow_the_same_rules(tmp_path, capsys):
    write_image(tmp_path / "imgs" / "x.jpg")
    for value, fragment in [(True, "id True is a JSON boolean"), ("a\nb", "line feed"),
                            (1.5, "number with a fraction")]:
        path = tmp_path / "c.json"
        path.write_text(json.dumps([{"id": value, "image": "imgs/x.jpg",
                                     "conversations": GOOD_TURNS}]))
        one_line(*cli(capsys, "validate", path)[::2], "c.json", "sample #0", fragment)


def test_pool_ids_with_a_newline_never_reach_selected_txt(tmp_path, capsys):
    from selector.scoring.pool import FeaturePool

    rng = np.random.default_rng(0)
    ids = [f"s{i}" for i in range(9)] + ["evil\nid"]
    FeaturePool(ids, rng.random((10, 3)), rng.random((10, 3)), rng.random((10, 1)),
                ["clip"]).save(tmp_path / "pool.safetensors")
    one_line(*cli(capsys, "select", "--pool", tmp_path / "pool.safetensors", "--baseline",
                  "random", "--num", "10", "--out", tmp_path / "o")[::2],
             "pool.safetensors", "sample #9", "line feed")
    assert not (tmp_path / "o" / "selected.txt").exists()
    with pytest.raises(InputError, match="selection: sample #1"):
        check_sample_ids(["ok", "a\rb"], "selection")


# --- conversations ------------------------------------------------------------------------------------

H, G = "human", "gpt"


def turns(*pairs):
    return [{"from": role, "value": value} for role, value in pairs]


BAD_CONVERSATIONS = {
    "two human turns in a row": (turns((H, "<image> What?"), (H, "And?"), (G, "A cat.")),
                                 "turn 1 is a second human turn in a row"),
    "two gpt turns in a row": (turns((H, "<image> What?"), (G, "A cat."), (G, "A dog.")),
                               "turn 2 is a second gpt turn in a row"),
    "starts with gpt": (turns((G, "<image> A cat."), (H, "What?")),
                        "conversation starts with a gpt turn"),
    "only the image token": (turns((H, "<image>"), (G, "A cat.")),
                             "turn 0 holds only the <image> token"),
    "only image token with spaces": (turns((H, " <image>\n "), (G, "A cat.")),
                                     "turn 0 holds only the <image> token"),
    "gpt turn only the image token": (turns((H, "<image> What?"), (G, "<image>")),
                                      "turn 1 holds only the <image> token"),
    "two image tokens": (turns((H, "<image> <image> What?"), (G, "A cat.")),
                         "first human turn holds <image> 2 times"),
    "image token later": (turns((H, "<image> What?"), (G, "A cat."), (H, "<image> And?"),
                                (G, "A dog.")), "turn 2 (human) holds an <image> token"),
    "image token in an answer": (turns((H, "<image> What?"), (G, "A <image> cat.")),
                                 "turn 1 (gpt) holds an <image> token"),
    "unanswered last question": (turns((H, "<image> What?"), (G, "A cat."), (H, "And?")),
                                 "turn 2 (human) has no gpt answer after it"),
    "value not text": ([{"from": H, "value": "<image> What?"}, {"from": G, "value": 42}],
                       "turn 1 value is a JSON number, not text"),
    "value null": ([{"from": H, "value": "<image> What?"}, {"from": G, "value": None}],
                   "turn 1 value is a JSON null"),
    "turn not an object": (["<image> What?", "A cat."], "turn 0 needs 'from' and 'value'"),
    "role case": (turns(("Human", "<image> What?"), (G, "A cat.")), "expected 'human' or 'gpt'"),
    "conversations not a list": ({"from": H, "value": "<image>"}, "conversations is a JSON object"),
}


@pytest.mark.parametrize("case", sorted(BAD_CONVERSATIONS))
def test_bad_conversations_are_one_line(tmp_path, capsys, case):
    conversation, fragment = BAD_CONVERSATIONS[case]
    path = make_conversations(tmp_path, [{"id": "x1", "image": "imgs/x1.jpg",
                                          "conversations": conversation}])
    one_line(*cli(capsys, "validate", path)[::2], "conversations.json", "sample #0 (id 'x1')",
             fragment)


def test_every_round_pairs_its_own_question(tmp_path):
    path = make_conversations(tmp_path, [{"id": "x", "image": "imgs/x.jpg", "conversations": turns(
        (H, "<image> Q1"), (G, "A1"), (H, "Q2"), (G, "A2"), (H, "Q3"), (G, "A3"))}])
    assert read_conversations(path).samples[0].rounds == [("Q1", "A1"), ("Q2", "A2"),
                                                          ("Q3", "A3")]


def test_skip_invalid_reports_every_bad_conversation(tmp_path, capsys):
    records = [{"id": "good", "image": "imgs/good.jpg", "conversations": GOOD_TURNS}]
    for n, case in enumerate(sorted(BAD_CONVERSATIONS)):
        records.append({"id": f"bad{n}", "image": "imgs/good.jpg",
                        "conversations": BAD_CONVERSATIONS[case][0]})
    path = make_conversations(tmp_path, records)
    report = tmp_path / "report.json"
    code, out, err = cli(capsys, "validate", path, "--skip-invalid", "--report", report)
    assert code == 2 and "Traceback" not in err
    assert f"1 valid samples, {len(BAD_CONVERSATIONS)} invalid" in out
    skipped = json.loads(report.read_text())["skipped"]
    assert [s["reason"] for s in skipped] == [BAD_CONVERSATIONS[c][1] for c in
                                              sorted(BAD_CONVERSATIONS)] or all(
        BAD_CONVERSATIONS[c][1] in s["reason"] for c, s in zip(sorted(BAD_CONVERSATIONS), skipped))
    assert len(err.splitlines()) == len(BAD_CONVERSATIONS)  # one line per skipped sample


# --- images ---------------------------------------------------------------------------------------------

def noisy_jpeg(path: Path, progressive: bool = False) -> bytes:
    from PIL import Image

    pixels = (np.random.default_rng(0).random((96, 128, 3)) * 255).astype("uint8")
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, format="JPEG", quality=90, progressive=progressive)
    return path.read_bytes()


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares width x height pixels in a few dozen bytes (a decompression bomb)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0,
                                                               0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


@pytest.mark.parametrize("progressive", [False, True])
@pytest.mark.parametrize("keep", [0.3, 0.6, 0.95, -2])
def test_truncated_jpeg_fails(tmp_path, progressive, keep):
    raw = noisy_jpeg(tmp_path / "full.jpg", progressive)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(raw[:int(len(raw) * keep)] if keep > 0 else raw[:keep])
    assert image_problem(tmp_path / "full.jpg") is None
    problem = image_problem(cut)
    assert problem is not None and "corrupt" in problem and "truncated" in problem.lower()


def test_truncated_jpeg_fails_validate(tmp_path, capsys):
    root = make_cc_sbu_align(tmp_path / "cc", {"1": "a", "2": "b"})
    raw = noisy_jpeg(root / "image" / "2.jpg")
    (root / "image" / "2.jpg").write_bytes(raw[:len(raw) // 2])
    one_line(*cli(capsys, "validate", root)[::2], "sample #1 (image_id '2')", "2.jpg is corrupt",
             "truncated")


@pytest.mark.parametrize("width, height", [(100_000, 100_000), (10_000, 10_000)])
def test_decompression_bomb_is_one_line_and_skippable(tmp_path, capsys, width, height):
    root = make_cc_sbu_align(tmp_path / "cc", {"1": "a", "2": "b"})
    (root / "image" / "2.jpg").write_bytes(png_header(width, height))
    one_line(*cli(capsys, "validate", root)[::2], "sample #1 (image_id '2')",
             "decompression bomb")
    report = tmp_path / "r.json"
    code, out, err = cli(capsys, "validate", root, "--skip-invalid", "--report", report)
    assert code == 2 and "Traceback" not in err and "1 valid samples, 1 invalid" in out
    assert "decompression bomb" in json.loads(report.read_text())["skipped"][0]["reason"]


def test_decompression_bomb_in_a_fresh_interpreter(tmp_path):
    root = make_cc_sbu_align(tmp_path / "cc", {"1": "a", "2": "b"})
    (root / "image" / "1.jpg").write_bytes(png_header(65_000, 65_000))
    result = run_cli("validate", root, "--skip-invalid")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "Warning" not in result.stderr  # Pillow's warning became our one line
    assert "decompression bomb" in result.stderr and "1 valid samples, 1 invalid" in result.stdout


def test_too_long_image_name_is_one_line(tmp_path, capsys):
    write_image(tmp_path / "imgs" / "ok.jpg")
    path = tmp_path / "c.json"
    path.write_text(json.dumps([{"id": "x", "image": "imgs/" + "y" * 300 + ".jpg",
                                 "conversations": GOOD_TURNS}]))
    one_line(*cli(capsys, "validate", path)[::2], "sample #0 (id 'x')", "cannot be read",
             "File name too long")
    code, out, err = cli(capsys, "validate", path, "--skip-invalid")
    assert code == 2 and "Traceback" not in err and "0 valid samples, 1 invalid" in out


def test_image_that_is_a_folder_or_garbage(tmp_path):
    (tmp_path / "dir.jpg").mkdir()
    assert "missing" in image_problem(tmp_path / "dir.jpg")
    (tmp_path / "junk.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4)
    assert "corrupt" in image_problem(tmp_path / "junk.jpg")
    (tmp_path / "text.jpg").write_text("not an image")
    assert "corrupt" in image_problem(tmp_path / "text.jpg")


def test_duplicate_json_keys_are_refused(tmp_path, capsys):
    """JSON readers keep the last of two equal keys: the first caption would vanish unseen."""
    root = cc_file(tmp_path, b'{"annotations": [{"image_id": "1", "caption": "first", '
                             b'"caption": "second"}]}')
    one_line(*cli(capsys, "validate", root)[::2], "filter_cap.json", "key 'caption' appears twice")
    (root / "filter_cap.json").write_bytes(b'{"annotations": [], "annotations": '
                                           b'[{"image_id": "1", "caption": "x"}]}')
    one_line(*cli(capsys, "validate", root)[::2], "key 'annotations' appears twice")


def test_empty_data_and_non_text_image_paths(tmp_path, capsys):
    root = cc_file(tmp_path, b'{"annotations": []}')
    one_line(*cli(capsys, "validate", root)[::2], "filter_cap.json: holds no samples")
    path = tmp_path / "c.json"
    path.write_text("[]")
    one_line(*cli(capsys, "validate", path)[::2], "c.json: holds no samples")
    path.write_text(json.dumps([{"id": "x", "image": 5, "conversations": GOOD_TURNS}]))
    one_line(*cli(capsys, "validate", path)[::2], "sample #0 (id 'x')",
             "image is a JSON number, expected a relative path")


def test_truncated_jpeg_fails_even_when_a_host_tolerates_truncation(tmp_path, monkeypatch):
    """LAVIS sets ``ImageFile.LOAD_TRUNCATED_IMAGES = True`` when imported; the check must not
    depend on that global, and must leave it as the host set it."""
    from PIL import ImageFile

    raw = noisy_jpeg(tmp_path / "full.jpg", False)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(raw[:len(raw) // 2])
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    assert image_problem(cut) is not None
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True
