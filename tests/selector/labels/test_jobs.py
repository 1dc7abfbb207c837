"""selector.labels.jobs: each subset's cc_sbu_align folder and fine-tune config, launch.sh and the
Slurm array script."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from conftest import fake_launch_env, make_cc_sbu_align
from selector.core.errors import InputError
from selector.data.samples import read_cc_sbu_align
from selector.labels.jobs import ARENA_DATASETS, TRAINED_MARKER, SplitLayout, write_subsets
from selector.scoring.pool import read_subsets

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



def make_split_data(root: Path) -> Path:
    """A cc_sbu_align folder of 24 samples (ids 2..25) under ``root``."""
    captions = {str(i): f"caption number {i}." for i in range(2, 26)}
    return make_cc_sbu_align(root / "cc_sbu_align", captions)


def write_template(root: Path) -> Path:
    """A MiniGPT-4 stage-2 train config (TEMPLATE) under ``root``."""
    path = root / "template.yaml"
    path.write_text(TEMPLATE, encoding="utf-8")
    return path


@pytest.fixture
def data_dir(tmp_path):
    return make_split_data(tmp_path)


@pytest.fixture
def template(tmp_path):
    return write_template(tmp_path)


def three_subsets(data_dir):
    ids = read_cc_sbu_align(data_dir).ids
    return {"00": ids[16:], "01": [ids[5], ids[0], ids[7]] + ids[8:11], "02": ids[1:5] + [ids[6]]
            + ids[11:16]}


def export(subsets, data_dir, out_dir, template=None, slurm=False) -> SplitLayout:
    """write_subsets with the settings of a plain ``igpt4 split``: image links, no Slurm script
    unless asked, launch.sh evaluating the Arena's four datasets."""
    return write_subsets(subsets, data_dir, out_dir, template, "link", slurm, ARENA_DATASETS,
                         progress=False)


def test_write_subsets_folders_and_configs(tmp_path, data_dir, template):
    from omegaconf import OmegaConf

    subsets = three_subsets(data_dir)
    layout = export(subsets, data_dir, tmp_path / "split", template)
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
    layout = export(subsets, data_dir, tmp_path / "split", template, slurm=True)
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
    # the datasets launch.sh evaluates are the labels the pipeline collects by default: the code's
    # list and base.yaml's labels.datasets must not drift apart
    from selector.core.settings import config_dir, load_yaml

    base = load_yaml(config_dir() / "pipeline" / "base.yaml")
    assert list(base.labels.datasets) == list(ARENA_DATASETS)


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
    layout = export(three_subsets(data_dir), data_dir, tmp_path / "split", template)
    env = fake_launch_env(tmp_path, FAKE_TORCHRUN, FAKE_IGPT4)
    bin_dir = tmp_path / "bin"
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
    layout = export(three_subsets(data_dir), data_dir, tmp_path / "split")
    config = OmegaConf.load(layout.jobs[0].config)
    assert config.datasets.cc_sbu_align.build_info.storage == str(layout.jobs[0].data)
    assert config.run.output_dir == str(layout.jobs[0].output)
    assert config.model == OmegaConf.load(shipped).model


def test_export_refuses_bad_input(tmp_path, data_dir, template):
    subsets = three_subsets(data_dir)
    lacking = tmp_path / "lacking.yaml"
    lacking.write_text("model: {arch: minigpt4}\ndatasets: {laion: {}}\nrun: {output_dir: o}\n")
    with pytest.raises(InputError, match="lacks a 'datasets.cc_sbu_align' section"):
        export(subsets, data_dir, tmp_path / "a", lacking)
    with pytest.raises(InputError, match="nope.yaml: fine-tune template not found"):
        export(subsets, data_dir, tmp_path / "a", tmp_path / "nope.yaml")
    with pytest.raises(InputError, match="subset '01' needs sample '999': no such image_id"):
        export({**subsets, "01": ["999"]}, data_dir, tmp_path / "a", template)
    with pytest.raises(InputError, match="sample '4' is in subset '02' and again in '03'"):
        export({**subsets, "03": ["4"]}, data_dir, tmp_path / "a", template)
    with pytest.raises(InputError, match="cannot be a folder name"):
        export({"../x": subsets["00"]}, data_dir, tmp_path / "a", template)
    (data_dir / "image" / "3.jpg").write_bytes(b"")  # sample 3 is in subset 02
    with pytest.raises(InputError, match="subset '02' needs sample '3': image .* is empty"):
        export(subsets, data_dir, tmp_path / "a", template)


def test_export_into_an_existing_split(tmp_path, data_dir, template):
    subsets = three_subsets(data_dir)
    export(subsets, data_dir, tmp_path / "split", template)
    export(subsets, data_dir, tmp_path / "split", template)  # same: fine
    swapped = {"00": subsets["01"], "01": subsets["00"], "02": subsets["02"]}
    with pytest.raises(InputError, match="already holds a different split"):
        export(swapped, data_dir, tmp_path / "split", template)

