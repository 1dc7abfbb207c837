"""No file we read can run code.

Two kinds of test: a scan of the whole source tree (selector, lavis_plugins, eval_arena,
benchmarks) with the AST for any load that can unpickle (``torch.load`` without
``weights_only=True``, ``np.load`` without ``allow_pickle=False``, pickle / joblib / dill,
``yaml.load`` without a safe loader, ``torch.jit.load``, ...), and a malicious pickle (its
``__reduce__`` creates a marker file) fed to every loader that accepts a user path, through the
real entry points: the marker must never appear and the command must fail with one line, exit 2.
"""
from __future__ import annotations

import ast
import json
import pickle
from pathlib import Path
from typing import List, Optional

import numpy as np
import pytest
import torch

from conftest import REPO, assert_one_line_error, dotted_name, run_cli

SCANNED = ("selector", "lavis_plugins", "eval_arena", "benchmarks")
UNPICKLING_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "marshal",
                      "shelve", "jsonpickle", "pickletools"}
ALWAYS_UNSAFE = {"torch.jit.load", "jit.load", "torch.hub.load", "hub.load",
                 "torch.hub.load_state_dict_from_url", "load_state_dict_from_url",
                 "torch.package.PackageImporter", "PackageImporter", "yaml.unsafe_load",
                 "yaml.unsafe_load_all", "yaml.full_load", "yaml.full_load_all",
                 "pd.read_pickle", "pandas.read_pickle", "read_pickle", "np.loads",
                 "numpy.loads", "eval", "exec", "runpy.run_path", "runpy.run_module"}
SAFE_YAML_LOADERS = {"SafeLoader", "CSafeLoader", "BaseLoader", "CBaseLoader"}
# (file, pattern): exceptions, each with the reason it is safe
ALLOWED = {
    # `python -m lavis_plugins.train` runs the MiniGPT-4 checkout's own train.py: the user's code,
    # the purpose of the command, not a data file
    ("lavis_plugins/train.py", "runpy.run_path"),
    # the weights-only guard itself wraps torch.load (and restores it)
    ("selector/core/safeload.py", "torch.load reference"),
}


def _keyword(call: ast.Call, name: str) -> Optional[ast.AST]:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _is_constant(node: Optional[ast.AST], value: object) -> bool:
    return isinstance(node, ast.Constant) and node.value is value


def unsafe_loads(source: str, filename: str = "<source>") -> List[str]:
    """Every load in ``source`` that could run code from a file, as ``line: what``."""
    tree = ast.parse(source, filename)
    found: List[str] = []
    calls = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            calls.add(id(node.func))
    for node in ast.walk(tree):
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in UNPICKLING_MODULES:
                    found.append(f"{line}: import {alias.name}")
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if module.split(".")[0] in UNPICKLING_MODULES:
                found.append(f"{line}: from {module} import ...")
            loads = {"load", "loads", "load_all", "unsafe_load", "full_load"}
            if module.split(".")[0] in ("torch", "numpy", "yaml") and any(
                    alias.name in loads for alias in node.names):
                found.append(f"{line}: from {module} import a load (call it through the module, "
                             "where its arguments are checked)")
        elif isinstance(node, ast.Call):
            name = dotted_name(node.func)
            if name in ALWAYS_UNSAFE or name.endswith(".read_pickle"):
                found.append(f"{line}: {name}")
            elif name == "torch.load" or name.endswith(".torch.load"):
                if not _is_constant(_keyword(node, "weights_only"), True):
                    found.append(f"{line}: torch.load without weights_only=True")
            elif name in ("np.load", "numpy.load"):
                if not _is_constant(_keyword(node, "allow_pickle"), False):
                    found.append(f"{line}: np.load without allow_pickle=False")
            elif name in ("yaml.load", "yaml.load_all"):
                loader = _keyword(node, "Loader") or (node.args[1] if len(node.args) > 1 else None)
                if loader is None or dotted_name(loader).split(".")[-1] not in SAFE_YAML_LOADERS:
                    found.append(f"{line}: {name} without a safe Loader")
            elif name.endswith("from_pretrained") and _is_constant(
                    _keyword(node, "trust_remote_code"), True):
                found.append(f"{line}: from_pretrained(trust_remote_code=True)")
        elif isinstance(node, ast.Attribute) and dotted_name(node) == "torch.load" \
                and id(node) not in calls:
            found.append(f"{line}: torch.load reference")
    return sorted(set(found), key=lambda item: int(item.split(":")[0]))


