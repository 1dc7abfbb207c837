"""Each subset made ready to fine-tune and evaluate: its ``cc_sbu_align`` data folder, its
MiniGPT-4 fine-tune config, and a resumable ``launch.sh`` (optionally a Slurm array script) that
fine-tunes and evaluates every subset.

Between :mod:`selector.labels.split` (which subsets) and :mod:`selector.labels.collect` (their
evaluation results -> labels). The released subsets (``cluster/kmeans++/modified.json``) are read
by :func:`selector.scoring.pool.read_subsets`, not here.
"""
from __future__ import annotations

import copy
import os
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Union

from selector.core.atomic import atomic_open, write_text
from selector.core.errors import InputError
from selector.core.jsonio import PathLike, write_json
from selector.labels.split import Subsets

if TYPE_CHECKING:
    from selector.data.samples import DataPool

#: the Arena datasets ``igpt4 split``'s launch.sh evaluates every subset on (the paper's four); the
#: same list as ``labels.datasets`` in configs/pipeline/base.yaml (a test keeps the two equal)
ARENA_DATASETS = ("gqa", "iconqa", "okvqa", "scienceqa")
DEFAULT_TEMPLATE = "minigpt4/subset_finetune.yaml"  # shipped in configs/ (package igpt4_configs)
SUBSETS_FILE = "subsets.json"
SPLIT_MANIFEST = "split.json"
LAUNCHER = "launch.sh"
SLURM_SCRIPT = "slurm_array.sh"
TRAINED_MARKER = ".igpt4_trained"  # launch.sh's note that a subset's fine-tune exited 0
EVAL_RUN_FILE = ".igpt4_eval_run"  # launch.sh's checkpoint + eval run name, to resume evaluations


@dataclass
class SubsetJob:
    """Where one subset's data, config, checkpoints and evaluation answers live (absolute).
    ``data_dir``: a cc_sbu_align folder elsewhere (``igpt4 study``'s selections, its full-data
    run) instead of ``folder/cc_sbu_align``."""

    name: str
    folder: Path
    size: int = 0
    data_dir: Optional[Path] = None

    @property
    def data(self) -> Path:
        return self.data_dir if self.data_dir is not None else self.folder / "cc_sbu_align"

    @property
    def config(self) -> Path:
        return self.folder / "finetune.yaml"

    @property
    def output(self) -> Path:
        return self.folder / "output"

    @property
    def answers(self) -> Path:
        return self.folder / "answers"


@dataclass(frozen=True)
class LaunchWords:
    """What a launcher calls itself and its jobs: ``igpt4 split``'s subsets by default, and what
    to run when every job is done (``after``: the header's note, ``done``: the last line's)."""

    command: str = "split"
    unit: str = "subset"
    after: Optional[str] = None  # None: `igpt4 labels collect OUT --out LABELS`
    done: Optional[str] = None


@dataclass
class SplitLayout:
    out_dir: Path
    jobs: List[SubsetJob]
    subsets_file: Path
    launcher: Path
    slurm: Optional[Path] = None


_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\Z")


def _check_subset_name(name: str) -> None:
    """Subset names become folder names and words of launch.sh: keep them plain."""
    if not _PLAIN_NAME.match(name):
        raise InputError(f"subset name {name!r} cannot be a folder name (letters, digits, '.', "
                         "'_' and '-' only)")


def resolve_template(template: Optional[PathLike]) -> Path:
    """A template path, or a shipped config name (default ``minigpt4/subset_finetune.yaml``)."""
    from selector.core.settings import config_dir

    if template is None:
        path = config_dir() / DEFAULT_TEMPLATE
        if not path.is_file():
            raise InputError(f"the shipped fine-tune template configs/{DEFAULT_TEMPLATE} is not "
                             "installed; pass --template YAML (a MiniGPT-4 stage-2 train config)")
        return path
    path = Path(template)
    if path.is_file():
        return path
    shipped = config_dir() / str(template)
    if shipped.is_file():
        return shipped
    raise InputError(f"{template}: fine-tune template not found")


