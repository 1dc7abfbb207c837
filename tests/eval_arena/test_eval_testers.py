"""eval_arena.minigpt4_tester: the Arena's MiniGPT-4 tester over the tiny model and MiniGPT-4 checkouts.

The ``tiny`` tests run anywhere. The ``minigpt4`` ones need checkouts and their interpreter (see
tests/lavis_plugins/test_minigpt4_host.py): IGPT4_MINIGPT4_HEAD and/or IGPT4_MINIGPT4_V1, and
IGPT4_MINIGPT4_PYTHON (default: this interpreter).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest
import torch

from conftest import assert_one_line_error, run_cli
from eval_arena.datasets import build_dataset
from eval_arena.metric import accuracy
from eval_arena.runner import evaluate
from eval_arena import testers
from eval_arena.testers import build_tester
from selector.core.errors import InputError
from test_eval_datasets import build_arena_layouts

REPO = Path(__file__).resolve().parents[2]
CPU_SMOKE = REPO / "configs" / "minigpt4" / "cpu_smoke.yaml"
MODEL_ONLY = REPO / "configs" / "models" / "igpt4_tiny_minigpt4.yaml"
NEW_TOKENS = 10
# The Arena's prompt, read off LVLM_evaluation/models/minigpt4/conversation/conversation.py:
# CONV_VISION.system + sep, then "Human: " + "<Img><ImageHere></Img>" + " " + question + sep,
# then "Assistant:" (an empty last message gets the role and a colon only).
ARENA_BEFORE_IMAGE = ("Give the following image: <Img>ImageContent</Img>. You will be able to see "
                      "the image once I provide it to you. Please answer my questions.###Human: <Img>")
ARENA_AFTER_IMAGE = "</Img> {}###Assistant:"
QUESTIONS = ["What is it?", "Describe the colour of the thing shown in this picture, please.",
             "Q?", "Question: which shape comes next?\nOptions: circle square triangle\n",
             "Is the object on the left red?", "How many objects are there?", "Why?"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Models this small run ~10x faster on one thread than on a busy machine's several."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _gradient(path: Path, seed: int, size=(20, 14)) -> None:
    """A picture with structure (a random crop of it differs from a resize)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


@pytest.fixture(scope="module")
def vqa(tmp_path_factory) -> Path:
    """A JSONL VQA set: 7 questions of different lengths on 7 different pictures."""
    folder = tmp_path_factory.mktemp("vqa")
    lines = []
    for i, question in enumerate(QUESTIONS):
        _gradient(folder / "img" / f"{i}.png", i, size=(20 + 3 * i, 14 + i))
        lines.append(json.dumps({"image": f"img/{i}.png", "question": question,
                                 "answers": ["yes", "two"] if i % 2 else "blue"}))
    path = folder / "mine.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _items(path: Path):
    dataset = build_dataset(f"jsonl:{path}", ".")
    return [item.image_path for item in dataset.items], [item.question for item in dataset.items]


@pytest.fixture(scope="module")
def deterministic():
    return build_tester("tiny", {"cfg_path": str(CPU_SMOKE), "mode": "deterministic"})


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny run's checkpoint as the runner saves it: the projection after a few training steps
    on generated captions (the tiny model's own loss), ``{"model": ..., "config": ...}``."""
    from lavis_plugins.tiny_model import TinyMiniGPT4

    model = TinyMiniGPT4()
    generator = torch.Generator().manual_seed(3)
    batch = {"image": torch.randn(4, 3, 32, 32, generator=generator),
             "answer": ["a red circle", "two blue squares", "a green field", "yes"]}
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=0.05)
    losses = []
    for _ in range(5):
        loss = model(batch)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    state = {k: v.detach().clone() for k, v in model.state_dict().items() if k.startswith("llama_proj")}
    path = tmp_path_factory.mktemp("run") / "checkpoint_4.pth"
    torch.save({"model": state, "config": {"model": {"arch": "igpt4_tiny_minigpt4", "seed": 0}},
                "epoch": 4}, path)
    return path, state


def _answers(folder: Path, name: str) -> List[str]:
    return [r["answer"] for r in json.loads((folder / f"{name}.json").read_text(encoding="utf-8"))]


