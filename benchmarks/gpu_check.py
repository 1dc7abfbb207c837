"""GPU check: every CUDA path of the project, at the paper's real model sizes, in one run.

Each path goes through the project's own code (the indicators, the feature embedder, the
MiniGPT-4 checkouts' ``train.py`` under ``torchrun``, ``igpt4 eval``, ``igpt4 score`` under
``accelerate launch``) with models randomly initialised from their configs: nothing is
downloaded, so the figures are speeds, not scores.

* ``clip fp16`` / ``clip bf16``: ``ClipScore`` with open_clip's ``ViT-bigG-14`` (the paper's CLIP)
  on generated JPEGs with several-sentence captions; images/s, the model's FLOPs per sample
  (counted by ``torch.utils.flop_counter`` over one batch: image tower + the caption's sentences)
  and the share of the GPU's dense bf16 ceiling that reaches (table by GPU name; ``--peak-tflops``).
* ``reward``: ``RewardScore`` with a DeBERTa-v3-large-sized reward model (saved, then loaded by
  the indicator's own ``from_pretrained`` path); pairs/s.
* ``text features``: ``CausalLMTextEmbedder`` (last-token hidden state) with a Llama-2-7B-sized
  model in bf16, saved and loaded the same way; samples/s and tokens/s.
* ``train head`` / ``train v1``: the tiny MiniGPT-4 trained by an unmodified checkout's
  ``train.py`` under ``torchrun --nproc_per_node 1`` with ``run.distributed=True``, i.e. the
  checkout's own ``init_distributed_mode`` (NCCL). On a CPU that function cannot run (it calls
  ``torch.cuda.set_device`` and hard-codes NCCL): there the same launch runs with
  ``run.distributed=False``. Needs ``IGPT4_MINIGPT4_HEAD`` / ``IGPT4_MINIGPT4_V1`` (checkouts) and
  ``IGPT4_MINIGPT4_PYTHON`` (their interpreter with this package; default: this one), as the
  host tests; without them the path is reported skipped, with the reason.
* ``tester head`` / ``tester v1``: ``igpt4 eval --tester minigpt4`` in those checkouts, on the
  device; ``tester tiny``: the host-free tiny tester (same generation code) on the device.
* ``score accelerate``: ``igpt4 score`` (CLIP, reward and length scores, image and text features,
  the pool file) under ``accelerate launch --num_processes 1`` with tiny models.

``--device cpu --small`` runs the same paths with tiny models on the CPU (the test suite's
check, under 3 minutes). One line per path (ok / FAILED / skipped, with its figure or reason), then
``N/M paths ran``. Exit 0 when every path ran, 1 when one failed, 3 when none failed but some
were skipped (no checkout given).

    python benchmarks/gpu_check.py [--device cuda|cpu] [--small] [--peak-tflops T]
        [--only clip,reward,...] [--batch-size 32] [--num-workers N]
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]
CPU_SMOKE = REPO / "configs" / "minigpt4" / "cpu_smoke.yaml"

#: dense (no sparsity) bf16 tensor-core peaks, TFLOPS, by a substring of the CUDA device name;
#: the first match wins, so the more specific names come first
PEAK_BF16_TFLOPS = (("GH200", 989.0), ("H200", 989.0), ("H100 PCIe", 756.0), ("H100 NVL", 835.0),
                    ("H100", 989.0), ("H800", 989.0), ("B200", 2250.0), ("A100", 312.0),
                    ("A800", 312.0), ("L40S", 362.0), ("L4", 121.0))

#: the paper's CLIP (open_clip's own architecture config; pretrained=None: random weights)
CLIP_MODEL = "ViT-bigG-14"
#: DeBERTa-v3-large (OpenAssistant/reward-model-deberta-v3-large-v2's config), one label
DEBERTA_V3_LARGE = dict(vocab_size=128100, hidden_size=1024, num_hidden_layers=24,
                        num_attention_heads=16, intermediate_size=4096, hidden_act="gelu",
                        max_position_embeddings=512, type_vocab_size=0, relative_attention=True,
                        position_buckets=256, norm_rel_ebd="layer_norm", share_att_key=True,
                        pos_att_type=["p2c", "c2p"], layer_norm_eps=1e-7,
                        max_relative_positions=-1, position_biased_input=False,
                        pooler_hidden_size=1024, pooler_hidden_act="gelu", num_labels=1,
                        pad_token_id=0)
#: Llama-2-7B (meta-llama/Llama-2-7b-chat-hf's config)
LLAMA_2_7B = dict(vocab_size=32000, hidden_size=4096, intermediate_size=11008,
                  num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32,
                  max_position_embeddings=4096, rms_norm_eps=1e-5, pad_token_id=0,
                  bos_token_id=4, eos_token_id=5)
HOSTS = {"head": "IGPT4_MINIGPT4_HEAD", "v1": "IGPT4_MINIGPT4_V1"}


class Skip(Exception):
    """The path cannot run here; the message says why."""


class Check:
    """The paths and what they share (generated data, tiny models, the scratch folder)."""

    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        self.args, self.tmp = args, tmp
        self.device, self.small = args.device, args.small
        self.cuda = self.device.startswith("cuda")
        self._data: Optional[Path] = None
        self._captions: Optional[List[str]] = None

    # -- shared inputs ----------------------------------------------------------------------
    def samples(self, count: int):
        """``count`` cc_sbu_align samples: generated JPEGs with 3-9 sentence captions."""
        from clip_throughput import make_data
        from selector.data.samples import read_cc_sbu_align

        if self._data is None:
            total = 32 if self.small else min(1024, self.args.samples or 1024)
            self._data = make_data(self.tmp / "data", total, 64 if self.small else 256, seed=0)
        samples = read_cc_sbu_align(self._data).samples
        return [samples[i % len(samples)] for i in range(count)]

    def tokenizer_folder(self, folder: Path, causal: bool) -> Path:
        """A WordPiece tokenizer trained on the generated captions (about one token a word, as
        the real tokenizers), BOS-first for the causal LM."""
        from selector.app.toy.text import train_tokenizer

        texts = [s.answer for s in self.samples(64)]
        return train_tokenizer(folder, texts, vocab_size=400, pair_template=not causal,
                               bos_eos=causal)

    def count(self, full: int) -> int:
        """Samples a model path times: ``--samples``, else 32 small or ``full``."""
        return self.args.samples or (32 if self.small else full)

    def workers(self) -> int:
        if self.args.num_workers is not None:
            return self.args.num_workers
        return 1 if self.small else max(1, min(8, (os.cpu_count() or 2) - 2))

    def free(self) -> None:
        """Drop cached models between paths (the GPU holds one large model at a time)."""
        import gc

        import torch

        from selector.scoring.indicators.clip import load_open_clip

        load_open_clip.cache_clear()
        gc.collect()
        if self.cuda:
            torch.cuda.empty_cache()

    # -- model paths ------------------------------------------------------------------------
    def clip(self, precision: str) -> str:
        import torch

        from selector.scoring.indicators import create

        if self.small:
            from selector.app.toy.clip import TINY_CLIP

            config = self.tmp / "igpt4-check-clip.json"
            config.write_text(json.dumps(TINY_CLIP))
            name, model_config = config.stem, str(config)
        else:
            name, model_config = CLIP_MODEL, None
        count = self.count(1024)
        batch = self.args.batch_size
        indicator = create("clip", model=name, pretrained=None, model_config=model_config,
                           batch_size=batch, num_workers=self.workers(), device=self.device,
                           precision=precision, progress=False)
        started = time.perf_counter()
        model = indicator.load()[0]
        built = time.perf_counter() - started
        samples = self.samples(count)
        flops = flops_per_sample(lambda: indicator.score(samples[:batch]), batch)
        indicator.score(samples[:2 * batch])  # warm-up: workers, allocator, kernels
        seconds, values = timed(lambda: indicator.score(samples), self.cuda)
        bad = [v.problem for v in values if v.problem]
        if bad:
            raise RuntimeError(f"{len(bad)} samples without a score (e.g. {bad[0]})")
        rate = count / seconds
        from selector.scoring.indicators.clip import input_dtype

        dtype = str(input_dtype(model)).replace("torch.", "")
        figure = (f"{rate:8.1f} images/s ({name}, {size(model)}, {dtype}, batch {batch}, "
                  f"{self.workers()} workers; built in {built:.0f} s)")
        if flops:
            achieved = flops * rate / 1e12
            figure += (f"; {flops / 1e9:.4g} GFLOP/sample (image + caption sentences) = "
                       f"{achieved:.4g} TFLOPS")
            peak = self.peak()
            figure += (f" = {100 * achieved / peak[0]:.1f}% of {peak[1]}" if peak else
                       " (no bf16 ceiling for this device: give --peak-tflops)")
        del indicator, model
        self.free()
        return figure

    def peak(self) -> Optional[Tuple[float, str]]:
        """(dense bf16 TFLOPS, where the number comes from) of this device, if known."""
        if self.args.peak_tflops:
            return self.args.peak_tflops, f"{self.args.peak_tflops:g} TFLOPS (--peak-tflops)"
        if not self.cuda:
            return None
        import torch

        name = torch.cuda.get_device_name(torch.device(self.device))
        for key, tflops in PEAK_BF16_TFLOPS:
            if key in name:
                return tflops, f"{name}'s {tflops:g} TFLOPS dense bf16"
        return None

    def reward(self) -> str:
        import torch

        from selector.scoring.indicators import create

        folder = self.tmp / "reward"
        if self.small:
            from selector.app.toy.text import tiny_reward_model

            tiny_reward_model(folder)
        else:
            from transformers import DebertaV2Config, DebertaV2ForSequenceClassification

            self.tokenizer_folder(folder, causal=False)
            torch.manual_seed(0)
            model = DebertaV2ForSequenceClassification(DebertaV2Config(**DEBERTA_V3_LARGE))
            model.half().eval().save_pretrained(folder)  # half: less to write and read
            del model
        count = self.count(1024)
        # the tiny model has 128 positions; DeBERTa-v3's relative positions take the default 512
        indicator = create("reward", model=str(folder), device=self.device, progress=False,
                           max_length=128 if self.small else 512)
        started = time.perf_counter()
        model, tokenizer = indicator.load()
        loaded = time.perf_counter() - started
        samples = self.samples(count)
        indicator.score(samples[:32])
        seconds, values = timed(lambda: indicator.score(samples), self.cuda)
        if any(v.problem for v in values):
            raise RuntimeError(next(v.problem for v in values if v.problem))
        pairs = [(q, a) for s in samples for q, a in s.rounds]
        tokens = sum(len(tokenizer(q, a, truncation="only_second", max_length=indicator.max_length)
                         ["input_ids"]) for q, a in pairs) / len(pairs)
        dtype = str(next(model.parameters()).dtype).replace("torch.", "")
        figure = (f"{len(pairs) / seconds:8.1f} pairs/s (DeBERTa-v2 {size(model)}, {dtype}, "
                  f"batch {indicator.batch_size}, {tokens:.0f} tokens/pair; loaded in "
                  f"{loaded:.0f} s)")
        del indicator, model
        self.free()
        return figure

    def text_features(self) -> str:
        import torch

        from selector.scoring.embedders import create_embedder

        folder = self.tmp / "llama"
        if self.small:
            from selector.app.toy.text import tiny_llama

            tiny_llama(folder)
        else:
            from transformers import LlamaConfig, LlamaModel

            self.tokenizer_folder(folder, causal=True)
            torch.manual_seed(0)
            # built on the device in bf16 (seconds, where 6.7 B fp32 CPU inits take minutes),
            # then saved: the embedder loads it through its own from_pretrained path
            with torch.device(self.device):
                model = LlamaModel._from_config(LlamaConfig(**LLAMA_2_7B),
                                                torch_dtype=torch.bfloat16)
            model.eval().save_pretrained(folder)
            del model
            self.free()
        count = self.count(512)
        embedder = create_embedder("causal_lm", model=str(folder), device=self.device,
                                   precision="bf16", progress=False)
        started = time.perf_counter()
        model, tokenizer = embedder.load()
        loaded = time.perf_counter() - started
        samples = self.samples(count)
        embedder.embed(samples[:16])
        seconds, (vectors, problems) = timed(lambda: embedder.embed(samples), self.cuda)
        if any(problems):
            raise RuntimeError(next(p for p in problems if p))
        tokens = sum(len(tokenizer(s.answer, truncation=True, max_length=embedder.max_length)
                         ["input_ids"]) for s in samples)
        dtype = str(next(model.parameters()).dtype).replace("torch.", "")
        figure = (f"{count / seconds:8.1f} samples/s, {tokens / seconds:.0f} tokens/s (Llama "
                  f"{size(model)}, {dtype}, batch {embedder.batch_size}, {vectors.shape[1]}-d "
                  f"last-token states; loaded in {loaded:.0f} s)")
        del embedder, model
        self.free()
        shutil.rmtree(folder, ignore_errors=True)
        return figure

    # -- MiniGPT-4 checkouts ----------------------------------------------------------------
    def checkout(self, version: str) -> Path:
        variable = HOSTS[version]
        value = os.environ.get(variable)
        if not value:
            raise Skip(f"{variable} is not set (a MiniGPT-4 checkout, {version} layout; and "
                       "IGPT4_MINIGPT4_PYTHON its interpreter with this package)")
        folder = Path(value)
        if not (folder / "train.py").is_file() or not (folder / "minigpt4").is_dir():
            raise RuntimeError(f"{variable}={value} is not a MiniGPT-4 checkout")
        return folder

    def host(self, command: List[str], cwd: Path, timeout: int) -> subprocess.CompletedProcess:
        python = os.environ.get("IGPT4_MINIGPT4_PYTHON", sys.executable)
        return run([python] + command, cwd, self.env(), timeout)

    def env(self) -> Dict[str, str]:
        env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONWARNINGS": "ignore",
               "IGPT4_RUNS": str(self.tmp / "runs")}
        env.pop("IGPT4_AUTOLOAD", None)
        env.pop("MINIGPT4_DIR", None)
        if not self.cuda:
            env["CUDA_VISIBLE_DEVICES"] = ""  # the CPU check stays on the CPU
        return env

    def smoke(self) -> Path:
        from lavis_plugins.smoke import smoke_set

        return smoke_set(self.tmp / "smoke")

    def train(self, version: str) -> str:
        checkout = self.checkout(version)
        smoke = self.smoke()
        output = self.tmp / f"train-{version}"
        prefix = "datasets.cc_sbu_align_selected"
        options = [f"{prefix}.build_info.storage={smoke / 'data'}",
                   f"{prefix}.selector.checkpoint={smoke / 'selector'}",
                   f"{prefix}.selector.pool={smoke / 'pool.safetensors'}",
                   f"{prefix}.selector.cache_dir={self.tmp / f'selection-{version}'}",
                   f"run.output_dir={output}", f"run.device={'cuda' if self.cuda else 'cpu'}",
                   # the checkout's init_distributed_mode: NCCL on the GPU; it cannot run on a CPU
                   f"run.distributed={self.cuda}"]
        command = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1",
                   "train.py", "--cfg-path", str(CPU_SMOKE), "--options"] + options
        started = time.perf_counter()
        result = self.host(command, checkout, 300 if self.small else 420)
        seconds = time.perf_counter() - started
        check(result)
        logs = sorted(output.glob("*/log.txt"))
        checkpoints = sorted(output.glob("*/checkpoint_*.pth"))
        if not logs or not checkpoints:
            raise RuntimeError(f"no log.txt / checkpoint in {output}")
        losses = [float(json.loads(line)["train_loss"]) for line in
                  logs[-1].read_text().splitlines() if line.startswith('{"train_')]
        group = ("NCCL process group (init_distributed_mode)" if self.cuda else
                 "distributed off: init_distributed_mode needs CUDA and NCCL")
        distributed = "initialised" if "distributed init (rank 0" in result.stdout + \
            result.stderr else "not initialised"
        if self.cuda and distributed != "initialised":
            raise RuntimeError("train.py ran without its NCCL process group")
        return (f"{seconds:6.1f} s, torchrun 1 process, {group}, {len(losses)} epochs, loss "
                f"{losses[0]:.3f} -> {losses[-1]:.3f}, {checkpoints[-1].name}")

    def vqa(self) -> Path:
        """A JSONL VQA set: 8 questions on 8 generated pictures (paths relative to the file)."""
        path = self.tmp / "vqa" / "check.jsonl"
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            lines = []
            for n, sample in enumerate(self.samples(8)):
                shutil.copy(sample.image, path.parent / f"{n}.jpg")
                lines.append(json.dumps({"image": f"{n}.jpg", "question": f"What is shown? {n}",
                                         "answers": ["shapes"]}))
            path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return path

    def eval_args(self, run_name: str) -> List[str]:
        return ["--datasets", f"jsonl:{self.vqa()}", "--max-new-tokens", "8", "--batch-size",
                "4", "--no-progress", "--out", str(self.tmp / "answers"), "--run-name", run_name]

    def tester(self, version: str) -> str:
        checkout = self.checkout(version)
        command = ["-m", "selector.app.cli", "eval", "--tester", "minigpt4", "--tester-arg",
                   f"checkout={checkout}", "--tester-arg", f"cfg_path={CPU_SMOKE}",
                   "--tester-arg", f"device={self.device}"] + self.eval_args(f"host-{version}")
        started = time.perf_counter()
        check(self.host(command, self.tmp, 300))
        seconds = time.perf_counter() - started
        return self.answers("MiniGPT-4", f"host-{version}", seconds)

    def tester_tiny(self) -> str:
        from selector.app.cli import main

        started = time.perf_counter()
        status = main(["eval", "--tester", "tiny", "--tester-arg", f"cfg_path={CPU_SMOKE}",
                       "--tester-arg", f"device={self.device}", "--model-name", "tiny"]
                      + self.eval_args("tiny"))
        if status:
            raise RuntimeError(f"igpt4 eval exited {status}")
        return self.answers("tiny", "tiny", time.perf_counter() - started)

    def answers(self, model: str, run_name: str, seconds: float) -> str:
        folder = self.tmp / "answers" / model / run_name
        records = json.loads((folder / "check.json").read_text(encoding="utf-8"))
        state = json.loads((folder / ".igpt4" / "run.json").read_text(encoding="utf-8"))
        resolved = state.get("tester", {}).get("resolved", {})
        where = f"{resolved.get('device', '?')} {resolved.get('dtype', '?')}"
        if self.cuda and not str(resolved.get("device", "")).startswith("cuda"):
            raise RuntimeError(f"the tester ran on {where}, not on {self.device}")
        return f"{len(records)} answers in {seconds:.1f} s (with start-up), on {where}"

    def score_accelerate(self) -> str:
        from selector.app.toy.clip import tiny_clip
        from selector.app.toy.models import tiny_score_settings
        from selector.app.toy.text import tiny_reward_model

        models = self.tmp / "score-models"
        config, checkpoint = tiny_clip(models, "igpt4-check-score-clip")
        from selector.app.toy.text import tiny_llama

        llama = tiny_llama(models / "llama")
        reward = tiny_reward_model(models / "reward")
        out = self.tmp / "score"
        data = self.samples(1)[0].image.parent.parent  # the generated cc_sbu_align folder
        command = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1",
                   "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"] \
            + ([] if self.cuda else ["--cpu"]) \
            + ["-m", "selector.app.cli", "score", "--data", str(data), "--work", str(out / "work"),
               "--indicators", "clip,reward,length",
               "--set", "pool.indicators=[clip,reward,length]",
               "--set", f"indicators.reward.model={reward}",
               "--set", "indicators.reward.max_length=128",  # the tiny model's positions
               "--out", str(out / "scores.jsonl"),
               "--pool-out", str(out / "pool.safetensors")] \
            + tiny_score_settings(config, checkpoint, llama)
        started = time.perf_counter()
        check(run(command, REPO, self.env(), 300))
        seconds = time.perf_counter() - started
        rows = [json.loads(line) for line in
                (out / "scores.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]
        scored = sum(1 for row in rows if all(row.get(k) is not None
                                              for k in ("clip", "reward", "length")))
        if not rows or scored != len(rows) or not (out / "pool.safetensors").is_file():
            raise RuntimeError(f"{scored} of {len(rows)} samples have all three scores")
        return (f"{len(rows)} samples scored (clip, reward, length) + pool file in {seconds:.1f} s "
                f"(with start-up), accelerate launch, 1 process on {self.device}")


@contextlib.contextmanager
def quiet(chatter: io.StringIO):
    """What the libraries print while a path runs goes into ``chatter``: Python's streams and
    the file descriptors under them (the tokenizers' Rust trainer writes to fd 1 directly)."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with tempfile.TemporaryFile("w+b") as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            with contextlib.redirect_stdout(chatter), contextlib.redirect_stderr(chatter):
                yield
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            sink.seek(0)
            chatter.write(sink.read().decode("utf-8", "replace"))


def size(model) -> str:
    count = sum(p.numel() for p in model.parameters())
    return f"{count / 1e9:.2f} B params" if count >= 1e8 else f"{count / 1e6:.3g} M params"


def flops_per_sample(run_batch: Callable[[], Any], batch: int) -> Optional[float]:
    """FLOPs of one batch through the real code path, per sample (torch's FLOP counter: matmuls,
    convolutions, attention); None where this torch has no counter.

    nn.MultiheadAttention's inference fast path is one fused op the counter does not know (it
    would miss the attention projections, a third of a ViT layer's FLOPs): it is off while
    counting, so the same attention runs as the counted matmuls and SDPA."""
    import torch

    try:
        from torch.utils.flop_counter import FlopCounterMode
    except ImportError:
        return None
    mha = getattr(torch.backends, "mha", None)
    fast = mha.get_fastpath_enabled() if mha is not None else None
    try:
        if mha is not None:
            mha.set_fastpath_enabled(False)
        with FlopCounterMode(display=False) as counter:
            run_batch()
    finally:
        if mha is not None:
            mha.set_fastpath_enabled(fast)
    return counter.get_total_flops() / batch


def timed(work: Callable[[], Any], cuda: bool) -> Tuple[float, Any]:
    import torch

    if cuda:
        torch.cuda.synchronize()
    started = time.perf_counter()
    result = work()
    if cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - started, result


def run(command: List[str], cwd: Path, env: Dict[str, str], timeout: int
        ) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"did not finish in {timeout} s") from None


