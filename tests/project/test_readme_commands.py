"""Every command of the README's "Use with MiniGPT-4" and "Evaluate" sections, run as written.

The code blocks are read from README.md itself; only their placeholders (``/path/to/...``,
``/data/...``, ``/work/...``, ``/weights/...``, ``/runs/...``, ``OPENAI_API_KEY=...``) are
replaced by generated files, and every placeholder must have a replacement. Each block runs in
bash with ``HOME`` pointing at an empty folder and no ``XDG_*`` / ``IGPT4_CACHE`` /
``IGPT4_RUNS`` set, so the default output places the README documents are what is checked.

The MiniGPT-4 blocks run in the host environment (``IGPT4_MINIGPT4_PYTHON``'s bin folder first on
PATH) in both checkouts (``IGPT4_MINIGPT4_HEAD`` / ``_V1``; skipped without them, failing under
``CI=true``). The stage-2 block has neither GPUs nor Vicuna weights here: ``torchrun
--nproc_per_node 8`` becomes ``python`` and the run must get as far as building the model after
making the selection.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
PLACEHOLDER = re.compile(r"(/path/to/[^\s'\"=]*|/data/[^\s'\"=]*|/work/[^\s'\"=]*|"
                         r"/weights/[^\s'\"=]*|/runs/[^\s'\"=]*|OPENAI_API_KEY=\.\.\.)")


def section(title: str) -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end != -1 else len(text)]


def blocks(title: str) -> List[str]:
    return re.findall(r"```bash\n(.*?)```", section(title), flags=re.S)


def block(title: str, marker: str) -> str:
    (found,) = [b for b in blocks(title) if marker in b]
    return found


def runnable(text: str, replacements: Dict[str, str]) -> str:
    """``text`` with every placeholder replaced (a placeholder without replacement fails)."""
    wanted = set(PLACEHOLDER.findall(text))
    missing = wanted - set(replacements)
    assert not missing, f"README placeholders without a replacement here: {sorted(missing)}"
    for placeholder in sorted(wanted, key=len, reverse=True):
        text = text.replace(placeholder, replacements[placeholder])
    return text


def host_python() -> str:
    return os.environ.get("IGPT4_MINIGPT4_PYTHON", sys.executable)


def bash(script: str, cwd: Path, home: Path, python: str, extra_env: Dict[str, str] = None,
         timeout: int = 900) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("XDG_", "IGPT4_CACHE", "IGPT4_RUNS", "IGPT4_AUTOLOAD",
                                  "MINIGPT4_DIR"))}
    env.update({"HOME": str(home), "PYTHONDONTWRITEBYTECODE": "1", "PYTHONWARNINGS": "ignore",
                "OMP_NUM_THREADS": "1",
                "PATH": f"{Path(python).parent}{os.pathsep}{env.get('PATH', '')}"})
    env.update(extra_env or {})
    home.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def snapshot(folder: Path) -> Dict[str, tuple]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in folder.rglob("*") if p.is_file()}


def checkout(version: str) -> Path:
    from conftest import minigpt4_checkout

    return minigpt4_checkout(version)


# ------------------------------------------------------------------------------ the README itself
def test_every_block_of_the_sections_is_run_here():
    """A block added to either section without a test here fails this test."""
    markers = {"Use with MiniGPT-4": ["minigpt4/cpu_smoke.yaml", "lavis/cpu_smoke.yaml",
                                      "instructiongpt4_stage2_finetune.yaml"],
               "Evaluate": ["--tester minigpt4", "eval judge"]}
    for title, expected in markers.items():
        found = blocks(title)
        assert len(found) == len(expected), (title, found)
        for marker in expected:
            assert sum(marker in b for b in found) == 1, (title, marker)


def test_the_install_line_is_the_one_ci_runs():
    """The MiniGPT-4 install line of "Install" is what .ci/minigpt4_host.sh runs (and checks)."""
    (line,) = [l for l in block("Install", "constraints-minigpt4.txt").splitlines()
               if "constraints-minigpt4.txt" in l]
    command = line.split("#")[0].split()
    script = (REPO / ".ci" / "minigpt4_host.sh").read_text(encoding="utf-8")
    joined = " ".join(script.replace("\\\n", " ").split())
    assert " ".join(command[1:]) in joined  # `pip install ...` as `"$VENV/bin/pip" install ...`
    assert command[:2] == ["pip", "install"]
    assert (REPO / "constraints-minigpt4.txt").is_file()
    assert "constraints-minigpt4.txt" in section("Use with MiniGPT-4")


def test_user_facing_sections_name_no_shared_folder():
    for title in ("Install", "Use with MiniGPT-4", "Evaluate"):
        assert "../shared" not in section(title), title


# ------------------------------------------------------------------------ Use with MiniGPT-4
@pytest.fixture(scope="module", params=["head", "v1"])
def smoke_run(request, tmp_path_factory):
    """The README's smoke block, run as written in a checkout: (version, checkout, home, run)."""
    version = request.param
    folder = checkout(version)
    before = snapshot(folder)
    home = tmp_path_factory.mktemp(f"home-{version}")
    script = runnable(block("Use with MiniGPT-4", "minigpt4/cpu_smoke.yaml"),
                      {"/path/to/MiniGPT-4": str(folder)})
    result = bash(script, home, home, host_python())
    assert result.returncode == 0, result.stderr[-4000:]
    assert snapshot(folder) == before  # nothing written into the checkout
    (run,) = (home / ".local" / "share" / "instructiongpt4" / "runs" / "igpt4_cpu_smoke").iterdir()
    return version, folder, home, run


