"""``igpt4 study``: the grid of methods x seeds on a synthetic pool, its fine-tune configs and
launcher, resuming, refusals; and the whole loop through a stand-in fine-tune and evaluation to
``igpt4 study collect``."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from conftest import (assert_one_line_error, fake_launch_env, make_cc_sbu_align,
                      make_conversations, run_cli,
                      tree_digest)
from selector.app.cli import main
from selector.model.synthetic import synthetic_feature_pool

METHODS = "random,cluster-random,top:clip,length"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """(root, pool file, cc_sbu_align folder) of 60 synthetic samples."""
    root = tmp_path_factory.mktemp("study-world")
    pool, _, _ = synthetic_feature_pool(60, seed=1)
    pool_path = pool.save(root / "pool.safetensors")
    data = make_cc_sbu_align(root / "cc", {i: f"A picture {i}." + " More words." * (int(i) % 5)
                                           for i in pool.ids})
    return root, pool_path, data


def study(out, pool, data, *extra, methods=METHODS, seeds="3", num="10"):
    return main(["study", "--pool", str(pool), "--data", str(data), "--methods", methods,
                 "--seeds", seeds, "--num", num, "--out", str(out), *map(str, extra)])


def _stamps(root: Path):
    return {p.relative_to(root).as_posix(): p.lstat().st_mtime_ns for p in root.rglob("*")}


def test_study_writes_every_selection_config_and_a_launcher(tmp_path, world):
    from omegaconf import OmegaConf

    _, pool, data = world
    out = tmp_path / "study"
    assert study(out, pool, data, "--slurm") == 0
    document = json.loads((out / "study.json").read_text())
    names = [r["name"] for r in document["runs"]]
    # seeded methods: one run per seed; deterministic ones (top, length): one run
    assert names == ["random/0", "random/1", "random/2", "cluster-random/0", "cluster-random/1",
                     "cluster-random/2", "top_clip/none", "length/none", "full"]
    assert document["methods"] == METHODS.split(",") and document["num_samples"] == 10
    assert document["seeds"] == [0, 1, 2]
    assert document["datasets"] == ["gqa", "iconqa", "okvqa", "scienceqa"]
    assert document["inputs"]["pool"] == str(pool) and document["digests"]["pool"]
    assert "numpy" in document["versions"]
    drawn = {}
    for run in document["runs"][:-1]:
        folder = out / run["folder"]
        captions = json.loads((folder / "selection" / "filter_cap.json").read_text())
        ids = [a["image_id"] for a in captions["annotations"]]
        assert len(ids) == 10 and all((folder / "selection" / "image" / f"{i}.jpg").exists()
                                      for i in ids)
        manifest = json.loads((folder / "selection" / "manifest.json").read_text())
        assert manifest["settings"]["method"] == run["method"]
        assert manifest["settings"]["seed"] == run["seed"]
        assert manifest["settings"]["selection"]["num_samples"] == 10
        config = OmegaConf.load(folder / "finetune.yaml")
        assert config.datasets.cc_sbu_align.build_info.storage == str(folder / "selection")
        assert config.run.output_dir == str(folder / "output")
        assert config.run.iters_per_epoch == 1 and config.run.warmup_steps == 1  # ceil(10 / 12)
        drawn[run["name"]] = ids
    assert len({tuple(drawn[f"random/{s}"]) for s in range(3)}) == 3  # the seeds draw apart
    top = json.loads((out / "top_clip" / "none" / "selection" / "manifest.json").read_text())
    kept = sorted((s for s in top["samples"]), key=lambda s: -s["score"])[:10]
    assert sorted(s["id"] for s in kept) == sorted(drawn["top_clip/none"])
    full = OmegaConf.load(out / "full" / "finetune.yaml")
    assert full.datasets.cc_sbu_align.build_info.storage == str(data)
    assert full.run.iters_per_epoch == 5  # ceil(60 / 12): one pass over the full data
    launcher = (out / "launch.sh").read_text()
    assert subprocess.run(["bash", "-n", str(out / "launch.sh")]).returncode == 0
    assert subprocess.run(["bash", "-n", str(out / "slurm_array.sh")]).returncode == 0
    assert f"study collect {out}" in launcher
    for name in names:
        assert f"    {name}) run_" in launcher
    assert "--datasets gqa,iconqa,okvqa,scienceqa" in launcher
    assert "#SBATCH --array=0-8" in (out / "slurm_array.sh").read_text()


def test_a_rerun_rewrites_nothing_and_a_changed_argument_is_refused(tmp_path, world):
    _, pool, data = world
    out = tmp_path / "study"
    assert study(out, pool, data, methods="random,top:clip", seeds="2") == 0
    digest, stamps = tree_digest(out), _stamps(out)
    assert study(out, pool, data, methods="random,top:clip", seeds="2") == 0
    assert tree_digest(out) == digest and _stamps(out) == stamps
    changed = run_cli("study", "--pool", pool, "--data", data, "--methods", "random,top:clip",
                      "--seeds", "2", "--num", "12", "--out", out)
    assert_one_line_error(changed, "study.json", "--num 10", "not 12", "--force")
    more = run_cli("study", "--pool", pool, "--data", data, "--methods", "random,top:clip",
                   "--seeds", "3", "--num", "10", "--out", out)
    assert_one_line_error(more, "--seeds 2")
    assert tree_digest(out) == digest
    # --force: only the runs the change touches are written (a third seed here)
    assert study(out, pool, data, "--force", methods="random,top:clip", seeds="3") == 0
    after = tree_digest(out)
    kept = [k for k in digest if k.startswith(("random/0/", "random/1/", "top_clip/", "full/"))]
    assert all(after[k] == digest[k] for k in kept)
    assert "random/2/selection/filter_cap.json" in after
    # a run already evaluated is never silently given a new selection
    answers = out / "random" / "0" / "answers" / "m" / "20240101000000"
    answers.mkdir(parents=True)
    (answers / "result.json").write_text("{}")
    stale = run_cli("study", "--pool", pool, "--data", data, "--methods", "random,top:clip",
                    "--seeds", "3", "--num", "12", "--out", out, "--force")
    assert_one_line_error(stale, str(out / "random" / "0" / "answers"), "remove")


def test_a_study_stopped_halfway_resumes_with_its_arguments_only(tmp_path, world, monkeypatch):
    from selector.core.errors import InputError
    from selector.selection import select as selection

    _, pool, data = world
    out = tmp_path / "study"
    real, calls = selection.select, []

    def dying(*args, **kwargs):  # the third selection never finishes (kill -9, a full disk)
        calls.append(kwargs["seed"])
        if len(calls) == 3:
            raise InputError("disk full")
        return real(*args, **kwargs)

    monkeypatch.setattr(selection, "select", dying)
    assert study(out, pool, data, methods="random", seeds="3") == 2
    monkeypatch.setattr(selection, "select", real)
    assert sorted(p.parent.name for p in out.glob("random/*/run.json")) == ["0", "1"]
    assert_one_line_error(run_cli("study", "collect", out), "not written completely")
    assert_one_line_error(run_cli("study", "--pool", pool, "--data", data, "--methods",
                                  "random", "--seeds", "3", "--num", "11", "--out", out),
                          "--num 10")
    before = tree_digest(out / "random")
    assert study(out, pool, data, methods="random", seeds="3") == 0
    after = tree_digest(out / "random")
    assert all(after[k] == v for k, v in before.items())  # the two runs done were kept
    assert "2/run.json" in after
    assert json.loads((out / "study.json").read_text()).get("complete") is None


def test_a_method_that_ignores_its_seed_gets_one_run(tmp_path, world):
    """threshold draws its fill at random unless ``fill: score``: then one run, seed None."""
    _, pool, data = world
    out = tmp_path / "study"
    assert study(out, pool, data, "--no-full", "--set", "methods.threshold.fill=score",
                 methods="threshold:clip=25", seeds="3") == 0
    document = json.loads((out / "study.json").read_text())
    assert [(r["name"], r["seed"]) for r in document["runs"]] == [("threshold_clip_25/0", None)]
    assert not (out / "full").exists()


def test_bad_inputs_are_one_line(tmp_path, world):
    root, pool, data = world
    base = ["study", "--pool", pool, "--data", data, "--out", tmp_path / "s"]
    cases = [
        (base + ["--methods", "random,bogus"], ["unknown selection method 'bogus'"]),
        (base + ["--methods", "random,random"], ["listed twice"]),
        (base + ["--methods", "random", "--seeds", "0"], ["--seeds"]),
        (base + ["--methods", "selector"], ["--checkpoint"]),
        (["study", "--pool", pool, "--methods", "random", "--out", tmp_path / "s"], ["--data"]),
        (["study", "--pool", pool, "--data", root / "nothing.json", "--methods", "random",
          "--out", tmp_path / "s"], ["not found"]),
        (base + ["--methods", "random", "--datasets", "gqa,gqa"], ["listed twice"]),
        (["study", "--pool", pool, "--data", data, "--methods", "random", "--out", data / "s"],
         ["--out", "--data"]),
    ]
    for argv, fragments in cases:
        assert_one_line_error(run_cli(*argv), *fragments)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "mine.txt").write_text("x")
    assert_one_line_error(run_cli("study", "--pool", pool, "--data", data, "--methods", "random",
                                  "--out", busy), "holds no study")
    assert not (tmp_path / "s").exists()


FAKE_TORCHRUN = """\
#!{python}
# stands in for torchrun train.py: one checkpoint where MiniGPT-4's runner writes it
import sys, pathlib
from omegaconf import OmegaConf
cfg = OmegaConf.load(sys.argv[sys.argv.index("--cfg-path") + 1])
job = pathlib.Path(cfg.run.output_dir) / "202406010930"
job.mkdir(parents=True, exist_ok=True)
(job / "checkpoint_4.pth").write_bytes(b"x")
"""

FAKE_IGPT4 = """\
#!{python}
# stands in for `igpt4 eval`: an Arena result.json whose accuracies depend on the run's data
import sys, json, pathlib, zlib
args = sys.argv[1:]
answers = pathlib.Path(args[args.index("--out") + 1])
run = args[args.index("--run-name") + 1]
from omegaconf import OmegaConf
cfg = OmegaConf.load([a for a in args if a.startswith("cfg_path=")][0][9:])
data = pathlib.Path(cfg.datasets.cc_sbu_align.build_info.storage) / "filter_cap.json"
code = zlib.crc32(data.read_bytes())
folder = answers / "minigpt4" / run
folder.mkdir(parents=True, exist_ok=True)
names = args[args.index("--datasets") + 1].split(",")
(folder / "result.json").write_text(json.dumps(
    {{name: 0.3 + ((code >> (4 * i)) % 16) / 100 for i, name in enumerate(names)}}))
