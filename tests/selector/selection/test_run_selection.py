"""selector.run_selection: the selection a training run uses, cached by its inputs."""
from __future__ import annotations

import json

import pytest

from conftest import make_cc_sbu_align
from selector.model.fit import train_selector
from selector.selection.select import select
from selector.model.synthetic import synthetic_feature_pool, synthetic_labels
from selector.core.errors import InputError
from selector.selection.run_selection import selection_for_run
from selector.core.settings import load_settings


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A toy pool file, a selector trained on it, and a cc_sbu_align folder with its captions."""
    root = tmp_path_factory.mktemp("run-selection")
    pool, quality, _ = synthetic_feature_pool(240, seed=3)
    pool_path = pool.save(root / "pool.safetensors")
    members = {str(i): pool.ids[i * 20:(i + 1) * 20] for i in range(12)}
    (root / "subsets.json").write_text(json.dumps(members))
    labels = synthetic_labels(members, dict(zip(pool.ids, quality.tolist())))
    (root / "labels.json").write_text(json.dumps({"labels": labels}))
    settings = load_settings(None, ["training.epochs=20", "training.cross_validate=false"])
    train_selector(root / "ckpt", settings, pool_path, root / "subsets.json", root / "labels.json")
    data = make_cc_sbu_align(root / "cc", {i: f"caption {i}" for i in pool.ids}, images=False)
    return root, pool_path, data


def test_the_run_trains_on_exactly_the_selectors_choice_and_reuses_it(trained, tmp_path):
    root, pool_path, data = trained
    options = {"checkpoint": str(root / "ckpt"), "pool": str(pool_path), "num_samples": 30,
               "cache_dir": str(tmp_path / "cache"), "selection": {"n_clusters": 4}}
    first = selection_for_run(data, options, tmp_path / "run-output")
    direct = select(tmp_path / "direct", load_settings(None, ["selection.num_samples=30",
                                                              "selection.n_clusters=4"]),
                    pool_path, root / "ckpt", None, None, None, data)
    assert first.ids == direct and len(first.ids) == 30 and not first.reused
    manifest = json.loads((tmp_path / "run-output" / "igpt4_manifest.json").read_text())
    assert manifest["selected"] == first.ids and manifest["settings"]["command"] == "select"
    again = selection_for_run(data, options)
    assert again.reused and again.ids == first.ids and again.digest == first.digest
    other = selection_for_run(data, {**options, "num_samples": 20})
    assert not other.reused and len(other.ids) == 20 and other.digest != first.digest


def test_clear_errors_for_missing_or_mismatched_inputs(trained, tmp_path):
    root, pool_path, data = trained
    with pytest.raises(InputError, match="checkpoint is not set"):
        selection_for_run(data, {"pool": str(pool_path)})
    with pytest.raises(InputError, match="igpt4 score"):
        selection_for_run(data, {"checkpoint": str(root / "ckpt"),
                                 "cache_dir": str(tmp_path / "empty")})
    with pytest.raises(InputError, match="default-mode checkpoint"):
        selection_for_run(data, {"checkpoint": str(root / "ckpt"), "pool": str(pool_path),
                                 "mode": "reference"})
    with pytest.raises(InputError, match="filter_cap.json: not found"):
        selection_for_run(tmp_path, {"checkpoint": str(root / "ckpt")})


def test_compute_missing_scores_the_pool_first(tiny_clip_files, tiny_llama_dir, tmp_path):
    from selector.scoring.score import score
    from selector.app.toy.models import tiny_score_settings

    captions = {str(i): f"a {'red' if i % 3 else 'blue'} shape number {i}. it is small"
                for i in range(40)}
    data = make_cc_sbu_align(tmp_path / "cc", captions)
    overrides = tiny_score_settings(*tiny_clip_files, tiny_llama_dir)[1::2]
    settings = load_settings(None, overrides + ["pool.indicators=[clip,length]"],
                             base="indicators/default.yaml")
    score(data, tmp_path / "w", None, ["clip", "length"], settings,
          pool_out=tmp_path / "w" / "pool.safetensors")
    members = {str(i): [str(j) for j in range(i * 8, i * 8 + 8)] for i in range(5)}
    (tmp_path / "subsets.json").write_text(json.dumps(members))
    (tmp_path / "labels.json").write_text(json.dumps({str(i): float(i) for i in range(5)}))
    train_selector(tmp_path / "ckpt", load_settings(None, ["training.epochs=5",
                                                           "training.cross_validate=false"]),
                   tmp_path / "w" / "pool.safetensors", tmp_path / "subsets.json",
                   tmp_path / "labels.json")
    indicators = {}
    for option in overrides + ["pool.indicators=[clip,length]"]:
        key, value = option.split("=", 1)
        node = indicators
        *parents, leaf = key.split(".")
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = value
    options = {"checkpoint": str(tmp_path / "ckpt"), "cache_dir": str(tmp_path / "fresh"),
               "num_samples": 10, "compute_missing": True, "indicators": indicators,
               "selection": {"n_clusters": 2, "n_neighbors": 5}}
    chosen = selection_for_run(data, options)
    assert (tmp_path / "fresh" / "pool.safetensors").is_file() and len(chosen.ids) == 10