def _source_files() -> List[Path]:
    files = [path for root in SCANNED for path in sorted((REPO / root).rglob("*.py"))]
    assert len(files) > 40, "the scan found too few files: wrong folder?"
    return files


def test_no_unsafe_load_anywhere_in_the_source():
    problems = []
    for path in _source_files():
        relative = path.relative_to(REPO).as_posix()
        for problem in unsafe_loads(path.read_text(encoding="utf-8"), relative):
            what = problem.split(": ", 1)[1]
            if (relative, what) not in ALLOWED:
                problems.append(f"{relative}:{problem}")
    assert not problems, "loads that could run code from a file:\n" + "\n".join(problems)


@pytest.mark.parametrize("source", [
    "import torch\ntorch.load(p)",
    "import torch\ntorch.load(p, weights_only=False)",
    "import torch\ntorch.load(p, map_location='cpu')",
    "import torch\nx = torch.load",
    "import torch\ntorch.jit.load(p)",
    "import torch\ntorch.hub.load_state_dict_from_url(u)",
    "import numpy as np\nnp.load(p)",
    "import numpy as np\nnp.load(p, allow_pickle=True)",
    "import numpy\nnumpy.load(p, mmap_mode='r')",
    "import pickle\npickle.loads(b)",
    "from pickle import load",
    "import joblib\njoblib.load(p)",
    "import dill",
    "import yaml\nyaml.load(text)",
    "import yaml\nyaml.load(text, Loader=yaml.Loader)",
    "import yaml\nyaml.unsafe_load(text)",
    "import yaml\nyaml.full_load(text)",
    "import pandas as pd\npd.read_pickle(p)",
    "from torch import load",
    "eval(text)",
    "AutoModel.from_pretrained(p, trust_remote_code=True)",
])
def test_the_scan_finds_unsafe_loads(source):
    assert unsafe_loads(source), source


@pytest.mark.parametrize("source", [
    "import torch\ntorch.load(p, map_location='cpu', weights_only=True)",
    "import numpy as np\nnp.load(p, allow_pickle=False, mmap_mode='r')",
    "import yaml\nyaml.safe_load(text)",
    "import yaml\nyaml.load(text, Loader=yaml.SafeLoader)",
    "from omegaconf import OmegaConf\nOmegaConf.load(p)",
    "model.eval()",
])
def test_the_scan_passes_safe_loads(source):
    assert unsafe_loads(source) == []


# ------------------------------------------------------------------------- malicious files
class _Payload:
    """Unpickling this creates ``marker``: proof that loading ran code."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture
def marker(tmp_path) -> Path:
    path = tmp_path / "PWNED"
    yield path
    assert not path.exists(), "loading a file ran the code inside it"


def _evil_checkpoint(path: Path, marker: Path, raw: bool = False) -> Path:
    """A torch checkpoint (zip format) holding the payload beside real weights, or (``raw``)
    a bare pickle of it: both run code when loaded with weights_only=False."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = _Payload(marker)
    if raw:
        path.write_bytes(pickle.dumps({"model": payload}))
    else:
        torch.save({"model": {"llama_proj.weight": torch.zeros(2)}, "extra": payload}, path)
    return path


def test_the_payload_really_runs_code_when_loaded_unsafely(tmp_path):
    """Guards the test itself: without weights_only the files below would have run code."""
    for raw in (False, True):
        marker = tmp_path / f"marker-{raw}"
        path = _evil_checkpoint(tmp_path / f"evil-{raw}.pth", marker, raw)
        try:  # the unsafe load the other tests prove is never made (test-only)
            torch.load(path, weights_only=False)
        except RuntimeError:  # a bare pickle: the payload runs, then the magic number is wrong
            pass
        assert marker.exists()


@pytest.mark.parametrize("raw", [False, True])
def test_weights_only_guard_overrides_host_code_asking_for_pickles(tmp_path, marker, raw):
    from selector.core.errors import InputError
    from selector.core.safeload import FORCE_ENV, weights_only_loads

    evil = _evil_checkpoint(tmp_path / "evil.pth", marker, raw)
    original = torch.load
    with weights_only_loads():
        with pytest.raises(InputError, match="evil.pth: not a loadable checkpoint"):
            torch.load(str(evil), map_location="cpu", weights_only=False)  # what old hosts do
        with pytest.raises(InputError):
            torch.load(str(evil), "cpu", pickle)  # a positional pickle_module is dropped too
    assert torch.load is original and FORCE_ENV not in __import__("os").environ


