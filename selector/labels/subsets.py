"""The paper's genuine quality labels: balanced k-means++ subsets, their fine-tune jobs, and the
collection of their evaluation results.

InstructionGPT-4 learns what a good instruction sample is from a few *labelled subsets*: the pool
is split into k = 30 k-means++ clusters of CLIP image embeddings, rebalanced to equal size (so that
every label measures the same amount of fine-tuning data), MiniGPT-4 is fine-tuned on each subset
and evaluated with Multi-Modality-Arena (GQA, IconQA, OKVQA, ScienceQA); a subset's label is its
mean accuracy x 100. This module does the three steps around the GPU work:

* :func:`balanced_kmeans_subsets` / :func:`balance_clusters`: the split (original:
  ``cluster/kmeans++/kmeans_pp.py`` + ``average.py``);
* :func:`write_subsets`: one complete ``cc_sbu_align`` folder and one MiniGPT-4 fine-tune config
  per subset, plus a resumable ``launch.sh`` (and optionally a Slurm array script) that trains and
  evaluates each subset;
* :func:`collect_labels`: the Arena's ``answers/{model}/{time}/result.json`` files -> labels.json,
  in the layout :func:`selector.pool.read_labels` reads.

The released subsets and labels (``cluster/kmeans++/modified.json``, ``labels.json``) are read by
the existing readers (:func:`selector.pool.read_subsets`, :func:`selector.pool.read_labels`,
:class:`selector.reference.ReferenceRepo`), not by new ones.
"""
from __future__ import annotations

import copy
import math
import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from selector.core.atomic import atomic_open, write_text
from selector.core.errors import InputError
from selector.core.jsonio import PathLike, read_json, write_json

if TYPE_CHECKING:
    from selector.data.samples import DataPool

DEFAULT_K = 30
ARENA_DATASETS = ("gqa", "iconqa", "okvqa", "scienceqa")
DEFAULT_TEMPLATE = "minigpt4/subset_finetune.yaml"  # shipped in configs/ (package igpt4_configs)
SUBSETS_FILE = "subsets.json"
SPLIT_MANIFEST = "split.json"
LAUNCHER = "launch.sh"
SLURM_SCRIPT = "slurm_array.sh"
TRAINED_MARKER = ".igpt4_trained"  # launch.sh's note that a subset's fine-tune exited 0
EVAL_RUN_FILE = ".igpt4_eval_run"  # launch.sh's checkpoint + eval run name, to resume evaluations

Subsets = Dict[str, List[str]]


# ---------------------------------------------------------------------------------------------
# the split
# ---------------------------------------------------------------------------------------------

def subset_quotas(clusters: Subsets, drop_remainder: bool = False) -> Dict[str, int]:
    """The size every subset is balanced to.

    ``N // k`` each; with ``drop_remainder=False`` the ``N % k`` largest clusters (ties: cluster
    order) get one more, so that sizes differ by at most one and no sample is lost. Giving the
    extra place to the largest clusters moves the fewest samples.
    """
    sizes = {name: len(members) for name, members in clusters.items()}
    total, k = sum(sizes.values()), len(sizes)
    if k == 0:
        raise InputError("balance: no clusters given")
    if total < k:
        raise InputError(f"balance: {total} samples cannot fill {k} subsets")
    base, extra = divmod(total, k)
    quotas = {name: base for name in sizes}
    if not drop_remainder:
        largest = sorted(sizes, key=lambda name: -sizes[name])[:extra]  # stable: cluster order
        for name in largest:
            quotas[name] += 1
    return quotas