def test_smoke_block_trains_and_writes_where_the_readme_says(smoke_run):
    version, _, home, run = smoke_run
    assert (run / "checkpoint_1.pth").is_file() and (run / "log.txt").is_file()
    losses = [json.loads(line)["train_loss"] for line in (run / "log.txt").read_text().splitlines()
              if line.startswith('{"train_')]
    assert len(losses) == 2
    kept = json.loads((run / "selection" / "cc_sbu_align_selected" / "filter_cap.json")
                      .read_text())["annotations"]
    assert len(kept) == 16
    smoke = list((home / ".cache" / "instructiongpt4" / "smoke").iterdir())
    assert len(smoke) == 1 and (smoke[0] / "data" / "filter_cap.json").is_file()
    assert list((home / ".cache" / "instructiongpt4" / "datasets").glob("*/selections/*"))
    # nothing else in HOME but the documented folders (and the libraries' own caches)
    assert {p.name for p in home.iterdir()} <= {".cache", ".local", ".config"}


def test_lavis_smoke_block(tmp_path):
    import lavis_plugins

    if "lavis" not in lavis_plugins.available_hosts():
        pytest.skip("salesforce-lavis is not installed (make test installs it with --no-deps)")
    script = runnable(block("Use with MiniGPT-4", "lavis/cpu_smoke.yaml"), {})
    work = tmp_path / "cwd"
    work.mkdir()
    result = bash(script, work, tmp_path / "home", sys.executable)
    assert result.returncode == 0, result.stderr[-4000:]
    runs = tmp_path / "home" / ".local" / "share" / "instructiongpt4" / "runs" / "igpt4_cpu_smoke"
    (run,) = runs.iterdir()
    assert (run / "checkpoint_1.pth").is_file()
    assert not any(work.iterdir())  # nothing in the working directory


@pytest.fixture(scope="module")
def stage2_data(tmp_path_factory):
    """(root, cc_sbu_align folder) with 240 samples (stage 2 selects 200): pool, selector."""
    from conftest import make_cc_sbu_align
    from selector.model.fit import train_selector
    from selector.core.settings import load_settings
    from selector.model.synthetic import synthetic_feature_pool, synthetic_labels

    root = tmp_path_factory.mktemp("stage2")
    pool, quality, _ = synthetic_feature_pool(240, seed=3)
    pool.save(root / "pool.safetensors")
    members = {str(i): pool.ids[i * 24:(i + 1) * 24] for i in range(10)}
    (root / "subsets.json").write_text(json.dumps(members))
    (root / "labels.json").write_text(json.dumps(synthetic_labels(members, dict(zip(
        pool.ids, quality.tolist())))))
    train_selector(root / "ckpt", load_settings(None, ["training.epochs=5",
                                                       "training.cross_validate=false"]),
                   root / "pool.safetensors", root / "subsets.json", root / "labels.json")
    data = make_cc_sbu_align(root / "cc", {i: f"A picture {i}. It shows shapes." for i in pool.ids})
    return root, data