# ---------------------------------------------------------------------------------- tiny model
def test_tiny_tester_end_to_end_through_the_runner(deterministic, tmp_path):
    base = tmp_path / "arena"
    build_arena_layouts(base)
    datasets = [build_dataset("gqa", base, sample_num=5, sample_seed=1),
                build_dataset("iconqa", base, sample_num=4, sample_seed=2)]
    assert isinstance(deterministic, testers.Tester) and deterministic.name == "tiny"
    results, folder = evaluate(deterministic, datasets, tmp_path / "answers", run_name="t",
                               batch_size=3, max_new_tokens=NEW_TOKENS, progress=False)
    assert folder == tmp_path / "answers" / "tiny" / "t"
    assert json.loads((folder / "result.json").read_text()) == results
    assert list(results) == ["GQA", "IconQA"]
    for dataset in datasets:
        records = json.loads((folder / f"{dataset.name}.json").read_text(encoding="utf-8"))
        assert [r["question"] for r in records] == [i.question for i in dataset.items]
        alone = [deterministic.generate(i.image_path, i.question, max_new_tokens=NEW_TOKENS)
                 for i in dataset.items]
        assert [r["answer"] for r in records] == alone
        assert results[dataset.name] == accuracy(records, "arena")
    assert all(_answers(folder, "GQA") + _answers(folder, "IconQA"))  # the model says something


def test_deterministic_answers_do_not_depend_on_the_batch(deterministic, vqa):
    images, questions = _items(vqa)
    alone = [deterministic.generate(i, q, max_new_tokens=NEW_TOKENS) for i, q in zip(images, questions)]
    assert all(alone) and len(set(alone)) > 2
    lengths = {len(row) for row in deterministic.context_embeds(
        deterministic.image_embeds(deterministic.load_images(images)), questions)}
    assert len(lengths) == len(QUESTIONS)  # every batch below is padded
    together = deterministic.batch_generate(images, questions, max_new_tokens=NEW_TOKENS)
    assert together == alone
    order = [6, 2, 0, 5, 3, 1, 4, 2]  # another composition, with a duplicate
    shuffled = deterministic.batch_generate([images[i] for i in order], [questions[i] for i in order],
                                            max_new_tokens=NEW_TOKENS)
    assert shuffled == [alone[i] for i in order]
    for size in (2, 3):
        answers: List[str] = []
        for start in range(0, len(order), size):
            part = order[start:start + size]
            answers += deterministic.batch_generate([images[i] for i in part],
                                                    [questions[i] for i in part],
                                                    max_new_tokens=NEW_TOKENS)
        assert answers == [alone[i] for i in order]


class _Recorder:
    """Wraps ``llama_model.generate`` and keeps what it was called with."""

    def __init__(self, generate):
        self.generate, self.calls = generate, []

    def __call__(self, **kwargs):
        self.calls.append(kwargs)
        return self.generate(**kwargs)


def _expected_rows(tester, images, questions):
    """The prompt embeddings built by hand from the Arena's template text."""
    embed = tester.model.llama_model.get_input_embeddings()
    tokenizer = tester.model.tokenizer
    features = tester.model.encode_img(tester.load_images(images))
    rows = []
    for image_tokens, question in zip(features, questions):
        head = [tokenizer.bos_token_id] + tokenizer(ARENA_BEFORE_IMAGE, add_special_tokens=False)["input_ids"]
        tail = tokenizer(ARENA_AFTER_IMAGE.format(question), add_special_tokens=False)["input_ids"]
        rows.append(torch.cat([embed(torch.tensor(head)), image_tokens, embed(torch.tensor(tail))]))
    return rows


