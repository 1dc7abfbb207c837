"""``igpt4 run --config configs/pipeline/<recipe>.yaml``: every stage from one YAML recipe.

Stages, in order (a recipe lists the ones it uses under ``pipeline.stages``)::

    generate        (demo only) the toy pool and its tiny models
    score           indicators + embeddings -> WORK/scores.jsonl, WORK/pool.safetensors
    split           balanced k-means++ subsets -> WORK/subsets/ (+ launch.sh for the fine-tunes)
    labels          subset labels -> WORK/labels.json (Arena results, a file, or the demo oracle)
    train_selector  -> WORK/selector/ (checkpoint + cross-validation report)
    select          -> WORK/selection/ (filter_cap.json + image/, manifest.json)
    report          -> WORK/selection/report.html
    train_config    -> WORK/train_config.yaml: MiniGPT-4 stage 2 on the selection

Each stage has a fingerprint: the hash of its own settings, the *contents* of every file it
reads from outside the work folder (the data's annotation file and every sample's text and image
bytes -- the scoring cache's own :func:`selector.store.sample_hash`; the subsets, labels,
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

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

from selector.core.errors import InputError
from selector.core.jsonio import PathLike, read_json, write_json

STAGES = ("generate", "score", "split", "labels", "train_selector", "select", "report",
          "train_config")
#: the stages each stage reads from (their fingerprints enter its own)
UPSTREAM = {"generate": (), "score": ("generate",), "split": ("score",), "labels": ("split",),
            "train_selector": ("score", "labels"), "select": ("score", "train_selector"),
            "report": ("select",), "train_config": ("select",)}
#: the recipe sections each stage's fingerprint covers
SECTIONS = {"generate": ("demo",), "score": ("score",), "split": ("split",),
            "labels": ("labels",), "train_selector": ("selector",),
            "select": ("selector", "select"), "report": ("report",),
            "train_config": ("train_config", "select")}
VERSION = 2  # bump when a stage's outputs change meaning (or the fingerprint's composition)
#: recipe settings that are paths, resolved when the recipe is loaded (see the module docstring)
PATH_KEYS = (("pipeline", "work"), ("pipeline", "data"), ("pipeline", "image_root"),
             ("score", "pca_from"), ("split", "template"), ("labels", "file"),
             ("labels", "subsets"), ("train_config", "template"))
#: path settings that may instead name a shipped config (relative to configs/)
SHIPPED_NAME_KEYS = (("split", "template"), ("train_config", "template"))


class PipelinePaused(Exception):
    """A stage needs work done outside the pipeline (e.g. the 30 fine-tunes) first."""


@dataclass
class Recipe:
    settings: Dict[str, Any]
    source: str
    work: Path
    stages: List[str]
    #: where the settings came from (the recipe file, each --set): nested blocks validated again
    #: with the layers a stage adds (the demo's toy models) name their source in errors
    layers: List[Any] = field(default_factory=list)

    @classmethod
    def load(cls, config: PathLike, overrides: Sequence[str] = (),
             flags: Sequence[Any] = ()) -> "Recipe":
        """The recipe file, then ``flags`` (settings :class:`Layer` s labelled by the
        command-line flag that gave them, e.g. ``--seed -1``, so an error names what the user
        typed), then ``--set`` overrides, merged and validated; path settings resolved."""
        from selector.core.settings import config_dir, file_layer, override_layers, settings_from_layers

        path = Path(config)
        if not path.is_file() and (config_dir() / "pipeline" / str(config)).is_file():
            path = config_dir() / "pipeline" / str(config)  # a shipped recipe by name
        elif not path.is_file():
            shipped = sorted(p.name for p in (config_dir() / "pipeline").glob("*.yaml"))
            raise InputError(f"{config}: recipe not found (a YAML file, or a shipped recipe: "
                             f"{', '.join(n for n in shipped if n != 'base.yaml')})")
        recipe_layer = file_layer(path, str(config))
        layers = [recipe_layer, *flags, *override_layers(overrides)]
        settings = settings_from_layers("pipeline/base.yaml", layers)
        _resolve_paths(settings, layers, recipe_layer, path)
        block = settings["pipeline"]
        stages = [s for s in STAGES if s in block["stages"]]
        return cls(settings, str(path), Path(block["work"]).expanduser().resolve(), stages,
                   layers)

    def data_path(self) -> Path:
        data = self.settings["pipeline"].get("data")
        if "generate" in self.stages:
            return self.work / "data"
        if not data:
            raise InputError(f"{self.source}: pipeline.data is not set (a cc_sbu_align folder or "
                             "a conversation JSON)")
        return Path(data).expanduser().resolve()


def _resolve_paths(settings: Dict[str, Any], layers: Sequence[Any], recipe_layer: Any,
                   recipe: Path) -> None:
    """Make every path setting absolute, in place: against the recipe file's folder when the
    value comes from the recipe file (or base.yaml's defaults) of a user's recipe, against the
    current folder when it comes from ``--set`` / a flag, or from a shipped recipe."""
    from selector.core.settings import _ABSENT, config_dir

    shipped = config_dir().resolve()
    recipe_dir = recipe.resolve().parent
    file_base = Path.cwd() if (recipe_dir == shipped or shipped in recipe_dir.parents) \
        else recipe_dir
    for key in PATH_KEYS:
        section = settings.get(key[0])
        value = section.get(key[1]) if isinstance(section, dict) else None
        if value is None or str(value) == "":
            continue
        origin = next((layer for layer in reversed(layers) if layer.get(key) is not _ABSENT),
                      None)
        base = file_base if origin is None or origin is recipe_layer else Path.cwd()
        path = Path(str(value)).expanduser()
        if not path.is_absolute():
            candidate = base / path
            if key in SHIPPED_NAME_KEYS and not candidate.exists() and \
                    (config_dir() / path).is_file():
                continue  # a shipped config by name (resolved by the stage)
            path = candidate
        section[key[1]] = os.path.abspath(str(path))


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
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _file_digest(path: PathLike) -> str:
    """A file's bytes (eval_arena's one streamed sha256); a missing file is its own value (the
    stage that reads it then runs and names it)."""
    from selector.core.fingerprint import file_sha256

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


def digest_data(path: Path, image_root: Optional[PathLike] = None) -> str:
    """The data's identity: its annotation file's bytes and every sample's content hash -- the
    scoring cache's :func:`selector.store.sample_hash` (its turns and its image file's bytes), so
    an image replaced by another of the same size is a change. Invalid samples are covered by the
    annotation file's bytes (the score stage reports them)."""
    from selector.data.samples import read_pool
    from selector.scoring.store import sample_hash

    annotations = path / "filter_cap.json" if path.is_dir() else path
    if not annotations.is_file():
        raise InputError(f"{annotations}: data not found")
    pool = read_pool(path, image_root, skip_invalid=True, check_images=False)
    return _hash({"annotations": _file_digest(annotations),
                  "samples": [[s.id, sample_hash(s)] for s in pool.samples]})


