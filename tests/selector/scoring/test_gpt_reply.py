"""selector.gpt_reply: reproduces the released final scores; flags replies without a score."""
from __future__ import annotations

import json

from conftest import run_cli
from selector.scoring.gpt_reply import parse_reply, parse_reply_file
from selector.core.jsonio import read_json

REPLIES = "cc_sbu_align_test/gpt4score/gpt4_score_new.json"
FINAL = "cc_sbu_align_test/gpt4score/gpt_final_score.json"


def test_reproduces_all_3439_released_scores(reference_dir):
    parsed, flagged = parse_reply_file(reference_dir / REPLIES)
    # the released final-score file is UTF-8 damaged at one byte (a euro sign cut short) and was
    # saved through GB18030: read undetected it is refused, forced it reads as released
    final, encoding = read_json(reference_dir / FINAL, encoding="gb18030")
    assert encoding == "gb18030" and flagged == []
    assert len(parsed) == 3439
    assert [(p["image_id"], p["gpt_score"]) for p in parsed] == \
        [(f["image_id"], f["gpt_score"]) for f in final["annotations"]]


def test_reply_shapes():
    assert parse_reply("Score: 92\nGood.").score == 92
    assert parse_reply("10\n\nThe answer ...").score == 10
    assert parse_reply("I would rate it 87.5 out of 100").score == 87.5
    for reply, problem in [("No score here.", "no score"), ("", "no score"),
                           ("Score: 450", "outside 0..100"), (None, "not text")]:
        result = parse_reply(reply)
        assert result.score is None and problem in result.problem


def test_cli_flags_and_strict(tmp_path):
    replies = tmp_path / "replies.json"
    replies.write_text(json.dumps({"annotations": [
        {"image_id": "1", "caption": "c", "gpt_score": "75 because"},
        {"image_id": "2", "caption": "d", "gpt_score": "I cannot judge this."}]}), encoding="utf-8")
    out = tmp_path / "scores.json"
    result = run_cli("parse-gpt", replies, "--out", out)
    assert result.returncode == 0 and "1 replies flagged" in result.stdout
    assert "sample 2: reply contains no score" in result.stderr
    document = json.loads(out.read_text())
    assert document["annotations"] == [{"image_id": "1", "caption": "c", "gpt_score": 75}]
    assert run_cli("parse-gpt", replies, "--out", out, "--strict").returncode == 2


def test_negative_numbers_are_flagged_not_read_without_their_sign():
    for reply in ["-40", "-40\nThe caption is wrong.", "Score: -5", "score: \u2212 5", "(-3)",
                  "rating:-1", "x=-2", "\u2013 12 points"]:
        result = parse_reply(reply)
        assert result.score is None and "outside 0..100" in result.problem, reply
        assert "-" in result.problem or "\u2212" in result.problem or "\u2013" in result.problem


def test_zero_and_the_ends_of_the_scale_are_scores():
    assert parse_reply("0").score == 0 and parse_reply("0").ok
    assert parse_reply("Score: 0\nNothing in the caption matches.").score == 0
    assert parse_reply("-0").score == 0  # a sign on zero changes nothing
    assert parse_reply("100\nPerfect.").score == 100
    assert parse_reply("100.5").problem is not None


def test_a_hyphen_after_a_word_or_number_is_not_a_sign():
    assert parse_reply("GPT-4 would give it 80").score == 4  # the first number, as released
    assert parse_reply("0-100 scale: 70").score == 0
    assert parse_reply("85-90").score == 85