@pytest.mark.parametrize("mode", ["arena", "deterministic"])
def test_prompt_padding_and_decoding_settings(mode, vqa, monkeypatch):
    tester = build_tester("tiny", {"mode": mode, "seed": "5"})
    images, questions = _items(vqa)
    images, questions = images[:3], questions[:3]
    recorder = _Recorder(tester.model.llama_model.generate)
    monkeypatch.setattr(tester.model.llama_model, "generate", recorder)
    answers = tester.batch_generate(images, questions, max_new_tokens=7)
    (call,) = recorder.calls
    assert len(answers) == 3 and call["max_new_tokens"] == 7
    if mode == "arena":
        assert call["do_sample"] is True and call["top_p"] == 0.9 and call["temperature"] == 1.0
    else:
        assert call["do_sample"] is False and "top_p" not in call and "temperature" not in call
    assert call["num_beams"] == 1 and call["repetition_penalty"] == 1.0
    torch.manual_seed(5)  # the arena transform crops at random: replay the tester's draws
    with torch.no_grad():
        expected = _expected_rows(tester, images, questions)
    embeds, mask = call["inputs_embeds"], call["attention_mask"]
    width = max(len(row) for row in expected)
    assert embeds.shape[:2] == mask.shape == (3, width)
    for i, row in enumerate(expected):
        padding = width - len(row)
        assert torch.allclose(embeds[i, padding:], row, atol=1e-6)  # left-padded, the prompt at the end
        assert not embeds[i, :padding].any()  # zero vectors
        if mode == "arena":  # the Arena passes no mask: everything is attended to
            assert mask[i].tolist() == [1] * width
        else:
            assert mask[i].tolist() == [0] * padding + [1] * len(row)


def test_arena_mode_samples_and_crops_at_random(vqa):
    images, questions = _items(vqa)
    unseeded = build_tester("tiny", {"mode": "arena"})
    first = unseeded.batch_generate(images, questions, max_new_tokens=NEW_TOKENS)
    second = unseeded.batch_generate(images, questions, max_new_tokens=NEW_TOKENS)
    assert first != second  # sampled (top_p 0.9): two runs disagree
    seeded = build_tester("tiny", {"mode": "arena", "seed": "7"})
    assert seeded.batch_generate(images, questions, max_new_tokens=NEW_TOKENS) == \
        seeded.batch_generate(images, questions, max_new_tokens=NEW_TOKENS)  # reproducible
    from PIL import Image

    picture = Image.open(images[3]).convert("RGB")
    assert not torch.equal(seeded.vis_processor(picture), seeded.vis_processor(picture))  # random crop
    fixed = build_tester("tiny", {"mode": "deterministic"})
    assert torch.equal(fixed.vis_processor(picture), fixed.vis_processor(picture))
    assert seeded.settings["image_transform"] == "arena blip2_image_train 32"
    assert fixed.settings["image_transform"] == "blip2_image_eval 32"


def test_a_checkpoint_changes_the_answers(deterministic, trained, vqa):
    path, state = trained
    images, questions = _items(vqa)
    tester = build_tester("tiny", {"cfg_path": str(CPU_SMOKE), "ckpt": str(path), "mode": "deterministic"})
    assert tester.settings["weights_loaded"] == 2
    assert torch.equal(tester.model.llama_proj.weight, state["llama_proj.weight"])
    name = "llama_model.model.layers.0.self_attn.q_proj.weight"  # frozen parts: rebuilt, untouched
    assert torch.equal(tester.model.state_dict()[name], deterministic.model.state_dict()[name])
    before = deterministic.batch_generate(images, questions, max_new_tokens=NEW_TOKENS)
    after = tester.batch_generate(images, questions, max_new_tokens=NEW_TOKENS)
    assert after != before
    # without cfg_path the checkpoint's own config is used (same model: same answers)
    assert build_tester("tiny", {"ckpt": str(path), "mode": "deterministic"}).batch_generate(
        images, questions, max_new_tokens=NEW_TOKENS) == after


