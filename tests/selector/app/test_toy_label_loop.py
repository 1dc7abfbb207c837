"""The demo's genuine labels: the toy MiniGPT-4 can learn (clean captions beat corrupted ones on
the toy VQA set, over seeds), its runs are cached and never stale, and the demo records and
prints the loop (selector.app.toy.minigpt4, .vqa, .label_runs, .loop, selector.app.demo)."""
from __future__ import annotations

import json
import random
import shutil
import statistics
from pathlib import Path

import pytest

from tests.conftest import run_cli

pytest.importorskip("lavis")


def _omega_save(config, path: Path) -> None:
    from omegaconf import OmegaConf

    OmegaConf.save(config, path)


def _label_pools(tmp_path: Path, seed: int, n: int):
    """A clean toy pool and the same drawings with every caption corrupted (a wrong colour, a
    wrong count or an off-topic caption, in turn)."""
    from selector.app.toy.world import faulty_caption, make_toy_pool

    clean = tmp_path / f"clean{seed}"
    make_toy_pool(clean, n=n, bad_fraction=0.0, seed=100 + seed)
    planted = json.loads((clean / "planted.json").read_text())
    bad = tmp_path / f"corrupted{seed}"
    shutil.copytree(clean, bad)
    annotations = []
    for index, (sample_id, entry) in enumerate(planted.items()):
        kind = ("wrong_colour", "wrong_count", "off_topic")[index % 3]
        caption, _ = faulty_caption(kind, entry["truth"], entry["clean_caption"],
                                    random.Random(index))
        annotations.append({"image_id": sample_id, "caption": caption})
    (bad / "filter_cap.json").write_text(json.dumps({"annotations": annotations}))
    return clean, bad


def _config_for(tmp_path: Path, name: str, data: Path) -> Path:
    """A subset's finetune.yaml as ``igpt4 split`` writes it from the toy template."""
    from selector.labels.jobs import SubsetJob, load_template, resolve_template, subset_config

    job = SubsetJob(name, tmp_path / "runs" / name, 0, data_dir=data)
    job.folder.mkdir(parents=True)
    _omega_save(subset_config(load_template(resolve_template("lavis/toy_finetune.yaml")), job),
                job.config)
    return job.config


def test_the_toy_world_learns_clean_captions_beat_corrupted_ones(tmp_path):
    """Acceptance: stage 2 on corrupted captions scores lower on the toy VQA set than stage 2 on
    clean captions of the same drawings, for every one of three seeds (the real loop: the
    shipped template, LAVIS's train steps, the Arena-style runner)."""
    from selector.app.toy.label_runs import ToyEvaluation, evaluate, finetune
    from selector.app.toy.minigpt4 import stage1_model
    from selector.app.toy.vqa import make_toy_vqa

    stage1 = stage1_model(0, progress=False)  # the demo's, cached in the user cache
    vqa = make_toy_vqa(tmp_path / "vqa", drawings=240)
    evaluation = ToyEvaluation(vqa.root, vqa.key)
    accuracy = {"clean": [], "corrupted": []}
    for seed in range(3):
        for kind, data in zip(("clean", "corrupted"), _label_pools(tmp_path, seed, 24)):
            config = _config_for(tmp_path, f"{kind}{seed}", data)
            checkpoint = finetune(config, config.parent / "output", stage1, 24, 30, seed=seed)
            accuracy[kind].append(evaluate(checkpoint, config.parent / "answers", evaluation,
                                           seed).accuracy)
    for clean, corrupted in zip(accuracy["clean"], accuracy["corrupted"]):
        assert clean > corrupted, accuracy
    assert statistics.mean(accuracy["clean"]) - statistics.mean(accuracy["corrupted"]) > 0.03


def test_stage1_is_cached_by_fingerprint(tmp_path):
    from selector.app.toy.minigpt4 import stage1_model

    training = {"drawings": 40, "vision_steps": 2, "vision_batch": 8, "steps": 2,
                "batch_size": 4, "caption_share": 0.5, "lr": 1e-3}
    first = stage1_model(0, cache=tmp_path, training=training, progress=False)
    assert first.checkpoint.is_file() and (first.tokenizer / "tokenizer.json").is_file()
    stamp = first.checkpoint.stat().st_mtime_ns
    again = stage1_model(0, cache=tmp_path, training=training, progress=False)
    assert again.folder == first.folder and again.checkpoint.stat().st_mtime_ns == stamp
    other = stage1_model(0, cache=tmp_path, training={**training, "steps": 3}, progress=False)
    assert other.folder != first.folder
    # the checkpoint is a plain state dict: read weights-only, as every checkpoint we read
    import torch

    state = torch.load(first.checkpoint, weights_only=True)
    assert state["stage"] == 1 and any(k.startswith("llama_proj") for k in state["model"])
    assert not list(tmp_path.glob(".*.new"))  # no staging folder left behind