def balance_clusters(clusters: Subsets, drop_remainder: bool = False) -> Subsets:
    """Rebalance clusters to equal size the way the original ``cluster/kmeans++/average.py`` does.

    The original walks the clusters in order; each cluster above its size gives its *first*
    members (pool order) to the clusters below their size, again in cluster order, until it is
    down to size. Moved samples are therefore not the ones nearest the receiving cluster: that is
    the original's choice, kept so that the released ``modified.json`` is reproduced exactly from
    the released ``clustering_results.json`` (tested with ``drop_remainder=True``).

    Difference from the original: it balanced to the fixed size 114 = 3439 // 30 and cut every
    cluster still above it, which dropped the 19 samples of 3439 % 30 from all subsets. Here the
    ``N % k`` largest clusters keep one more sample (sizes 114 and 115), so every sample is in
    exactly one subset; ``drop_remainder=True`` restores the original's cut.
    """
    quotas = subset_quotas(clusters, drop_remainder)
    balanced = {name: list(members) for name, members in clusters.items()}
    for donor in balanced:
        if len(balanced[donor]) <= quotas[donor]:
            continue
        for receiver in balanced:
            room = quotas[receiver] - len(balanced[receiver])
            surplus = len(balanced[donor]) - quotas[donor]
            if room > 0 and surplus > 0:
                move = min(room, surplus)
                balanced[receiver].extend(balanced[donor][:move])
                balanced[donor] = balanced[donor][move:]
            if len(balanced[donor]) <= quotas[donor]:
                break
    for name, members in balanced.items():
        del members[quotas[name]:]  # only bites with drop_remainder (the original's cut)
    return balanced


def subset_names(k: int) -> List[str]:
    """``00`` .. ``29``: zero-padded so that folders sort in subset order."""
    width = max(2, len(str(k - 1)))
    return [f"{i:0{width}d}" for i in range(k)]


def kmeans_clusters(ids: Sequence[str], embeddings: np.ndarray, k: int = DEFAULT_K, seed: int = 0,
                    n_init: int = 10) -> Subsets:
    """Raw k-means++ clusters ``{name: [ids in pool order]}``; cluster i is named
    ``subset_names(k)[i]``.

    scikit-learn's KMeans with the original's settings (``init="k-means++"``, ``n_init=10``,
    ``random_state=seed``; the original used seed 0).
    """
    from sklearn.cluster import KMeans

    ids = [str(i) for i in ids]
    features = np.asarray(embeddings, dtype=np.float64)
    if features.ndim != 2 or features.shape[0] != len(ids):
        raise InputError(f"k-means: embeddings have shape {features.shape}, expected "
                         f"({len(ids)}, d), one row per sample id")
    if len(set(ids)) != len(ids):
        duplicate = next(i for n, i in enumerate(ids) if i in ids[:n])
        raise InputError(f"k-means: duplicate sample id {duplicate!r}")
    if not np.isfinite(features).all():
        row = int(np.flatnonzero(~np.isfinite(features).all(axis=1))[0])
        raise InputError(f"k-means: sample {ids[row]!r} has a NaN or infinite embedding")
    if not 1 <= k <= len(ids):
        raise InputError(f"k-means: cannot split {len(ids)} samples into {k} subsets")
    labels = KMeans(n_clusters=k, init="k-means++", n_init=n_init,
                    random_state=seed).fit_predict(features)
    names = subset_names(k)
    clusters: Subsets = {name: [] for name in names}
    for sample_id, label in zip(ids, labels):
        clusters[names[int(label)]].append(sample_id)
    return clusters


def balanced_kmeans_subsets(ids: Sequence[str], embeddings: np.ndarray, k: int = DEFAULT_K,
                            seed: int = 0, drop_remainder: bool = False) -> Subsets:
    """k equal-size subsets (sizes differ by at most one): k-means++ clusters of ``embeddings``,
    rebalanced by :func:`balance_clusters`. Deterministic for a seed.

    The original clustered the raw 1280-d CLIP ViT-bigG-14 image embeddings; the pool file keeps
    their pool-wide PCA (``FeaturePool.image``), which is what the CLI passes here, so the clusters
    are those of the leading principal directions of the same embeddings.
    """
    return balance_clusters(kmeans_clusters(ids, embeddings, k, seed), drop_remainder)


# ---------------------------------------------------------------------------------------------
# export: data folders, fine-tune configs, launcher
# ---------------------------------------------------------------------------------------------

@dataclass
class SubsetJob:
    """Where one subset's data, config, checkpoints and evaluation answers live (absolute)."""

    name: str
    folder: Path
    size: int = 0

    @property
    def data(self) -> Path:
        return self.folder / "cc_sbu_align"

    @property
    def config(self) -> Path:
        return self.folder / "finetune.yaml"

    @property
    def output(self) -> Path:
        return self.folder / "output"

    @property
    def answers(self) -> Path:
        return self.folder / "answers"


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


