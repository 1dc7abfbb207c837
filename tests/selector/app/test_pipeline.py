"""selector.pipeline: stages from one recipe, skipped when current, manifest, --from/--until."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from conftest import make_cc_sbu_align
from selector.core.errors import InputError
from selector.app.pipeline import Pipeline
from selector.app.recipe import Recipe

STAGES = ["score", "split", "labels", "train_selector", "select", "report", "train_config"]


@pytest.fixture(scope="module")
def recipe_file(tmp_path_factory, tiny_clip_files, tiny_llama_dir):
    """A recipe over 60 generated samples with the tiny CLIP and Llama (no reward, no GPT)."""
    root = tmp_path_factory.mktemp("pipeline")
    captions = {str(i): f"A picture number {i}. " + "It shows shapes. " * (1 + i % 5)
                for i in range(2, 62)}
    data = make_cc_sbu_align(root / "cc", captions)
    config, checkpoint = tiny_clip_files
    clip = {"model": config.stem, "pretrained": str(checkpoint), "model_config": str(config),
            "num_workers": 0}
    recipe = {
        "pipeline": {"work": str(root / "work"), "data": str(data), "stages": STAGES},
        "score": {"indicators": ["clip", "length"], "settings": {
            "indicators": {"clip": clip}, "features": {
                "image": clip, "text": {"model": str(tiny_llama_dir)}, "pca_components": 3}}},
        "split": {"k": 5},
        "selector": {"training": {"epochs": 5, "cross_validate": False},
                     "selection": {"n_clusters": 3}},
        "select": {"num_samples": 8},
        "report": {"examples": 2},
        "train_config": {"set": {"model.ckpt": "/weights/stage1.pth"}},
    }
    path = root / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def _pipeline(recipe_file, *overrides):
    return Pipeline(Recipe.load(recipe_file, list(overrides)), log=lambda message: None)


def _ran(records):
    return [name for name, record in records.items() if record.ran]


def _write_results(work: Path) -> None:
    """Arena result.json files for every subset, as the launcher's evaluations would leave."""
    subsets = json.loads((work / "subsets" / "subsets.json").read_text())
    for n, name in enumerate(sorted(subsets)):
        folder = work / "subsets" / name / "answers" / "MiniGPT-4" / "20260101000000"
        folder.mkdir(parents=True, exist_ok=True)
        accuracy = 0.3 + 0.01 * n
        (folder / "result.json").write_text(json.dumps(
            {"GQA": accuracy, "IconQA": accuracy, "OKVQA": accuracy, "ScienceQA": accuracy}))


def test_pauses_for_the_fine_tunes_then_finishes_then_recomputes_nothing(recipe_file):
    first = _pipeline(recipe_file)
    records = first.run()
    assert _ran(records) == ["score", "split"]  # labels paused: no evaluation results yet
    manifest = json.loads((first.work / "run_manifest.json").read_text())
    assert "launch.sh" in manifest["paused"] and manifest["inputs"]["data"]
    _write_results(first.work)

    second = _pipeline(recipe_file).run()
    assert _ran(second) == ["labels", "train_selector", "select", "report", "train_config"]
    work = first.work
    labels = json.loads((work / "labels.json").read_text())["labels"]
    assert len(labels) == 5 and labels[sorted(labels)[-1]] == pytest.approx(34.0)
    selected = (work / "selection" / "selected.txt").read_text().split()
    assert len(selected) == 8
    assert len(json.loads((work / "selection" / "filter_cap.json").read_text())
               ["annotations"]) == 8
    assert (work / "selection" / "report.html").is_file()
    config = yaml.safe_load((work / "train_config.yaml").read_text())
    block = config["datasets"]["cc_sbu_align_selected"]
    assert block["selector"]["checkpoint"] == str(work / "selector")
    assert block["selector"]["num_samples"] == 8 and config["model"]["ckpt"] == "/weights/stage1.pth"

    third = _pipeline(recipe_file).run()
    assert _ran(third) == []
    manifest = json.loads((work / "run_manifest.json").read_text())
    assert all(not stage["ran"] for stage in manifest["stages"].values())
    assert manifest["versions"]["instructiongpt4"] and manifest["paused"] is None


def test_a_changed_setting_recomputes_only_what_depends_on_it(recipe_file):
    _pipeline(recipe_file).run()  # current (after the test above, or finishes it)
    assert _ran(_pipeline(recipe_file, "report.examples=3").run()) == ["report"]
    records = _pipeline(recipe_file, "report.examples=3", "select.num_samples=6").run()
    assert _ran(records) == ["select", "report", "train_config"]
    work = Path(Recipe.load(recipe_file).work)
    assert len((work / "selection" / "selected.txt").read_text().split()) == 6


def test_the_builder_reuses_the_selection_the_pipeline_made(recipe_file):
    from selector.selection.run_selection import selection_for_run

    pipeline = _pipeline(recipe_file)
    pipeline.run()
    config = yaml.safe_load((pipeline.work / "train_config.yaml").read_text())
    block = config["datasets"]["cc_sbu_align_selected"]
    chosen = selection_for_run(block["build_info"]["storage"], block["selector"])
    assert chosen.reused
    assert chosen.ids == (pipeline.work / "selection" / "selected.txt").read_text().split()


def test_from_and_until(recipe_file):
    _pipeline(recipe_file).run()
    records = _pipeline(recipe_file).run(start="select", until="report", force=True)
    assert _ran(records) == ["select", "report"]
    with pytest.raises(InputError, match="not a stage of this recipe"):
        _pipeline(recipe_file).run(start="generate")
    # a stage before --from that is out of date is an error, not silently used
    with pytest.raises(InputError, match="train_selector is out of date"):
        _pipeline(recipe_file, "selector.training.epochs=6").run(start="select")


def test_recipe_errors_are_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"pipeline": {"stages": ["score", "fine_tune"]}}))
    with pytest.raises(InputError, match="bad.yaml line 2: pipeline.stages holds 'fine_tune'"):
        Recipe.load(bad)
    bad.write_text("selector:\n  training:\n    epochs: 0\n")
    with pytest.raises(InputError, match="bad.yaml line 3: selector.training.epochs must be >= 1"):
        Recipe.load(bad)
    with pytest.raises(InputError, match="--set score.settings.chunk_size=0: score.settings"):
        Recipe.load("demo.yaml", ["score.settings.chunk_size=0"])
    with pytest.raises(InputError, match="nowhere.yaml: recipe not found"):
        Recipe.load(tmp_path / "nowhere.yaml")
    empty = tmp_path / "empty.yaml"
    empty.write_text(yaml.safe_dump({"pipeline": {"stages": ["score"]}}))
    with pytest.raises(InputError, match="pipeline.data is not set"):
        Recipe.load(empty).data_path()


def test_shipped_recipes_load():
    for name in ("instructiongpt4.yaml", "llava_conversations.yaml", "demo.yaml"):
        recipe = Recipe.load(name)
        assert recipe.stages and recipe.settings["select"]["num_samples"] > 0


def test_a_run_reads_each_image_once_for_its_hashes(recipe_file, tmp_path, monkeypatch):
    """The data fingerprint's sample hashes are the score stage's: no image is hashed twice."""
    from selector.scoring import store

    calls = []
    real = store.sample_hash
    monkeypatch.setattr(store, "sample_hash", lambda s, *a: calls.append(s.id) or real(s, *a))
    records = _pipeline(recipe_file, f"pipeline.work={tmp_path / 'work'}").run(until="score")
    assert _ran(records) == ["score"]
    assert len(calls) == 60 and len(set(calls)) == 60