def test_one_path_for_minigpt4_shaped_models(deterministic, vqa):
    """A model whose encode_img returns (embeds, atts), as MiniGPT-4 v1 and HEAD do, gives the
    same answers through the same tester as the tiny model it wraps."""
    from eval_arena.minigpt4_tester import MiniGPT4Tester

    class Wrapped(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner, self.llama_model = inner, inner.llama_model
            self.llama_tokenizer = inner.tokenizer

        def encode_img(self, image):
            embeds = self.inner.encode_img(image)
            return embeds, torch.ones(embeds.shape[:2], dtype=torch.long)

    images, questions = _items(vqa)
    tester = MiniGPT4Tester(Wrapped(deterministic.model), deterministic.vis_processor,
                            mode="deterministic")
    assert tester.name == "MiniGPT-4"
    assert tester.batch_generate(images, questions, max_new_tokens=NEW_TOKENS) == \
        deterministic.batch_generate(images, questions, max_new_tokens=NEW_TOKENS)


def test_igpt4_eval_cli_runs_the_tiny_tester(trained, vqa, tmp_path):
    from selector.app import cli

    path, _ = trained
    args = ["eval", "--tester", "tiny", "--tester-arg", f"cfg_path={CPU_SMOKE}", "--tester-arg",
            f"ckpt={path}", "--tester-arg", "mode=deterministic", "--datasets", f"jsonl:{vqa}",
            "--batch-size", "3", "--max-new-tokens", str(NEW_TOKENS), "--no-progress"]
    assert cli.main(args + ["--out", str(tmp_path / "a"), "--run-name", "in"]) == 0
    folder = tmp_path / "a" / "tiny" / "in"
    assert set(json.loads((folder / "result.json").read_text())) == {"mine"}
    state = json.loads((folder / ".igpt4" / "run.json").read_text())
    assert state["tester"]["args"]["ckpt"] == str(path)
    # a fresh process (where the checkpoint did not come from) gives the same answers
    result = run_cli(*args, "--out", tmp_path / "b", "--run-name", "sub", "--model-name", "tiny",
                     env={"OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert _answers(tmp_path / "b" / "tiny" / "sub", "mine") == _answers(folder, "mine")


@pytest.mark.parametrize("tester, args, message", [
    ("tiny", {"mode": "fast"}, "tester mode must be arena or deterministic"),
    ("tiny", {"cfg_path": "nowhere.yaml"}, "nowhere.yaml: config file not found"),
    ("tiny", {"cfg_path": str(REPO / "configs" / "minigpt4" / "subset_finetune.yaml")},
     "model arch 'minigpt4' is not the tiny model"),
    ("tiny", {"ckpt": "nowhere.pth"}, "nowhere.pth: checkpoint not found"),
    ("tiny", {"ckpt": "{garbage}"}, "not a PyTorch checkpoint"),
    ("tiny", {"ckpt": "{other}"}, "none of its 1 weights (e.g. other.weight) belong to this model"),
    ("tiny", {"ckpt": "{misfit}"}, "weights do not fit the model built from the config"),
    ("tiny", {"device": "tpu9"}, "tester device 'tpu9' is not a torch device"),
    ("tiny", {"dtype": "int8"}, "tester dtype must be"),
    ("tiny", {"seed": "abc"}, "tester seed must be an integer"),
    ("tiny", {"temperature": "0"}, "bad --tester-arg"),
    ("minigpt4", {"cfg_path": str(CPU_SMOKE)}, "needs a MiniGPT-4 checkout"),
    ("minigpt4", {"checkout": "{tmp}"}, "not a MiniGPT-4 checkout"),
    ("minigpt4", {"checkout": "{tmp}", "mode": "greedy"}, "tester mode must be"),
    ("minigpt4", {"checkout": "{tmp}", "options": "model.arch"}, "expected KEY=VALUE pairs"),
])
def test_bad_tester_args_are_one_line_input_errors(tester, args, message, tmp_path, monkeypatch):
    monkeypatch.delenv("MINIGPT4_DIR", raising=False)
    (tmp_path / "garbage.pth").write_bytes(b"not a pickle at all")
    torch.save({"model": {"other.weight": torch.zeros(2)}}, tmp_path / "other.pth")
    torch.save({"model": {"llama_proj.weight": torch.zeros(3, 3)}}, tmp_path / "misfit.pth")
    files = {"{garbage}": tmp_path / "garbage.pth", "{other}": tmp_path / "other.pth",
             "{misfit}": tmp_path / "misfit.pth", "{tmp}": tmp_path}
    args = {k: str(files.get(v, v)) for k, v in args.items()}
    with pytest.raises(InputError) as caught:
        build_tester(tester, args)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_cli_error_is_one_line(tmp_path, vqa):
    result = run_cli("eval", "--tester", "tiny", "--tester-arg", f"ckpt={tmp_path / 'x.pth'}",
                     "--datasets", f"jsonl:{vqa}", "--out", tmp_path)
    assert_one_line_error(result, "x.pth: checkpoint not found")


# ---------------------------------------------------------------------------- MiniGPT-4 hosts
def _checkout(version: str) -> Path:
    from conftest import minigpt4_checkout

    return minigpt4_checkout(version)


def _host(arguments: List[str], cwd: Path) -> subprocess.CompletedProcess:
    python = os.environ.get("IGPT4_MINIGPT4_PYTHON", sys.executable)
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONWARNINGS": "ignore",
           "OMP_NUM_THREADS": "1"}
    env.pop("MINIGPT4_DIR", None)
    return subprocess.run([python] + arguments, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=900)


def _snapshot(folder: Path) -> Dict[str, tuple]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in folder.rglob("*") if p.is_file()}


# runs `igpt4 eval` several times in one host interpreter (minigpt4 is imported once)
_HOST_SCRIPT = """
import json, sys
from selector.app.cli import main
for argv in json.loads(sys.argv[1]):
    status = main(argv)
    if status:
        sys.exit(status)
"""


@pytest.mark.parametrize("version", ["head", "v1"])
def test_minigpt4_tester_in_a_checkout(version, trained, vqa, tmp_path):
    checkout = _checkout(version)
    before = _snapshot(checkout)
    ckpt, _ = trained
    out = tmp_path / "answers"
    common = ["--datasets", f"jsonl:{vqa}", "--max-new-tokens", str(NEW_TOKENS), "--no-progress",
              "--out", str(out)]
    host = ["--tester", "minigpt4", "--tester-arg", f"checkout={checkout}", "--tester-arg",
            f"cfg_path={CPU_SMOKE}", "--tester-arg", f"ckpt={ckpt}"]
    deterministic = host + ["--tester-arg", "mode=deterministic"]
    runs = {
        "b1": ["eval"] + deterministic + common + ["--batch-size", "1", "--run-name", "b1"],
        "b4": ["eval"] + deterministic + common + ["--batch-size", "4", "--run-name", "b4"],
        "seed1": ["eval"] + deterministic + ["--tester-arg", "options=model.seed=1"] + common
        + ["--batch-size", "4", "--run-name", "seed1"],
        "model_only": ["eval", "--tester", "minigpt4", "--tester-arg", f"checkout={checkout}",
                       "--tester-arg", f"cfg_path={MODEL_ONLY}", "--tester-arg", f"ckpt={ckpt}",
                       "--tester-arg", "mode=deterministic"] + common + ["--run-name", "model_only"],
        "tiny": ["eval", "--tester", "tiny", "--tester-arg", f"cfg_path={CPU_SMOKE}", "--tester-arg",
                 f"ckpt={ckpt}", "--tester-arg", "mode=deterministic", "--model-name", "MiniGPT-4"]
        + common + ["--batch-size", "3", "--run-name", "tiny"],
    }
    result = _host(["-c", _HOST_SCRIPT, json.dumps(list(runs.values()))], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    folders = {name: out / "MiniGPT-4" / name for name in runs}
    for folder in folders.values():
        assert (folder / "mine.json").is_file() and (folder / "result.json").is_file()
    answers = {name: _answers(folder, "mine") for name, folder in folders.items()}
    assert len(answers["b1"]) == len(QUESTIONS) and len(set(answers["b1"])) > 2
    assert answers["b4"] == answers["b1"]  # batch-independent
    assert answers["tiny"] == answers["b1"]  # one generation path: host-built and host-free agree
    assert answers["model_only"] == answers["b1"]  # a model-only YAML: same model, same size
    assert answers["seed1"] != answers["b1"]  # options reach the config (other frozen weights)
    state = json.loads((folders["b4"] / ".igpt4" / "run.json").read_text())
    assert state["tester"]["name"] == "minigpt4" and state["tester"]["args"] == {
        "checkout": str(checkout), "cfg_path": str(CPU_SMOKE), "ckpt": str(ckpt), "mode": "deterministic"}
    assert state["tester"]["resolved"]["arch"] == "igpt4_tiny_minigpt4"  # what it resolved to

    # the plain command line, Arena mode (sampled), batches of 3
    arena = _host(["-m", "selector.app.cli", "eval"] + host + common
                  + ["--batch-size", "3", "--run-name", "arena"], cwd=tmp_path)
    assert arena.returncode == 0, arena.stderr[-4000:]
    records = json.loads((out / "MiniGPT-4" / "arena" / "mine.json").read_text(encoding="utf-8"))
    assert [r["question"] for r in records] == QUESTIONS
    assert list(json.loads((out / "MiniGPT-4" / "arena" / "result.json").read_text())) == ["mine"]
    assert _snapshot(checkout) == before  # nothing written into the checkout
