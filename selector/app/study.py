"""``igpt4 study``: for one pool and one budget, a grid of selection methods x seeds made ready to
fine-tune and evaluate, so that "does this beat random-200 for my data and my model?" gets an
answer with error bars (``igpt4 study collect``, :mod:`selector.report.study`).

``DIR/<method>/<seed>/`` per run (``<method>`` the spec with ``:``/``=`` written ``_``; a method
that ignores the seed has one run, ``<method>/none``)::

    selection/      the selection igpt4 select writes (filter_cap.json + image/ links, manifest)
    finetune.yaml   the fine-tune template with this run's data and output folder
    output/         the fine-tune's checkpoints; answers/: the Arena results (igpt4 eval)
    run.json        the run's fingerprint, written last: a run whose fingerprint is unchanged
                    is current and skipped on a rerun

plus ``DIR/full/`` (the full data, unless ``--no-full``), ``DIR/launch.sh`` (and with ``--slurm``
``DIR/slurm_array.sh``) -- :mod:`selector.labels.jobs`' launcher, which fine-tunes each run unless
done and evaluates it unless done -- and ``DIR/study.json``: the grid, budget, seeds, inputs,
arguments and versions.

``study.json`` is written first with the arguments only (``"complete": false``: collect refuses
it) and completed last, so a study stopped halfway resumes with the same arguments only.

Resumable like the pipeline's stages (:mod:`selector.app.pipeline`): a run is skipped when its
fingerprint (method, seed, settings, the contents of what it reads) is the recorded one. A rerun
into the same DIR with a changed argument or input is refused with one line naming it; with
``--force`` the runs it changes are rewritten -- except a run already fine-tuned or evaluated,
whose results belong to the old selection (refused, naming the folder to remove).

Every run trains with the same schedule per sample: one epoch is one pass over its data
(``run.iters_per_epoch = warmup_steps = ceil(samples / batch_size)`` on one GPU), so the full-data
run trains as long per sample as a 200-sample one, as the shipped templates do.
"""
from __future__ import annotations

import itertools
import math
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from selector.core.errors import InputError
from selector.core.fingerprint import Fingerprint, canonical_json, file_sha256, fingerprint
from selector.core.jsonio import PathLike, read_json, write_json
from selector.core.provenance import log
from selector.labels.jobs import ARENA_DATASETS, LaunchWords, SubsetJob, point_at_conversations
from selector.report.study import FULL, STUDY_FILE, STUDY_VERSION

RUN_FILE = "run.json"
NO_SEED = "none"  # the seed folder of a method that ignores the seed
#: arguments that may change between reruns without changing what the study means
FREE = ("--work", "--slurm")


@dataclass
class StudyRun:
    """One cell of the grid: ``method`` (a spec, or ``full``) with ``seed`` (None: not seeded)."""

    name: str
    method: str
    seed: Optional[int]
    folder: Path
    size: int  # samples it trains on

    @property
    def selection(self) -> Path:
        return self.folder / "selection"


#: seeds per seeded method: each is a fine-tune and an evaluation (a typo of 100000000 would start
#: writing a hundred million runs)
MAX_SEEDS = 1000