def check(result: subprocess.CompletedProcess) -> None:
    """A failed subprocess: its last meaningful stderr line is the reason."""
    if result.returncode != 0:
        lines = [line.strip() for line in (result.stderr or result.stdout).splitlines()
                 if line.strip() and not line.lstrip().startswith(("warnings.warn", "WARNING"))]
        if os.environ.get("IGPT4_GPU_CHECK_DEBUG"):
            print(result.stderr[-6000:], file=sys.__stderr__)
        ours = [line for line in lines if line.startswith(("igpt4: error", "lavis_plugins"))]
        errors = [line for line in lines if re.match(r"[\w.]*(Error|Exception)\b", line)
                  and not line.startswith("subprocess.CalledProcessError")]
        reason = (ours or errors or lines or ["no output"])[-1]
        raise RuntimeError(f"exit {result.returncode}: {reason[:300]}")


def paths(check_: Check) -> List[Tuple[str, Callable[[], str]]]:
    return [
        ("clip fp16", lambda: check_.clip("fp16")),
        ("clip bf16", lambda: check_.clip("bf16")),
        ("reward", check_.reward),
        ("text features", check_.text_features),
        ("train head", lambda: check_.train("head")),
        ("train v1", lambda: check_.train("v1")),
        ("tester head", lambda: check_.tester("head")),
        ("tester v1", lambda: check_.tester("v1")),
        ("tester tiny", check_.tester_tiny),
        ("score accelerate", check_.score_accelerate),
    ]


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    parser.add_argument("--small", action="store_true",
                        help="tiny models and few samples (the CPU check the tests run)")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="the device's dense bf16 TFLOPS (default: from a table by GPU name)")
    parser.add_argument("--only", default="", help="comma-separated path names or prefixes, e.g. "
                        "'clip,train' (default: every path)")
    parser.add_argument("--samples", type=int, default=None, help="samples per model path "
                        "(default: 1024 for CLIP and reward, 512 for text features; 32 with "
                        "--small)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="CLIP batch size (default 32; 8 with --small)")
    parser.add_argument("--num-workers", type=int, default=None,
                        help="CLIP image-decoding workers (default: cores - 2, at most 8; 1 with "
                        "--small)")
    parser.add_argument("--debug", action="store_true",
                        help="tracebacks for failed paths, failed commands' stderr")
    args = parser.parse_args(argv)
    if args.debug:
        os.environ["IGPT4_GPU_CHECK_DEBUG"] = "1"
    args.batch_size = args.batch_size or (8 if args.small else 32)

    import torch

    from selector.core.compat import ensure_torchvision_importable

    ensure_torchvision_importable()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("gpu_check: error: CUDA is not available here (run with --device cpu --small)",
              file=sys.stderr)
        return 2
    if args.small and not args.device.startswith("cuda"):
        torch.set_num_threads(min(2, torch.get_num_threads()))
    where = (torch.cuda.get_device_name(torch.device(args.device)) if args.device.startswith("cuda")
             else f"CPU, {torch.get_num_threads()} threads")
    print(f"gpu check on {args.device} ({where}), {'small' if args.small else 'full'} sizes, "
          f"torch {torch.__version__}", flush=True)
    wanted = [w.strip() for w in args.only.split(",") if w.strip()]
    outcomes: List[str] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="igpt4-gpu-check-") as tmp:
        check_ = Check(args, Path(tmp))
        for name, work in paths(check_):
            if wanted and not any(name.startswith(w) for w in wanted):
                continue
            began = time.perf_counter()
            chatter = io.StringIO()  # the libraries' progress bars and warnings: one line a path
            try:
                with quiet(chatter):
                    figure = work()
                outcome, text = "ok", figure
            except Skip as exc:
                outcome, text = "skipped", str(exc)
            except Exception as exc:  # noqa: BLE001 - every failure is reported, then the next path
                outcome = "FAILED"
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                text = f"{type(exc).__name__}: {first}"
                if args.debug:
                    print(chatter.getvalue()[-6000:], file=sys.stderr)
                    traceback.print_exc()
                check_.free()
            outcomes.append(outcome)
            print(f"{name:<17} {outcome:<8} {text}  [{time.perf_counter() - began:.0f} s]",
                  flush=True)
    ran, total = outcomes.count("ok"), len(outcomes)
    failed, skipped = outcomes.count("FAILED"), outcomes.count("skipped")
    note = ", ".join(part for part in (f"{failed} failed" if failed else "",
                                       f"{skipped} skipped" if skipped else "") if part)
    print(f"{time.perf_counter() - started:.0f} s in all", flush=True)
    print(f"{ran}/{total} paths ran" + (f" ({note})" if note else ""), flush=True)
    return 1 if failed else 3 if skipped else 0


if __name__ == "__main__":
    sys.exit(main())