def _cli(capsys, *argv: str) -> str:
    """``igpt4 ARGV`` in this process (the real entry point); returns the one stderr line."""
    from selector.app import cli

    status = cli.main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert status == 2, err
    lines = [line for line in err.splitlines() if line.startswith("igpt4: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def _jsonl_vqa(folder: Path) -> Path:
    from conftest import write_image

    write_image(folder / "img" / "0.jpg")
    path = folder / "vqa.jsonl"
    path.write_text(json.dumps({"image": "img/0.jpg", "question": "What?", "answers": ["red"]})
                    + "\n", encoding="utf-8")
    return path


def _tiny_config(path: Path, ckpt: Path) -> Path:
    path.write_text(f"model:\n  arch: igpt4_tiny_minigpt4\n  ckpt: {ckpt}\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("raw", [False, True])
def test_eval_tiny_tester_config_naming_a_malicious_ckpt(tmp_path, marker, capsys, raw):
    evil = _evil_checkpoint(tmp_path / "weights" / "evil.pth", marker, raw)
    config = _tiny_config(tmp_path / "tiny.yaml", evil)
    line = _cli(capsys, "eval", "--tester", "tiny", "--tester-arg", f"cfg_path={config}",
                "--datasets", f"jsonl:{_jsonl_vqa(tmp_path)}", "--out", tmp_path / "answers",
                "--no-progress")
    assert "evil.pth" in line


def test_eval_tiny_tester_malicious_ckpt_given_directly(tmp_path, marker, capsys):
    evil = _evil_checkpoint(tmp_path / "evil.pth", marker)
    line = _cli(capsys, "eval", "--tester", "tiny", "--tester-arg", f"ckpt={evil}",
                "--datasets", f"jsonl:{_jsonl_vqa(tmp_path)}", "--out", tmp_path / "answers",
                "--no-progress")
    assert "evil.pth" in line


def test_eval_checkpoint_whose_saved_config_names_a_malicious_ckpt(tmp_path, marker, capsys):
    """A harmless checkpoint whose embedded config names another file: that file is loaded
    weights-only too."""
    evil = _evil_checkpoint(tmp_path / "inner" / "evil.pth", marker)
    outer = tmp_path / "outer.pth"
    torch.save({"model": {"llama_proj.bias": torch.zeros(64)},
                "config": {"model": {"arch": "igpt4_tiny_minigpt4", "ckpt": str(evil)}}}, outer)
    line = _cli(capsys, "eval", "--tester", "tiny", "--tester-arg", f"ckpt={outer}",
                "--datasets", f"jsonl:{_jsonl_vqa(tmp_path)}", "--out", tmp_path / "answers",
                "--no-progress")
    assert "evil.pth" in line


def test_minigpt4_host_model_loading_its_ckpt_unsafely_is_made_safe(tmp_path, marker,
                                                                    monkeypatch):
    """A MiniGPT-4 model's ``from_config`` loads ``model.ckpt`` with a bare ``torch.load`` (on
    torch < 2.6 that unpickles anything); the tester builds it under the weights-only guard. The
    host is faked: a registry whose model loads the ckpt as MiniGPT-4 does, asking for pickles."""
    from omegaconf import OmegaConf

    from eval_arena import minigpt4_tester as tester
    from selector.core.errors import InputError

    evil = _evil_checkpoint(tmp_path / "evil.pth", marker)

    class HostModel:
        PRETRAINED_MODEL_CONFIG_DICT = {"pretrain_vicuna": "x.yaml"}

        @classmethod
        def from_config(cls, cfg):
            torch.load(cfg.ckpt, map_location="cpu", weights_only=False)  # old torch's default
            raise AssertionError("the malicious checkpoint was loaded")

    class Registry:
        mapping = {"model_name_mapping": {"minigpt4": HostModel}}

        def get_model_class(self, name):
            return self.mapping["model_name_mapping"].get(name)

    monkeypatch.setattr(tester, "find_checkout", lambda checkout: tmp_path)
    monkeypatch.setattr(tester, "import_host", lambda folder: Registry())
    monkeypatch.setattr(tester, "host_config", lambda raw, options: raw)
    config = tmp_path / "eval.yaml"
    OmegaConf.save(OmegaConf.create({"model": {"arch": "minigpt4", "ckpt": str(evil)}}), config)
    with pytest.raises(InputError, match="evil.pth"):
        tester.MiniGPT4Tester.from_checkout(str(tmp_path), cfg_path=str(config), device="cpu")


def test_select_with_a_malicious_released_checkpoint(tmp_path, marker, capsys):
    from selector.model.synthetic import synthetic_feature_pool

    pool, _, _ = synthetic_feature_pool(20, seed=1)
    pool.save(tmp_path / "pool.safetensors")
    evil = _evil_checkpoint(tmp_path / "best_model.pth", marker)
    line = _cli(capsys, "select", "--pool", tmp_path / "pool.safetensors", "--checkpoint", evil,
                "--num", "5", "--out", tmp_path / "out")
    assert "best_model.pth" in line
    assert not (tmp_path / "out").exists()


def _fake_reference_repo(root: Path, marker: Path, evil: str) -> Path:
    """The original layout with 12 samples; the file named ``evil`` is the payload."""
    from selector.scoring import reference as ref
    from selector.scoring.reference import REFERENCE_INDICATORS

    ids = [str(i) for i in range(12)]
    files = {
        ref.FULL_SCORES: {"annotations": [{"image_id": i, "caption": f"c{i}"} for i in ids]},
        ref.SCORES: {name: [float(n) for n in range(12)] for name in REFERENCE_INDICATORS},
        ref.SPECTRAL: {"0": ids[:6], "1": ids[6:]},
        ref.FITTING: {name: [[1.0] * 6, [2.0] * 6] for name in REFERENCE_INDICATORS},
        ref.LABELS: {"subset_labels": [10.0, 20.0]},
    }
    for relative, document in files.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text(json.dumps(document), encoding="utf-8")
    tensors = {ref.IMAGE_MATRIX: torch.randn(12, 6), ref.TEXT_MATRIX: torch.randn(12, 6),
               ref.SUBSET_IMAGE_MATRIX: torch.randn(2, 6, 6),
               ref.SUBSET_TEXT_MATRIX: torch.randn(2, 6, 6)}
    for relative, tensor in tensors.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        torch.save(tensor, root / relative)
    (root / ref.CHECKPOINT).parent.mkdir(parents=True, exist_ok=True)
    torch.save({}, root / ref.CHECKPOINT)
    _evil_checkpoint(root / getattr(ref, evil), marker)
    return root


@pytest.mark.parametrize("evil", ["IMAGE_MATRIX", "TEXT_MATRIX", "CHECKPOINT"])
def test_reference_select_with_malicious_released_files(tmp_path, marker, capsys, evil):
    from selector.scoring import reference as ref

    repo = _fake_reference_repo(tmp_path / "repo", marker, evil)
    line = _cli(capsys, "reference-select", "--repo", repo, "--out", tmp_path / "out",
                "--num", "5")
    assert Path(getattr(ref, evil)).name in line


@pytest.mark.parametrize("evil", ["SUBSET_IMAGE_MATRIX", "SUBSET_TEXT_MATRIX"])
def test_train_selector_on_a_repo_with_malicious_matrices(tmp_path, marker, capsys, evil):
    from selector.scoring import reference as ref

    repo = _fake_reference_repo(tmp_path / "repo", marker, evil)
    line = _cli(capsys, "train-selector", "--repo", repo, "--out", tmp_path / "ckpt")
    assert Path(getattr(ref, evil)).name in line


def test_a_malicious_pca_cache_is_never_unpickled(tmp_path, marker):
    """``WORK/pca/<key>.npz`` (in a work dir a user may be handed) holding an object array:
    refused by allow_pickle=False, refitted, and replaced by a plain one."""
    from selector.scoring.embedders import Projection

    matrix = np.random.default_rng(0).normal(size=(20, 8)).astype(np.float32)
    Projection.fit_cached(tmp_path, {"k": 1}, matrix, n_components=3)
    (cached,) = (tmp_path / "pca").glob("*.npz")
    np.savez(cached, mean=np.array([_Payload(marker)], dtype=object),
             components=np.zeros((3, 8)), explained_variance_ratio=np.zeros(3))
    projection = Projection.fit_cached(tmp_path, {"k": 1}, matrix, n_components=3)
    assert projection.components.shape == (3, 8)
    with np.load(cached, allow_pickle=False) as saved:  # replaced by a plain file
        assert saved["mean"].dtype == np.float32 or saved["mean"].dtype == np.float64


def test_a_fresh_process_refuses_a_malicious_checkpoint_in_one_line(tmp_path, marker):
    """The command line as a user runs it (its own interpreter): exit 2, one line."""
    evil = _evil_checkpoint(tmp_path / "weights" / "evil.pth", marker, raw=True)
    config = _tiny_config(tmp_path / "tiny.yaml", evil)
    result = run_cli("eval", "--tester", "tiny", "--tester-arg", f"cfg_path={config}",
                     "--datasets", f"jsonl:{_jsonl_vqa(tmp_path)}", "--out",
                     tmp_path / "answers", "--no-progress")
    assert_one_line_error(result, "evil.pth")