def load_template(path: PathLike):
    """The MiniGPT-4 train config to copy per subset; it must train on ``cc_sbu_align``."""
    from omegaconf import DictConfig, OmegaConf

    from selector.core.settings import load_yaml

    config = load_yaml(Path(path))  # malformed YAML: one line with the file and line
    for key, why in (("model", "the model to fine-tune"),
                     ("datasets.cc_sbu_align", "the stage-2 data whose storage is set per subset"),
                     ("run", "the runner settings, where output_dir is set per subset")):
        if not isinstance(OmegaConf.select(config, key, default=None), DictConfig):
            raise InputError(f"{path}: template lacks a {key!r} section ({why})")
    return config


def subset_config(template, job: SubsetJob):
    """The template with this subset's data folder and output folder; everything else kept."""
    from omegaconf import OmegaConf

    config = copy.deepcopy(template)
    OmegaConf.update(config, "datasets.cc_sbu_align.build_info.storage", str(job.data), merge=True)
    OmegaConf.update(config, "run.output_dir", str(job.output), merge=True)
    return config


def point_at_conversations(config: Any, storage: Path, image_root: Path) -> None:
    """The template's dataset as ``llava_conversations`` over ``storage`` (as the pipeline's
    train_config stage does for a conversation pool): every conversation of it, no selector."""
    from omegaconf import OmegaConf

    datasets = config.datasets
    dataset = datasets.pop(next(iter(datasets)))
    dataset.build_info = {"storage": str(storage), "image_root": str(image_root)}
    datasets["llava_conversations"] = dataset
    OmegaConf.set_struct(config, False)


def _same_split(path: Path, subsets: Subsets) -> bool:
    from selector.scoring.pool import read_subsets

    return read_subsets(path) == {name: list(members) for name, members in subsets.items()}


def _read_data(data: Union[PathLike, "DataPool"], image_root: Optional[PathLike] = None
               ) -> "DataPool":
    from selector.data.samples import DataPool, read_cc_sbu_align, read_pool

    if isinstance(data, DataPool):
        return data
    if Path(data).is_file():  # a conversation JSON
        return read_pool(data, image_root, skip_invalid=True, check_images=False)
    # invalid samples outside the subsets must not stop the export: skip, and complain only
    # when a subset needs one of them
    return read_cc_sbu_align(data, skip_invalid=True)


