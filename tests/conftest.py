"""Shared fixtures: generated data sets and the released reference files (when ../shared is there)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional

import pytest

# the tests are offline by design: never wait on hub connections (subprocesses inherit this)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent

# The test folders mirror the packages (tests/selector/<stage>/, tests/lavis_plugins/, ...); a few
# test modules reuse another's builders by module name (test basenames are unique), so every test
# folder is importable, whichever of them pytest collects first.
for _folder in sorted({p.parent for p in TESTS.rglob("test_*.py")}):
    if str(_folder) not in sys.path:
        sys.path.insert(0, str(_folder))
REFERENCE = Path(os.environ.get("IGPT4_REFERENCE",
                                REPO.parent / "shared" / "reference" / "instructiongpt4"))


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    if not (REFERENCE / "cc_sbu_align_test" / "full_score_data.json").is_file():
        pytest.skip(f"released InstructionGPT-4 files not found at {REFERENCE} "
                    "(../shared/reference/instructiongpt4, or set IGPT4_REFERENCE)")
    return REFERENCE


def write_image(path: Path, colour=(200, 30, 30), size=(8, 8)) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path, format="JPEG")
    return path


def make_cc_sbu_align(root: Path, captions: Dict[str, str], encoding: str = "utf-8",
                      images: bool = True) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    document = {"annotations": [{"image_id": i, "caption": c} for i, c in captions.items()]}
    (root / "filter_cap.json").write_bytes(
        json.dumps(document, ensure_ascii=False, indent=2).encode(encoding))
    if images:
        for n, image_id in enumerate(captions):
            write_image(root / "image" / f"{image_id}.jpg", (n * 40 % 256, 90, 160))
    return root


def make_conversations(root: Path, records: Optional[List[dict]] = None) -> Path:
    records = records if records is not None else [
        {"id": "a1", "image": "imgs/a1.jpg", "conversations": [
            {"from": "human", "value": "<image>\nWhat is in the picture?"},
            {"from": "gpt", "value": "A red square."},
            {"from": "human", "value": "What colour is it?"},
            {"from": "gpt", "value": "Red."}]},
        {"id": "b2", "image": "imgs/b2.jpg", "conversations": [
            {"from": "human", "value": "Describe the image.\n<image>"},
            {"from": "gpt", "value": "A blue field."}]},
    ]
    for record in records:
        if isinstance(record, dict) and isinstance(record.get("image"), str) \
                and not record["image"].startswith(("/", "..")):
            write_image(root / record["image"])
    path = root / "conversations.json"
    path.write_text(json.dumps(records), encoding="utf-8")
    return path


def run_cli(*args: str, cwd: Optional[Path] = None,
            env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess:
    """``igpt4 ARGS`` in a fresh interpreter (exit status and stderr as a user sees them);
    ``env`` adds variables to this process's environment."""
    return subprocess.run([sys.executable, "-m", "selector.app.cli", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd or REPO, timeout=600,
                          env={**os.environ, **(env or {})})


def one_line_error(status: int, err: str, *fragments: str) -> str:
    """Exit 2, no traceback, exactly one ``igpt4: error:`` line holding every fragment (the
    promise for bad input), from an exit status and the stderr text."""
    assert status == 2, (status, err)
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("igpt4: error:")]
    assert len(lines) == 1, err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> str:
    return one_line_error(result.returncode, result.stderr, *fragments)