def _same_split(path: Path, subsets: Subsets) -> bool:
    from selector.scoring.pool import read_subsets

    return read_subsets(path) == {name: list(members) for name, members in subsets.items()}


def _read_data(data: Union[PathLike, "DataPool"]) -> "DataPool":
    from selector.data.samples import DataPool, read_cc_sbu_align

    if isinstance(data, DataPool):
        return data
    # invalid samples outside the subsets must not stop the export: skip, and complain only
    # when a subset needs one of them
    return read_cc_sbu_align(data, skip_invalid=True)


def write_subsets(subsets: Subsets, data: Union[PathLike, "DataPool"], out_dir: PathLike,
                  template: Optional[PathLike] = None, image_mode: str = "link",
                  slurm: bool = False, datasets: Sequence[str] = ARENA_DATASETS,
                  settings: Optional[Dict[str, Any]] = None, progress: bool = True) -> SplitLayout:
    """Write everything needed to fine-tune and evaluate each subset.

    ``OUT/<name>/cc_sbu_align/`` (filter_cap.json in data-file order + image/ links),
    ``OUT/<name>/finetune.yaml`` (the template with ``datasets.cc_sbu_align.build_info.storage``
    and ``run.output_dir`` set to absolute paths), ``OUT/subsets.json``, ``OUT/split.json`` (how
    the split was made), ``OUT/launch.sh`` and, with ``slurm``, ``OUT/slurm_array.sh``.

    ``data`` is a cc_sbu_align folder or a :class:`selector.data.DataPool`. Writing again into
    the same OUT with the same subsets is harmless (links and configs are rewritten, answers are
    kept); a *different* split into an OUT that already has one is refused, so that answers of
    old subsets can never be collected as labels of new ones.
    """
    from omegaconf import OmegaConf
    from tqdm.auto import tqdm

    from selector.data.samples import write_cc_sbu_align

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
    pool = _read_data(data)
    index = {sample_id: position for position, sample_id in enumerate(pool.ids)}
    jobs = [SubsetJob(str(name), out_dir / str(name), len(subsets[name])) for name in subsets]
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
        write_cc_sbu_align(pool.subset(members).samples, job.data, image_mode)
        job.output.mkdir(parents=True, exist_ok=True)
        config = subset_config(base, job)
        with atomic_open(job.config) as handle:
            OmegaConf.save(config, handle)
    write_json(existing, {job.name: list(subsets[job.name]) for job in jobs})
    manifest = {"template": str(template_path.resolve()),
                "data": str(pool.source.parent.resolve()),
                "subsets": len(jobs), "sizes": {job.name: len(subsets[job.name]) for job in jobs},
                "datasets": list(datasets), **(settings or {})}
    write_json(out_dir / SPLIT_MANIFEST, manifest)
    launcher = write_launcher(out_dir, jobs, datasets)
    layout = SplitLayout(out_dir, jobs, existing, launcher)
    if slurm:
        layout.slurm = write_slurm_array(out_dir, jobs, launcher)
    return layout


_LAUNCH_HEAD = """#!/usr/bin/env bash
# Written by `igpt4 split`: fine-tune MiniGPT-4 on each subset, then evaluate it with the
# Arena-compatible `igpt4 eval`; afterwards `igpt4 labels collect {out} --out {labels}`.
#
#   MINIGPT4_DIR=/path/to/MiniGPT-4 ARENA_DATA=/path/to/arena/data [NPROC=8] bash {launcher} [SUBSET...]
#
# Resumable: a subset whose answers/ holds a result.json with every dataset is skipped, and a
# subset whose fine-tune finished (output/{marker}) is only evaluated. Without SUBSET
# arguments every subset runs in turn; a failing subset is reported and the next one runs.
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
subset_{index}() {{  # subset {name}: {size} samples
  local answers={answers} output={output} ckpt run
  if has_result "$answers"; then
    echo "[igpt4] subset {name}: evaluated ($answers), skipped"; return 0
  fi
  if [ ! -f "$output/{marker}" ]; then
    echo "[igpt4] subset {name}: fine-tuning"
    ( cd "$MINIGPT4_DIR" && torchrun --nproc_per_node ${{NPROC:-1}} ${{TORCHRUN_ARGS:-}} train.py --cfg-path {config} ) || return 1
    touch "$output/{marker}" || return 1
  fi
  if ! ckpt=$(newest_checkpoint "$output"); then
    echo "[igpt4] subset {name}: no checkpoint_*.pth under $output/*/" >&2; return 1
  fi
  run=$(eval_run_name "$answers" "$ckpt") || return 1
  echo "[igpt4] subset {name}: evaluating $ckpt (run $run)"
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
    *) echo "[igpt4] unknown subset $name (have: ${{ALL[*]}})" >&2; exit 2 ;;
  esac
done
if [ ${{#failed[@]}} -gt 0 ]; then
  echo "[igpt4] failed subsets: ${{failed[*]}}" >&2; exit 1
fi
echo "[igpt4] done; collect the labels: ${{IGPT4:-igpt4}} labels collect {out} --out {labels}"
"""


