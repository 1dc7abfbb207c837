"""``igpt4 run --config configs/pipeline/<recipe>.yaml``: every stage from one YAML recipe.

Stages, in order (a recipe lists the ones it uses under ``pipeline.stages``)::

    generate        (demo only) the toy pool and its tiny models
    score           indicators + embeddings -> WORK/scores.jsonl, WORK/pool.safetensors
    split           balanced k-means++ subsets -> WORK/subsets/ (+ launch.sh for the fine-tunes)
    labels          subset labels -> WORK/labels.json (Arena results, a file; the demo: its
                    toy fine-tunes and evaluations, or the oracle)
    train_selector  -> WORK/selector/ (checkpoint + cross-validation report)
    select          -> WORK/selection/ (filter_cap.json + image/, manifest.json)
    report          -> WORK/selection/report.html
    train_config    -> WORK/train_config.yaml: MiniGPT-4 stage 2 on the selection
    compare         (demo only) -> WORK/compare/: the selector's pick, random picks, the best
                    other method and the full pool, each fine-tuned and evaluated (an igpt4
                    study, collected)

Each stage has a fingerprint: the hash of its own settings, the *contents* of every file it
reads from outside the work folder (the data's annotation file and every sample's text and image
bytes -- the scoring cache's own :func:`selector.scoring.store.sample_hash`; the subsets, labels,
templates and PCA source files) and the output tokens of the stages it reads from, in the manner
of HF datasets' ``map`` fingerprints. A stage whose fingerprint and outputs are unchanged is
skipped, so a second run recomputes nothing, and an edited setting or input file recomputes the
stages downstream of it. Each time a stage runs its outputs get a new token, so a forced rerun
(``--from X --until X --force``) makes every later stage rerun too.

Paths in a recipe: a relative path written in a recipe file (``pipeline.work``, ``pipeline.data``,
``pipeline.image_root``, ``score.pca_from``, ``split.template``, ``labels.file``,
``labels.subsets``, ``train_config.template``), and base.yaml's default ``work``, resolves
against that recipe file's folder; one given with ``--set`` (or another command-line flag)
resolves against the current folder. The shipped recipes (``--config demo.yaml``) resolve against
the current folder, since their own folder is inside the installed package. A template that is
not found there may name a shipped config (``minigpt4/subset_finetune.yaml``). Paths inside
``score.settings`` (model files) are read like ``igpt4 score``'s settings, against the current
folder. The expensive work
inside ``score`` is cached per sample besides (a rerun after a crash resumes). Every run writes
``WORK/run_manifest.json``: the settings, package versions, input hashes, and per stage whether it
ran or was current and how long it took.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from selector.app.recipe import Recipe
from selector.app.stages import PipelinePaused, Stages
from selector.core.errors import InputError
from selector.core.fingerprint import file_sha256, fingerprint
from selector.core.jsonio import PathLike, read_json, write_json

#: the stages each stage reads from (their fingerprints enter its own)
UPSTREAM = {"generate": (), "score": ("generate",), "split": ("score",), "labels": ("split",),
            "train_selector": ("score", "labels"), "select": ("score", "train_selector"),
            "report": ("select",), "train_config": ("select",),
            "compare": ("generate", "score", "split", "labels", "train_selector")}
#: the recipe sections each stage's fingerprint covers
SECTIONS = {"generate": ("demo",), "score": ("score",), "split": ("split",),
            "labels": ("labels", "demo"), "train_selector": ("selector",),
            "select": ("selector", "select"), "report": ("report",),
            "train_config": ("train_config", "select"),
            "compare": ("compare", "demo", "selector", "select")}
#: the demo settings each stage's fingerprint covers (``demo.workers`` changes no result: none)
DEMO_KEYS = {"generate": ("samples", "bad_fraction", "seed", "kind"),
             "labels": ("seed", "kind", "label_steps", "noise_repeats", "vqa_drawings"),
             "compare": ("seed", "kind", "vqa_drawings")}
VERSION = 3  # bump when a stage's outputs change meaning (or the fingerprint's composition)


@dataclass
class StageRecord:
    fingerprint: str
    ran: bool
    seconds: float
    outputs: List[str] = field(default_factory=list)
    #: the identity of this stage's outputs: new each time the stage runs, so the stages after
    #: a (forced) rerun see changed inputs and rerun as well
    token: str = ""


def _hash(value: Any) -> str:
    return fingerprint(value, length=20)


def _file_digest(path: PathLike) -> str:
    """A file's bytes (the one streamed sha256); a missing file is its own value (the stage that
    reads it then runs and names it)."""
    from selector.core.atomic import os_error_line

    path = Path(path)
    if not path.is_file():
        return f"missing: {path}"
    try:
        return file_sha256(path)[:20]
    except OSError as exc:
        raise os_error_line(path, exc, "cannot read") from None


def _digest_files(files: Sequence[Path], root: Optional[Path] = None) -> str:
    """Files by name (relative to ``root``) and bytes, into one hash."""
    return _hash([[str(path.relative_to(root) if root else path.name), _file_digest(path)]
                  for path in files])


def digest_data(path: Path, image_root: Optional[PathLike] = None) -> Tuple[str, Dict[str, str]]:
    """The data's identity, and each sample's content hash by id: the annotation file's bytes
    and every sample's scoring-cache key (:func:`selector.scoring.store.sample_hash`: its turns
    and its image file's bytes), so an image replaced by another of the same size is a change.
    The score stage reuses the hashes instead of reading every image a second time. Invalid
    samples are covered by the annotation file's bytes (the score stage reports them)."""
    from selector.data.samples import read_pool
    from selector.scoring.store import sample_hash

    annotations = path / "filter_cap.json" if path.is_dir() else path
    if not annotations.is_file():
        raise InputError(f"{annotations}: data not found")
    pool = read_pool(path, image_root, skip_invalid=True, check_images=False)
    hashes = {s.id: sample_hash(s) for s in pool.samples}
    return _hash({"annotations": _file_digest(annotations),
                  "samples": [[s.id, hashes[s.id]] for s in pool.samples]}), hashes