def fake_launch_env(tmp_path: Path, torchrun: str, igpt4: str) -> Dict[str, str]:
    """The environment a generated launch.sh runs in with stand-ins for ``torchrun`` and
    ``igpt4`` (scripts formatted with this interpreter) and an empty MiniGPT-4 checkout."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in (("torchrun", torchrun), ("igpt4", igpt4)):
        (bin_dir / name).write_text(body.format(python=sys.executable))
        (bin_dir / name).chmod(0o755)
    minigpt4 = tmp_path / "MiniGPT-4"
    minigpt4.mkdir()
    (minigpt4 / "train.py").write_text("")
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
            "MINIGPT4_DIR": str(minigpt4), "ARENA_DATA": str(tmp_path / "arena")}


@pytest.fixture(scope="session")
def tiny_clip_files(tmp_path_factory):
    """(config JSON, checkpoint) of a tiny open_clip model; skips when open_clip is absent."""
    import importlib.util

    if importlib.util.find_spec("open_clip") is None:
        pytest.skip("open_clip is not installed (make test installs it)")
    from selector.app.toy.clip import tiny_clip

    return tiny_clip(tmp_path_factory.mktemp("tiny-clip"), "igpt4-feat-clip")


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory) -> Path:
    pytest.importorskip("transformers", reason="transformers is not installed (make test "
                        "installs it)")
    from selector.app.toy.text import tiny_llama

    return tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


def tree_digest(root: Path) -> Dict[str, str]:
    """Every file under ``root`` -> sha256 of its bytes, every link -> its target: two equal
    digests mean nothing under ``root`` was written, replaced or relinked."""
    import hashlib

    found: Dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root).as_posix()
        if path.is_symlink():
            found[relative] = "link:" + os.readlink(path)
        elif path.is_file():
            found[relative] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def dotted_name(node) -> str:
    """``torch.load`` for the AST of ``torch.load`` (``?`` for a call or subscript in the chain,
    so ``model.to(device).eval`` is never taken for the builtin ``eval``)."""
    import ast

    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    elif parts:
        parts.append("?")
    return ".".join(reversed(parts))


def trained_world(root: Path, samples: int, seed: int, epochs: int, subsets: int = 10) -> Path:
    """``root`` with a toy pool (root/pool.safetensors), ``subsets`` equal subsets and their
    oracle labels (subsets.json, labels.json) and a selector trained on them (root/ckpt)."""
    from selector.model.fit import train_selector
    from selector.core.settings import load_settings
    from selector.model.synthetic import synthetic_feature_pool, synthetic_labels

    pool, quality, _ = synthetic_feature_pool(samples, seed=seed)
    pool.save(root / "pool.safetensors")
    size = samples // subsets
    members = {str(i): pool.ids[i * size:(i + 1) * size] for i in range(subsets)}
    (root / "subsets.json").write_text(json.dumps(members))
    labels = synthetic_labels(members, dict(zip(pool.ids, quality.tolist())))
    (root / "labels.json").write_text(json.dumps(labels))
    train_selector(root / "ckpt", load_settings(None, [f"training.epochs={epochs}",
                                                       "training.cross_validate=false"]),
                   root / "pool.safetensors", root / "subsets.json", root / "labels.json")
    return root


@pytest.fixture(scope="session")
def selected_data(tmp_path_factory):
    """(root, cc_sbu_align folder): 120 generated samples with images, their pool file
    (root/pool.safetensors) and a selector trained on toy labels (root/ckpt)."""
    from selector.scoring.pool import FeaturePool

    root = trained_world(tmp_path_factory.mktemp("selected"), 120, seed=5, epochs=10)
    ids = FeaturePool.load(root / "pool.safetensors").ids
    data = make_cc_sbu_align(root / "cc", {i: f"A picture {i}. It shows shapes." for i in ids})
    return root, data


MINIGPT4_CHECKOUTS = {"head": "IGPT4_MINIGPT4_HEAD", "v1": "IGPT4_MINIGPT4_V1"}


def minigpt4_checkout(version: str) -> Path:
    """The MiniGPT-4 checkout (``head`` or ``v1``) named by its environment variable; skips with
    the reason when unset. Its interpreter (MiniGPT-4's requirements + this package) is
    IGPT4_MINIGPT4_PYTHON."""
    variable = MINIGPT4_CHECKOUTS[version]
    value = os.environ.get(variable)
    if not value:
        reason = (f"{variable} is not set: point it at a MiniGPT-4 checkout ({version}) to run "
                  "the tests inside MiniGPT-4 (and IGPT4_MINIGPT4_PYTHON at its interpreter)")
        if os.environ.get("CI", "").lower() == "true":  # .ci/run builds the hosts: never skip
            pytest.fail(reason + "; under CI=true the host tests must run (.ci/run sets it)")
        pytest.skip(reason)
    checkout = Path(value)
    if not (checkout / "train.py").is_file() or not (checkout / "minigpt4").is_dir():
        pytest.fail(f"{variable}={value} is not a MiniGPT-4 checkout (train.py, minigpt4/)")
    return checkout