def launcher_text(out_dir: Path, jobs: Sequence[SubsetJob], datasets: Sequence[str]) -> str:
    q = shlex.quote
    labels = q(str(out_dir.parent / "labels.json"))  # beside the split: never inside an input
    parts = [_LAUNCH_HEAD.format(out=q(str(out_dir)), labels=labels,
                                 launcher=q(str(out_dir / LAUNCHER)),
                                 marker=TRAINED_MARKER, run_file=EVAL_RUN_FILE,
                                 dataset_words=" ".join(q(d.lower()) for d in datasets))]
    for index, job in enumerate(jobs):
        parts.append(_LAUNCH_SUBSET.format(
            index=index, name=job.name, size=job.size,
            answers=q(str(job.answers)), output=q(str(job.output)), config=q(str(job.config)),
            marker=TRAINED_MARKER, datasets=q(",".join(datasets))))
    cases = "\n".join(f"    {q(job.name)}) subset_{index} || failed+=({q(job.name)}) ;;"
                      for index, job in enumerate(jobs))
    parts.append(_LAUNCH_TAIL.format(names=" ".join(q(job.name) for job in jobs), cases=cases,
                                     out=q(str(out_dir)), labels=labels))
    return "".join(parts)


def _write_script(path: Path, text: str) -> Path:
    return write_text(path, text, permissions=0o755)


def write_launcher(out_dir: Path, jobs: Sequence[SubsetJob], datasets: Sequence[str]) -> Path:
    return _write_script(out_dir / LAUNCHER, launcher_text(out_dir, jobs, datasets))


def write_slurm_array(out_dir: Path, jobs: Sequence[SubsetJob], launcher: Path) -> Path:
    """One array task per subset, each running ``launch.sh <subset>`` (GPU and partition options
    belong on the ``sbatch`` command line: they differ between clusters)."""
    q = shlex.quote
    (out_dir / "logs").mkdir(parents=True, exist_ok=True)
    text = f"""#!/usr/bin/env bash
#SBATCH --job-name=igpt4-subsets
#SBATCH --array=0-{len(jobs) - 1}
#SBATCH --output={out_dir}/logs/%A_%a.out
# Written by `igpt4 split`. One task per subset; add your cluster's options, e.g.
#   sbatch --gres=gpu:4 --export=ALL,NPROC=4,MINIGPT4_DIR=...,ARENA_DATA=... {q(str(out_dir / SLURM_SCRIPT))}
set -euo pipefail
SUBSETS=({" ".join(q(job.name) for job in jobs)})
# several array tasks may share a node: let torchrun pick a free rendezvous port
export TORCHRUN_ARGS="${{TORCHRUN_ARGS:---standalone}}"
exec bash {q(str(launcher))} "${{SUBSETS[$SLURM_ARRAY_TASK_ID]}}"
"""
    return _write_script(out_dir / SLURM_SCRIPT, text)


# ---------------------------------------------------------------------------------------------
# labels: the Arena's result.json files -> labels.json
# ---------------------------------------------------------------------------------------------

@dataclass
class ArenaResult:
    """One ``answers/{model}/{time}/result.json``: accuracies (fractions) by lower-cased dataset."""

    path: Path
    model: str
    time: str
    accuracies: Dict[str, float]


