"""selector.gpt_reply: reproduces the released final scores; flags replies without a score."""
from __future__ import annotations

import json

from conftest import run_cli
from selector.gpt_reply import parse_reply, parse_reply_file
from selector.jsonio import read_json

REPLIES = "cc_sbu_align_test/gpt4score/gpt4_score_new.json"
FINAL = "cc_sbu_align_test/gpt4score/gpt_final_score.json"


def test_reproduces_all_3439_released_scores(reference_dir):
    parsed, flagged = parse_reply_file(reference_dir / REPLIES)
    final, encoding = read_json(reference_dir / FINAL)
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