def write_subsets(subsets: Subsets, data: Union[PathLike, "DataPool"], out_dir: PathLike,
                  template: Optional[PathLike], image_mode: str, slurm: bool,
                  datasets: Sequence[str], settings: Optional[Dict[str, Any]] = None,
                  progress: bool = True, image_root: Optional[PathLike] = None) -> SplitLayout:
    """Write everything needed to fine-tune and evaluate each subset.

    ``OUT/<name>/cc_sbu_align/`` (filter_cap.json in data-file order + image/ links),
    ``OUT/<name>/finetune.yaml`` (the template with ``datasets.cc_sbu_align.build_info.storage``
    and ``run.output_dir`` set to absolute paths), ``OUT/subsets.json``, ``OUT/split.json`` (how
    the split was made), ``OUT/launch.sh`` and, with ``slurm``, ``OUT/slurm_array.sh``.
    ``template`` None is the shipped one; ``image_mode`` is ``link`` or ``copy``; launch.sh
    evaluates each subset on ``datasets``.

    ``data`` is a cc_sbu_align folder, a conversation JSON (with ``image_root``: each subset is
    then ``OUT/<name>/conversations/`` -- conversations.json + image/ links -- trained with the
    ``llava_conversations`` builder) or a :class:`selector.data.samples.DataPool`. Writing again
    into the same OUT with the same subsets is harmless (links and configs are rewritten, answers
    are kept); a *different* split into an OUT that already has one is refused, so that answers of
    old subsets can never be collected as labels of new ones.
    """
    from omegaconf import OmegaConf
    from tqdm.auto import tqdm

    from selector.data.samples import write_cc_sbu_align, write_conversation_folder

    out_dir = Path(os.path.abspath(out_dir))
    if not subsets:
        raise InputError("split: no subsets to write")
    placed: Dict[str, str] = {}
    for name, members in subsets.items():
        _check_subset_name(str(name))
        for sample_id in members:
            if sample_id in placed:
                raise InputError(f"split: sample {sample_id!r} is in subset {placed[sample_id]!r} "
                                 f"and again in {name!r}")
            placed[sample_id] = name
    existing = out_dir / SUBSETS_FILE
    if existing.is_file() and not _same_split(existing, subsets):
        raise InputError(f"{existing}: {out_dir} already holds a different split; write the new "
                         "one to another --out (its answers would be mixed up)")
    template_path = resolve_template(template)
    base = load_template(template_path)
    pool = _read_data(data, image_root)
    from selector.data.samples import CONVERSATIONS

    conversations = pool.kind == CONVERSATIONS
    index = {sample_id: position for position, sample_id in enumerate(pool.ids)}
    jobs = [SubsetJob(str(name), out_dir / str(name), len(subsets[name]),
                      data_dir=out_dir / str(name) / "conversations" if conversations else None)
            for name in subsets]
    for job in jobs:
        for sample_id in subsets[job.name]:
            if sample_id not in index:
                why = next((s.reason for s in pool.skipped
                            if f"(image_id {sample_id!r})" in s.sample), "no such image_id")
                raise InputError(f"{pool.source}: subset {job.name!r} needs sample {sample_id!r}: "
                                 f"{why}")
    for job in tqdm(jobs, desc="subset folders", unit="subset", disable=not progress):
        # data-file order, as the original image2cap.py wrote it
        members = sorted(subsets[job.name], key=index.__getitem__)
        if conversations:
            write_conversation_folder(pool.subset(members).samples, job.data, image_mode)
        else:
            write_cc_sbu_align(pool.subset(members).samples, job.data, image_mode)
        job.output.mkdir(parents=True, exist_ok=True)
        config = subset_config(base, job)
        if conversations:
            point_at_conversations(config, job.data / "conversations.json", job.data)
        with atomic_open(job.config) as handle:
            OmegaConf.save(config, handle)
    write_json(existing, {job.name: list(subsets[job.name]) for job in jobs})
    manifest = {"template": str(template_path.resolve()),
                "data": str((pool.source if conversations else pool.source.parent).resolve()),
                "subsets": len(jobs), "sizes": {job.name: len(subsets[job.name]) for job in jobs},
                "datasets": list(datasets), **(settings or {})}
    write_json(out_dir / SPLIT_MANIFEST, manifest)
    launcher = write_launcher(out_dir, jobs, datasets)
    layout = SplitLayout(out_dir, jobs, existing, launcher)
    if slurm:
        layout.slurm = write_slurm_array(out_dir, jobs, launcher)
    return layout