@pytest.mark.parametrize("version", ["head", "v1"])
def test_stage2_block_reaches_the_model_after_selecting(version, stage2_data, tmp_path):
    folder = checkout(version)
    root, data = stage2_data
    before, data_before = snapshot(folder), snapshot(data)
    text = block("Use with MiniGPT-4", "instructiongpt4_stage2_finetune.yaml")
    assert "model.llama_model=" in text and "model.ckpt=" in text
    text = text.replace("torchrun --nproc_per_node 8 train.py", "python train.py")  # no GPUs here
    if version == "v1":  # "For MiniGPT-4 v1 (commit ef1ac08) use ..._v1.yaml"
        text = text.replace("instructiongpt4_stage2_finetune.yaml",
                            "instructiongpt4_stage2_finetune_v1.yaml")
    weights = tmp_path / "weights"
    script = runnable(text, {
        "/path/to/MiniGPT-4": str(folder), "/data/cc_sbu_align": str(data),
        "/work/selector": str(root / "ckpt"), "/work/pool.safetensors": str(root / "pool.safetensors"),
        "/weights/vicuna-7b": str(weights / "vicuna-7b"),
        "/weights/pretrained_minigpt4_stage1.pth": str(weights / "stage1.pth"),
        "/runs/stage2": str(tmp_path / "runs" / "stage2")})
    home = tmp_path / "home"
    result = bash(script, tmp_path, home, host_python(), {"HF_HUB_OFFLINE": "1"}, timeout=600)
    assert result.returncode != 0  # no weights here
    log = result.stdout + result.stderr
    # the selection was made (datasets are built before the model) ...
    selections = list((home / ".cache" / "instructiongpt4" / "datasets").glob(
        "*/selections/*/selected.txt"))
    assert len(selections) == 1, log[-3000:]
    # ... and the run failed building the model, not on a setting or our builder
    assert "instructiongpt4: selected" in log, log[-3000:]
    if version == "head":  # HEAD loads the LLaMA tokenizer first: from the path given
        assert str(weights / "vicuna-7b") in log, log[-3000:]
    assert snapshot(folder) == before and snapshot(data) == data_before


# ---------------------------------------------------------------------------------- Evaluate
def _arena_data(root: Path) -> Path:
    from test_eval_datasets import build_arena_layouts

    build_arena_layouts(root)
    science = root / "VQA_Datasets" / "ScienceQA"  # the generated set has a test split only
    shutil.copy(science / "test_anns.json", science / "val_anns.json")
    return root


def test_evaluate_block_on_the_smoke_checkpoint(smoke_run, tmp_path):
    version, folder, home, run = smoke_run
    before = snapshot(folder)
    script = runnable(block("Evaluate", "--tester minigpt4"), {
        "/path/to/MiniGPT-4": str(folder), "/path/to/run/checkpoint_4.pth": str(run / "checkpoint_1.pth"),
        "/path/to/DATA_DIR": str(_arena_data(tmp_path / "DATA_DIR"))})
    work = tmp_path / "cwd"
    work.mkdir()
    result = bash(script, work, home, host_python())
    assert result.returncode == 0, result.stderr[-4000:]
    answers = work / "answers" / "MiniGPT-4" / "paper"
    assert set(json.loads((answers / "result.json").read_text())) == {"GQA", "IconQA", "OKVQA",
                                                                       "ScienceQA"}
    for name in ("GQA", "IconQA", "OKVQA", "ScienceQA"):
        assert (answers / f"{name}.json").is_file()
    assert snapshot(folder) == before


def test_judge_block_against_a_local_server(tmp_path):
    pytest.importorskip("openai")
    from test_eval_judge import Bench, JudgeServer

    files = Bench(tmp_path / "bench").write()
    work = tmp_path / "cwd"
    work.mkdir()
    shutil.copy(files["questions"], work / "questions.jsonl")
    shutil.copy(files["references"], work / "refs.jsonl")
    shutil.copy(files["answers"], work / "answers.jsonl")
    script = runnable(block("Evaluate", "eval judge"), {"OPENAI_API_KEY=...":
                                                        "OPENAI_API_KEY=sk-test-readme"})
    with JudgeServer() as server:
        result = bash(script, work, tmp_path / "home", sys.executable,
                      {"OPENAI_BASE_URL": server.base_url})
    assert result.returncode == 0, result.stderr[-4000:]
    summary = json.loads((work / "work" / "judge" / "summary.json").read_text())
    assert summary
    assert "sk-test-readme" not in result.stdout + result.stderr
