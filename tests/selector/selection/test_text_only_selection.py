"""Text-only samples from the pool file to a LLaVA-format selection: the pool's ``has_image`` mask
(old pool files: every row has an image), their own diversity cluster, and ``conversations.json``
keeping them."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import make_conversations, run_cli, write_image
from selector.core.errors import InputError
from selector.data.samples import read_conversations
from selector.scoring.pool import FeaturePool
from selector.selection.clustering import diversity_clusters
from selector.selection.write import write_selection

N_IMAGES = 12


def _pool(mask=None, n=N_IMAGES + 2):
    rng = np.random.default_rng(0)
    image = rng.normal(size=(n, 3)).astype(np.float32)
    if mask is not None:
        image[~mask] = 0.0
    ids = [f"img{i}" for i in range(N_IMAGES)] + ["txt0", "txt1"]
    return FeaturePool(ids[:n], image, rng.normal(size=(n, 2)), rng.normal(size=(n, 2)),
                       ["clip", "length"], has_image=mask)


def _mask():
    return np.array([True] * N_IMAGES + [False, False])


def test_old_pool_files_load_unchanged_and_the_mask_round_trips(tmp_path):
    old = _pool()
    old.save(tmp_path / "old.safetensors")
    loaded = FeaturePool.load(tmp_path / "old.safetensors")
    assert loaded.has_image is None and loaded.image_mask.all() and loaded.text_only_ids == []
    all_true = _pool(np.ones(N_IMAGES + 2, bool))  # an all-True mask is no mask: same digest
    assert all_true.has_image is None and all_true.content_digest() == old.content_digest()

    pool = _pool(_mask())
    pool.save(tmp_path / "mixed.safetensors")
    again = FeaturePool.load(tmp_path / "mixed.safetensors")
    assert again.text_only_ids == ["txt0", "txt1"]
    np.testing.assert_array_equal(again.image_mask, _mask())
    assert again.content_digest() == pool.content_digest() != old.content_digest()
    part = again.take(["txt1", "img3"])
    assert part.text_only_ids == ["txt1"] and part.image_mask.tolist() == [False, True]
    assert again.take(["img1", "img2"]).has_image is None


def test_a_text_only_list_naming_unknown_ids_is_one_line(tmp_path):
    from safetensors.numpy import save

    pool = _pool()
    data = save({"image": pool.image, "text": pool.text, "indicators": pool.indicators},
                metadata={"format": "igpt4-pool/1", "ids": json.dumps(pool.ids),
                          "indicator_names": json.dumps(pool.indicator_names),
                          "text_only": json.dumps(["nope"])})
    (tmp_path / "p.safetensors").write_bytes(data)
    with pytest.raises(InputError, match="metadata 'text_only' names sample 'nope', which is not"):
        FeaturePool.load(tmp_path / "p.safetensors")


def test_text_only_rows_form_their_own_cluster():
    pool = _pool(_mask())
    settings = {"n_clusters": 3, "n_neighbors": 4, "cluster_seed": 0}
    found = diversity_clusters(pool.image, settings, has_image=pool.image_mask)
    alone = diversity_clusters(pool.image[:N_IMAGES], settings)
    np.testing.assert_array_equal(found.labels[:N_IMAGES], alone.labels)
    assert found.labels[N_IMAGES:].tolist() == [3, 3] and 3 not in found.labels[:N_IMAGES]
    assert found.info["text_only_cluster"] == 3 and found.info["text_only"] == 2
    without = diversity_clusters(pool.image, settings, has_image=None)  # as before
    np.testing.assert_array_equal(without.labels,
                                  diversity_clusters(pool.image, settings).labels)


def _data(tmp_path):
    records = [{"id": f"img{i}", "image": f"imgs/{i}.jpg", "conversations": [
        {"from": "human", "value": "<image>\nWhat is it?"}, {"from": "gpt", "value": f"Thing {i}."}]}
        for i in range(N_IMAGES)]
    records += [{"id": f"txt{i}", "conversations": [
        {"from": "human", "value": f"Question {i}?"}, {"from": "gpt", "value": f"Answer {i}."}]}
        for i in range(2)]
    return make_conversations(tmp_path / "data", records)


def test_a_conversation_selection_keeps_its_text_only_samples(tmp_path):
    data = _data(tmp_path)
    selected = ["txt1", "img4", "img0"]
    out = write_selection(tmp_path / "sel", [f"img{i}" for i in range(N_IMAGES)] + ["txt0", "txt1"],
                          np.arange(N_IMAGES + 2.0), selected, {"command": "select"},
                          data_dir=data, image_mode="link")
    records = json.loads((out / "conversations.json").read_text())
    assert [r["id"] for r in records] == selected
    assert "image" not in records[0] and records[1]["image"] == "image/imgs/4.jpg"
    again = read_conversations(out / "conversations.json")  # self-contained: its folder is the root
    assert [(s.id, s.has_image) for s in again.samples] == [("txt1", False), ("img4", True),
                                                            ("img0", True)]
    assert (out / "image" / "imgs" / "4.jpg").is_symlink()
    assert (out / "selected.txt").read_text().split() == selected
    # the folder is a selection: it may be replaced by the next one
    write_selection(out, ["txt0"], np.zeros(1), ["txt0"], {"command": "select"}, data_dir=data)
    assert [r["id"] for r in json.loads((out / "conversations.json").read_text())] == ["txt0"]


def test_select_cli_writes_a_llava_selection_from_a_pool_with_text_only_rows(tmp_path):
    data = _data(tmp_path)
    pool = _pool(_mask())
    pool.save(tmp_path / "pool.safetensors")
    out = tmp_path / "sel"
    result = run_cli("select", "--pool", tmp_path / "pool.safetensors", "--baseline", "top:clip",
                     "--data", data, "--out", out, "--set", "selection.num_samples=14")
    assert result.returncode == 0, result.stderr
    kept = read_conversations(out / "conversations.json")
    assert len(kept) == 14 and kept.text_only == 2
    assert "2 text-only samples" in result.stderr


def test_an_out_inside_the_image_folder_is_refused(tmp_path):
    data = _data(tmp_path)
    write_image(tmp_path / "data" / "imgs" / "extra.jpg")
    with pytest.raises(InputError, match="--out"):
        write_selection(tmp_path / "data" / "imgs" / "sel", ["img0"], np.zeros(1), ["img0"],
                        {"command": "select"}, data_dir=data)