_LAUNCH_HEAD = """#!/usr/bin/env bash
# Written by `igpt4 {command}`: fine-tune MiniGPT-4 on each {unit}, then evaluate it with the
# Arena-compatible `igpt4 eval`; afterwards {after}.
#
#   MINIGPT4_DIR=/path/to/MiniGPT-4 ARENA_DATA=/path/to/arena/data [NPROC=8] bash {launcher} [{upper}...]
#
# Resumable: a {unit} whose answers/ holds a result.json with every dataset is skipped, and a
# {unit} whose fine-tune finished (output/{marker}) is only evaluated. Without {upper}
# arguments every {unit} runs in turn; a failing {unit} is reported and the next one runs.
# TORCHRUN_ARGS adds torchrun options (e.g. --standalone for several jobs on one node); IGPT4
# names the igpt4 executable.
set -uo pipefail
shopt -s nullglob
: "${{MINIGPT4_DIR:?set MINIGPT4_DIR to the MiniGPT-4 checkout that has train.py}}"
: "${{ARENA_DATA:?set ARENA_DATA to the evaluation data root (gqa, iconqa, okvqa, scienceqa)}}"

DATASETS=({dataset_words})

has_result() {{  # $1: answers folder (Arena layout {{model}}/{{time}}/result.json)
  # done when one result.json names every dataset: igpt4 eval rewrites it after each dataset,
  # so a killed evaluation leaves a partial one behind
  local found name
  for found in "$1"/*/*/result.json; do
    for name in "${{DATASETS[@]}}"; do
      grep -qi "\"$name\"" "$found" || continue 2
    done
    return 0
  done
  return 1
}}

eval_run_name() {{  # $1: answers folder, $2: checkpoint
  # the same run folder for the same checkpoint, so that igpt4 eval resumes a killed evaluation
  # instead of starting over; a new checkpoint gets a new run (named by time, as the Arena's)
  local file="$1/{run_file}" name=
  if [ -f "$file" ] && [ "$(sed -n 1p "$file")" = "$2" ]; then name=$(sed -n 2p "$file"); fi
  if [ -z "$name" ]; then
    name=$(date +%Y%m%d%H%M%S)
    mkdir -p "$1" && printf '%s\n%s\n' "$2" "$name" > "$file" || return 1
  fi
  printf '%s\n' "$name"
}}

newest_checkpoint() {{  # $1: run.output_dir
  # MiniGPT-4's runner writes <output_dir>/<job id>/checkpoint_<epoch>.pth (_save_checkpoint);
  # job ids are timestamps (%Y%m%d%H%M minus the last digit), so the glob's order is time order:
  # take the newest job folder holding a checkpoint, and in it checkpoint_best.pth or the last epoch
  local jobs=("$1"/*/) i path epoch top found
  for (( i=${{#jobs[@]}}-1; i>=0; i-- )); do
    if [ -f "${{jobs[i]}}checkpoint_best.pth" ]; then
      printf '%s\\n' "${{jobs[i]}}checkpoint_best.pth"; return 0
    fi
    top=-1; found=
    for path in "${{jobs[i]}}"checkpoint_*.pth; do
      epoch=${{path##*/checkpoint_}}; epoch=${{epoch%.pth}}
      case $epoch in ''|*[!0-9]*) continue ;; esac
      if (( 10#$epoch > top )); then top=$((10#$epoch)); found=$path; fi
    done
    if [ -n "$found" ]; then printf '%s\\n' "$found"; return 0; fi
  done
  return 1
}}
"""

_LAUNCH_SUBSET = """
{unit}_{index}() {{  # {unit} {name}: {size} samples
  local answers={answers} output={output} ckpt run
  if has_result "$answers"; then
    echo "[igpt4] {unit} {name}: evaluated ($answers), skipped"; return 0
  fi
  if [ ! -f "$output/{marker}" ]; then
    echo "[igpt4] {unit} {name}: fine-tuning"
    ( cd "$MINIGPT4_DIR" && torchrun --nproc_per_node ${{NPROC:-1}} ${{TORCHRUN_ARGS:-}} train.py --cfg-path {config} ) || return 1
    touch "$output/{marker}" || return 1
  fi
  if ! ckpt=$(newest_checkpoint "$output"); then
    echo "[igpt4] {unit} {name}: no checkpoint_*.pth under $output/*/" >&2; return 1
  fi
  run=$(eval_run_name "$answers" "$ckpt") || return 1
  echo "[igpt4] {unit} {name}: evaluating $ckpt (run $run)"
  ${{IGPT4:-igpt4}} eval --tester minigpt4 --tester-arg cfg_path={config} --tester-arg ckpt="$ckpt" --datasets {datasets} --data-root "$ARENA_DATA" --split val --out {answers} --run-name "$run" || return 1
}}
"""

