"""Dataset builders, made per host from that host's ``BaseDatasetBuilder``.

* ``cc_sbu_align_selected``: reads cc_sbu_align from ``build_info.storage`` and keeps the samples
  the selector chooses (``selector`` block of the dataset config; see
  ``configs/datasets/cc_sbu_align_selected/defaults.yaml``). The selection is made once per set
  of inputs and reused (:mod:`selector.selection.run_selection`); where it lies is logged and
  kept on the dataset (``selection_folder``), and the portable runner copies it into the run's
  output dir.
* ``cc_sbu_align`` (only where the host has none: salesforce LAVIS; MiniGPT-4 ships its own):
  MiniGPT-4's stock dataset name, every sample of the cc_sbu_align folder in
  ``build_info.storage``, so the label runs' configs (one subset each) train in either host.
* ``llava_conversations``: LLaVA-style conversation JSON (+ ``image_root``), every conversation or
  the selected ones, laid out for MiniGPT-4 (:class:`~lavis_plugins.datasets.ConversationDataset`).
  MiniGPT-4's stage-2 model puts an image before every first question, so text-only samples (no
  ``image`` key; LLaVA-mix-665K has about 40k) are left out, with one logged line counting them
  (:func:`with_images`); the selection itself keeps them (other trainers can use them).

Default configs are package-absolute paths, so the hosts find them wherever we are installed.
"""
from __future__ import annotations

import logging
from typing import Any, Dict, List

from .datasets import ConversationDataset, SelectedCCSBUAlignDataset
from .hosts import Host


def _config_path(name: str) -> str:
    from selector.core.settings import config_dir

    return str(config_dir() / "datasets" / name / "defaults.yaml")


def _options(config: Any) -> Dict[str, Any]:
    """The dataset config's ``selector`` block as a plain dict (the smoke names still in it)."""
    from omegaconf import OmegaConf

    block = config.get("selector")
    return OmegaConf.to_container(block, resolve=True) if block is not None else {}


def _select(storage: str, block: Dict[str, Any]):
    """(samples kept, selection or None) for a builder's data (``igpt4:smoke``: the smoke set,
    :mod:`lavis_plugins.smoke`). The block goes down typed
    (:class:`~selector.selection.run_selection.RunSelectionOptions`), never as strings."""
    from selector.data.samples import read_pool
    from selector.selection.run_selection import RunSelectionOptions, selection_for_run

    from .smoke import resolve

    storage, block = resolve(storage, block)
    options = RunSelectionOptions.from_block(block)
    pool = read_pool(storage, options.image_root)
    if not options.checkpoint:
        return pool.samples, None
    chosen = selection_for_run(storage, options)
    logging.info("instructiongpt4: %s %d of %d samples (selection %s in %s)",
                 "reused" if chosen.reused else "selected", len(chosen.ids), len(pool),
                 chosen.digest, chosen.folder)
    return pool.subset(chosen.ids).samples, chosen


def with_images(samples: List[Any], source: str) -> List[Any]:
    """The samples that have an image; one warning line counts the text-only ones left out, and
    a data set with no image at all is one error line."""
    from selector.core.errors import InputError

    kept = [sample for sample in samples if sample.has_image]
    if len(kept) < len(samples):
        if not kept:
            raise InputError(f"llava_conversations: {source}: all {len(samples)} samples are "
                             "text-only (no image); MiniGPT-4 trains on an image per sample")
        logging.warning("instructiongpt4: llava_conversations: left out %d text-only samples "
                        "(no image; MiniGPT-4 trains on an image per sample) of %d from %s; "
                        "training on %d", len(samples) - len(kept), len(samples), source,
                        len(kept))
    return kept


def builder_classes(host: Host) -> Dict[str, type]:
    base = host.BaseDatasetBuilder

    class CCSBUAlignSelectedBuilder(base):
        train_dataset_cls = SelectedCCSBUAlignDataset
        DATASET_CONFIG_DICT = {"default": _config_path("cc_sbu_align_selected")}

        def build_datasets(self) -> Dict[str, Any]:
            from selector.core.errors import InputError

            self.build_processors()
            options = _options(self.config)
            from .smoke import SMOKE

            if not options.get("checkpoint") and str(self.config.build_info.storage) != SMOKE:
                raise InputError("cc_sbu_align_selected: selector.checkpoint is not set (use the "
                                 "stock cc_sbu_align builder to train on every sample)")
            samples, chosen = _select(str(self.config.build_info.storage), options)
            dataset = self.train_dataset_cls(samples, self.vis_processors["train"],
                                             self.text_processors["train"])
            dataset.selection_folder = chosen.folder
            return {"train": dataset}

    class CCSBUAlignBuilder(base):
        """MiniGPT-4's stock ``cc_sbu_align`` for hosts without it: every sample."""

        train_dataset_cls = SelectedCCSBUAlignDataset
        DATASET_CONFIG_DICT = {"default": _config_path("cc_sbu_align")}

        def build_datasets(self) -> Dict[str, Any]:
            from selector.data.samples import read_pool

            self.build_processors()
            samples = read_pool(str(self.config.build_info.storage)).samples
            dataset = self.train_dataset_cls(samples, self.vis_processors["train"],
                                             self.text_processors["train"])
            dataset.selection_folder = None
            return {"train": dataset}

    class LlavaConversationsBuilder(base):
        train_dataset_cls = ConversationDataset
        DATASET_CONFIG_DICT = {"default": _config_path("llava_conversations")}

        def build_datasets(self) -> Dict[str, Any]:
            self.build_processors()
            info = self.config.build_info
            options = {**_options(self.config), "image_root": info.get("image_root")}
            samples, chosen = _select(str(info.storage), options)
            samples = with_images(samples, str(info.storage))
            dataset = self.train_dataset_cls(
                samples, self.vis_processors["train"], self.text_processors["train"],
                self.config.get("prompt_template", "###Human: {} ###Assistant: "),
                self.config.get("end_sym", "###"))
            dataset.selection_folder = chosen.folder if chosen else None
            return {"train": dataset}

    classes = {"cc_sbu_align_selected": CCSBUAlignSelectedBuilder,
               "llava_conversations": LlavaConversationsBuilder}
    if host.name == "lavis":  # MiniGPT-4 registers its own cc_sbu_align
        classes["cc_sbu_align"] = CCSBUAlignBuilder
    return classes