def read_arena_result(path: PathLike) -> ArenaResult:
    """The Arena writes ``{dataset_name: accuracy}`` with the accuracy a fraction in 0..1
    (``LVLM_evaluation/eval.py``: ``result[args.dataset_name] = metrics``)."""
    path = Path(path)
    document, _ = read_json(path)
    if not isinstance(document, dict):
        raise InputError(f"{path}: expected {{dataset: accuracy}} (the Arena's result.json)")
    accuracies: Dict[str, float] = {}
    for name, value in document.items():
        if (isinstance(value, bool) or not isinstance(value, (int, float))
                or not math.isfinite(value)):
            raise InputError(f"{path}: accuracy of {name!r} is not a number ({value!r})")
        if not 0.0 <= value <= 1.0:
            raise InputError(f"{path}: accuracy of {name!r} is {value}, outside 0..1 (the Arena "
                             "writes fractions)")
        key = str(name).lower()
        if key in accuracies:
            raise InputError(f"{path}: dataset {name!r} appears twice (names are case-insensitive)")
        accuracies[key] = float(value)
    return ArenaResult(path, path.parent.parent.name, path.parent.name, accuracies)


def arena_results(answers: Path) -> List[ArenaResult]:
    """Every run under an answers folder, oldest first (the Arena's time folders are
    ``%Y%m%d%H%M%S``, so name order is time order)."""
    files = sorted(answers.glob("*/*/result.json"),
                   key=lambda p: (p.parent.name, p.parent.parent.name))
    return [read_arena_result(p) for p in files]


def _sample_std(values: Sequence[float]) -> Optional[float]:
    return float(np.std(values, ddof=1)) if len(values) >= 2 else None


def subset_label(name: str, results: Sequence[ArenaResult], datasets: Sequence[str],
                 allow_missing: bool = False) -> Dict[str, Any]:
    """A subset's label from its runs.

    Label = mean over ``datasets`` of each dataset's accuracy (averaged over its runs) x 100.
    The Arena's own ``eval.py`` writes one result.json per dataset, so a subset's datasets may sit
    in different time folders; a *run* is therefore the i-th evaluation of every dataset (in time
    order), and ``n_runs`` the number of complete runs. ``label_std`` is the sample standard
    deviation (ddof 1) of the per-run labels: the evaluation noise of this label (None for one run).
    """
    if not results:
        raise InputError(f"subset {name!r}: no result.json to take a label from")
    per_dataset: Dict[str, List[float]] = {d: [] for d in datasets}
    for result in results:
        for dataset in datasets:
            if dataset in result.accuracies:
                per_dataset[dataset].append(100.0 * result.accuracies[dataset])
    missing = [d for d in datasets if not per_dataset[d]]
    present = [d for d in datasets if per_dataset[d]]
    if missing and (not allow_missing or not present):
        found = sorted({d for r in results for d in r.accuracies})
        raise InputError(f"{results[-1].path}: subset {name!r} has no accuracy for "
                         f"{', '.join(missing)} in any of its {len(results)} result.json files "
                         f"(found: {', '.join(found) or 'none'}); evaluate it, or use "
                         "--allow-missing to average the datasets present")
    n_runs = min(len(per_dataset[d]) for d in present)
    run_labels = [float(np.mean([per_dataset[d][i] for d in present])) for i in range(n_runs)]
    return {
        "label": float(np.mean([np.mean(per_dataset[d]) for d in present])),
        "label_std": _sample_std(run_labels),
        "n_runs": n_runs,
        "per_dataset": {d: float(np.mean(per_dataset[d])) for d in present},
        "per_dataset_std": {d: _sample_std(per_dataset[d]) for d in present},
        "run_labels": run_labels,
        "missing": missing,
        "results": [{"path": str(r.path), "model": r.model, "time": r.time,
                     "accuracies": {d: r.accuracies[d] for d in datasets if d in r.accuracies}}
                    for r in results],
    }


@dataclass
class LabelSource:
    """Where a PATH given to ``labels collect`` leads: answers folders by subset, or labels
    read from an existing labels file / the original layout."""

    answers: Dict[str, Path] = field(default_factory=dict)
    imported: Dict[str, float] = field(default_factory=dict)
    unevaluated: List[str] = field(default_factory=list)
    described: List[str] = field(default_factory=list)