_LAUNCH_TAIL = """
ALL=({names})
[ $# -gt 0 ] || set -- "${{ALL[@]}}"
failed=()
for name in "$@"; do
  case $name in
{cases}
    *) echo "[igpt4] unknown {unit} $name (have: ${{ALL[*]}})" >&2; exit 2 ;;
  esac
done
if [ ${{#failed[@]}} -gt 0 ]; then
  echo "[igpt4] failed {unit}s: ${{failed[*]}}" >&2; exit 1
fi
echo "[igpt4] done; {done}"
"""


def launcher_text(out_dir: Path, jobs: Sequence[SubsetJob], datasets: Sequence[str],
                  words: LaunchWords = LaunchWords()) -> str:
    q = shlex.quote
    labels = q(str(out_dir.parent / "labels.json"))  # beside the split: never inside an input
    after = words.after or f"`igpt4 labels collect {q(str(out_dir))} --out {labels}`"
    done = words.done or (f"collect the labels: ${{IGPT4:-igpt4}} labels collect "
                          f"{q(str(out_dir))} --out {labels}")
    unit = words.unit
    parts = [_LAUNCH_HEAD.format(launcher=q(str(out_dir / LAUNCHER)), command=words.command,
                                 unit=unit, upper=unit.upper(), after=after,
                                 marker=TRAINED_MARKER, run_file=EVAL_RUN_FILE,
                                 dataset_words=" ".join(q(d.lower()) for d in datasets))]
    for index, job in enumerate(jobs):
        parts.append(_LAUNCH_SUBSET.format(
            index=index, name=job.name, size=job.size, unit=unit,
            answers=q(str(job.answers)), output=q(str(job.output)), config=q(str(job.config)),
            marker=TRAINED_MARKER, datasets=q(",".join(datasets))))
    cases = "\n".join(f"    {q(job.name)}) {unit}_{index} || failed+=({q(job.name)}) ;;"
                      for index, job in enumerate(jobs))
    parts.append(_LAUNCH_TAIL.format(names=" ".join(q(job.name) for job in jobs), cases=cases,
                                     unit=unit, done=done))
    return "".join(parts)


def _write_script(path: Path, text: str) -> Path:
    return write_text(path, text, permissions=0o755)


def write_launcher(out_dir: Path, jobs: Sequence[SubsetJob], datasets: Sequence[str],
                   words: LaunchWords = LaunchWords()) -> Path:
    return _write_script(out_dir / LAUNCHER, launcher_text(out_dir, jobs, datasets, words))


def write_slurm_array(out_dir: Path, jobs: Sequence[SubsetJob], launcher: Path,
                      words: LaunchWords = LaunchWords()) -> Path:
    """One array task per subset, each running ``launch.sh <subset>`` (GPU and partition options
    belong on the ``sbatch`` command line: they differ between clusters)."""
    q = shlex.quote
    (out_dir / "logs").mkdir(parents=True, exist_ok=True)
    text = f"""#!/usr/bin/env bash
#SBATCH --job-name=igpt4-{words.unit}s
#SBATCH --array=0-{len(jobs) - 1}
#SBATCH --output={out_dir}/logs/%A_%a.out
# Written by `igpt4 {words.command}`. One task per {words.unit}; add your cluster's options, e.g.
#   sbatch --gres=gpu:4 --export=ALL,NPROC=4,MINIGPT4_DIR=...,ARENA_DATA=... {q(str(out_dir / SLURM_SCRIPT))}
set -euo pipefail
SUBSETS=({" ".join(q(job.name) for job in jobs)})
# several array tasks may share a node: let torchrun pick a free rendezvous port
export TORCHRUN_ARGS="${{TORCHRUN_ARGS:---standalone}}"
exec bash {q(str(launcher))} "${{SUBSETS[$SLURM_ARRAY_TASK_ID]}}"
"""
    return _write_script(out_dir / SLURM_SCRIPT, text)
