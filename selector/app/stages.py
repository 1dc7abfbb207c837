"""The work of each pipeline stage (:mod:`selector.app.pipeline` decides which run): every
stage reads the recipe and the work folder and returns the outputs it wrote, relative to which
the runner records them."""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

from selector.app.recipe import Recipe
from selector.core.errors import InputError
from selector.core.jsonio import read_json, write_json


def _dotlist(block: Dict[str, Any], prefix: str = "") -> List[str]:
    """A nested settings block as ``KEY=VALUE`` overrides (values as JSON, which YAML reads)."""
    import json

    items: List[str] = []
    for key, value in block.items():
        if isinstance(value, dict) and value:
            items += _dotlist(value, f"{prefix}{key}.")
        else:
            items.append(f"{prefix}{key}={json.dumps(value)}")
    return items


def _set_aside(folder: Path, tag: str) -> Path:
    """Rename a stage's earlier output folder to ``<name>.<tag>`` beside it (``.<ns>`` more
    when that is taken: a forced rerun keeps both), so its results are kept, never overwritten."""
    kept = folder.with_name(f"{folder.name}.{tag}")
    if kept.exists():
        kept = kept.with_name(f"{kept.name}.{time.time_ns()}")
    folder.rename(kept)
    return kept


class PipelinePaused(Exception):
    """A stage needs work done outside the pipeline (e.g. the 30 fine-tunes) first."""