def test_runs_are_redone_when_what_they_depend_on_changes(tmp_path):
    """A finished fine-tune is reused only for the same config, stage 1 and options; an
    evaluation's runs are cleared when the checkpoint or the VQA set changes (labels collect
    averages every run it finds, so a stale one would leak into the label)."""
    from selector.app.toy.label_runs import ToyEvaluation, evaluate, finetune
    from selector.app.toy.minigpt4 import stage1_model
    from selector.app.toy.vqa import make_toy_vqa
    from selector.labels.collect import arena_results

    stage1 = stage1_model(0, progress=False)
    clean, _ = _label_pools(tmp_path, 0, 16)
    config = _config_for(tmp_path, "s", clean)
    output, answers = config.parent / "output", config.parent / "answers"
    first = finetune(config, output, stage1, 16, 4)
    assert finetune(config, output, stage1, 16, 4) == first  # done: reused
    longer = finetune(config, output, stage1, 16, 8)
    assert longer != first and longer.is_file()
    small = make_toy_vqa(tmp_path / "vqa", drawings=10)
    evaluate(longer, answers, ToyEvaluation(small.root, small.key), 0)
    evaluate(longer, answers, ToyEvaluation(small.root, small.key), 1)
    assert len(arena_results(answers)) == 2
    bigger = make_toy_vqa(tmp_path / "vqa", drawings=12)
    assert bigger.key != small.key and bigger.questions > small.questions
    evaluate(longer, answers, ToyEvaluation(bigger.root, bigger.key), 0)
    assert len(arena_results(answers)) == 1  # the runs on the old set are gone
    evaluate(first, answers, ToyEvaluation(bigger.root, bigger.key), 0)
    assert len(arena_results(answers)) == 1  # and the runs of another checkpoint


def test_the_lavis_host_gets_a_stock_cc_sbu_align_builder(tmp_path):
    """LAVIS has no cc_sbu_align (MiniGPT-4 registers its own): ours trains on every sample of
    build_info.storage, with the dataset's own default config keyed cc_sbu_align."""
    from omegaconf import OmegaConf

    from lavis_plugins.registration import register
    from selector.app.toy.world import make_toy_pool

    register(["lavis"])
    from lavis.common.registry import registry

    builder_cls = registry.get_builder_class("cc_sbu_align")
    assert builder_cls is not None and getattr(builder_cls, "_igpt4_plugin", False)
    default = OmegaConf.load(builder_cls.default_config_path())
    assert list(default.datasets) == ["cc_sbu_align"]
    make_toy_pool(tmp_path / "pool", n=7, bad_fraction=0.0)
    config = OmegaConf.create({
        "data_type": "images", "build_info": {"storage": str(tmp_path / "pool")},
        "vis_processor": {"train": {"name": "blip2_image_train", "image_size": 32}},
        "text_processor": {"train": {"name": "blip_caption"}}})
    dataset = builder_cls(config).build_datasets()["train"]
    assert len(dataset) == 7 and dataset.selection_folder is None
    assert dataset[0]["image"].shape[-1] == 32


DEMO = ["--samples", "60", "--set", "split.k=4", "--set", "select.num_samples=12",
        "--set", "selector.training.epochs=10", "--set", "selector.selection.n_clusters=3",
        "--set", "demo.vqa_drawings=20", "--set", "demo.label_steps=4",
        "--set", "demo.noise_repeats=2", "--set", "compare.seeds=2", "--set", "compare.steps=3"]


