"""Bad settings, damaged files and OS errors are one line on stderr, exit 2, no traceback
(issue 11, item 7): settings validated when loaded (selector/core/schema.py, selector/core/settings.py),
damaged pool files, selector checkpoints and labels named by file, OS errors named by path.

Every case runs ``igpt4`` in-process (``selector.cli.main``) and checks: exit status 2, exactly one
stderr line, ``igpt4: error:`` naming the key or file, and no traceback."""
from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path
from typing import List

import numpy as np
import pytest

from conftest import trained_world
from selector.app.cli import main
from selector.core.errors import InputError

SECRET = "sk-test-0123456789abcdef"


def one_line(capsys, argv: List[str], *fragments: str, after_work: bool = False) -> str:
    """Run ``igpt4 ARGV``: exit 2 with exactly one stderr line that holds every fragment (with
    ``after_work``, the error is met after the command has worked and logged: then exactly one
    error line, the last one)."""
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert code == 2, (code, err)
    assert "Traceback" not in err, err
    lines = [line for line in err.replace("\r", "\n").splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("igpt4: error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], err
    if not after_work:
        assert len(lines) == 1, err
    for fragment in fragments:
        assert fragment in errors[0], (fragment, errors[0])
    return errors[0]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A small pool, its subsets and labels, a trained checkpoint and a selection."""
    from selector.selection.select import select
    from selector.scoring.pool import FeaturePool
    from selector.core.settings import load_settings

    root = trained_world(tmp_path_factory.mktemp("validation"), 60, seed=5, epochs=2)
    pool = FeaturePool.load(root / "pool.safetensors")
    select(root / "selection", load_settings(None, ["selection.num_samples=5"]),
           root / "pool.safetensors", baseline="random")
    (root / "cc").mkdir()  # captions for --captions (no images needed)
    (root / "cc" / "filter_cap.json").write_text(json.dumps({"annotations": [
        {"image_id": i, "caption": f"A picture {i}."} for i in pool.ids]}))
    return root


def train_args(files: Path, out: Path, *sets: str, labels: str = "labels.json") -> List[str]:
    argv = ["train-selector", "--pool", files / "pool.safetensors", "--subsets",
            files / "subsets.json", "--labels", files / labels, "--out", out]
    for item in sets:
        argv += ["--set", item]
    return argv


# ---------------------------------------------------------------------------------------------
# settings: --set, --config, recipes
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("item, fragments", [
    ("training.epochs=0", ["--set training.epochs=0", "training.epochs must be >= 1"]),
    ("training.epochs=-3", ["training.epochs must be >= 1 (got -3)"]),
    ("training.epochs=abc", ["training.epochs must be an integer (got 'abc')"]),
    ("training.epochs=1.5", ["training.epochs must be an integer"]),
    ("training.epochs=true", ["training.epochs must be an integer (got True)"]),
    ("training.lr=.nan", ["training.lr must be a finite number"]),
    ("training.lr=.inf", ["training.lr must be a finite number"]),
    ("training.lr=-0.1", ["training.lr must be > 0"]),
    ("training.lr=0", ["training.lr must be > 0 (got 0)"]),
    ("training.val_fraction=1", ["training.val_fraction must be < 1"]),
    ("training.patience=-1", ["training.patience must be >= 0"]),
    ("training.cross_validate=2", ["training.cross_validate must be true or false"]),
    ("training.epoch=3", ["unknown setting 'training.epoch'", "did you mean training.epochs?"]),
    ("epochs=3", ["unknown setting 'epochs'", "did you mean training.epochs?"]),
    ("training=3", ["training must be a mapping (got 3)"]),
    ("model.mode=fast", ["model.mode must be one of default, reference"]),
    ("model.n_heads=0", ["model.n_heads must be >= 1"]),
    ("selection.clustering=fast", ["selection.clustering must be one of auto, exact"]),
    ("selection.micro_clusters=20000", ["selection.micro_clusters must be <= 10000"]),
    ("training.epochs=${nowhere}", ["--set training.epochs=${nowhere}", "training.epochs"]),
    ("no-equals-sign", ["--set no-equals-sign: expected KEY=VALUE"]),
    ("training.epochs=[1,", ["--set training.epochs=[1,"]),
])
def test_bad_selector_settings(capsys, tmp_path, files, item, fragments):
    one_line(capsys, train_args(files, tmp_path / "out", item), *fragments)
    assert not (tmp_path / "out").exists()  # refused before anything was written


@pytest.mark.parametrize("item, fragments", [
    ("selection.num_samples=0", ["selection.num_samples must be >= 1"]),
    ("selection.quota_total=0", ["selection.quota_total must be >= 1"]),
    ("selection.n_clusters=abc", ["selection.n_clusters must be an integer"]),
    ("selection.num_sample=5", ["did you mean selection.num_samples?"]),
])
def test_bad_select_settings(capsys, tmp_path, files, item, fragments):
    one_line(capsys, ["select", "--pool", files / "pool.safetensors", "--baseline", "random",
                      "--out", tmp_path / "out", "--set", item], *fragments)


@pytest.mark.parametrize("item, fragments", [
    ("normaliser=abc", ["--set normaliser=abc", "unknown setting 'normaliser'",
                        "did you mean indicators.length.normaliser?"]),
    ("indicators.length.normaliser=abc", ["indicators.length.normaliser must be a number"]),
    ("indicators.length.normaliser=0", ["indicators.length.normaliser must be > 0"]),
    ("indicators.length.normaliser=.inf", ["must be a finite number"]),
    ("chunk_size=0", ["--set chunk_size=0", "chunk_size must be >= 1 (got 0)"]),
    ("indicators.clip.batch_size=0", ["indicators.clip.batch_size must be >= 1"]),
    ("indicators.clip.precision=fp8", ["indicators.clip.precision must be one of fp32"]),
    ("indicators.gpt.mode=offline", ["indicators.gpt.mode must be one of online, batch"]),
    ("indicators.gpt.concurrency=0", ["indicators.gpt.concurrency must be >= 1"]),
    ("indicators.gpt.timeout=-1", ["indicators.gpt.timeout must be > 0"]),
    ("indicators.gpt.temperature=abc", ["indicators.gpt.temperature must be a number"]),
    ("indicators.lenght.normaliser=3", ["did you mean indicators.length?"]),
    ("pool.indicators=[]", ["pool.indicators must not be empty"]),
    ("pool.indicators=[clip,clip]", ["pool.indicators lists 'clip' twice"]),
    ("features.text.kind=bert", ["features.text.kind must be one of causal_lm"]),
    ("features.pca_components=0", ["features.pca_components must be >= 1"]),
])
def test_bad_score_settings(capsys, tmp_path, item, fragments):
    data = tmp_path / "data"
    data.mkdir()
    one_line(capsys, ["score", "--data", data, "--work", tmp_path / "work", "--out",
                      tmp_path / "scores.jsonl", "--set", item], *fragments)
    assert not (tmp_path / "work").exists()


def test_a_key_pasted_as_the_key_variable_is_not_echoed(capsys, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    one_line(capsys, ["score", "--data", data, "--out", tmp_path / "s.jsonl", "--work",
                      tmp_path / "w", "--set", f"indicators.gpt.api_key_env={SECRET}"],
             "indicators.gpt.api_key_env must be the NAME of an environment variable")
    # (the --set label itself is masked by the redacting streams only for known keys: the
    # problem text never repeats the value)


@pytest.mark.parametrize("text, fragments", [
    ("training:\n  epochs: 0\n", ["line 2", "training.epochs must be >= 1 (got 0)"]),
    ("training:\n  lr: 0.01\n  bogus: 1\n", ["line 3", "unknown setting 'training.bogus'"]),
    ("selection:\n  n_clusters: ten\n", ["line 2", "selection.n_clusters must be an integer"]),
    ("training:\n\tepochs: 3\n", ["line 2 column 1", "malformed YAML"]),
    ("training:\n  epochs: 3\n  epochs: 4\n", ["line 3", "malformed YAML", "duplicate key"]),
    ("training: [epochs\n", ["malformed YAML", "line 2"]),
    ("- training\n- model\n", ["expected a YAML mapping of settings"]),
])
def test_bad_config_files(capsys, tmp_path, files, text, fragments):
    config = tmp_path / "mine.yaml"
    config.write_text(text, encoding="utf-8")
    line = one_line(capsys, train_args(files, tmp_path / "out") + ["--config", config],
                    str(config), *fragments)
    assert "shipped" not in line


def test_config_file_problems(capsys, tmp_path, files):
    one_line(capsys, train_args(files, tmp_path / "o") + ["--config", tmp_path / "none.yaml"],
             "none.yaml: config file not found")
    (tmp_path / "configs").mkdir()
    one_line(capsys, train_args(files, tmp_path / "o") + ["--config", tmp_path / "configs"],
             f"{tmp_path / 'configs'}: is a folder")
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("training:\n  seed: caf\xe9\n".encode("latin-1"))
    one_line(capsys, train_args(files, tmp_path / "o") + ["--config", latin],
             str(latin), "not UTF-8")


def test_a_later_layer_is_named_and_a_good_one_passes(tmp_path):
    from selector.core.settings import load_settings

    config = tmp_path / "mine.yaml"
    config.write_text("training:\n  epochs: 5\n")
    settings = load_settings(str(config), ["training.lr=0.5", "selection.quota_total=null"])
    assert settings["training"]["epochs"] == 5 and settings["training"]["lr"] == 0.5
    # the value that wins is the one blamed: the --set, not the file it overrides
    with pytest.raises(InputError, match=r"^--set training.epochs=0: "):
        load_settings(str(config), ["training.epochs=0"])
    config.write_text("training:\n  epochs: 0\n")
    with pytest.raises(InputError, match=r"mine.yaml line 2: training.epochs must be >= 1"):
        load_settings(str(config))
    # a good --set over a bad file value: the merged result is what is validated
    assert load_settings(str(config), ["training.epochs=3"])["training"]["epochs"] == 3
    # the reference config (shipped by name) still loads and validates
    assert load_settings("selector/reference.yaml")["model"]["mode"] == "reference"


def test_every_shipped_config_validates():
    from selector.app.pipeline import Pipeline
    from selector.app.recipe import Recipe
    from selector.core.settings import load_settings

    for base in ("selector/default.yaml", "indicators/default.yaml"):
        assert load_settings(None, base=base)
    assert load_settings("selector/reference.yaml")
    for name in ("instructiongpt4.yaml", "llava_conversations.yaml", "demo.yaml"):
        pipeline = Pipeline(Recipe.load(name), log=lambda message: None)
        assert pipeline.selector_settings()["training"]["epochs"] >= 1
        assert pipeline.indicator_settings()["chunk_size"] >= 1


@pytest.mark.parametrize("text, fragments", [
    ("pipeline:\n  stages: [score, fine_tune]\n", ["line 2", "pipeline.stages holds 'fine_tune'"]),
    ("selector:\n  training:\n    epochs: 0\n",
     ["line 3", "selector.training.epochs must be >= 1"]),
    ("score:\n  settings:\n    chunk_size: 0\n", ["line 3", "score.settings.chunk_size must be"]),
    ("score:\n  settings:\n    indicators:\n      length:\n        normaliser: abc\n",
     ["line 5", "score.settings.indicators.length.normaliser must be a number"]),
    ("split:\n  k: 0\n", ["line 2", "split.k must be >= 1"]),
    ("labels:\n  source: magic\n", ["labels.source must be one of collect, file, oracle"]),
    ("demo:\n  samples: -5\n", ["demo.samples must be >= 1"]),
    ("slpit:\n  k: 3\n", ["unknown setting 'slpit'", "did you mean split?"]),
    ("pipeline:\n  work: [a\n", ["malformed YAML", "line"]),
    ("pipeline:\n work: a\n  data: b\n", ["malformed YAML", "line 3"]),
])
def test_bad_recipes(capsys, tmp_path, text, fragments):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(text)
    one_line(capsys, ["run", "--config", recipe], str(recipe), *fragments)


@pytest.mark.parametrize("item, fragment", [
    ("selector.training.lr=abc", "selector.training.lr must be a number"),
    ("score.settings.chunk_size=0", "score.settings.chunk_size must be >= 1"),
    ("score.settings.indicators.gpt.mode=x", "score.settings.indicators.gpt.mode must be one of"),
    ("select.num_samples=0", "select.num_samples must be >= 1"),
    ("pipeline.stages=[]", "pipeline.stages must not be empty"),
    ("report.examples=-1", "report.examples must be >= 0"),
])
def test_bad_recipe_overrides(capsys, item, fragment):
    one_line(capsys, ["run", "--config", "demo.yaml", "--set", item], f"--set {item}", fragment)


def test_demo_overrides_are_validated(capsys, tmp_path):
    one_line(capsys, ["demo", "--out", tmp_path / "demo", "--set", "select.num_samples=abc"],
             "select.num_samples must be an integer", after_work=True)  # after the TOY banner
    assert not (tmp_path / "demo").exists()


def test_malformed_templates(capsys, tmp_path, files):
    from selector.labels.jobs import load_template

    bad = tmp_path / "template.yaml"
    bad.write_text("model:\n  arch: minigpt4\ndatasets:\n\tcc_sbu_align: {}\n")
    with pytest.raises(InputError, match=r"template.yaml line 4 column 1: malformed YAML"):
        load_template(bad)
    bad.write_text("- a list\n")
    with pytest.raises(InputError, match="expected a YAML mapping"):
        load_template(bad)
    bad.write_text("model: {}\nrun: {}\n")
    with pytest.raises(InputError, match="lacks a 'datasets.cc_sbu_align' section"):
        load_template(bad)
    data = tmp_path / "cc"
    data.mkdir()
    (data / "filter_cap.json").write_text(json.dumps({"annotations": []}))
    bad.write_text("model:\n  arch: [minigpt4\n")
    one_line(capsys, ["split", "--subsets", files / "subsets.json", "--data", data, "--out",
                      tmp_path / "split", "--template", bad], str(bad), "malformed YAML", "line")


# ---------------------------------------------------------------------------------------------
# damaged pool files, checkpoints, labels
# ---------------------------------------------------------------------------------------------

def _pool_variants(root: Path, good: Path) -> dict:
    from safetensors.numpy import save_file

    from selector.scoring.pool import FeaturePool

    pool = FeaturePool.load(good)
    meta = {"format": "igpt4-pool/1", "ids": json.dumps(pool.ids),
            "indicator_names": json.dumps(pool.indicator_names)}
    tensors = {"image": pool.image, "text": pool.text, "indicators": pool.indicators}
    raw = good.read_bytes()
    variants = {
        "no-ids": ({k: v for k, v in meta.items() if k != "ids"}, tensors,
                   "metadata lacks 'ids'"),
        "malformed-ids": ({**meta, "ids": "[\"a\", "}, tensors, "metadata 'ids' is not valid JSON"),
        "dict-ids": ({**meta, "ids": json.dumps({"a": 1})}, tensors,
                     "metadata 'ids' must be a JSON list"),
        "number-ids": ({**meta, "ids": json.dumps(list(range(len(pool.ids))))}, tensors,
                       "metadata 'ids' must list non-empty strings"),
        "short-ids": ({**meta, "ids": json.dumps(pool.ids[:-1])}, tensors,
                      "tensor 'image' has shape (60, 6), expected (59, d)"),
        "duplicate-ids": ({**meta, "ids": json.dumps([pool.ids[0]] + pool.ids[:-1])}, tensors,
                          f"sample id {pool.ids[0]!r} appears twice"),
        "no-names": ({k: v for k, v in meta.items() if k != "indicator_names"}, tensors,
                     "metadata lacks 'indicator_names'"),
        "number-names": ({**meta, "indicator_names": "5"}, tensors,
                         "metadata 'indicator_names' must be a JSON list"),
        "fewer-names": ({**meta, "indicator_names": json.dumps(["clip"])}, tensors,
                        "1 indicator_names for 4 indicator columns"),
        "bad-info": ({**meta, "info": "{"}, tensors, "metadata 'info' is not valid JSON"),
        "no-format": ({k: v for k, v in meta.items() if k != "format"}, tensors,
                      "not an igpt4-pool/1 pool file"),
        "vector": (meta, {**tensors, "image": pool.image[:, 0]}, "tensor 'image' has shape (60,)"),
        "no-text": (meta, {k: v for k, v in tensors.items() if k != "text"},
                    "lacks tensor 'text'"),
        "nan": (meta, {**tensors, "text": np.where(np.arange(60)[:, None] == 3, np.nan,
                                                   pool.text).astype(np.float32)},
                "has a NaN or infinite feature"),
    }
    paths = {}
    for name, (metadata, arrays, message) in variants.items():
        path = root / f"{name}.safetensors"
        save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(path),
                  metadata=metadata)
        paths[name] = (path, message)
    for name, data, message in (("truncated", raw[:len(raw) // 2], "not a safetensors file"),
                                ("five-bytes", raw[:5], "not a safetensors file"),
                                ("empty", b"", "not a safetensors file")):
        (root / f"{name}.safetensors").write_bytes(data)
        paths[name] = (root / f"{name}.safetensors", message)
    (root / "folder.safetensors").mkdir()
    paths["folder"] = (root / "folder.safetensors", "is a folder")
    paths["missing"] = (root / "missing.safetensors", "pool file not found")
    return paths


@pytest.fixture(scope="module")
def damaged_pools(files, tmp_path_factory):
    return _pool_variants(tmp_path_factory.mktemp("pools"), files / "pool.safetensors")


POOL_CASES = ["no-ids", "malformed-ids", "dict-ids", "number-ids", "short-ids", "duplicate-ids",
              "no-names", "number-names", "fewer-names", "bad-info", "no-format", "vector",
              "no-text", "nan", "truncated", "five-bytes", "empty", "folder", "missing"]


@pytest.mark.parametrize("case", POOL_CASES)
def test_damaged_pool_in_select(capsys, tmp_path, damaged_pools, case):
    path, message = damaged_pools[case]
    one_line(capsys, ["select", "--pool", path, "--baseline", "random", "--num", "3", "--out",
                      tmp_path / "out"], str(path), message)


@pytest.mark.parametrize("case", ["no-ids", "number-names", "truncated", "short-ids"])
def test_damaged_pool_in_train_report_split(capsys, tmp_path, files, damaged_pools, case):
    path, message = damaged_pools[case]
    one_line(capsys, ["train-selector", "--pool", path, "--subsets", files / "subsets.json",
                      "--labels", files / "labels.json", "--out", tmp_path / "ckpt"],
             str(path), message)
    one_line(capsys, ["report", "--selection", files / "selection", "--pool", path, "--out",
                      tmp_path / "report.html"], str(path), message)
    data = tmp_path / "cc"
    data.mkdir()
    (data / "filter_cap.json").write_text(json.dumps({"annotations": []}))
    one_line(capsys, ["split", "--pool", path, "--data", data, "--out", tmp_path / "split"],
             str(path), message)


def _checkpoint_variants(root: Path, good: Path) -> dict:
    import torch
    from safetensors.torch import load_file, save_file

    variants = {}

    def clone(name: str) -> Path:
        shutil.copytree(good, root / name)
        return root / name

    def edit_config(name: str, change) -> Path:
        folder = clone(name)
        document = json.loads((folder / "selector.json").read_text())
        change(document)
        (folder / "selector.json").write_text(json.dumps(document))
        return folder

    def edit_weights(name: str, change) -> Path:
        folder = clone(name)
        state = load_file(str(folder / "selector.safetensors"))
        change(state)
        save_file(state, str(folder / "selector.safetensors"))
        return folder

    folder = clone("no-config")
    (folder / "selector.json").unlink()
    variants["no-config"] = (folder, "selector.json: missing")
    folder = clone("no-weights")
    (folder / "selector.safetensors").unlink()
    variants["no-weights"] = (folder, "selector.safetensors: missing")
    folder = clone("truncated")
    raw = (folder / "selector.safetensors").read_bytes()
    (folder / "selector.safetensors").write_bytes(raw[:len(raw) // 2])
    variants["truncated"] = (folder, "selector.safetensors: not a safetensors file")
    folder = clone("malformed-json")
    (folder / "selector.json").write_text("{")
    variants["malformed-json"] = (folder, "selector.json: malformed JSON")
    folder = clone("list-json")
    (folder / "selector.json").write_text("[]")
    variants["list-json"] = (folder, "selector.json: expected {\"config\"")
    variants["text-heads"] = (edit_config("text-heads", lambda d: d["config"].update(n_heads="x")),
                              "n_heads must be a non-negative integer")
    variants["unknown-key"] = (edit_config("unknown-key", lambda d: d["config"].update(foo=1)),
                               "unknown selector setting(s): foo")
    variants["wider-config"] = (edit_config("wider", lambda d: d["config"].update(image_dim=7)),
                                "has shape")
    variants["wrong-shape"] = (edit_weights("wrong-shape", lambda s: s.update(
        {"linear.weight": torch.zeros(1, 5)})), "weight 'linear.weight' has shape (1, 5)")
    variants["missing-weight"] = (edit_weights("missing-weight", lambda s: s.pop("linear.weight")),
                                  "missing ['linear.weight']")
    variants["nan-weight"] = (edit_weights("nan-weight", lambda s: s["linear.bias"].fill_(
        float("nan"))), "weight 'linear.bias' holds NaN")
    state = load_file(str(good / "selector.safetensors"))
    torch.save({f"module.{k}": v for k, v in state.items()}, root / "ok.pth")
    raw = (root / "ok.pth").read_bytes()
    (root / "truncated.pth").write_bytes(raw[:len(raw) // 2])
    variants["truncated-pth"] = (root / "truncated.pth", "not a loadable torch checkpoint")
    (root / "empty.pth").write_bytes(b"")
    variants["empty-pth"] = (root / "empty.pth", "not a loadable torch checkpoint")
    torch.save([1, 2], root / "list.pth")
    variants["list-pth"] = (root / "list.pth", "expected a state_dict")
    torch.save({"a": 1}, root / "number.pth")
    variants["number-pth"] = (root / "number.pth", "entry 'a' is not a tensor")
    torch.save({"module.linear.weight": torch.zeros(1, 3)}, root / "narrow.pth")
    variants["narrow-pth"] = (root / "narrow.pth", "not a released selector state_dict")
    variants["missing"] = (root / "nowhere", "selector checkpoint not found")
    return variants


@pytest.fixture(scope="module")
def damaged_checkpoints(files, tmp_path_factory):
    return _checkpoint_variants(tmp_path_factory.mktemp("checkpoints"), files / "ckpt")


@pytest.mark.parametrize("case", ["no-config", "no-weights", "truncated", "malformed-json",
                                  "list-json", "text-heads", "unknown-key", "wider-config",
                                  "wrong-shape", "missing-weight", "nan-weight", "truncated-pth",
                                  "empty-pth", "list-pth", "number-pth", "narrow-pth",
                                  "missing"])
def test_damaged_checkpoint_in_select(capsys, tmp_path, files, damaged_checkpoints, case):
    path, message = damaged_checkpoints[case]
    line = one_line(capsys, ["select", "--pool", files / "pool.safetensors", "--checkpoint", path,
                             "--num", "3", "--out", tmp_path / "out"], str(path), message)
    assert "Traceback" not in line and not (tmp_path / "out" / "manifest.json").exists()


@pytest.mark.parametrize("value, fragment", [
    (1e308, "label of subset '3' is 1e+308"),
    (-1e13, "label of subset '3' is -1e+13"),
    ("NaN", "label of subset '3' is not a finite number"),
    ("42", "label of subset '3' is not a finite number ('42')"),
    (True, "label of subset '3' is not a finite number"),
    (None, "label of subset '3' is not a finite number"),
    ([1], "label of subset '3' is not a finite number"),
])
def test_bad_label_values(capsys, tmp_path, files, value, fragment):
    labels = json.loads((files / "labels.json").read_text())
    labels["3"] = value
    path = tmp_path / "labels.json"
    path.write_text(json.dumps(labels))
    one_line(capsys, train_args(files, tmp_path / "out", labels=str(path)), str(path), fragment)
    one_line(capsys, ["labels", "collect", path, "--out", tmp_path / "collected.json"],
             str(path), fragment)


@pytest.mark.parametrize("text", ['{"labels": {"0": NaN}}', '{"labels": {"0": Infinity}}',
                                  '{"labels": {"0": 1e999}}', '{"labels": {"0": -Infinity}}'])
def test_non_finite_json_labels(capsys, tmp_path, files, text):
    path = tmp_path / "labels.json"
    path.write_text(text)
    one_line(capsys, train_args(files, tmp_path / "out", labels=str(path)), str(path),
             "label of subset '0' is not a finite number")


def test_training_that_diverges_is_one_line():
    from selector.core.settings import load_settings
    from selector.model.training import Selector, SubsetData
    from selector.scoring.reference import REFERENCE_INDICATORS

    rng = np.random.default_rng(0)
    features = [rng.normal(size=(4, 16)).astype(np.float32) for _ in range(6)]
    # labels past float32's range (the Python API does not read them through read_labels)
    data = SubsetData.from_lists(features, [3e38, -3e38, 3e38, -3e38, 1, 2], list("abcdef"),
                                 6, 6, REFERENCE_INDICATORS)
    with pytest.raises(InputError, match="selector training diverged"):
        Selector.from_settings(load_settings(None, ["training.epochs=3"])).fit(data)


# ---------------------------------------------------------------------------------------------
# OS errors: one line naming the path, exit 2 (a traceback only for genuine bugs or --debug)
# ---------------------------------------------------------------------------------------------

def test_a_file_where_the_output_folder_should_be(capsys, tmp_path, files):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for out in (blocker, blocker / "sub"):
        one_line(capsys, ["select", "--pool", files / "pool.safetensors", "--baseline", "random",
                          "--num", "3", "--captions", files / "cc", "--out", out], str(blocker))
        one_line(capsys, ["labels", "collect", files / "labels.json", "--out", out / "l.json"],
                 str(blocker))
    one_line(capsys, train_args(files, blocker / "ckpt", "training.epochs=1",
                                "training.cross_validate=false"), str(blocker), after_work=True)
    assert blocker.read_text() == "x"


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                    reason="root writes into read-only folders (the monkeypatched cases below "
                           "cover this)")
def test_a_read_only_output_folder(capsys, tmp_path, files):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        one_line(capsys, ["select", "--pool", files / "pool.safetensors", "--baseline", "random",
                          "--num", "3", "--out", folder / "out"], str(folder))
    finally:
        folder.chmod(0o755)


@pytest.mark.parametrize("code, reason", [(errno.EROFS, "Read-only file system"),
                                          (errno.ENOSPC, "No space left on device"),
                                          (errno.EACCES, "Permission denied"),
                                          (errno.EDQUOT, "Disk quota exceeded")])
def test_disk_errors_while_writing(capsys, monkeypatch, tmp_path, files, code, reason):
    """A full or read-only disk met while a file is written (simulated at the fsync)."""
    import selector.core.atomic

    def failing(descriptor):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(selector.core.atomic.os, "fsync", failing)
    one_line(capsys, ["select", "--pool", files / "pool.safetensors", "--baseline", "random",
                      "--num", "3", "--captions", files / "cc", "--out", tmp_path / "out"],
             str(tmp_path / "out"), os.strerror(code))
    one_line(capsys, ["labels", "collect", files / "labels.json", "--out",
                      tmp_path / "labels.json"], str(tmp_path / "labels.json"), os.strerror(code))
    assert not any(p.name.endswith(".tmp") for p in tmp_path.rglob("*"))
    assert not (tmp_path / "labels.json").exists()


@pytest.mark.parametrize("exc, fragment", [
    (PermissionError(errno.EACCES, "Permission denied", "/data/locked.json"),
     "/data/locked.json: Permission denied"),
    (OSError(errno.EROFS, "Read-only file system", "/mnt/ro/out"),
     "/mnt/ro/out: Read-only file system"),
    (OSError(errno.ENOSPC, "No space left on device"), "No space left on device (errno ENOSPC)"),
    (IsADirectoryError(errno.EISDIR, "Is a directory", "/tmp/folder"),
     "/tmp/folder: Is a directory"),
    (FileNotFoundError(errno.ENOENT, "No such file or directory", "/no/such"),
     "/no/such: No such file or directory"),
    (OSError(errno.EXDEV, "Invalid cross-device link", "/a", None, "/b"), "/a -> /b"),
])
def test_os_errors_anywhere_are_one_line(capsys, monkeypatch, tmp_path, exc, fragment):
    """The last resort of every entry point (selector.errors.run_reporting_errors)."""
    import selector.selection.select

    def fail(*args, **kwargs):
        raise exc

    monkeypatch.setattr(selector.selection.select, "select", fail)
    argv = ["select", "--pool", tmp_path / "p.safetensors", "--baseline", "random", "--out",
            tmp_path / "out"]
    one_line(capsys, argv, fragment)
    with pytest.raises(type(exc)):  # --debug shows the traceback
        main(["--debug"] + [str(a) for a in argv])


@pytest.mark.parametrize("exc", [OSError("a bug of ours"), ConnectionRefusedError(
    errno.ECONNREFUSED, "Connection refused"), OSError(errno.EINVAL, "Invalid argument")])
def test_other_os_errors_keep_their_traceback(monkeypatch, tmp_path, exc):
    import selector.selection.select

    def fail(*args, **kwargs):
        raise exc

    monkeypatch.setattr(selector.selection.select, "select", fail)
    with pytest.raises(type(exc)):
        main(["select", "--pool", str(tmp_path / "p"), "--baseline", "random", "--out",
              str(tmp_path / "out")])
