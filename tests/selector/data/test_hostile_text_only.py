"""Hostile inputs for text-only samples: a conversation JSON of only text-only samples scored into
a pool file (the image PCA has no image to fit on) is one line naming the pool file and the way
out (``--pca-from``), not a bare "PCA(3) needs 3 samples"; with ``--pca-from`` it works and
``select --diversity`` keeps them in LLaVA format."""
from __future__ import annotations

import json

import pytest

from conftest import assert_one_line_error, make_conversations, run_cli

pytest.importorskip("transformers", reason="transformers is not installed (make test installs it)")


def _text_only(root):
    root.mkdir(parents=True)
    return make_conversations(root, [
        {"id": f"t{i}", "conversations": [{"from": "human", "value": f"Question {i}?"},
                                          {"from": "gpt", "value": "Answer " * (i + 1)}]}
        for i in range(4)])


def test_all_text_only_pool_out(tiny_clip_files, tiny_llama_dir, tmp_path):
    from conftest import write_image
    from selector.app.toy.models import tiny_score_settings

    tiny = tiny_score_settings(*tiny_clip_files, tiny_llama_dir)
    common = ["--indicators", "clip,length", "--set", "pool.indicators=[clip,length]", *tiny]
    data = _text_only(tmp_path / "text")
    result = run_cli("score", "--data", data, "--work", tmp_path / "w1", *common,
                     "--pool-out", tmp_path / "text.safetensors")
    assert_one_line_error(result, "text.safetensors", "text-only", "--pca-from")
    assert not (tmp_path / "text.safetensors").exists()

    records = [{"id": f"i{i}", "image": f"imgs/{i}.jpg", "conversations": [
        {"from": "human", "value": "<image>\nWhat?"},
        {"from": "gpt", "value": f"Thing number {i}."}]} for i in range(4)]
    images = make_conversations(tmp_path / "img", records)
    for i in range(4):
        write_image(tmp_path / "img" / "imgs" / f"{i}.jpg", (i * 60, 30, 200 - i * 40))
    made = run_cli("score", "--data", images, "--work", tmp_path / "w2", *common,
                   "--pool-out", tmp_path / "img.safetensors")
    assert made.returncode == 0, made.stderr
    reused = run_cli("score", "--data", data, "--work", tmp_path / "w1", *common,
                     "--pool-out", tmp_path / "text.safetensors",
                     "--pca-from", tmp_path / "img.safetensors", "--strict")
    assert reused.returncode == 0, reused.stderr
    chosen = run_cli("select", "--pool", tmp_path / "text.safetensors", "--method", "random",
                     "--diversity", "--num", "3", "--data", data, "--out", tmp_path / "sel")
    assert chosen.returncode == 0, chosen.stderr
    out = json.loads((tmp_path / "sel" / "conversations.json").read_text())
    assert len(out) == 3 and all("image" not in r for r in out)