def method_folder(spec: str) -> str:
    """A spec as a folder name: ``top:clip`` -> ``top_clip``, ``threshold:clip=30`` ->
    ``threshold_clip_30``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", spec).strip("._") or "method"


def parse_methods(text: str) -> List[str]:
    """``selector,random,top:clip`` -> the specs, each checked (an unknown name: one line)."""
    from selector.selection.methods import parse_spec

    specs = [part.strip() for part in str(text).split(",") if part.strip()]
    if not specs:
        raise InputError("--methods: no method given (e.g. --methods selector,random,top:clip)")
    seen: Dict[str, str] = {}
    for spec in specs:
        name, argument = parse_spec(spec)
        canonical = name if argument is None else f"{name}:{argument}"
        folder = method_folder(canonical)
        if folder in seen or folder == FULL:
            raise InputError(f"--methods: {spec!r} is listed twice" if seen.get(folder) ==
                             canonical else f"--methods: {spec!r} and {seen.get(folder, FULL)!r} "
                             f"would share the folder {folder!r}")
        seen[folder] = canonical
    return list(seen.values())


def parse_datasets(text: Optional[str]) -> List[str]:
    names = [d.strip().lower() for d in (text.split(",") if text is not None else ARENA_DATASETS)
             if d.strip()]
    if not names:
        raise InputError("--datasets: no dataset given")
    if len(set(names)) != len(names):
        raise InputError(f"--datasets: a dataset is listed twice in {','.join(names)}")
    if any(not re.fullmatch(r"[a-z0-9._-]+", name) for name in names):
        raise InputError(f"--datasets: {','.join(names)}: names are letters, digits, '.', '_', '-'")
    return names


def _abs(path: Optional[PathLike]) -> Optional[str]:
    return None if path is None else os.path.abspath(path)


def _file_digest(path: Optional[PathLike], flag: str) -> Optional[str]:
    if path is None:
        return None
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: {flag} not found")
    return Fingerprint().update_files([path]).hexdigest(20) if path.is_dir() \
        else file_sha256(path)[:20]


def _check_data(data: Path) -> Path:
    """A cc_sbu_align folder, or a LLaVA-style conversation JSON (its selections are
    ``conversations.json`` + ``image/``, trained with the ``llava_conversations`` builder)."""
    if data.is_file():
        return data
    if data.suffix.lower() == ".json":
        raise InputError(f"{data}: --data not found (a cc_sbu_align folder or conversation JSON)")
    if not (data / "filter_cap.json").is_file():
        raise InputError(f"{data}: --data is not a cc_sbu_align folder (no filter_cap.json) nor "
                         "a conversation JSON")
    return data


def _is_conversations(data: Path) -> bool:
    return data.is_file()


def _refuse_changed(previous: Dict[str, Any], arguments: Dict[str, Any], path: Path) -> None:
    """One line naming the first argument (or input's contents) that differs from the study's."""
    before = previous.get("arguments") or {}
    for flag, value in arguments.items():
        if flag in FREE or before.get(flag) == value:
            continue
        if flag.endswith(" contents"):
            raise InputError(f"{path}: {flag.split()[0]} changed since this study was made (its "
                             "contents differ); write the new study to another --out, or "
                             "--force to rewrite the runs it changes")
        raise InputError(f"{path}: this study was made with {flag} {before.get(flag)!r}, not "
                         f"{value!r}; write it to another --out, or --force to rewrite the runs "
                         "it changes")


def _has_results(run: StudyRun) -> Optional[Path]:
    """What would be stale if the run's selection changed: its checkpoints or answers."""
    for folder in (run.folder / "answers", run.folder / "output"):
        if folder.is_dir() and any(folder.iterdir()):
            return folder
    return None


def _current(run: StudyRun, key: str) -> bool:
    record = run.folder / RUN_FILE
    if not record.is_file() or not (run.folder / "finetune.yaml").is_file():
        return False
    try:
        document, _ = read_json(record)
    except InputError:
        return False
    selected = run.method == FULL or (run.selection / "manifest.json").is_file()
    return isinstance(document, dict) and document.get("fingerprint") == key and selected


def _refuse_stale(run: StudyRun) -> None:
    """A run whose selection would change after it was fine-tuned or evaluated: refused."""
    stale = _has_results(run)
    if stale is not None and run.method == FULL:
        raise InputError(f"{stale}: the full-data run was already fine-tuned or evaluated on "
                         f"other data; remove {run.folder / 'output'} and "
                         f"{run.folder / 'answers'} to redo it")
    if stale is not None:
        raise InputError(f"{stale}: run {run.name} was already fine-tuned or evaluated on its "
                         f"previous selection; remove {run.folder / 'output'} and "
                         f"{run.folder / 'answers'} to redo it")


def _schedule(config: Any, samples: int) -> None:
    """One epoch = one pass over the run's data (on one GPU), warm-up = the first epoch."""
    from omegaconf import OmegaConf

    if OmegaConf.select(config, "run.iters_per_epoch", default=None) is None:
        return
    batch = (OmegaConf.select(config, "datasets.cc_sbu_align.batch_size", default=None)
             or OmegaConf.select(config, "run.batch_size_train", default=None) or 1)
    iterations = max(1, math.ceil(samples / int(batch)))
    OmegaConf.update(config, "run.iters_per_epoch", iterations, merge=True)
    if OmegaConf.select(config, "run.warmup_steps", default=None) is not None:
        OmegaConf.update(config, "run.warmup_steps", iterations, merge=True)


def _write_config(base: Any, run: StudyRun, data: Path, samples: int,
                  conversations: Optional[Tuple[Path, Path]] = None) -> None:
    """``conversations``: (conversation JSON, its image folder) when the run trains on one."""
    from omegaconf import OmegaConf

    from selector.core.atomic import atomic_open
    from selector.labels.jobs import subset_config

    job = SubsetJob(run.name, run.folder, samples, data_dir=data)
    config = subset_config(base, job)
    _schedule(config, samples)
    if conversations is not None:
        point_at_conversations(config, *conversations)
    job.output.mkdir(parents=True, exist_ok=True)
    with atomic_open(job.config) as handle:
        OmegaConf.save(config, handle)


def _selection_seed(run: StudyRun) -> Optional[int]:
    """The seed the selection used (its manifest's; None when the method ignored it)."""
    manifest, _ = read_json(run.selection / "manifest.json")
    seed = (manifest.get("settings") or {}).get("seed") if isinstance(manifest, dict) else None
    return seed if isinstance(seed, int) and not isinstance(seed, bool) else None


def write_study(out: PathLike, pool_path: PathLike, data: PathLike, methods: str, seeds: int,
                num: Optional[int] = None, checkpoint: Optional[PathLike] = None,
                subsets: Optional[PathLike] = None, labels: Optional[PathLike] = None,
                work: Optional[PathLike] = None, template: Optional[PathLike] = None,
                datasets: Optional[str] = None, slurm: bool = False, full: bool = True,
                config: Optional[str] = None, overrides: Sequence[str] = (),
                force: bool = False, image_root: Optional[PathLike] = None) -> Dict[str, Any]:
    """Write (or bring up to date) the study in ``out``; returns the study document.
    ``data`` a conversation JSON: ``image_root`` its images (default: its folder)."""
    from selector.core.provenance import package_versions
    from selector.core.settings import settings_from_layers, user_layers
    from selector.labels.jobs import load_template, resolve_template
    from selector.model.fit import model_keys_set
    from selector.scoring.pool import FeaturePool
    from selector.selection import methods as registry
    from selector.selection.select import NEEDS_DATA, select

    out = Path(os.path.abspath(out))
    specs = parse_methods(methods)
    names = parse_datasets(datasets)
    if isinstance(seeds, bool) or not isinstance(seeds, int) or not 1 <= seeds <= MAX_SEEDS:
        raise InputError(f"--seeds must be a whole number from 1 to {MAX_SEEDS} (seeds 0..N-1), "
                         f"not {seeds!r}")
    data = _check_data(Path(os.path.abspath(data)))
    conversations = _is_conversations(data)
    images = Path(os.path.abspath(image_root)) if image_root else data.parent
    template_path = resolve_template(template).resolve()
    base = load_template(template_path)  # a bad template fails now, before any selection
    extra = [f"selection.num_samples={num}"] if num is not None else []
    layers = user_layers(config, list(overrides) + extra)
    settings = settings_from_layers("selector/default.yaml", layers)
    budget = int(settings["selection"]["num_samples"])
    created = {spec: registry.create(spec)[0] for spec in specs}
    if "selector" in {m.name for m in created.values()} and checkpoint is None:
        raise InputError("--methods selector needs --checkpoint (the trained selector)")
    pool = FeaturePool.load(pool_path)
    inputs = {"--pool": _abs(pool_path), "--data": str(data), "--checkpoint": _abs(checkpoint),
              "--image-root": str(images) if conversations else None,
              "--subsets": _abs(subsets), "--labels": _abs(labels), "--work": _abs(work),
              "--template": str(template_path)}
    digests = {"pool": pool.content_digest(),
               "data": file_sha256(data if conversations else data / "filter_cap.json")[:20],
               "checkpoint": _file_digest(checkpoint, "--checkpoint"),
               "subsets": _file_digest(subsets, "--subsets"),
               "labels": _file_digest(labels, "--labels"),
               "template": file_sha256(template_path)[:20]}
    arguments: Dict[str, Any] = {
        **inputs, "--methods": specs, "--seeds": seeds,
        "--num": budget, "--datasets": names, "--full": full,
        "--config": _abs(config) if config and Path(config).is_file() else config,
        "--set": list(overrides), "--slurm": slurm}
    arguments.update({f"{flag} contents": digests[key] for flag, key in
                      (("--pool", "pool"), ("--data", "data"), ("--checkpoint", "checkpoint"),
                       ("--subsets", "subsets"), ("--labels", "labels"),
                       ("--template", "template"))})
    study_path = out / STUDY_FILE
    previous: Optional[Dict[str, Any]] = None
    if study_path.is_file():
        previous, _ = read_json(study_path)
        if not isinstance(previous, dict) or previous.get("command") != "study":
            raise InputError(f"{study_path}: not a study file; give another --out")
        if not force:
            _refuse_changed(previous, arguments, study_path)
    elif out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(f"{out}: --out exists and holds no study ({STUDY_FILE}); give a new or "
                         "empty folder")
    samples = None
    if any(m.name in NEEDS_DATA for m in created.values()):
        from selector.data.samples import read_pool

        samples = read_pool(data, images if conversations else None, check_images=False)
    model_keys = model_keys_set(layers)

    def run_of(spec: str, seed: Optional[int]) -> Tuple[StudyRun, str]:
        folder = method_folder(spec)
        run = StudyRun(f"{folder}/{NO_SEED if seed is None else seed}", spec, seed,
                       out / folder / (NO_SEED if seed is None else str(seed)), budget)
        return run, fingerprint({"version": STUDY_VERSION, "method": spec, "seed": seed,
                                 "settings": settings, "pool": digests["pool"],
                                 "data": digests["data"], "template": digests["template"],
                                 "subsets": digests["subsets"], "labels": digests["labels"],
                                 "checkpoint": digests["checkpoint"]
                                 if created[spec].name == "selector" else None}, length=20)

    def full_of() -> Tuple[StudyRun, str]:
        size = _count_samples(data, images if conversations else None)
        return StudyRun(FULL, FULL, None, out / FULL, size), fingerprint(
            {"version": STUDY_VERSION, "method": FULL, "data": digests["data"],
             "template": digests["template"], "samples": size}, length=20)

    full_run = full_of() if full else None
    if previous is not None:  # refused before anything is written: the study stays as it was
        for run, key in itertools.chain(
                (run_of(spec, seed) for spec in specs
                 for seed in (range(seeds) if created[spec].uses_seed else [None])),
                [full_run] if full_run is not None else []):
            if not _current(run, key):
                _refuse_stale(run)
    if previous is None or canonical_json(previous.get("arguments")) != canonical_json(arguments):
        # first the arguments, so that a study killed halfway resumes only with the same ones
        write_json(study_path, {"command": "study", "version": STUDY_VERSION, "complete": False,
                                "created": _now(), "arguments": arguments})
    runs: List[StudyRun] = []
    written = skipped = 0
    for spec in specs:
        method = created[spec]
        grid = list(range(seeds)) if method.uses_seed else [None]
        for seed in grid:
            run, key = run_of(spec, seed)
            if _current(run, key):
                skipped += 1
            else:
                _refuse_stale(run)
                log(f"study: {run.name}: selecting {budget} of {len(pool)}")
                select(run.selection, settings, pool_path,
                       checkpoint if method.name == "selector" else None, data_dir=data,
                       model_keys=model_keys if method.name == "selector" else None,
                       loaded_pool=pool, method=spec, seed=seed,
                       subsets_path=subsets, labels_path=labels, work=work,
                       loaded_data=samples if method.name in NEEDS_DATA else None,
                       image_root=images if conversations else None)
                _write_config(base, run, run.selection, budget,
                              (run.selection / "conversations.json", run.selection)
                              if conversations else None)
                write_json(run.folder / RUN_FILE, {"fingerprint": key, "method": spec,
                                                   "seed": seed, "created": _now()})
                written += 1
            runs.append(run)
            if seed is not None and _selection_seed(run) is None:
                # the method ignored its seed under these settings (threshold with fill: score):
                # the other seeds would repeat this selection
                run.seed = None
                log(f"study: {spec} did not use its seed; one run ({run.name})")
                break
    if full_run is not None:
        run, key = full_run
        if _current(run, key):
            skipped += 1
        else:
            _refuse_stale(run)
            _write_config(base, run, data, run.size, (data, images) if conversations else None)
            write_json(run.folder / RUN_FILE, {"fingerprint": key, "method": FULL, "seed": None,
                                               "created": _now()})
            written += 1
        runs.append(run)
    document = _study_document(out, runs, specs, seeds, budget, names, inputs, digests,
                               arguments, settings, package_versions())
    _write_launchers(out, runs, names, slurm, data)
    if previous is not None and canonical_json({**previous, "created": None}) == \
            canonical_json({**document, "created": None}):
        document = previous  # nothing changed: a rerun rewrites nothing
    else:
        write_json(study_path, document)  # last: without "complete": false, it is complete
    log(f"study: {len(runs)} runs ({written} written, {skipped} current) -> {out}")
    log(f"run them: MINIGPT4_DIR=... ARENA_DATA=... bash {out / 'launch.sh'}"
        + (f"  (or sbatch {out / 'slurm_array.sh'})" if slurm else "")
        + f"; then: igpt4 study collect {out}")
    return document


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _count_samples(data: Path, image_root: Optional[Path] = None) -> int:
    from selector.data.samples import read_pool

    return len(read_pool(data, image_root, skip_invalid=True, check_images=False).samples)


def _study_document(out: Path, runs: List[StudyRun], specs: List[str], seeds: int, budget: int,
                    datasets: List[str], inputs: Dict[str, Any], digests: Dict[str, Any],
                    arguments: Dict[str, Any], settings: Dict[str, Any],
                    versions: Dict[str, str]) -> Dict[str, Any]:
    return {
        "command": "study", "version": STUDY_VERSION, "created": _now(),
        "methods": specs, "seeds": list(range(seeds)), "num_samples": budget,
        "datasets": datasets,
        "runs": [{"name": r.name, "method": r.method, "seed": r.seed,
                  "folder": r.folder.relative_to(out).as_posix(),
                  "selection": None if r.method == FULL
                  else r.selection.relative_to(out).as_posix()} for r in runs],
        "inputs": {key.lstrip("-"): value for key, value in inputs.items()},
        "digests": digests, "arguments": arguments,
        "schedule": "one epoch = one pass over the run's data: run.iters_per_epoch = "
                    "run.warmup_steps = ceil(samples / batch_size) on one GPU (with N GPUs "
                    "use ceil(samples / (batch_size * N)))",
        "settings": settings, "versions": versions,
    }


def _write_launchers(out: Path, runs: List[StudyRun], datasets: List[str], slurm: bool,
                     data: Path) -> None:
    """:mod:`selector.labels.jobs`' launcher over the study's runs."""
    import shlex

    from selector.labels.jobs import LAUNCHER, SLURM_SCRIPT, launcher_text, write_slurm_array
    from selector.core.atomic import write_text

    collect = f"igpt4 study collect {shlex.quote(str(out))}"
    words = LaunchWords(command="study", unit="run", after=f"`{collect}`",
                        done=f"compare the methods: ${{IGPT4:-igpt4}} study collect "
                             f"{shlex.quote(str(out))}")
    jobs = [SubsetJob(r.name, r.folder, r.size, data_dir=data if r.method == FULL else r.selection)
            for r in runs]
    launcher = out / LAUNCHER
    text = launcher_text(out, jobs, datasets, words)
    changed = not launcher.is_file() or launcher.read_text(encoding="utf-8") != text
    if changed:  # as write_launcher does, unless unchanged (a rerun rewrites nothing)
        write_text(launcher, text, permissions=0o755)
    if slurm and (changed or not (out / SLURM_SCRIPT).is_file()):  # made from the same runs
        write_slurm_array(out, jobs, launcher, words)


def collect_command(folder: PathLike, out: Optional[PathLike] = None,
                    page: Optional[PathLike] = None, model: Optional[str] = None) -> Dict[str, Any]:
    """``igpt4 study collect``: the results (``DIR/study_results.json`` by default), their table
    on stdout, and the study page (``study_report.html`` beside the results) when matplotlib is
    installed."""
    import importlib.util

    from selector.core.overlap import refuse_overlap
    from selector.report.study import (PAGE_FILE, RESULTS_FILE, collect_study, read_study,
                                       results_table)

    folder = Path(folder)
    study = read_study(folder)
    out = Path(out) if out is not None else folder / RESULTS_FILE
    page = Path(page) if page is not None else out.parent / PAGE_FILE
    if page.suffix.lower() not in (".html", ".htm"):
        raise InputError(f"{page}: the study page must end in .html")
    refuse_overlap({"--out": out, "--html": page},
                   {"DIR": [folder / STUDY_FILE] + [folder / r["folder"] for r in study["runs"]]})
    document = collect_study(folder, model)
    write_json(out, document)
    print(results_table(document), flush=True)
    log(f"study results -> {out}")
    if importlib.util.find_spec("matplotlib") is None:
        log("warning: no study page: it needs matplotlib (pip install 'instructiongpt4[report]')")
    else:
        from selector.report.study_page import write_study_page

        log(f"study page -> {write_study_page(document, study, page)}")
    return document
