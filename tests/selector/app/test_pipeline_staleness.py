"""selector.pipeline: a stage reruns when any file it reads changes (by content), a forced stage
makes the stages after it rerun, recipe paths resolve against the recipe's folder (``--set``
against the current folder), and the demo checks its sizes before doing any work."""
from __future__ import annotations

import io
import json
import os
import re
import shutil
from pathlib import Path

import pytest
import yaml

from conftest import make_cc_sbu_align
from selector.core.errors import InputError
from selector.app.pipeline import Pipeline
from selector.app.recipe import Recipe
from selector.core.settings import config_dir

STAGES = ["score", "labels", "train_selector", "select", "train_config"]
SUBSETS = {"00": ["2", "3"], "01": ["4", "5"], "02": ["6", "7"], "03": ["8", "9"],
           "04": ["10", "11"]}
LABELS = {"00": 30.0, "01": 31.5, "02": 29.0, "03": 33.0, "04": 28.0}


@pytest.fixture(scope="module")
def project(tmp_path_factory, tiny_clip_files, tiny_llama_dir):
    """A user's recipe folder: recipe.yaml naming its data, subsets and labels by RELATIVE paths
    (so every test below also runs it from another folder)."""
    root = tmp_path_factory.mktemp("staleness") / "project"
    captions = {str(i): f"Picture {i}. " + "Shapes and colours. " * (1 + i % 3)
                for i in range(2, 14)}
    make_cc_sbu_align(root / "cc", captions)
    (root / "subsets.json").write_text(json.dumps(SUBSETS))
    (root / "labels.json").write_text(json.dumps({"labels": LABELS}))
    config, checkpoint = tiny_clip_files
    clip = {"model": config.stem, "pretrained": str(checkpoint), "model_config": str(config),
            "num_workers": 0}
    recipe = {
        "pipeline": {"work": "work", "data": "cc", "stages": STAGES},
        "score": {"indicators": ["clip", "length"], "settings": {
            "indicators": {"clip": clip}, "features": {
                "image": clip, "text": {"model": str(tiny_llama_dir)}, "pca_components": 3}}},
        "labels": {"source": "file", "file": "labels.json", "subsets": "subsets.json"},
        "selector": {"training": {"epochs": 3, "cross_validate": False},
                     "selection": {"n_clusters": 2}},
        "select": {"num_samples": 4},
    }
    (root / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    return root


def _pipeline(recipe, *overrides):
    return Pipeline(Recipe.load(recipe, list(overrides)), log=lambda message: None)


def _ran(records):
    return [name for name, record in records.items() if record.ran]


def _same_size_other_image(path: Path) -> bytes:
    """Another picture with exactly ``path``'s byte size (JPEG ignores bytes after its end)."""
    from PIL import Image

    old = path.read_bytes()
    for colour in ((250, 10, 10), (10, 250, 10), (10, 10, 250), (200, 200, 20)):
        buffer = io.BytesIO()
        Image.new("RGB", Image.open(path).size, colour).save(buffer, "JPEG", quality=60)
        new = buffer.getvalue()
        if len(new) <= len(old) and new != old[:len(new)]:
            return new + b"\0" * (len(old) - len(new))
    pytest.fail("could not draw a same-size replacement image")


def test_edited_inputs_and_forced_stages_rerun_what_depends_on_them(project, tmp_path,
                                                                     monkeypatch):
    monkeypatch.chdir(tmp_path)  # not the recipe's folder: relative recipe paths still hold
    recipe = project / "recipe.yaml"
    assert _ran(_pipeline(recipe).run()) == STAGES
    assert (project / "work" / "train_config.yaml").is_file() and not (tmp_path / "work").exists()
    assert _ran(_pipeline(recipe).run()) == []

    # the subsets file (labels.subsets, read by train_selector) edited in place
    (project / "subsets.json").write_text(json.dumps({**SUBSETS, "00": ["2", "12"]}))
    assert _ran(_pipeline(recipe).run()) == ["train_selector", "select", "train_config"]
    assert _ran(_pipeline(recipe).run()) == []

    # the labels file's content
    (project / "labels.json").write_text(json.dumps({"labels": {**LABELS, "04": 40.0}}))
    assert _ran(_pipeline(recipe).run()) == ["labels", "train_selector", "select",
                                             "train_config"]

    # a train_config template given with --set (relative: the current folder), then edited
    template = tmp_path / "tmpl.yaml"
    shutil.copy(config_dir() / "minigpt4" / "instructiongpt4_stage2_finetune.yaml", template)
    assert _ran(_pipeline(recipe, "train_config.template=tmpl.yaml").run()) == ["train_config"]
    template.write_text(re.sub(r"max_epoch: \d+", "max_epoch: 66", template.read_text()))
    assert _ran(_pipeline(recipe, "train_config.template=tmpl.yaml").run()) == ["train_config"]
    written = yaml.safe_load((project / "work" / "train_config.yaml").read_text())
    assert written["run"]["max_epoch"] == 66

    # an image replaced by a different one of the same byte size and the same mtime
    image = project / "cc" / "image" / "5.jpg"
    stat = image.stat()
    replacement = _same_size_other_image(image)
    image.write_bytes(replacement)
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert image.stat().st_size == stat.st_size
    # rescored, and every stage that reads the scores follows (labels come from a file)
    assert _ran(_pipeline(recipe).run()) == ["score", "train_selector", "select", "train_config"]

    # a forced rerun of one stage makes the later stages rerun on the next run
    forced = _pipeline(recipe).run(start="train_selector", until="train_selector", force=True)
    assert _ran(forced) == ["train_selector"]
    assert _ran(_pipeline(recipe).run()) == ["select", "train_config"]
    assert _ran(_pipeline(recipe).run()) == []


def test_every_named_file_enters_its_stage_fingerprint(project, tmp_path):
    """split.template, score.pca_from, labels.file, labels.subsets and train_config.template:
    the fingerprint follows each file's bytes (no stage is run here)."""
    files = {key: tmp_path / f"{key}.yaml" for key in ("split", "pca", "labels", "subsets",
                                                         "train")}
    shutil.copy(config_dir() / "minigpt4" / "subset_finetune.yaml", files["split"])
    shutil.copy(config_dir() / "minigpt4" / "instructiongpt4_stage2_finetune.yaml",
                files["train"])
    for key in ("pca", "labels", "subsets"):
        files[key].write_text("one")
    overrides = ["pipeline.stages=[score,split,labels,train_selector,select,train_config]",
                 f"split.template={files['split']}", f"score.pca_from={files['pca']}",
                 f"labels.file={files['labels']}", f"train_config.template={files['train']}"]
    cases = [("split", "split"), ("pca", "score"), ("labels", "labels"), ("train", "train_config")]
    for key, stage in cases:
        before = {s: _pipeline(project / "recipe.yaml", *overrides).fingerprint(s)
                  for _, s in cases}
        with open(files[key], "a") as handle:
            handle.write("\n# edited\n")
        after = {s: _pipeline(project / "recipe.yaml", *overrides).fingerprint(s)
                 for _, s in cases}
        assert [s for _, s in cases if before[s] != after[s]] == [stage], key
    # without a split stage, train_selector reads labels.subsets
    plain = _pipeline(project / "recipe.yaml", f"labels.subsets={files['subsets']}")
    before = plain.fingerprint("train_selector")
    files["subsets"].write_text("two")
    assert plain.fingerprint("train_selector") != before


def test_recipe_paths_resolve_against_the_recipe_folder_and_set_against_the_cwd(tmp_path,
                                                                              monkeypatch):
    folder = tmp_path / "rc"
    folder.mkdir()
    (folder / "recipe.yaml").write_text(yaml.safe_dump({
        "pipeline": {"data": "cc", "stages": ["score", "labels", "train_selector", "select",
                                               "split"]},
        "labels": {"source": "file", "file": "lbl.json", "subsets": "../subs.json"},
        "split": {"template": "minigpt4/subset_finetune.yaml"},
        "score": {"pca_from": "~/pool.safetensors"}}))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    recipe = Recipe.load("../rc/recipe.yaml")
    assert recipe.work == folder / "work"  # base.yaml's default work: beside the recipe
    assert recipe.settings["pipeline"]["data"] == str(folder / "cc")
    assert recipe.settings["labels"]["file"] == str(folder / "lbl.json")
    assert recipe.settings["labels"]["subsets"] == str(tmp_path / "subs.json")
    assert recipe.settings["score"]["pca_from"] == str(Path.home() / "pool.safetensors")
    # not beside the recipe: a shipped template by name
    assert recipe.settings["split"]["template"] == "minigpt4/subset_finetune.yaml"
    (folder / "minigpt4").mkdir()
    (folder / "minigpt4" / "subset_finetune.yaml").write_text("run: {}\n")
    assert Recipe.load(folder / "recipe.yaml").settings["split"]["template"] == str(
        folder / "minigpt4" / "subset_finetune.yaml")  # the recipe's own file comes first
    # --set: the current folder
    recipe = Recipe.load(folder / "recipe.yaml", ["labels.file=mine.json", "pipeline.work=w"])
    assert recipe.settings["labels"]["file"] == str(elsewhere / "mine.json")
    assert recipe.work == elsewhere / "w"
    assert recipe.settings["labels"]["subsets"] == str(tmp_path / "subs.json")
    # a shipped recipe: the current folder
    assert Recipe.load("demo.yaml").work == elsewhere / "demo_out"
    assert Recipe.load(config_dir() / "pipeline" / "instructiongpt4.yaml").work == \
        elsewhere / "work" / "instructiongpt4"


@pytest.mark.parametrize("samples, extra, fragment", [
    (5, [], r"^--samples 5: a toy pool of 5 samples is too small for 24 subsets \(split.k=24"),
    (50, ["split.k=5", "select.num_samples=70"],
     r"^--samples 50: .* 70 selected samples .*from --set select.num_samples=70"),
    (8, ["split.k=4", "select.num_samples=6", "selector.selection.n_clusters=9"],
     r"^--samples 8: .* 9 clusters"),
])
def test_demo_checks_sizes_before_any_work(tmp_path, samples, extra, fragment):
    from selector.app.demo import run_demo

    with pytest.raises(InputError, match=fragment):
        run_demo(tmp_path / "d", samples=samples, extra=extra)
    assert not (tmp_path / "d").exists()


def test_demo_errors_name_the_flag_typed(tmp_path):
    from selector.app.demo import run_demo

    with pytest.raises(InputError, match=r"^--seed -1: demo.seed must be >= 0"):
        run_demo(tmp_path / "d", seed=-1)
    assert not (tmp_path / "d").exists()


def test_demo_help_states_the_recipe_default(capsys):
    from selector.app.cli import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["demo", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    default = Recipe.load("demo.yaml").settings["demo"]["samples"]
    assert re.search(rf"--samples SAMPLES toy pool size \(default: .*\b{default}\)", text), text