def _has_results(folder: Path) -> bool:
    return any(folder.glob("*/*/result.json"))


def _is_reference_layout(path: Path) -> bool:
    if not (path / "labels.json").is_file():
        return False  # cheap test first: importing selector.reference imports torch
    from selector.scoring.reference import KMEANS_SUBSETS, LABELS

    return (path / LABELS).is_file() and (path / KMEANS_SUBSETS).is_file()


def _find_sources(path: Path, source: LabelSource) -> None:
    """One PATH: a split folder (``subsets.json`` + ``<name>/answers``), one subset folder (with
    ``answers/``), an answers folder itself, a folder of subset folders, a labels JSON file, or a
    checkout of the original layout (``labels.json`` + ``cluster/kmeans++/modified.json``)."""
    from selector.scoring.pool import read_labels, read_subsets

    if path.is_file():
        source.imported.update(read_labels(path))
        source.described.append(f"labels file {path}")
        return
    if not path.is_dir():
        raise InputError(f"{path}: not found (expected a split folder, answers folder or labels "
                         "file)")
    if (path / SUBSETS_FILE).is_file():
        for name in read_subsets(path / SUBSETS_FILE):
            answers = path / name / "answers"
            if _has_results(answers):
                source.answers[name] = answers
            else:
                source.unevaluated.append(name)
        source.described.append(f"split {path}")
        return
    if _is_reference_layout(path):
        from selector.scoring.reference import ReferenceRepo

        repo = ReferenceRepo(path)
        labels, subsets = repo.labels(), repo.kmeans_subsets()
        unknown = [name for name in labels if name not in subsets]
        if unknown:
            raise InputError(f"{repo.path('labels.json')}: label of subset {unknown[0]!r}, which "
                             "cluster/kmeans++/modified.json lacks")
        source.imported.update(labels)
        source.described.append(f"original layout {path}")
        return
    if _has_results(path / "answers"):
        source.answers[path.name] = path / "answers"
    elif _has_results(path):
        source.answers[path.parent.name if path.name == "answers" else path.name] = path
    else:
        children = [c for c in sorted(path.iterdir()) if c.is_dir() and _has_results(c / "answers")]
        if not children:
            raise InputError(f"{path}: no result.json found (expected answers/{{model}}/{{time}}/"
                             "result.json, a split folder with subsets.json, or subset folders)")
        for child in children:
            source.answers[child.name] = child / "answers"
    source.described.append(f"answers under {path}")


def results_of_one_model(name: str, answers: Path, results: List[ArenaResult],
                         model: Optional[str] = None) -> List[ArenaResult]:
    """A subset's runs of one model (the ``{model}`` folder of ``answers/{model}/{time}``): with
    ``model``, that model's; without, the runs must all be of one model, since averaging two
    models' accuracies gives a label of neither."""
    models = sorted({r.model for r in results})
    if model is not None:
        chosen = [r for r in results if r.model == model]
        if not chosen:
            raise InputError(f"{answers}: subset {name!r} has no result.json of model {model!r} "
                             f"(found: {', '.join(models) or 'none'})")
        return chosen
    if len(models) > 1:
        raise InputError(f"{answers}: subset {name!r} was evaluated with different models "
                         f"({', '.join(models)}); keep one model's answers or choose one with "
                         "--model NAME")
    return results


def check_label_scales(labels: Dict[str, float], imported_from: Dict[str, str]) -> None:
    """Labels are accuracy x 100 (0..100). A label read from a file that looks like a 0..1
    fraction (0 < value <= 1) beside labels above 1 mixes two scales: refused, since the small
    one would silently read as a near-zero accuracy."""
    fraction = next((n for n, v in labels.items() if n in imported_from and 0.0 < v <= 1.0), None)
    larger = next((n for n, v in labels.items() if abs(v) > 1.0), None)
    if fraction is not None and larger is not None:
        raise InputError(f"{imported_from[fraction]}: label of subset {fraction!r} is "
                         f"{labels[fraction]:g} (a 0..1 fraction?) while subset {larger!r} has "
                         f"{labels[larger]:g}: labels mix scales; give every label as accuracy "
                         "x 100")