"""


def test_launch_then_collect(tmp_path, world):
    """The whole loop: study -> launch.sh (stand-ins for torchrun and igpt4 eval) -> collect,
    whose numbers are those of the result files."""
    import numpy as np

    _, pool, data = world
    out = tmp_path / "study"
    assert study(out, pool, data, "--datasets", "gqa,okvqa", methods="random,top:clip",
                 seeds="3") == 0
    env = fake_launch_env(tmp_path, FAKE_TORCHRUN, FAKE_IGPT4)
    partial = subprocess.run(["bash", str(out / "launch.sh"), "random/0", "random/1", "full"],
                             env=env, capture_output=True, text=True, timeout=120)
    assert partial.returncode == 0, partial.stderr
    collected = run_cli("study", "collect", out)
    assert collected.returncode == 0, collected.stderr
    results = json.loads((out / "study_results.json").read_text())
    assert set(results["missing"]) == {"random/2", "top_clip/none"}
    done = subprocess.run(["bash", str(out / "launch.sh")], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "study collect" in done.stdout
    assert run_cli("study", "collect", out).returncode == 0
    results = json.loads((out / "study_results.json").read_text())
    assert results["missing"] == {}

    def value(folder):
        [path] = (out / folder / "answers").glob("*/*/result.json")
        return 100 * np.mean(list(json.loads(path.read_text()).values()))

    random = [value(f"random/{s}") for s in range(3)]
    assert results["methods"]["random"]["overall"]["mean"] == pytest.approx(np.mean(random))
    top = value("top_clip/none")
    versus = results["methods"]["top:clip"]["vs_random"]
    assert versus["differences"] == pytest.approx([top - r for r in random])
    assert results["methods"]["full"]["overall"]["mean"] == pytest.approx(value("full"))


def test_a_conversation_pool_gives_llava_selections_and_configs(tmp_path):
    """LLaVA-style data (text-only samples included): every run a conversations.json + image/
    selection trained through the llava_conversations builder, the full run on the JSON."""
    from omegaconf import OmegaConf

    from selector.scoring.pool import FeaturePool

    records = [{"id": f"c{i}", **({"image": f"imgs/c{i}.jpg"} if i % 4 else {}),
                "conversations": [
                    {"from": "human", "value": ("<image>\n" if i % 4 else "") + f"Question {i}?"},
                    {"from": "gpt", "value": "Answer " + "word " * i},
                    {"from": "human", "value": "And then?"},
                    {"from": "gpt", "value": "More."}]} for i in range(24)]
    data = make_conversations(tmp_path / "conv", records)
    pool, _, _ = synthetic_feature_pool(24, seed=2)
    pool = FeaturePool([r["id"] for r in records], pool.image, pool.text, pool.indicators,
                       pool.indicator_names)
    pool_path = pool.save(tmp_path / "pool.safetensors")
    out = tmp_path / "study"
    assert study(out, pool_path, data, methods="random,length", seeds="2", num="6") == 0
    document = json.loads((out / "study.json").read_text())
    assert [r["name"] for r in document["runs"]] == ["random/0", "random/1", "length/none", "full"]
    for run in document["runs"][:-1]:
        selection = out / run["folder"] / "selection"
        kept = json.loads((selection / "conversations.json").read_text())
        assert len(kept) == 6
        for record in kept:  # every image of the selection lies in it
            if "image" in record:
                assert (selection / record["image"]).is_file()
        config = OmegaConf.load(out / run["folder"] / "finetune.yaml")
        assert list(config.datasets) == ["llava_conversations"]
        assert config.datasets.llava_conversations.build_info.storage == \
            str(selection / "conversations.json")
        assert config.datasets.llava_conversations.build_info.image_root == str(selection)
    longest = json.loads((out / "length" / "none" / "selection" / "conversations.json").read_text())
    assert sorted(r["id"] for r in longest) == sorted(f"c{i}" for i in range(18, 24))
    full = OmegaConf.load(out / "full" / "finetune.yaml").datasets.llava_conversations.build_info
    assert full.storage == str(data) and full.image_root == str(data.parent)
