"""selector.core.fingerprint: the one hasher, and every site routed through it keeps the digest
it had (users' caches, run.json fingerprints, pipeline state and cached selections stay valid).

Each test computes the site's formula as it was written before (plain hashlib, by hand) on fixed
inputs and compares; a few also pin a literal value, so a change on both sides is caught too."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest

from conftest import make_cc_sbu_align
from selector.core.fingerprint import (Fingerprint, canonical_json, file_sha256, fingerprint,
                                       text_fingerprint)

SETTINGS = {"b": [1, 2.5, None], "a": {"z": True, "y": "é"}, "path": Path("/x/y")}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _file_sha(path: Path) -> str:
    return _sha(Path(path).read_bytes())


@pytest.fixture()
def files(tmp_path):
    one = tmp_path / "one.bin"
    one.write_bytes(bytes(range(256)) * 5000)  # > 1 MiB: streamed in more than one block
    folder = tmp_path / "ckpt"
    (folder / "sub").mkdir(parents=True)
    (folder / "weights.safetensors").write_bytes(b"weights")
    (folder / "sub" / "config.json").write_text('{"mode": "default"}')
    return one, folder


# -- the API ------------------------------------------------------------------------------------

def test_values_text_bytes_and_files_chain_into_one_sha256(files):
    one, folder = files
    expected = hashlib.sha256(json.dumps(SETTINGS, sort_keys=True, default=str).encode())
    assert canonical_json(SETTINGS) == json.dumps(SETTINGS, sort_keys=True, default=str)
    assert fingerprint(SETTINGS) == expected.hexdigest()
    assert fingerprint(SETTINGS, length=20) == expected.hexdigest()[:20]
    assert text_fingerprint("é/x", length=16) == _sha("é/x".encode("utf-8"))[:16]
    assert file_sha256(one) == _file_sha(one)
    expected.update(b"raw")
    expected.update(one.read_bytes())
    chained = Fingerprint().update(SETTINGS).update_bytes(b"raw").update_file(one)
    assert chained.hexdigest() == expected.hexdigest()
    assert fingerprint({"a": 1}, [2]) == _sha(b'{"a": 1}[2]')
    assert fingerprint({"a": 1}) != fingerprint({"a": 2})


def test_update_files_takes_names_and_bytes_a_folder_by_its_sorted_files(files, tmp_path):
    one, folder = files
    by_hand = hashlib.sha256()
    for path in [one, folder / "sub" / "config.json", folder / "weights.safetensors"]:
        by_hand.update(path.name.encode())
        by_hand.update(path.read_bytes())
    assert Fingerprint().update_files([one, folder]).hexdigest() == by_hand.hexdigest()
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    (moved / "one.bin").write_bytes(one.read_bytes())
    assert Fingerprint().update_files([moved / "one.bin"]).hexdigest() == \
        Fingerprint().update_files([one]).hexdigest()  # names, not folders


def test_pinned_values():
    """Literal digests: a change of the canonical form (on both sides of the tests below) fails."""
    assert fingerprint({"indicator": "x", "settings": {"k": 1}}, length=16) == "ce558ccf7eaff469"
    assert fingerprint([["a", "b"]], length=20) == "cccb00f1aa26751ef483"


# -- the sites ----------------------------------------------------------------------------------

def test_store_settings_and_sample_hash(tmp_path):
    from selector.core.cache import settings_hash
    from selector.data.samples import Sample, Turn
    from selector.scoring import store

    canonical = json.dumps({"indicator": "clip", "settings": SETTINGS}, sort_keys=True,
                           default=str)
    assert settings_hash("clip", SETTINGS) == _sha(canonical.encode("utf-8"))[:16]
    image = tmp_path / "img.jpg"
    image.write_bytes(b"\xff\xd8 not really a jpeg")
    turns = [Turn("human", "Describe it."), Turn("gpt", "A red square, ünïcode.")]
    sample = Sample("7", image, turns, "image/7.jpg")
    text = json.dumps([[t.role, t.text] for t in turns]).encode("utf-8")
    assert store.sample_hash(sample) == _sha(text + image.read_bytes())[:32]
    assert store.sample_hash(sample, image_bytes=False) == _sha(text + b"image/7.jpg")[:32]
    missing = Sample("8", tmp_path / "gone.jpg", turns, "image/8.jpg")
    assert store.sample_hash(missing) == _sha(text + b"image/8.jpg")[:32]


def test_pool_content_digest():
    from selector.scoring.pool import FeaturePool

    rng = np.random.default_rng(0)
    pool = FeaturePool(["a", "b", "c"], rng.normal(size=(3, 4)), rng.normal(size=(3, 2)),
                       rng.normal(size=(3, 2)), ["clip", "length"])
    digest = hashlib.sha256(json.dumps([pool.ids, pool.indicator_names]).encode("utf-8"))
    for array in (pool.image, pool.text, pool.indicators):
        array = np.ascontiguousarray(array, dtype=np.float32)
        digest.update(json.dumps(list(array.shape)).encode("ascii"))
        digest.update(array.tobytes())
    assert pool.content_digest() == digest.hexdigest()


def test_pipeline_hashes(files, tmp_path):
    from selector.app import pipeline

    one, _ = files
    value = {"version": 2, "stage": "score", "settings": SETTINGS, "upstream": {}}
    assert pipeline._hash(value) == \
        _sha(json.dumps(value, sort_keys=True, default=str).encode())[:20]
    assert pipeline._file_digest(one) == _file_sha(one)[:20]
    assert pipeline._file_digest(tmp_path / "nope") == f"missing: {tmp_path / 'nope'}"
    listed = [[one.name, _file_sha(one)[:20]]]
    assert pipeline._digest_files([one]) == \
        _sha(json.dumps(listed, sort_keys=True, default=str).encode())[:20]
    listed = [["one.bin", _file_sha(one)[:20]]]
    assert pipeline._digest_files([one], tmp_path) == \
        _sha(json.dumps(listed, sort_keys=True, default=str).encode())[:20]


def test_pipeline_data_digest_is_the_old_one_and_hashes_each_image_once(tmp_path, monkeypatch):
    from selector.app import pipeline
    from selector.data.samples import read_pool
    from selector.scoring import store

    data = make_cc_sbu_align(tmp_path / "cc", {"1": "one", "2": "two", "3": "three"})
    samples = read_pool(data, None, skip_invalid=True, check_images=False).samples
    old = {"annotations": _file_sha(data / "filter_cap.json")[:20],
           "samples": [[s.id, store.sample_hash(s)] for s in samples]}
    calls = []
    real = store.sample_hash
    monkeypatch.setattr(store, "sample_hash", lambda s, *a: calls.append(s.id) or real(s, *a))
    digest, hashes = pipeline.digest_data(data)
    assert digest == _sha(json.dumps(old, sort_keys=True, default=str).encode())[:20]
    assert hashes == dict(old["samples"]) and sorted(calls) == ["1", "2", "3"]


def test_run_selection_key_and_cache_dir(files, tmp_path, monkeypatch):
    from selector.selection import run_selection

    one, folder = files
    annotations = tmp_path / "filter_cap.json"
    annotations.write_text('{"annotations": []}')
    clusters = tmp_path / "clusters.json"
    clusters.write_text("{}")
    settings = {"selection": {"num_samples": 3}, "model": {"mode": "default"}}
    for extra in ([], [clusters]):
        digest = hashlib.sha256(json.dumps({"settings": settings, "mode": "default",
                                            "clusters": bool(extra)}, sort_keys=True).encode())
        for path in [annotations, folder] + extra:
            paths = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() \
                else [path]
            for file in paths:
                digest.update(str(file.name).encode())
                digest.update(file.read_bytes())
        digest.update("0123abcd".encode())
        assert run_selection.selection_key(settings, "default", annotations, folder,
                                           extra[0] if extra else None, "0123abcd") == \
            digest.hexdigest()[:20]
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    from selector.core.paths import user_cache_dir

    real = os.path.realpath(os.path.abspath(str(annotations)))
    assert run_selection.default_cache_dir(annotations) == \
        user_cache_dir() / "datasets" / _sha(real.encode("utf-8"))[:16]


def test_eval_run_fingerprint_and_tester_files(files):
    from eval_arena import cli, runner

    one, _ = files
    answers = {"tester": {"name": "scripted", "files": {"ckpt": "abc"}}, "max_new_tokens": 64}
    canonical = json.dumps({"indicator": "eval-run", "settings": answers}, sort_keys=True,
                           default=str)
    assert runner.fingerprint(answers) == _sha(canonical.encode("utf-8"))[:16]
    assert runner.file_sha256(one) == _file_sha(one)
    recorded = cli._tester_settings("scripted", {"checkpoint": str(one)}, object())
    assert recorded["files"] == {"checkpoint": _file_sha(one)}


def test_eval_dataset_and_judge_prompt_fingerprints():
    from eval_arena import judge_prompts
    from eval_arena.datasets import VQADataset, VQAItem

    items = [VQAItem("/img/1.jpg", "What is it?", "cat"), VQAItem("/img/2.jpg", "Ünï?", "x")]
    digest = hashlib.sha256()
    for item in items:
        digest.update(json.dumps([item.image_path, item.question]).encode("utf-8"))
    assert VQADataset("d", "test", "full", "/", items).fingerprint() == digest.hexdigest()
    parts = (judge_prompts.PROMPT_VERSION, judge_prompts.SYSTEM_PROMPT,
             judge_prompts.RULE_WITH_CONTEXT, judge_prompts.RULE_WITHOUT_CONTEXT,
             judge_prompts._LATER_ROUND, judge_prompts._CONTEXT_NOTE,
             judge_prompts._NO_CONTEXT_NOTE)
    assert judge_prompts.PROMPT_SHA256 == _sha("\n\x00".join(parts).encode("utf-8"))[:16]


def test_chat_request_key_and_pca_key(tmp_path):
    from selector.core.chat import ChatRequest
    from selector.scoring.embedders import Projection

    messages = (("system", "Rate it."), ("user", "ünï \"quoted\""))
    canonical = json.dumps(messages, ensure_ascii=False, separators=(",", ":"))
    assert ChatRequest("r1", messages).key == _sha(canonical.encode("utf-8"))[:32]
    parts = {"embedder": {"kind": "image", "model": Path("/m")}, "hashes": ["a", "b"]}
    matrix = np.random.default_rng(1).normal(size=(8, 5)).astype(np.float32)
    Projection.fit_cached(tmp_path, parts, matrix, n_components=2, seed=3)
    key = _sha(json.dumps({**parts, "n_components": 2, "seed": 3}, sort_keys=True,
                          default=str).encode())[:24]
    assert [p.name for p in (tmp_path / "pca").iterdir()] == [f"{key}.npz"]


def test_gpt_prompt_digest():
    pytest.importorskip("openai")
    from selector.scoring.indicators import create

    indicator = create("gpt", prompt="Rate this: {caption}")
    assert indicator.settings()["prompt_sha256"] == \
        _sha("Rate this: {caption}".encode("utf-8"))[:16]


def test_gpt_batch_state_file_is_found_by_the_old_request_hash(tmp_path):
    pytest.importorskip("openai")
    from types import SimpleNamespace

    from selector.core.chat_batch import BatchRun

    lines = [("r1", b'{"custom_id": "r1"}\n'), ("r2", b'{"custom_id": "r2"}\n')]
    server = "http://localhost:8000/v1"
    digest = _sha(server.encode("utf-8") + b"\n" + b"".join(line for _, line in lines))[:24]
    (tmp_path / f"{digest}.json").write_text(json.dumps({"batch_id": "b1"}))
    batch = SimpleNamespace(id="b1", status="in_progress")
    client = SimpleNamespace(batches=SimpleNamespace(retrieve=lambda batch_id: batch))
    run = BatchRun(client, server, {}, tmp_path, 0.0, 100, str, progress=False)
    job = run.attach_or_submit(lines)
    assert job.state_path == tmp_path / f"{digest}.json" and job.batch is batch
    assert job.digest == digest
