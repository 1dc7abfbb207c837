"""selector.subsets: balanced k-means++ split, subset export + launcher, label collection."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from conftest import make_cc_sbu_align
from selector.data.samples import read_cc_sbu_align
from selector.core.errors import InputError
from selector.scoring.pool import FeaturePool, read_labels, read_subsets
from selector.labels.commands import labels_collect_command, split_command
from selector.labels.subsets import (TRAINED_MARKER, balance_clusters, balanced_kmeans_subsets,
                              collect_labels, kmeans_clusters, subset_quotas, write_subsets)

ARENA_NAMES = {"gqa": "GQA", "iconqa": "IconQA", "okvqa": "OKVQA", "scienceqa": "ScienceQA"}


def blobs(sizes, dim=4, seed=0, spread=0.05):
    """Well-separated Gaussian blobs of the given sizes, rows shuffled: (ids, X, true label)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(len(sizes), dim)) * 20
    truth = np.repeat(np.arange(len(sizes)), sizes)
    rng.shuffle(truth)
    X = centres[truth] + rng.normal(scale=spread, size=(len(truth), dim))
    return [str(100 + i) for i in range(len(truth))], X, truth


def assert_partition(subsets, ids):
    members = [i for m in subsets.values() for i in m]
    assert sorted(members) == sorted(ids) and len(members) == len(set(members))


# ---------------------------------------------------------------------------------------------
# split
# ---------------------------------------------------------------------------------------------

def test_kmeans_finds_planted_clusters_and_balancing_moves_leading_members():
    sizes = [40, 25, 15, 10, 5]  # N = 95, k = 5 -> 19 each
    ids, X, truth = blobs(sizes)
    raw = kmeans_clusters(ids, X, k=5, seed=0)
    truth_of = dict(zip(ids, truth))
    # every k-means cluster is exactly one planted blob
    assert sorted(len(m) for m in raw.values()) == sorted(sizes)
    assert all(len({truth_of[i] for i in m}) == 1 for m in raw.values())
    subsets = balanced_kmeans_subsets(ids, X, k=5, seed=0)
    assert list(subsets) == ["00", "01", "02", "03", "04"]
    assert {len(m) for m in subsets.values()} == {19}
    assert_partition(subsets, ids)
    for name, members in raw.items():
        if len(members) > 19:  # donors keep their last 19 members in pool order
            assert subsets[name] == members[-19:]
        else:  # receivers keep all of theirs, first, and only gain
            assert subsets[name][:len(members)] == members