class Stages:
    """The stage methods of :class:`~selector.app.pipeline.Pipeline` (``stage_<name>``) and the
    settings they derive from the recipe."""

    recipe: Recipe
    work: Path
    state: Dict[str, Any]
    log: Callable[[str], None]
    sample_hashes: Optional[Dict[str, str]]
    #: the toy MiniGPT-4's stage 1 training in another process (the demo), or None
    stage1_training: Any = None
    fingerprint: Callable[[str], str]  # Pipeline's: a stage's fingerprint

    # -- paths shared by stages ----------------------------------------------------------------
    @property
    def pool(self) -> Path:
        return self.work / "pool.safetensors"

    def section(self, name: str) -> Dict[str, Any]:
        return dict(self.recipe.settings.get(name) or {})

    def _refuse_foreign_data(self) -> None:
        """The generate stage replaces WORK/data: only ever a toy pool it made (planted.json)."""
        data = self.work / "data"
        if data.is_symlink() or (data.exists() and not (data / "planted.json").is_file()):
            raise InputError(f"{data}: exists and is not a generated toy pool (no planted.json); "
                             "the demo would replace it: choose another work folder")

    # -- stages --------------------------------------------------------------------------------
    def _needs_label_world(self) -> bool:
        return self.section("labels").get("source") == "toy_finetune" or \
            "compare" in self.recipe.stages

    def stage_generate(self) -> List[Path]:
        from selector.app.toy.models import build_toy_models
        from selector.app.toy.world import make_toy_pool

        demo = self.section("demo")
        if self._needs_label_world() and self.stage1_training is None:
            from selector.app.toy.minigpt4 import stage1_in_background

            self.stage1_training = stage1_in_background(int(demo["seed"]), str(demo["kind"]))
            if self.stage1_training is not None:
                self.log("[generate] the toy MiniGPT-4's stage 1 trains in the background "
                         "(about a minute, once: it is cached)")
        data = self.work / "data"
        self._refuse_foreign_data()
        shutil.rmtree(data, ignore_errors=True)
        if self.recipe.generated_conversations:
            from selector.app.toy.conversations import make_toy_conversations

            toy = make_toy_conversations(self.work / "data", n=int(demo["samples"]),
                                         bad_fraction=float(demo["bad_fraction"]),
                                         seed=int(demo["seed"]))
        else:
            toy = make_toy_pool(self.work / "data", n=int(demo["samples"]),
                                bad_fraction=float(demo["bad_fraction"]), seed=int(demo["seed"]))
        overrides = build_toy_models(self.work / "toy_models", seed=int(demo["seed"]))
        write_json(self.work / "toy_models" / "indicator_settings.json", overrides)
        what = "multi-round conversations" if self.recipe.generated_conversations else "captions"
        self.log(f"[generate] TOY data: {len(toy.ids)} procedurally drawn images with {what}, "
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
                        self.recipe.image_root(),
                        bool(block.get("skip_invalid", False)), self.pool, block.get("pca_from"),
                        known_hashes=self.sample_hashes)
        if not summary.complete and block.get("strict", False):
            raise InputError("score: some samples lack a value (score.strict is set)")
        return [table, self.pool]

    def stage_split(self) -> List[Path]:
        from selector.labels.steps import split_command

        block = self.section("split")
        old = self.work / "subsets"
        if old.exists():  # another split: keep its fine-tune results, never overwrite them
            kept = _set_aside(old, self.state.get("split", {}).get("fingerprint", "old"))
            self.log(f"[split] the previous split (and any results in it) moved to {kept}")
        layout = split_command(self.work / "subsets", self.recipe.data_path(), self.pool,
                               int(block.get("k", 30)), int(block.get("seed", 0)),
                               block.get("template"), bool(block.get("slurm", False)), None,
                               bool(block.get("drop_remainder", False)),
                               image_root=self.recipe.image_root())
        return [layout.subsets_file, layout.launcher]

    def stage_labels(self) -> List[Path]:
        block = self.section("labels")
        source = block.get("source", "collect")
        out = self.work / "labels.json"
        subsets_file = self.work / "subsets" / "subsets.json"
        if source == "oracle":
            from selector.app.toy.oracle import oracle_labels
            from selector.app.toy.world import load_toy_pool
            from selector.scoring.pool import read_subsets

            toy = load_toy_pool(self.work / "data")
            labels = oracle_labels(read_subsets(subsets_file), toy,
                                   seed=int(self.section("demo").get("seed", 0)))
            write_json(out, {"labels": labels, "source": "synthetic oracle (toy demo): "
                             "see selector/app/toy/oracle.py oracle_labels"})
        elif source == "file":
            if not block.get("file"):
                raise InputError("labels.source is 'file' but labels.file is not set")
            from selector.core.atomic import copy_file
            from selector.scoring.pool import read_labels

            read_labels(block["file"])  # a bad labels file is named here, not stages later
            copy_file(block["file"], out)
        elif source == "toy_finetune":
            self._toy_label_runs()
            from selector.labels.collect import collect_labels

            collect_labels([self.work / "subsets"], list(block.get("datasets")), False, out=out)
        elif source == "collect":
            from selector.labels.collect import collect_labels

            if not any((self.work / "subsets").rglob("result.json")):
                raise PipelinePaused(
                    f"no evaluation results under {self.work / 'subsets'} yet: fine-tune and "
                    f"evaluate every subset (MINIGPT4_DIR=... ARENA_DATA=... bash "
                    f"{self.work / 'subsets' / 'launch.sh'}), then run again")
            collect_labels([self.work / "subsets"], list(block.get("datasets")),
                           bool(block.get("allow_missing", False)), out=out)
        else:
            raise InputError(f"labels.source must be collect, file, oracle or toy_finetune (got "
                             f"{source!r})")
        return [out]

    # -- the demo's genuine labels and comparison (selector.app.toy.loop) ----------------------
    def label_world(self) -> Any:
        from selector.app.toy.loop import label_world

        demo = self.section("demo")
        if self.stage1_training is not None:  # started by the generate stage
            self.stage1_training.join()  # it failed: stage1_model trains here and says why
            self.stage1_training = None
        return label_world(self.work, int(demo["seed"]), int(demo["vqa_drawings"]),
                           str(demo["kind"]))

    def _toy_label_runs(self) -> None:
        """Every subset of the split fine-tuned and evaluated (plus the noise evaluations);
        what it did is kept in WORK/label_runs.json for the demo's summary."""
        from selector.app.toy.loop import fine_tune_subsets

        demo = self.section("demo")
        world = self.label_world()
        runs = fine_tune_subsets(self.work / "subsets", world, int(demo["label_steps"]),
                                 int(demo["seed"]), int(demo["noise_repeats"]),
                                 int(demo["workers"]))
        write_json(self.work / "label_runs.json", {
            "stage1": {"folder": str(world.stage1.folder), "report": world.stage1.report},
            "vqa": {"root": str(world.vqa.root), "questions": world.vqa.questions,
                    "by_kind": world.vqa.by_kind}, **runs})

    def stage_compare(self) -> List[Path]:
        """The demo's claim tested: an igpt4 study over the selector, random, the best other
        method and the full pool in WORK/compare, every run fine-tuned and evaluated, then
        collected (WORK/compare/study_results.json). A rerun after a change upstream starts a
        new study (the old one is moved aside: its runs belong to the old pool or selector)."""
        from selector.app.toy.loop import compare_picks

        block = self.section("compare")
        out = self.work / "compare"
        mark = self.work / ".igpt4_compare.json"  # the fingerprint WORK/compare belongs to
        current = self.fingerprint("compare")
        if out.exists():
            document = read_json(mark)[0] if mark.is_file() else None
            made_for = document.get("fingerprint") if isinstance(document, dict) else None
            if made_for != current:  # another comparison's (or unknown): set aside, kept
                kept = _set_aside(out, str(made_for or "unknown")[:12])
                self.log(f"[compare] the previous comparison moved to {kept}")
        write_json(mark, {"fingerprint": current})  # a killed run resumes in WORK/compare
        image_root = self.recipe.image_root()
        document = compare_picks(out, self.work, self.recipe.data_path(), self.label_world(),
                                 list(block["methods"]), int(block["seeds"]),
                                 self.selection_options()["num_samples"], int(block["steps"]),
                                 bool(block["full"]), _dotlist(self.section("selector")),
                                 image_root=Path(image_root) if image_root else None,
                                 workers=int(self.section("demo")["workers"]))
        write_json(out / "study_results.json", document)
        return [out / "study_results.json"]

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
        from selector.selection.run_selection import RunSelectionOptions, selection_for_run

        options = self.selection_options()
        data = self.recipe.data_path()
        if not data.is_dir():
            options["image_root"] = self.recipe.image_root()
        chosen = selection_for_run(data, RunSelectionOptions.from_block(options))
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
            dataset.build_info.image_root = self.recipe.image_root()
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