def test_demo_short_loop_records_labels_noise_and_the_comparison(tmp_path):
    """``igpt4 demo`` shortened: genuine labels (each subset fine-tuned and evaluated), the
    noise of repeated evaluations, the selected-vs-random-vs-full table with intervals, all in
    demo_summary.json and on stdout; a second run recomputes nothing; a changed label setting
    redoes the label runs without mixing old evaluations into the labels."""
    out = tmp_path / "demo"
    result = run_cli("demo", "--out", out, *DEMO)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "labels came from fine-tunes and evaluations: 4 subsets" in result.stdout
    summary = json.loads((out / "demo_summary.json").read_text())
    labels = json.loads((out / "labels.json").read_text())
    assert set(summary["labels"]["subsets"]) == set(labels["labels"]) and len(labels["labels"]) == 4
    for name, entry in summary["labels"]["subsets"].items():
        assert Path(entry["checkpoint"]).is_file() and entry["checkpoint"].endswith(".pth")
        result_file = Path(entry["result"])
        assert result_file.is_file() and result_file.name == "result.json"
        assert entry["label"] == labels["labels"][name]
        assert 0.0 <= entry["label"] <= 100.0
    noise = summary["labels"]["noise"]
    assert len(noise["evaluations"]) == 3 and noise["std"] is not None
    assert noise["label_spread_std"] >= 0.0
    assert set(labels["n_runs"].values()) == {1}  # every label one evaluation; the repeats
    assert all(Path(p).is_file() for p in noise["results"])  # lie beside, not collected
    comparison = summary["comparison"]
    methods = comparison["methods"]
    assert {"selector", "random", "full"} <= set(methods)
    assert methods["random"]["runs"] == 2 and methods["random"]["ci95"] is not None
    assert methods["selector"]["vs_random"]["mean"] is not None
    assert methods["full"]["samples"] == 60 and methods["full"]["planted_bad_kept"] == [
        summary["planted_bad"]]
    assert comparison["noise"]["std"] is not None  # every run evaluated twice
    assert comparison["verdict"].startswith(("YES", "NO"))
    assert comparison["verdict"] in result.stdout and "vs random [95% CI]" in result.stdout
    assert set(summary["seconds"]) >= {"labels", "compare"} and summary["seconds_total"] > 0
    assert "seconds per stage" in result.stdout
    # a second run recomputes nothing
    again = run_cli("demo", "--out", out, *DEMO)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "] running" not in again.stderr
    assert "[labels] current, skipped" in again.stderr
    # another label setting: every subset fine-tuned again, and only the new runs collected
    before = {n: e["checkpoint"] for n, e in summary["labels"]["subsets"].items()}
    changed = run_cli("demo", "--out", out, *DEMO, "--set", "demo.label_steps=6")
    assert changed.returncode == 0, changed.stderr[-3000:]
    after = json.loads((out / "demo_summary.json").read_text())["labels"]["subsets"]
    assert all(after[n]["checkpoint"] != before[n] for n in before)
    assert set(json.loads((out / "labels.json").read_text())["n_runs"].values()) == {1}
    # the number of processes changes no result: nothing reruns
    workers = run_cli("demo", "--out", out, *DEMO, "--set", "demo.label_steps=6",
                      "--set", "demo.workers=1")
    assert workers.returncode == 0 and "] running" not in workers.stderr, workers.stderr[-2000:]


def test_demo_conversations_kind_splits_fine_tunes_and_judges(tmp_path):
    """``igpt4 demo --kind conversations`` shortened: the generated multi-round pool is split
    into conversation subsets trained with the llava_conversations builder, labelled by their
    fine-tunes, and every compared pick's multi-round answers are judged through igpt4 eval
    judge's code against the toy judge on 127.0.0.1."""
    from omegaconf import OmegaConf

    out = tmp_path / "demo"
    result = run_cli("demo", "--kind", "conversations", "--out", out, "--samples", "48",
                     "--set", "split.k=4", "--set", "select.num_samples=12",
                     "--set", "selector.training.epochs=10",
                     "--set", "selector.selection.n_clusters=3", "--set", "demo.vqa_drawings=20",
                     "--set", "demo.label_steps=3", "--set", "demo.noise_repeats=1",
                     "--set", "compare.seeds=2", "--set", "compare.steps=3",
                     "--set", "compare.methods=[selector,random]", "--set", "compare.full=false")
    assert result.returncode == 0, result.stderr[-3000:]
    subset = out / "subsets" / "00"
    assert (subset / "conversations" / "conversations.json").is_file()
    config = OmegaConf.load(subset / "finetune.yaml")
    assert list(config.datasets) == ["llava_conversations"]
    assert config.datasets.llava_conversations.build_info.storage == str(
        subset / "conversations" / "conversations.json")
    summary = json.loads((out / "demo_summary.json").read_text())
    assert len(summary["labels"]["subsets"]) == 4
    assert summary["selection"].endswith("conversations.json")
    judged = summary["comparison"]["judge"]
    assert set(judged["methods"]) == {"selector", "random"}
    assert all(isinstance(v, float) for v in judged["runs"].values()) and len(judged["runs"]) == 3
    assert "TOY scripted judge" in result.stdout and "127.0.0.1" in result.stdout
    reviews = list((out / "compare").glob("*/*/judge/reviews.jsonl"))
    assert len(reviews) == 3