@pytest.mark.parametrize("n,k", [(103, 10), (3439 // 10, 30), (31, 30), (60, 30), (7, 1)])
def test_sizes_differ_by_at_most_one_and_no_id_is_lost(n, k):
    rng = np.random.default_rng(n)
    ids = [f"s{i}" for i in range(n)]
    subsets = balanced_kmeans_subsets(ids, rng.normal(size=(n, 3)), k=k, seed=1)
    sizes = Counter(len(m) for m in subsets.values())
    assert len(subsets) == k
    assert set(sizes) <= {n // k, n // k + 1} and sizes.get(n // k + 1, 0) == n % k
    assert_partition(subsets, ids)


def test_extra_places_go_to_the_largest_clusters_and_the_walk_is_the_originals():
    clusters = {"A": list("abc"), "B": list("defghijq"), "C": list("k"), "D": list("lmnop")}
    # 17 samples in 4 subsets: 4 each, the one extra place to the largest cluster B
    assert subset_quotas(clusters) == {"A": 4, "B": 5, "C": 4, "D": 4}
    assert subset_quotas(clusters, drop_remainder=True) == {"A": 4, "B": 4, "C": 4, "D": 4}
    # worked by hand from average.py's loops: B gives its first member to A and the next two to
    # C; D gives its first member to C
    assert balance_clusters(clusters) == {"A": list("abcd"), "B": list("ghijq"),
                                          "C": list("kefl"), "D": list("mnop")}
    # the original's fixed size and final cut: B gives d to A, e, f, g to C, keeps h i j q
    assert balance_clusters(clusters, drop_remainder=True) == {
        "A": list("abcd"), "B": list("hijq"), "C": list("kefg"), "D": list("lmno")}


def test_deterministic_for_a_seed():
    ids, X, _ = blobs([30, 30, 30, 30], spread=8.0, seed=3)  # overlapping: k-means has choices
    first = balanced_kmeans_subsets(ids, X, k=6, seed=7)
    assert balanced_kmeans_subsets(ids, X, k=6, seed=7) == first
    assert balanced_kmeans_subsets(list(ids), X.astype(np.float32).astype(np.float64),
                                   k=6, seed=7) == first


@pytest.mark.parametrize("ids,X,k,message", [
    (["1", "2", "3"], np.zeros((3, 2)), 4, "cannot split 3 samples into 4"),
    (["1", "2", "1"], np.zeros((3, 2)), 2, "duplicate sample id '1'"),
    (["1", "2", "3"], np.array([[0, 1], [np.nan, 0], [1, 1]]), 2, "sample '2' has a NaN"),
    (["1", "2"], np.zeros((3, 2)), 2, r"expected \(2, d\)"),
    (["1", "2"], np.zeros((2, 2)), 0, "cannot split 2 samples into 0"),
])
def test_bad_split_input(ids, X, k, message):
    with pytest.raises(InputError, match=message):
        balanced_kmeans_subsets(ids, X, k=k)


def test_reference_balancing_reproduces_released_modified_json(reference_dir):
    """The released modified.json is the original average.py applied to clustering_results.json:
    ``drop_remainder=True`` must give it back exactly (keys, members and their order)."""
    folder = reference_dir / "cluster" / "kmeans++"
    raw = json.loads((folder / "clustering_results.json").read_text(encoding="utf-8"))
    released = json.loads((folder / "modified.json").read_text(encoding="utf-8"))
    assert balance_clusters(raw, drop_remainder=True) == released
    assert list(balance_clusters(raw, drop_remainder=True)) == list(released)
    ours = balance_clusters(raw)  # no sample dropped: 19 subsets of 115, 11 of 114
    all_ids = [i for m in raw.values() for i in m]
    assert len(all_ids) == 3439
    assert_partition(ours, all_ids)
    assert Counter(len(m) for m in ours.values()) == {115: 19, 114: 11}
    largest = sorted(raw, key=lambda n: -len(raw[n]))[:19]
    assert {n for n, m in ours.items() if len(m) == 115} == set(largest)


# ---------------------------------------------------------------------------------------------
# export
# ---------------------------------------------------------------------------------------------

TEMPLATE = """\
model:
  arch: minigpt4
  model_type: pretrain_vicuna0
  ckpt: /path/to/stage1.pth
datasets:
  cc_sbu_align:
    batch_size: 12
    build_info:
      storage: PLACEHOLDER
run:
  task: image_text_pretrain
  max_epoch: 5
  output_dir: output/minigpt4_stage2_finetune
  seed: 42
"""


@pytest.fixture
def data_dir(tmp_path):
    captions = {str(i): f"caption number {i}." for i in range(2, 26)}
    return make_cc_sbu_align(tmp_path / "cc_sbu_align", captions)


@pytest.fixture
def template(tmp_path):
    path = tmp_path / "template.yaml"
    path.write_text(TEMPLATE, encoding="utf-8")
    return path


def three_subsets(data_dir):
    ids = read_cc_sbu_align(data_dir).ids
    return {"00": ids[16:], "01": [ids[5], ids[0], ids[7]] + ids[8:11], "02": ids[1:5] + [ids[6]]
            + ids[11:16]}


def test_write_subsets_folders_and_configs(tmp_path, data_dir, template):
    from omegaconf import OmegaConf

    subsets = three_subsets(data_dir)
    layout = write_subsets(subsets, data_dir, tmp_path / "split", template, progress=False)
    out = (tmp_path / "split").resolve()
    assert read_subsets(out / "subsets.json") == subsets
    data_order = read_cc_sbu_align(data_dir).ids
    for name, members in subsets.items():
        folder = out / name / "cc_sbu_align"
        pool = read_cc_sbu_align(folder)  # a valid cc_sbu_align folder, images decode
        assert pool.ids == sorted(members, key=data_order.index)
        assert all((folder / "image" / f"{i}.jpg").is_symlink() for i in members)
        config = OmegaConf.load(out / name / "finetune.yaml")
        assert config.datasets.cc_sbu_align.build_info.storage == str(folder)
        assert config.run.output_dir == str(out / name / "output")
        original = OmegaConf.load(template)
        assert config.model == original.model and config.run.max_epoch == 5
        assert config.datasets.cc_sbu_align.batch_size == 12
    assert json.loads((out / "split.json").read_text())["sizes"] == {"00": 8, "01": 6, "02": 10}
    assert layout.slurm is None and not (out / "slurm_array.sh").exists()


def test_launch_script_syntax_and_commands(tmp_path, data_dir, template):
    subsets = three_subsets(data_dir)
    layout = write_subsets(subsets, data_dir, tmp_path / "split", template, slurm=True,
                           progress=False)
    out = layout.out_dir
    for script in (layout.launcher, layout.slurm):
        assert os.access(script, os.X_OK)
        check = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert check.returncode == 0, check.stderr
    text = layout.launcher.read_text()
    for name in subsets:
        cfg = out / name / "finetune.yaml"
        assert (f"torchrun --nproc_per_node ${{NPROC:-1}} ${{TORCHRUN_ARGS:-}} train.py "
                f"--cfg-path {cfg}") in text
        assert (f"eval --tester minigpt4 --tester-arg cfg_path={cfg} --tester-arg ckpt=\"$ckpt\" "
                f"--datasets gqa,iconqa,okvqa,scienceqa --data-root \"$ARENA_DATA\" --split val "
                f"--out {out / name / 'answers'} --run-name \"$run\"") in text
    slurm = layout.slurm.read_text()
    assert "#SBATCH --array=0-2\n" in slurm and "SUBSETS=(00 01 02)" in slurm


FAKE_TORCHRUN = """\
#!{python}
# stands in for torchrun train.py: writes checkpoints where MiniGPT-4's runner would
import sys, pathlib
from omegaconf import OmegaConf
assert pathlib.Path("train.py").is_file(), "must run from MINIGPT4_DIR"
cfg = OmegaConf.load(sys.argv[sys.argv.index("--cfg-path") + 1])
out = pathlib.Path(cfg.run.output_dir)
with open(pathlib.Path(sys.argv[0]).parent / "calls.log", "a") as log:
    log.write("train " + str(out.parent.name) + "\\n")
for job, epochs in (("202301011200", [99]), ("202406010930", range(11))):
    (out / job).mkdir(parents=True, exist_ok=True)
    for epoch in epochs:
        (out / job / f"checkpoint_{{epoch}}.pth").write_bytes(b"x")
"""

FAKE_IGPT4 = """\
#!{python}
# stands in for `igpt4 eval`: records the checkpoint, writes an Arena result.json
import sys, json, pathlib, time
args = sys.argv[1:]
answers = pathlib.Path(args[args.index("--out") + 1])
ckpt = [a for a in args if a.startswith("ckpt=")][0][5:]
run = args[args.index("--run-name") + 1]
with open(pathlib.Path(sys.argv[0]).parent / "calls.log", "a") as log:
    log.write("eval " + answers.parent.name + " " + ckpt + "\\n")
with open(answers.parent / "runs.log", "a") as log:
    log.write(run + "\\n")
folder = answers / "minigpt4" / run
folder.mkdir(parents=True, exist_ok=True)
(folder / "result.json").write_text(json.dumps({{"GQA": 0.3, "IconQA": 0.2, "OKVQA": 0.4,
                                                "ScienceQA": 0.5}}))
"""


def test_launch_script_runs_resumes_and_picks_the_newest_checkpoint(tmp_path, data_dir, template):
    layout = write_subsets(three_subsets(data_dir), data_dir, tmp_path / "split", template,
                           progress=False)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in (("torchrun", FAKE_TORCHRUN), ("igpt4", FAKE_IGPT4)):
        (bin_dir / name).write_text(body.format(python=sys.executable))
        (bin_dir / name).chmod(0o755)
    minigpt4 = tmp_path / "MiniGPT-4"
    minigpt4.mkdir()
    (minigpt4 / "train.py").write_text("")
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
           "MINIGPT4_DIR": str(minigpt4), "ARENA_DATA": str(tmp_path / "arena")}
    log = bin_dir / "calls.log"

    def launch(*subsets):
        return subprocess.run(["bash", str(layout.launcher), *subsets], env=env,
                              capture_output=True, text=True, timeout=60)

    done = launch()
    assert done.returncode == 0, done.stderr
    calls = log.read_text().splitlines()
    out = layout.out_dir
    assert calls == [line for name in ("00", "01", "02") for line in
                     (f"train {name}", f"eval {name} "
                      f"{out / name / 'output' / '202406010930' / 'checkpoint_10.pth'}")]
    assert "labels collect" in done.stdout
    # everything evaluated: a rerun does nothing
    assert launch().returncode == 0 and log.read_text().splitlines() == calls
    # a lost evaluation is redone without retraining (the fine-tune finished)
    for result in (out / "01" / "answers").glob("*/*/result.json"):
        result.unlink()
    again = launch("01")
    assert again.returncode == 0, again.stderr
    assert log.read_text().splitlines()[len(calls):] == [calls[3]]
    assert (out / "01" / "output" / TRAINED_MARKER).is_file()
    # a killed evaluation leaves a partial result.json (igpt4 eval rewrites it per dataset)
    for result in (out / "02" / "answers").glob("*/*/result.json"):
        result.write_text(json.dumps({"GQA": 0.3, "IconQA": 0.2}))
    assert launch("02").returncode == 0
    assert log.read_text().splitlines()[len(calls) + 1:] == [calls[5]]
    runs = (out / "02" / "runs.log").read_text().split()  # the same run folder: resumed
    assert len(runs) == 2 and runs[0] == runs[1] and len(runs[0]) == 14 and runs[0].isdigit()
    bad = launch("nope")
    assert bad.returncode == 2 and "unknown subset nope" in bad.stderr
    unset = subprocess.run(["bash", str(layout.launcher)], capture_output=True, text=True,
                           env={k: v for k, v in env.items() if k != "MINIGPT4_DIR"})
    assert unset.returncode != 0 and "MINIGPT4_DIR" in unset.stderr


def test_shipped_template(tmp_path, data_dir):
    from omegaconf import OmegaConf

    from selector.core.settings import config_dir

    shipped = config_dir() / "minigpt4" / "subset_finetune.yaml"
    if not shipped.is_file():
        pytest.skip(f"{shipped} is not there yet")
    layout = write_subsets(three_subsets(data_dir), data_dir, tmp_path / "split", progress=False)
    config = OmegaConf.load(layout.jobs[0].config)
    assert config.datasets.cc_sbu_align.build_info.storage == str(layout.jobs[0].data)
    assert config.run.output_dir == str(layout.jobs[0].output)
    assert config.model == OmegaConf.load(shipped).model


def test_export_refuses_bad_input(tmp_path, data_dir, template):
    subsets = three_subsets(data_dir)
    lacking = tmp_path / "lacking.yaml"
    lacking.write_text("model: {arch: minigpt4}\ndatasets: {laion: {}}\nrun: {output_dir: o}\n")
    with pytest.raises(InputError, match="lacks a 'datasets.cc_sbu_align' section"):
        write_subsets(subsets, data_dir, tmp_path / "a", lacking, progress=False)
    with pytest.raises(InputError, match="nope.yaml: fine-tune template not found"):
        write_subsets(subsets, data_dir, tmp_path / "a", tmp_path / "nope.yaml", progress=False)
    with pytest.raises(InputError, match="subset '01' needs sample '999': no such image_id"):
        write_subsets({**subsets, "01": ["999"]}, data_dir, tmp_path / "a", template,
                      progress=False)
    with pytest.raises(InputError, match="sample '4' is in subset '02' and again in '03'"):
        write_subsets({**subsets, "03": ["4"]}, data_dir, tmp_path / "a", template, progress=False)
    with pytest.raises(InputError, match="cannot be a folder name"):
        write_subsets({"../x": subsets["00"]}, data_dir, tmp_path / "a", template, progress=False)
    (data_dir / "image" / "3.jpg").write_bytes(b"")  # sample 3 is in subset 02
    with pytest.raises(InputError, match="subset '02' needs sample '3': image .* is empty"):
        write_subsets(subsets, data_dir, tmp_path / "a", template, progress=False)


def test_export_into_an_existing_split(tmp_path, data_dir, template):
    subsets = three_subsets(data_dir)
    write_subsets(subsets, data_dir, tmp_path / "split", template, progress=False)
    write_subsets(subsets, data_dir, tmp_path / "split", template, progress=False)  # same: fine
    swapped = {"00": subsets["01"], "01": subsets["00"], "02": subsets["02"]}
    with pytest.raises(InputError, match="already holds a different split"):
        write_subsets(swapped, data_dir, tmp_path / "split", template, progress=False)


def test_split_command_from_a_pool_and_from_a_subsets_file(tmp_path, data_dir, template, capsys):
    ids = read_cc_sbu_align(data_dir).ids  # 24 samples
    _, X, _ = blobs([10, 8, 4, 2], seed=5)
    rng = np.random.default_rng(0)
    pool = FeaturePool(ids, X, rng.normal(size=(24, 3)), rng.normal(size=(24, 4)),
                       ["clip", "reward", "length", "gpt"]).save(tmp_path / "pool.safetensors")
    layout = split_command(tmp_path / "split", data_dir, pool=pool, k=5, seed=0,
                           template=template, slurm=True)
    written = read_subsets(layout.subsets_file)
    assert written == balanced_kmeans_subsets(ids, X, k=5, seed=0)
    assert Counter(len(m) for m in written.values()) == {5: 4, 4: 1}
    manifest = json.loads((layout.out_dir / "split.json").read_text())
    assert manifest["k"] == 5 and manifest["dropped"] == 0 and manifest["moved_by_balancing"] > 0
    assert "#SBATCH --array=0-4" in layout.slurm.read_text()
    assert "5 subsets of 4..5 samples" in capsys.readouterr().err
    given = tmp_path / "given.json"
    given.write_text(json.dumps({"7": ids[:12], "8": ids[12:]}))
    again = split_command(tmp_path / "given", data_dir, subsets=given, template=template)
    assert [job.name for job in again.jobs] == ["7", "8"]
    assert read_cc_sbu_align(tmp_path / "given" / "8" / "cc_sbu_align").ids == ids[12:]
    with pytest.raises(InputError, match="either --pool .* or --subsets"):
        split_command(tmp_path / "x", data_dir, template=template)


# ---------------------------------------------------------------------------------------------
# labels
# ---------------------------------------------------------------------------------------------

def write_result(answers: Path, time: str, accuracies, model="minigpt4") -> Path:
    folder = answers / model / time
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "result.json"
    path.write_text(json.dumps({ARENA_NAMES.get(k, k): v for k, v in accuracies.items()}))
    return path


def test_collect_labels_from_arena_layout(tmp_path):
    rng = np.random.default_rng(0)
    datasets = list(ARENA_NAMES)
    # subset A: one run, all datasets in one result.json (our eval)
    a = dict(zip(datasets, rng.uniform(0.1, 0.6, 4)))
    write_result(tmp_path / "A" / "answers", "20240101000000", a)
    # subset B: the Arena's own eval.py, one result.json per dataset in its own time folder
    b = dict(zip(datasets, rng.uniform(0.1, 0.6, 4)))
    for n, d in enumerate(datasets):
        write_result(tmp_path / "B" / "answers", f"2024010100000{n}", {d: b[d]})
    # subset C: evaluated three times (noise estimate); an extra dataset is ignored
    c_runs = [dict(zip(datasets, rng.uniform(0.1, 0.6, 4))) for _ in range(3)]
    for n, run in enumerate(c_runs):
        write_result(tmp_path / "C" / "answers", f"2024020{n}000000", {**run, "VizWiz": 0.9})
    document = collect_labels([tmp_path], out=tmp_path / "labels.json")

    assert document["labels"]["A"] == pytest.approx(100 * np.mean(list(a.values())))
    assert document["labels"]["B"] == pytest.approx(100 * np.mean(list(b.values())))
    run_means = [100 * np.mean([r[d] for d in datasets]) for r in c_runs]
    assert document["labels"]["C"] == pytest.approx(np.mean(run_means))
    assert document["label_std"]["C"] == pytest.approx(np.std(run_means, ddof=1))
    assert document["n_runs"] == {"A": 1, "B": 1, "C": 3}
    assert document["label_std"]["A"] is None and document["label_std"]["B"] is None
    assert document["per_dataset"]["B"] == pytest.approx({d: 100 * b[d] for d in datasets})
    assert document["per_dataset_std"]["C"]["gqa"] == pytest.approx(
        np.std([100 * r["gqa"] for r in c_runs], ddof=1))
    assert len(document["runs"]["C"]["results"]) == 3
    assert read_labels(tmp_path / "labels.json") == pytest.approx(document["labels"])


def test_collect_labels_missing_datasets_and_bad_results(tmp_path):
    answers = tmp_path / "S" / "answers"
    path = write_result(answers, "20240101000000", {"gqa": 0.2, "iconqa": 0.4, "okvqa": 0.3})
    with pytest.raises(InputError, match=f"{path}: subset 'S' has no accuracy for scienceqa"):
        collect_labels([tmp_path / "S"])
    document = collect_labels([tmp_path / "S"], allow_missing=True)
    assert document["labels"]["S"] == pytest.approx(30.0)
    assert document["missing_datasets"] == {"S": ["scienceqa"]}
    assert collect_labels([answers], datasets=["gqa", "okvqa"])["labels"] == {
        "S": pytest.approx(25.0)}  # an answers folder names its subset by its parent
    path.write_text(json.dumps({"GQA": 31.5}))
    with pytest.raises(InputError, match="accuracy of 'GQA' is 31.5, outside 0..1"):
        collect_labels([tmp_path / "S"], datasets=["gqa"])
    path.write_text(json.dumps({"GQA": "high"}))
    with pytest.raises(InputError, match="accuracy of 'GQA' is not a number"):
        collect_labels([tmp_path / "S"], datasets=["gqa"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="empty: no result.json found"):
        collect_labels([tmp_path / "empty"])


def test_collect_labels_from_a_split_folder(tmp_path, data_dir, template, capsys):
    subsets = three_subsets(data_dir)
    layout = write_subsets(subsets, data_dir, tmp_path / "split", template, progress=False)
    for run, time in enumerate(("20240101000000", "20240102000000")):
        write_result(layout.out_dir / "00" / "answers", time,
                     {d: 0.30 + 0.01 * run for d in ARENA_NAMES})
    write_result(layout.out_dir / "02" / "answers", "20240101000000",
                 {d: 0.32 for d in ARENA_NAMES})
    document = labels_collect_command([layout.out_dir], tmp_path / "labels.json")
    assert document["labels"] == {"00": pytest.approx(30.5), "02": pytest.approx(32.0)}
    assert document["unevaluated"] == ["01"]
    assert document["label_std"]["00"] == pytest.approx(np.std([30.0, 31.0], ddof=1))
    err = capsys.readouterr().err
    assert "1 subsets have no result.json yet: 01" in err and "2 labels ->" in err
    assert "evaluation noise (pooled std of repeated runs) 0.707" in err
    with pytest.raises(InputError, match="subset '00' was already found"):
        collect_labels([layout.out_dir, layout.out_dir / "00"])


def test_reference_labels(reference_dir, tmp_path):
    """The original layout's labels come through unchanged, and Arena results built to average to
    the released labels are collected back to them (subset i = modified.json key str(i))."""
    released = json.loads((reference_dir / "labels.json").read_text())["subset_labels"]
    document = collect_labels([reference_dir], out=tmp_path / "labels.json")
    assert document["labels"] == {str(i): v for i, v in enumerate(released)}
    assert read_labels(tmp_path / "labels.json") == document["labels"]

    subsets = read_subsets(reference_dir / "cluster" / "kmeans++" / "modified.json")
    split = tmp_path / "split"
    split.mkdir()
    (split / "subsets.json").write_text(json.dumps(subsets))
    rng = np.random.default_rng(1)
    for name in subsets:
        offsets = rng.normal(scale=3.0, size=4)
        accuracies = (released[int(name)] + offsets - offsets.mean()) / 100
        write_result(split / name / "answers", "20240101000000",
                     dict(zip(ARENA_NAMES, accuracies)))
    collected = collect_labels([split])["labels"]
    assert list(collected) == list(subsets)
    assert [collected[str(i)] for i in range(30)] == pytest.approx(released, abs=1e-9)