class Pipeline:
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

    # -- paths shared by stages ----------------------------------------------------------------
    @property
    def pool(self) -> Path:
        return self.work / "pool.safetensors"

    def section(self, name: str) -> Dict[str, Any]:
        return dict(self.recipe.settings.get(name) or {})

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
                self.inputs["data"] = digest_data(self.recipe.data_path(),
                                                  pipeline.get("image_root"))
            external["data"] = self.inputs["data"]
        if stage == "score" and self.section("score").get("pca_from"):
            external["pca_from"] = _file_digest(self.section("score")["pca_from"])
        if stage == "split":
            from selector.labels.subsets import resolve_template

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

    def _refuse_foreign_data(self) -> None:
        """The generate stage replaces WORK/data: only ever a toy pool it made (planted.json)."""
        data = self.work / "data"
        if data.is_symlink() or (data.exists() and not (data / "planted.json").is_file()):
            raise InputError(f"{data}: exists and is not a generated toy pool (no planted.json); "
                             "the demo would replace it: choose another work folder")

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

    # -- stages --------------------------------------------------------------------------------
    def stage_generate(self) -> List[Path]:
        from selector.app import toy_world as toy_data

        demo = self.section("demo")
        data = self.work / "data"
        self._refuse_foreign_data()
        shutil.rmtree(data, ignore_errors=True)
        toy = toy_data.make_toy_pool(self.work / "data", n=int(demo["samples"]),
                                     bad_fraction=float(demo["bad_fraction"]),
                                     seed=int(demo["seed"]))
        overrides = toy_data.build_toy_models(self.work / "toy_models", seed=int(demo["seed"]))
        write_json(self.work / "toy_models" / "indicator_settings.json", overrides)
        self.log(f"[generate] TOY data: {len(toy.ids)} procedurally drawn images with captions, "
                 f"{sum(toy.bad.values())} planted bad; tiny models trained on separate generated "
                 f"data ({self.work / 'toy_models' / 'toy_models.json'})")
        return [self.work / "data", self.work / "toy_models"]

    def indicator_settings(self) -> Dict[str, Any]:
        """configs/indicators/default.yaml, the demo's toy models, then the recipe's
        ``score.settings``: validated like ``igpt4 score``'s settings."""
        from selector.core.settings import Layer, settings_from_layers

        layers = []
        toy = self.work / "toy_models" / "indicator_settings.json"
        if "generate" in self.recipe.stages and toy.is_file():
            layers.append(Layer(str(toy), read_json(toy)[0]))
        layers += [s for s in (layer.sub(("score", "settings")) for layer in self.recipe.layers)
                   if s is not None]
        return settings_from_layers("indicators/default.yaml", layers, ("score", "settings"))

    def stage_score(self) -> List[Path]:
        from selector.scoring.score import score

        block = self.section("score")
        settings = self.indicator_settings()
        names = list(block.get("indicators") or settings["pool"]["indicators"])
        settings["pool"]["indicators"] = names
        table = self.work / "scores.jsonl"
        summary = score(self.recipe.data_path(), self.work / "cache", table, names, settings,
                        self.recipe.settings["pipeline"].get("image_root"),
                        bool(block.get("skip_invalid", False)), self.pool, block.get("pca_from"))
        if not summary.complete and block.get("strict", False):
            raise InputError("score: some samples lack a value (score.strict is set)")
        return [table, self.pool]

    def stage_split(self) -> List[Path]:
        from selector.labels.commands import split_command

        block = self.section("split")
        old = self.work / "subsets"
        if old.exists():  # another split: keep its fine-tune results, never overwrite them
            kept = old.with_name(f"subsets.{self.state.get('split', {}).get('fingerprint', 'old')}")
            if kept.exists():  # a forced rerun of the same split: keep both sets of results
                kept = kept.with_name(f"{kept.name}.{time.time_ns()}")
            old.rename(kept)
            self.log(f"[split] the previous split (and any results in it) moved to {kept}")
        layout = split_command(self.work / "subsets", self.recipe.data_path(), self.pool,
                               int(block.get("k", 30)), int(block.get("seed", 0)),
                               block.get("template"), bool(block.get("slurm", False)), None,
                               bool(block.get("drop_remainder", False)))
        return [layout.subsets_file, layout.launcher]

    def stage_labels(self) -> List[Path]:
        block = self.section("labels")
        source = block.get("source", "collect")
        out = self.work / "labels.json"
        subsets_file = self.work / "subsets" / "subsets.json"
        if source == "oracle":
            from selector.app import toy_world as toy_data
            from selector.scoring.pool import read_subsets

            toy = toy_data.load_toy_pool(self.work / "data")
            labels = toy_data.oracle_labels(read_subsets(subsets_file), toy,
                                            seed=int(self.section("demo").get("seed", 0)))
            write_json(out, {"labels": labels, "source": "synthetic oracle (toy demo): "
                             "see selector/app/toy_world.py oracle_labels"})
        elif source == "file":
            if not block.get("file"):
                raise InputError("labels.source is 'file' but labels.file is not set")
            from selector.core.atomic import copy_file
            from selector.scoring.pool import read_labels

            read_labels(block["file"])  # a bad labels file is named here, not stages later
            copy_file(block["file"], out)
        elif source == "collect":
            from selector.labels.subsets import collect_labels

            if not any((self.work / "subsets").rglob("result.json")):
                raise PipelinePaused(
                    f"no evaluation results under {self.work / 'subsets'} yet: fine-tune and "
                    f"evaluate every subset (MINIGPT4_DIR=... ARENA_DATA=... bash "
                    f"{self.work / 'subsets' / 'launch.sh'}), then run again")
            collect_labels([self.work / "subsets"], list(block.get("datasets")),
                           bool(block.get("allow_missing", False)), out=out)
        else:
            raise InputError(f"labels.source must be collect, file or oracle (got {source!r})")
        return [out]

    def selector_settings(self, extra: Sequence[str] = ()) -> Dict[str, Any]:
        """configs/selector/default.yaml under the recipe's ``selector`` block (validated)."""
        from selector.core.settings import override_layers, settings_from_layers

        layers = [s for s in (layer.sub(("selector",)) for layer in self.recipe.layers)
                  if s is not None]
        return settings_from_layers("selector/default.yaml", layers + override_layers(extra),
                                    ("selector",))

    def stage_train_selector(self) -> List[Path]:
        from selector.model.fit import train_selector

        subsets = self.work / "subsets" / "subsets.json"
        labels_file = self.work / "labels.json"
        if "split" not in self.recipe.stages:
            subsets = Path(self.section("labels").get("subsets") or subsets)
        train_selector(self.work / "selector", self.selector_settings(), self.pool, subsets,
                       labels_file)
        return [self.work / "selector"]

    def selection_options(self) -> Dict[str, Any]:
        """The ``selector`` block of the training dataset: the same inputs give the builder the
        same selection (and its cache key) that this stage made."""
        settings = self.selector_settings()
        selection = {k: v for k, v in settings["selection"].items()
                     if k != "num_samples" and v is not None}
        return {"checkpoint": str(self.work / "selector"), "pool": str(self.pool),
                "cache_dir": str(self.work / "cache"),
                "num_samples": int(self.section("select").get("num_samples",
                                                              settings["selection"]["num_samples"])),
                "mode": settings["model"].get("mode", "default"), "selection": selection}

    def stage_select(self) -> List[Path]:
        from selector.selection.run_selection import selection_for_run

        options = self.selection_options()
        data = self.recipe.data_path()
        if not data.is_dir():
            options["image_root"] = self.recipe.settings["pipeline"].get("image_root")
        chosen = selection_for_run(data, options)
        target = self.work / "selection"
        from selector.core.atomic import publish_folder

        staging = target.with_name(f".{target.name}.{os.getpid()}.new")
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(chosen.folder, staging, symlinks=True)
        publish_folder(staging, target)  # a kill never leaves a half-copied selection
        self.log(f"[select] {len(chosen.ids)} samples -> {target}")
        return [target / "manifest.json", target / "selected.txt"]

    def stage_report(self) -> List[Path]:
        from selector.report.page import write_report

        block = self.section("report")
        path = write_report(self.work / "selection", self.pool, self.work / "selection",
                            self.work / "selector", self.recipe.data_path(),
                            int(block.get("examples", 12)))
        return [path]

    def train_config_template(self) -> Path:
        from selector.core.settings import config_dir

        template = self.section("train_config").get("template")
        if template is None:
            return config_dir() / "minigpt4" / "instructiongpt4_stage2_finetune.yaml"
        path = Path(template)
        return path if path.is_absolute() or path.is_file() else config_dir() / path

    def stage_train_config(self) -> List[Path]:
        """The training config: the shipped stage-2 recipe with the dataset pointed at the data
        and the selector, so the builder makes (reuses) this run's selection on the fly."""
        from omegaconf import DictConfig, OmegaConf
        from omegaconf.errors import OmegaConfBaseException

        from selector.core.settings import load_yaml

        block = self.section("train_config")
        template = self.train_config_template()
        config = load_yaml(template)
        for key in ("datasets", "run"):
            section = OmegaConf.select(config, key, default=None)
            if not isinstance(section, DictConfig) or not section:
                raise InputError(f"{template}: train_config.template lacks a {key!r} section "
                                 "(a MiniGPT-4 stage-2 train config)")
        data = self.recipe.data_path()
        name = "cc_sbu_align_selected" if data.is_dir() else "llava_conversations"
        datasets = config.datasets
        dataset = datasets.pop(next(iter(datasets)))
        if not isinstance(dataset, DictConfig):
            raise InputError(f"{template}: its first dataset is not a mapping")
        dataset.build_info = {"storage": str(data)}
        if name == "llava_conversations":
            dataset.build_info.image_root = self.recipe.settings["pipeline"].get("image_root")
        dataset.selector = self.selection_options()
        datasets[name] = dataset
        config.run.output_dir = str(self.work / "train_output")
        for key, value in (block.get("set") or {}).items():
            try:
                OmegaConf.update(config, key, value, force_add=True)
            except OmegaConfBaseException as exc:
                raise InputError(f"train_config.set.{key}: cannot set it in {template} "
                                 f"({str(exc).splitlines()[0][:160]})") from None
        out = self.work / "train_config.yaml"
        from selector.core.atomic import atomic_open

        with atomic_open(out) as handle:
            OmegaConf.save(config, handle)
        return [out]


def run_pipeline(config: PathLike, overrides: Sequence[str] = (), start: Optional[str] = None,
                 until: Optional[str] = None, force: bool = False,
                 flags: Sequence[Any] = ()) -> Pipeline:
    from selector.core.provenance import log

    pipeline = Pipeline(Recipe.load(config, overrides, flags), log=log)
    pipeline.run(start, until, force)
    return pipeline