@pytest.mark.parametrize("extra, fragment", [
    (["--set", "split.k=80"], "demo.samples / split.k = 240 / 80: 3 samples per subset, less "
                              "than one fine-tune batch of 8"),
    (["--set", "select.num_samples=5"], "select.num_samples: 5 samples per compared pick"),
    (["--set", "compare.methods=[selector,bogus]"], "compare.methods: unknown selection method"),
    (["--labels", "oracle", "--kind", "conversations"], "--labels oracle --kind conversations"),
])
def test_demo_refuses_settings_its_fine_tunes_cannot_run_before_any_work(tmp_path, extra,
                                                                        fragment):
    from tests.conftest import assert_one_line_error

    result = run_cli("demo", "--out", tmp_path / "d", "--samples", "240", *extra)
    assert_one_line_error(result, fragment)
    assert not (tmp_path / "d").exists()


def test_a_recipe_without_generate_cannot_ask_for_toy_fine_tunes(tmp_path):
    from tests.conftest import assert_one_line_error

    from selector.app.toy.world import make_toy_pool

    make_toy_pool(tmp_path / "data", n=4)
    result = run_cli("run", "--config", "instructiongpt4.yaml", "--set",
                     f"pipeline.work={tmp_path / 'w'}", "--set", "labels.source=toy_finetune",
                     "--set", f"pipeline.data={tmp_path / 'data'}")
    assert_one_line_error(result, "the recipe needs the generate stage")


@pytest.mark.parametrize("damage", ["truncate", "no report", "not json"])
def test_a_damaged_stage1_cache_entry_is_rebuilt_not_trusted(tmp_path, damage):
    from selector.app.toy.minigpt4 import stage1_model

    training = {"drawings": 20, "vision_steps": 1, "vision_batch": 4, "steps": 1,
                "batch_size": 4, "caption_share": 0.5, "lr": 1e-3}
    first = stage1_model(0, cache=tmp_path, training=training, progress=False)
    manifest = first.folder / "stage1.json"
    if damage == "truncate":
        first.checkpoint.write_bytes(first.checkpoint.read_bytes()[:100])
    elif damage == "no report":
        document = json.loads(manifest.read_text())
        del document["report"]
        manifest.write_text(json.dumps(document))
    else:
        manifest.write_text("{not json")
    again = stage1_model(0, cache=tmp_path, training=training, progress=False)
    assert again.folder == first.folder and isinstance(again.report, dict)
    import torch

    assert torch.load(again.checkpoint, weights_only=True)["stage"] == 1


@pytest.mark.parametrize("versus, starts", [
    ({"mean": 3.0, "ci95": [1.0, 5.0], "significant": True, "exceeds_noise": True}, "YES"),
    ({"mean": 3.0, "ci95": [1.0, 5.0], "significant": True, "exceeds_noise": False},
     "NO: the selector's pick did not beat random in this toy world: the difference is within "
     "the evaluation noise"),
    ({"mean": 3.0, "ci95": [-1.0, 7.0], "significant": False, "exceeds_noise": True},
     "NO: the selector's pick did not beat random in this toy world: the difference is within "
     "the seeds' spread"),
    ({"mean": -3.0, "ci95": [-5.0, -1.0], "significant": True, "exceeds_noise": True},
     "NO: the selector's pick did worse than random"),
    ({"mean": 20.0, "ci95": None, "significant": None, "exceeds_noise": None},
     "no answer: one seed of random gives no interval"),
])
def test_the_verdict_says_only_what_its_numbers_support(versus, starts):
    from selector.app.demo import verdict

    assert verdict({"selector": {"vs_random": versus}}).startswith(starts)
    assert verdict({}).startswith("no answer")