class Pipeline(Stages):
    """Runs a :class:`Recipe`'s stages with fingerprint-based skipping."""

    def __init__(self, recipe: Recipe, log: Callable[[str], None] = print) -> None:
        self.recipe = recipe
        self.work = recipe.work
        self.log = log
        self.state_path = self.work / "pipeline_state.json"
        self.state: Dict[str, Any] = (read_json(self.state_path)[0]
                                      if self.state_path.is_file() else {})
        self.records: Dict[str, StageRecord] = {}
        self.inputs: Dict[str, str] = {}
        #: the data's sample hashes by id, when this run digested the data (the score stage's)
        self.sample_hashes: Optional[Dict[str, str]] = None

    # -- fingerprints --------------------------------------------------------------------------
    def fingerprint(self, stage: str) -> str:
        """Settings, upstream output tokens and the contents of every outside file ``stage``
        reads (see the module docstring)."""
        upstream = {s: self.records[s].token or self.records[s].fingerprint
                    for s in UPSTREAM[stage] if s in self.records}
        external: Dict[str, Any] = {}
        pipeline = self.recipe.settings["pipeline"]
        generated = "generate" in self.recipe.stages
        if stage in ("score", "select", "report", "train_config") and not generated:
            # where the data is (train_config and the selection name it), and what it holds
            external["paths"] = {"data": pipeline.get("data"),
                                 "image_root": pipeline.get("image_root")}
        if stage == "score" and not generated:
            if "data" not in self.inputs:
                self.inputs["data"], self.sample_hashes = digest_data(
                    self.recipe.data_path(), pipeline.get("image_root"))
            external["data"] = self.inputs["data"]
        if stage == "score" and self.section("score").get("pca_from"):
            external["pca_from"] = _file_digest(self.section("score")["pca_from"])
        if stage == "split":
            from selector.labels.jobs import resolve_template

            external["template"] = _file_digest(
                resolve_template(self.section("split").get("template")))
        if stage == "labels" and self.section("labels").get("source") == "collect":
            external["results"] = self._results_digest()
        if stage == "labels" and self.section("labels").get("file"):
            external["file"] = _digest_files([Path(self.section("labels")["file"])])
        if stage == "train_selector" and "split" not in self.recipe.stages and \
                self.section("labels").get("subsets"):
            external["subsets"] = _file_digest(self.section("labels")["subsets"])
        if stage == "train_config":
            external["template"] = _file_digest(self.train_config_template())
        sections = {name: self.recipe.settings.get(name) for name in SECTIONS[stage]}
        if "demo" in sections:
            sections["demo"] = {key: (sections["demo"] or {}).get(key)
                                for key in DEMO_KEYS[stage]}
        return _hash({"version": VERSION, "stage": stage, "settings": sections,
                      "upstream": upstream, "external": external})

    def _results_digest(self) -> str:
        files = sorted((self.work / "subsets").rglob("result.json"))
        return _digest_files(files, self.work)

    def current(self, stage: str, fingerprint: str) -> bool:
        saved = self.state.get(stage)
        return bool(saved) and saved["fingerprint"] == fingerprint and all(
            (self.work / output).exists() for output in saved["outputs"])

    # -- running -------------------------------------------------------------------------------
    def run(self, start: Optional[str] = None, until: Optional[str] = None,
            force: bool = False) -> Dict[str, StageRecord]:
        stages = self.recipe.stages
        for name in (start, until):
            if name is not None and name not in stages:
                raise InputError(f"--from/--until: {name!r} is not a stage of this recipe "
                                 f"({', '.join(stages)})")
        first = stages.index(start) if start else 0
        last = stages.index(until) if until else len(stages) - 1
        self.refuse_overlap()  # then the work folder and the sizes: before anything is written
        if self.work.exists() and not self.work.is_dir():
            raise InputError(f"{self.work}: the work folder (pipeline.work) exists and is not a "
                             "folder")
        self.preflight()
        self.work.mkdir(parents=True, exist_ok=True)
        started = time.time()
        paused = None
        try:
            for index, stage in enumerate(stages[:last + 1]):
                fingerprint = self.fingerprint(stage)
                if index < first:
                    if not self.current(stage, fingerprint):
                        raise InputError(f"stage {stage} is out of date or missing: run it first "
                                         f"(drop --from {start})")
                    self.records[stage] = self._kept(stage, fingerprint)
                    continue
                if self.current(stage, fingerprint) and not force:
                    self.log(f"[{stage}] current, skipped")
                    self.records[stage] = self._kept(stage, fingerprint)
                    continue
                self.log(f"[{stage}] running")
                began = time.time()
                outputs = getattr(self, f"stage_{stage}")()
                record = StageRecord(fingerprint, True, round(time.time() - began, 2),
                                     [str(Path(o).relative_to(self.work)) for o in outputs],
                                     _hash([fingerprint, time.time_ns(), os.getpid()]))
                self.records[stage] = record
                self.state[stage] = {"fingerprint": fingerprint, "outputs": record.outputs,
                                     "seconds": record.seconds, "token": record.token}
                write_json(self.state_path, self.state)
                self.log(f"[{stage}] done in {record.seconds:.1f} s")
        except PipelinePaused as pause:
            paused = str(pause)
            self.log(f"pipeline paused: {paused}")
        finally:
            self.write_manifest(time.time() - started, paused)
        return self.records

    def _kept(self, stage: str, fingerprint: str) -> StageRecord:
        saved = self.state[stage]
        return StageRecord(fingerprint, False, 0.0, saved["outputs"],
                           saved.get("token") or saved["fingerprint"])

    def preflight(self) -> None:
        """Sizes that are known before any work (the demo's pool size against the number of
        subsets, the clusters and the samples to select): refused up front, naming where each
        value came from, instead of after minutes of scoring."""
        from selector.core.settings import _ABSENT

        if "generate" not in self.recipe.stages:
            self._preflight_label_runs()
            return
        settings = self.recipe.settings
        layers = self.recipe.layers

        def where(key: str) -> str:
            path = tuple(key.split("."))
            origin = next((layer for layer in reversed(layers)
                           if layer.get(path) is not _ABSENT), None)
            return origin.label if origin is not None else f"{key} (pipeline/base.yaml)"

        samples = int(settings["demo"]["samples"])
        checks = []
        if "split" in self.recipe.stages:
            checks.append(("split.k", int(self.section("split").get("k", 30)), "subsets"))
        if "select" in self.recipe.stages:
            selection = self.selector_settings()["selection"]
            checks.append(("selector.selection.n_clusters", selection.get("n_clusters"),
                           "clusters"))
            checks.append(("select.num_samples", self.selection_options()["num_samples"],
                           "selected samples"))
        for key, value, what in checks:
            if value is not None and int(value) > samples:
                raise InputError(
                    f"{where('demo.samples')}: a toy pool of {samples} samples is too small for "
                    f"{value} {what} ({key}={value}, from {where(key)}): use at least {value} "
                    f"samples, or a smaller {key}")
        self._preflight_label_runs()

    def _preflight_label_runs(self) -> None:
        """The demo's fine-tunes (``labels.source: toy_finetune``, the ``compare`` stage): the
        generate stage, one batch per subset and per pick, and known ``compare.methods``."""
        from selector.app.toy.label_runs import BATCH_SIZE

        if not self._needs_label_world():
            return
        settings = self.recipe.settings
        if "generate" not in self.recipe.stages:
            raise InputError(f"{self.recipe.source}: labels.source toy_finetune and the compare "
                             "stage fine-tune the toy MiniGPT-4 on the demo's generated pool: "
                             "the recipe needs the generate stage (igpt4 demo)")
        samples = int(settings["demo"]["samples"])
        checks = []
        if settings["labels"].get("source") == "toy_finetune" and "split" in self.recipe.stages:
            k = int(self.section("split").get("k", 30))
            checks.append((samples // max(1, k), f"demo.samples / split.k = {samples} / {k}",
                           "samples per subset"))
        if "compare" in self.recipe.stages:
            checks.append((self.selection_options()["num_samples"], "select.num_samples",
                           "samples per compared pick"))
            from selector.selection.methods import create

            from selector.app.toy.loop import BEST_OTHER

            for spec in self.section("compare")["methods"]:
                if spec != BEST_OTHER:
                    try:
                        create(str(spec))
                    except InputError as exc:
                        raise InputError(f"compare.methods: {exc}") from None
        for value, key, what in checks:
            if value < BATCH_SIZE:
                raise InputError(f"{key}: {value} {what}, less than one fine-tune batch of "
                                 f"{BATCH_SIZE} (configs/lavis/toy_finetune.yaml "
                                 "run.batch_size_train): use more samples or fewer subsets")

    def refuse_overlap(self) -> None:
        """Before anything is written: the work folder never is, holds or lies inside an input
        of the recipe (the data and its images, a labels or subsets file, templates, the PCA
        source, the recipe itself). The demo's generated data lies in the work folder: it is
        the pipeline's own output, not an input."""
        from selector.core.overlap import refuse_overlap
        from selector.core.settings import config_dir

        settings = self.recipe.settings
        pipeline = settings["pipeline"]
        labels = self.section("labels")
        inputs = {
            "pipeline.data": None if "generate" in self.recipe.stages else pipeline.get("data"),
            "pipeline.image_root": pipeline.get("image_root"),
            "labels.file": labels.get("file"),
            "labels.subsets": labels.get("subsets"),
            "split.template": self.section("split").get("template"),
            "train_config.template": self.section("train_config").get("template"),
            "score.pca_from": self.section("score").get("pca_from"),
            "--config": self.recipe.source,
            "the shipped configs": str(config_dir()),
        }
        refuse_overlap({"pipeline.work": self.work},
                       {key: str(value) for key, value in inputs.items() if value})
        if "generate" in self.recipe.stages:
            self._refuse_foreign_data()

    def write_manifest(self, seconds: float, paused: Optional[str]) -> None:
        from selector.core.provenance import package_versions

        write_json(self.work / "run_manifest.json", {
            "recipe": self.recipe.source, "settings": self.recipe.settings,
            "versions": package_versions(), "inputs": self.inputs,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "seconds": round(seconds, 2),
            "paused": paused,
            "stages": {name: {"ran": r.ran, "seconds": r.seconds, "fingerprint": r.fingerprint,
                              "token": r.token, "outputs": r.outputs}
                       for name, r in self.records.items()}})



def run_pipeline(config: PathLike, overrides: Sequence[str] = (), start: Optional[str] = None,
                 until: Optional[str] = None, force: bool = False,
                 flags: Sequence[Any] = ()) -> Pipeline:
    from selector.core.provenance import log

    pipeline = Pipeline(Recipe.load(config, overrides, flags), log=log)
    pipeline.run(start, until, force)
    return pipeline