def collect_labels(paths: Sequence[PathLike], datasets: Sequence[str] = ARENA_DATASETS,
                   allow_missing: bool = False, out: Optional[PathLike] = None,
                   model: Optional[str] = None) -> Dict[str, Any]:
    """Labels of every evaluated subset found under ``paths``, as the labels file document:
    ``{"labels": {subset: value}, "label_std", "n_runs", "per_dataset", "runs", ...}`` (what
    :func:`selector.pool.read_labels` reads; the other keys are for people and plots).

    Labels already made (a labels JSON, the original layout) are taken as they are. A subset found
    twice is an error, not a silent overwrite.
    """
    datasets = [d.strip().lower() for d in datasets if d.strip()]
    if not datasets:
        raise InputError("labels: no datasets given")
    if len(set(datasets)) != len(datasets):
        raise InputError(f"labels: dataset listed twice in {', '.join(datasets)}")
    if not paths:
        raise InputError("labels: no paths given")
    labels: Dict[str, float] = {}
    details: Dict[str, Dict[str, Any]] = {}
    imported_from: Dict[str, str] = {}
    model_of: Dict[str, str] = {}  # subset -> the model its label comes from
    unevaluated: List[str] = []
    described: List[str] = []
    for path in paths:
        source = LabelSource()
        _find_sources(Path(path), source)
        described.extend(source.described)
        unevaluated.extend(source.unevaluated)
        found = list(source.imported) + list(source.answers)
        clash = next((name for name in found if name in labels), None)
        if clash is not None:
            raise InputError(f"{path}: subset {clash!r} was already found in an earlier path")
        labels.update(source.imported)
        imported_from.update((name, str(path)) for name in source.imported)
        for name, answers in source.answers.items():
            results = results_of_one_model(name, answers, arena_results(answers), model)
            model_of[name] = results[0].model
            other = next((n for n, m in model_of.items() if m != model_of[name]), None)
            if other is not None:  # labels of two models do not rank the subsets' data
                raise InputError(f"{answers}: subset {name!r} was evaluated with model "
                                 f"{model_of[name]!r} but subset {other!r} with "
                                 f"{model_of[other]!r}; choose one with --model NAME")
            details[name] = subset_label(name, results, datasets, allow_missing)
            labels[name] = details[name]["label"]
    if not labels:
        waiting = f" ({len(unevaluated)} subsets have no result.json yet)" if unevaluated else ""
        raise InputError(f"labels: no evaluated subset under {', '.join(str(p) for p in paths)}"
                         f"{waiting}")
    check_label_scales(labels, imported_from)
    document: Dict[str, Any] = {
        "labels": labels,
        "label_std": {n: d["label_std"] for n, d in details.items()},
        "n_runs": {n: d["n_runs"] for n, d in details.items()},
        "per_dataset": {n: d["per_dataset"] for n, d in details.items()},
        "per_dataset_std": {n: d["per_dataset_std"] for n, d in details.items()},
        "runs": {n: {"run_labels": d["run_labels"], "results": d["results"]}
                 for n, d in details.items()},
        "datasets": datasets,
        "unit": "mean accuracy x 100 over the datasets (each averaged over its runs)",
        "sources": described,
        "models": sorted(set(model_of.values())),
    }
    missing = {n: d["missing"] for n, d in details.items() if d["missing"]}
    if missing:
        document["missing_datasets"] = missing
    if unevaluated:
        document["unevaluated"] = unevaluated
    imported = [n for n in labels if n not in details]
    if imported:
        document["imported"] = imported
    if out is not None:
        write_json(out, document)
    return document


def label_noise_summary(document: Dict[str, Any]) -> Tuple[Optional[float], float]:
    """(pooled evaluation noise of a label, spread of the labels across subsets): a noise close
    to the spread means the labels say little about data quality."""
    stds = [s for s in document.get("label_std", {}).values() if s is not None]
    noise = float(np.sqrt(np.mean(np.square(stds)))) if stds else None
    values = list(document["labels"].values())
    spread = float(np.std(values, ddof=1)) if len(values) >= 2 else 0.0
    return noise, spread
