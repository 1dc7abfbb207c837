"""Causal-LM scores: ``perplexity`` and ``ifd`` (instruction-following difficulty).

Both read the answer's mean token cross-entropy under a causal LM, over the answer tokens only:

* ``perplexity``: ``exp`` of the mean token loss of the answers, each given the conversation
  before it (for a conversation: over all assistant turns' tokens together);
* ``ifd`` (Cherry LLM, Li et al. 2024): ``loss(answer | instruction) / loss(answer alone)``, per
  assistant turn (the instruction being the conversation up to that turn's human message),
  averaged over the turns; the per-turn values and both losses are kept in the value's detail.
  IFD near or above 1 says the instruction does not help the model predict the answer.

The prompt is the tokenizer's chat template over the turns before the answer (a plain
``user: ...`` / ``assistant: `` layout for a tokenizer without one); the answer is tokenized on
its own and appended, so both losses are taken over the same answer tokens. "Answer alone" is the
start token (BOS, else EOS) followed by those tokens. The text LM never sees the image (the
``<image>`` token is dropped; cc_sbu_align gets the MiniGPT-4 default instruction). A pair longer
than ``max_length`` keeps the end of the prompt (at least half the budget when the prompt is that
long) and the start of the answer.

Default model: the features' text model, ``meta-llama/Llama-2-7b-chat-hf``. A GGUF file
(``gguf_file``, or a ``model`` path ending in ``.gguf``) is dequantized by transformers once and
kept as safetensors in the user cache (``<cache>/lm-gguf/<fingerprint of the file>``), so later
runs load in a second. Sequences are sorted by length and run in right-padded batches (attention
masks, labels -100 outside the answer); fp16 on CUDA, fp32 on CPU. Each pass logs its tokens/s.
"""
from __future__ import annotations

import functools
import math
import shutil
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from selector.core.cache import IndicatorValue
from selector.core.errors import InputError
from selector.core.provenance import log
from selector.data.samples import Sample
from selector.scoring.indicators import Indicator, register
from selector.scoring.indicators.devices import (load_failure, load_pretrained, precision_for,
                                                 resolve_device, torch_dtype)

#: how prompts are built; part of the cache key, so a change of layout recomputes
PROMPT_LAYOUT = "chat_template/answer-appended/1"
CONVERTED = "lm-gguf"  # the user cache's folder of dequantized GGUF models


def gguf_path(model: str, gguf_file: Optional[str]) -> Optional[Path]:
    """The local GGUF file a setting names (None: not a GGUF model). ``model`` is a folder (or a
    hub id) holding ``gguf_file``, or the path of the ``.gguf`` file itself."""
    if gguf_file is None:
        # a path, not a hub id: it exists (a folder is refused by the caller) or cannot be an
        # "owner/name" id (absolute, or not exactly one slash)
        looks_local = Path(model).exists() or Path(model).is_absolute() \
            or str(model).count("/") != 1
        return Path(model) if str(model).endswith(".gguf") and looks_local else None
    if Path(gguf_file).is_absolute():
        return Path(gguf_file)
    if Path(model).is_dir():
        return Path(model) / gguf_file
    try:  # a hub repository: the file from the local hub cache (or a download when allowed)
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(model, gguf_file))
    except Exception as exc:  # no network, no such repository or file
        raise load_failure("causal LM", f"{model}/{gguf_file}", exc) from None


@functools.lru_cache(maxsize=8)
def _file_fingerprint(path: str, size: int, mtime_ns: int) -> str:
    from selector.core.fingerprint import Fingerprint

    return Fingerprint().update_file(path).hexdigest(24)


def converted_folder(gguf: Path, dtype_name: str) -> Path:
    """Where the dequantized copy of ``gguf`` lives: keyed by the file's bytes, the dtype it was
    converted to and the transformers version that converted it."""
    import transformers

    from selector.core.fingerprint import fingerprint
    from selector.core.paths import user_cache_dir

    stat = gguf.stat()
    key = fingerprint({"gguf": _file_fingerprint(str(gguf), stat.st_size, stat.st_mtime_ns),
                       "dtype": dtype_name, "transformers": transformers.__version__}, length=24)
    return user_cache_dir() / CONVERTED / key


def convert_gguf(gguf: Path, dtype: Any, dtype_name: str) -> Path:
    """The folder of ``gguf`` converted to safetensors (made once: a staging folder published by
    two renames, so a kill leaves no half-written model under the final name)."""
    import os

    from selector.core.atomic import publish_folder, restore_interrupted_swap

    out = converted_folder(gguf, dtype_name)
    restore_interrupted_swap(out)
    if (out / "config.json").is_file():
        return out
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log(f"converting {gguf.name} to safetensors once (cached in {out})")
    try:
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name,
                                                     torch_dtype=dtype)
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    except ImportError as exc:  # transformers' GGUF reader needs the gguf package
        raise InputError(f"cannot load the causal LM {str(gguf)!r}: reading a GGUF file needs "
                         f"the gguf package (pip install 'gguf>=0.10.0'; {exc})") from None
    except (OSError, ValueError, KeyError, RuntimeError, IndexError, EOFError) as exc:
        # IndexError/EOFError: the gguf reader on a truncated file
        raise load_failure("causal LM", str(gguf), exc) from None
    _remove_abandoned(out)
    staging = out.with_name(f".{out.name}.{os.getpid()}.convert")
    try:
        model.save_pretrained(str(staging), safe_serialization=True)
        tokenizer.save_pretrained(str(staging))
        return publish_folder(staging, out)
    except OSError as exc:
        from selector.core.atomic import os_error_line

        raise os_error_line(staging, exc) from None
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def _remove_abandoned(out: Path) -> None:
    """Staging folders of conversions whose process is gone (killed mid-write); a conversion
    still running in another process keeps its own."""
    import os

    for leftover in out.parent.glob(f".{out.name}.*.convert"):
        try:
            os.kill(int(leftover.name.split(".")[-2]), 0)
        except ProcessLookupError:
            shutil.rmtree(leftover, ignore_errors=True)
        except (ValueError, OSError):  # not our name, or a process of another user: leave it
            pass


@functools.lru_cache(maxsize=2)
def load_causal_lm(model: str, gguf_file: Optional[str], device: str,
                   precision: Optional[str]) -> Tuple[Any, Any]:
    """(model in eval mode on ``device``, tokenizer), once per process and setting."""
    source = str(model)
    gguf = gguf_path(model, gguf_file)
    if gguf is not None:
        if not gguf.is_file():
            raise InputError(f"cannot load the causal LM {str(gguf)!r}: "
                             + ("is a folder, not a GGUF file" if gguf.is_dir()
                                else "no such GGUF file"))
        source = str(convert_gguf(gguf, torch_dtype(device, precision),
                                  precision_for(device, precision)))
    return load_pretrained("AutoModelForCausalLM", "causal LM", source, device, precision,
                           shown=str(model) if gguf is None else str(gguf))


def prompt_ids(tokenizer: Any, history: Sequence[Tuple[str, str]], instruction: str) -> List[int]:
    """Token ids of the conversation up to (and including) ``instruction``, ending where the
    assistant's answer starts."""
    messages: List[Dict[str, str]] = []
    for question, answer in history:
        messages += [{"role": "user", "content": question},
                     {"role": "assistant", "content": answer}]
    messages.append({"role": "user", "content": instruction})
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return list(tokenizer(text, add_special_tokens=False).input_ids)
    text = "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant:"
    return list(tokenizer(text, add_special_tokens=True).input_ids)


def start_id(tokenizer: Any) -> int:
    """The token an answer alone is conditioned on (BOS, else EOS)."""
    for token in (tokenizer.bos_token_id, tokenizer.eos_token_id):
        if token is not None:
            return int(token)
    raise InputError("the causal LM's tokenizer has neither a BOS nor an EOS token: the answer "
                     "alone cannot be scored")


def fit(prompt: List[int], answer: List[int], max_length: int) -> Tuple[List[int], List[int]]:
    """(prompt, answer) cut to ``max_length`` tokens together: the answer keeps its start, the
    prompt its end, and the prompt keeps at least half the budget when it is that long."""
    kept_answer = min(len(answer), max_length - min(len(prompt), max(1, max_length // 2)))
    kept_prompt = min(len(prompt), max_length - kept_answer)
    return prompt[len(prompt) - kept_prompt:], answer[:kept_answer]


class _LanguageModelScore(Indicator):
    """What ``perplexity`` and ``ifd`` share: settings, the model, the batched loss pass."""

    alone = False  # whether the answers are also scored without their instruction

    def __init__(self, model: str = "meta-llama/Llama-2-7b-chat-hf",
                 gguf_file: Optional[str] = None, batch_size: int = 8, max_length: int = 1024,
                 device: Optional[str] = None, precision: Optional[str] = None,
                 progress: bool = True) -> None:
        if int(max_length) < 2:
            raise InputError(f"indicators.{self.name}.max_length must be at least 2 (got "
                             f"{max_length})")
        # methods.<name>.lm reaches here without the settings' range checks: a zero batch would
        # fail after the model loaded (range step 0), a negative one divide by zero
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InputError(f"indicators.{self.name}.batch_size must be an integer >= 1 (got "
                             f"{batch_size!r})")
        if device is not None:
            import torch

            try:
                torch.device(str(device))
            except (RuntimeError, ValueError):
                raise InputError(f"indicators.{self.name}.device: {device!r} is not a torch "
                                 "device (cpu, cuda, cuda:1, ...)") from None
        self.model_name = str(model)
        self.gguf_file = gguf_file
        self.batch_size = int(batch_size)
        self.max_length = int(max_length)
        self.device = device
        self.precision = precision
        self.progress = progress
        self.tokens = 0  # tokens run through the model by this object (every pass)
        self.seconds = 0.0

    def settings(self) -> Dict[str, Any]:
        return {"model": self.model_name, "gguf_file": self.gguf_file,
                "max_length": self.max_length, "prompt": PROMPT_LAYOUT}

    def load(self) -> Tuple[Any, Any]:
        return load_causal_lm(self.model_name, self.gguf_file, resolve_device(self.device),
                              self.precision)

    @property
    def tokens_per_second(self) -> Optional[float]:
        return self.tokens / self.seconds if self.seconds > 0 else None

    def score(self, samples: Sequence[Sample]) -> List[IndicatorValue]:
        model, tokenizer = self.load()
        sequences: List[Tuple[List[int], int]] = []  # (ids, where the answer starts)
        where: List[Tuple[int, int, str]] = []  # (sample, turn, "conditioned" | "alone")
        truncated: Dict[int, int] = {}
        begin: Optional[int] = None
        for i, sample in enumerate(samples):
            rounds = sample.rounds
            for turn, (instruction, answer) in enumerate(rounds):
                answer_ids = list(tokenizer(answer, add_special_tokens=False).input_ids)
                if not answer.strip() or not answer_ids:
                    continue
                if begin is None and self.alone:
                    begin = start_id(tokenizer)
                prompt = prompt_ids(tokenizer, rounds[:turn], instruction) or [
                    begin if begin is not None else start_id(tokenizer)]
                kept_prompt, kept_answer = fit(prompt, answer_ids, self.max_length)
                if len(kept_prompt) + len(kept_answer) < len(prompt) + len(answer_ids):
                    truncated[i] = truncated.get(i, 0) + 1
                sequences.append((kept_prompt + kept_answer, len(kept_prompt)))
                where.append((i, turn, "conditioned"))
                if self.alone:
                    sequences.append(([int(begin or 0)] + kept_answer, 1))
                    where.append((i, turn, "alone"))
        started = time.perf_counter()
        losses = self._losses(model, tokenizer, sequences)
        seconds = time.perf_counter() - started
        processed = sum(len(ids) for ids, _ in sequences)
        self.tokens += processed
        self.seconds += seconds
        rate = processed / seconds if seconds > 0 else None
        if self.progress and sequences:
            log(f"{self.name}: {len(samples)} samples, {processed:,} tokens in {seconds:.1f} s "
                f"({rate or 0:,.0f} tokens/s on {next(model.parameters()).device})")
        per_sample: Dict[int, Dict[int, Dict[str, Tuple[float, int]]]] = {}
        for (i, turn, kind), loss in zip(where, losses):
            per_sample.setdefault(i, {}).setdefault(turn, {})[kind] = loss
        return [self._value(sample, per_sample.get(i, {}), len(sample.rounds),
                            truncated.get(i, 0), rate)
                for i, sample in enumerate(samples)]

    def _value(self, sample: Sample, turns: Dict[int, Dict[str, Tuple[float, int]]],
               n_turns: int, truncated: int, rate: Optional[float]) -> IndicatorValue:
        raise NotImplementedError

    def _losses(self, model: Any, tokenizer: Any, sequences: List[Tuple[List[int], int]]
                ) -> List[Tuple[float, int]]:
        """(sum of the answer tokens' cross-entropy, number of answer tokens) per sequence."""
        import torch
        from tqdm.auto import tqdm

        pad = tokenizer.pad_token_id
        pad = int(pad if pad is not None else (tokenizer.eos_token_id or 0))
        device = next(model.parameters()).device
        order = sorted(range(len(sequences)), key=lambda k: len(sequences[k][0]))
        results: List[Tuple[float, int]] = [(0.0, 0)] * len(sequences)
        with torch.inference_mode(), tqdm(total=len(sequences), desc=self.name, unit="seq",
                                          disable=not self.progress or not sequences) as bar:
            for begin in range(0, len(order), self.batch_size):
                batch = order[begin:begin + self.batch_size]
                width = max(len(sequences[k][0]) for k in batch)
                ids = torch.full((len(batch), width), pad, dtype=torch.long)
                mask = torch.zeros((len(batch), width), dtype=torch.long)
                labels = torch.full((len(batch), width), -100, dtype=torch.long)
                for row, k in enumerate(batch):
                    tokens, answer_start = sequences[k]
                    ids[row, :len(tokens)] = torch.tensor(tokens)
                    mask[row, :len(tokens)] = 1
                    labels[row, answer_start:len(tokens)] = torch.tensor(tokens[answer_start:])
                try:
                    logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)
                                   ).logits
                except torch.cuda.OutOfMemoryError:
                    raise InputError(f"{self.name}: out of memory at batch_size "
                                     f"{self.batch_size} and max_length {self.max_length}: lower "
                                     f"indicators.{self.name}.batch_size") from None
                targets = labels[:, 1:].to(device)
                chosen = targets != -100
                picked = logits[:, :-1][chosen].float()  # only the answer positions
                nll = -torch.log_softmax(picked, dim=-1).gather(
                    1, targets[chosen][:, None])[:, 0]
                rows = chosen.nonzero()[:, 0]
                sums = torch.zeros(len(batch), dtype=torch.float64, device=device)
                sums.index_add_(0, rows, nll.double())
                counts = chosen.sum(dim=1).tolist()
                for row, (total, k) in enumerate(zip(sums.tolist(), batch)):
                    results[k] = (total, int(counts[row]))
                bar.update(len(batch))
        return results


def _mean(loss: Tuple[float, int]) -> float:
    return loss[0] / loss[1]


def _finite(values: Sequence[float]) -> bool:
    return all(math.isfinite(v) for v in values)


def _extra(truncated: int, rate: Optional[float]) -> Dict[str, Any]:
    extra: Dict[str, Any] = {"truncated_turns": truncated} if truncated else {}
    if rate is not None:  # the pass that computed this value
        extra["tokens_per_s"] = round(rate, 1)
    return extra


@register("perplexity")
class Perplexity(_LanguageModelScore):
    """``exp`` of the mean token loss of every answer given the conversation before it."""

    def _value(self, sample, turns, n_turns, truncated, rate) -> IndicatorValue:
        losses = [turns[t]["conditioned"] for t in sorted(turns)]
        if not losses:
            return IndicatorValue(sample.id, None, "empty answer")
        total, count = sum(s for s, _ in losses), sum(c for _, c in losses)
        value = math.exp(total / count) if math.isfinite(total) else float("nan")
        if not math.isfinite(value):
            return IndicatorValue(sample.id, None, "model output is NaN or infinite")
        detail: Dict[str, Any] = {"tokens": count, **_extra(truncated, rate)}
        if n_turns > 1:
            detail["per_turn"] = [math.exp(_mean(turns[t]["conditioned"])) if t in turns
                                  else None for t in range(n_turns)]
        return IndicatorValue(sample.id, value, None, detail)


@register("ifd")
class InstructionFollowingDifficulty(_LanguageModelScore):
    """``loss(answer | instruction) / loss(answer alone)``, the mean over assistant turns."""

    alone = True

    def _value(self, sample, turns, n_turns, truncated, rate) -> IndicatorValue:
        if not turns:
            return IndicatorValue(sample.id, None, "empty answer")
        conditioned = {t: _mean(turns[t]["conditioned"]) for t in turns}
        alone = {t: _mean(turns[t]["alone"]) for t in turns}
        if not _finite(list(conditioned.values()) + list(alone.values())):
            return IndicatorValue(sample.id, None, "model output is NaN or infinite")
        if any(alone[t] <= 0 for t in turns):
            return IndicatorValue(sample.id, None, "the answer alone has loss 0 (IFD undefined)")
        per_turn = {t: conditioned[t] / alone[t] for t in turns}
        value = sum(per_turn.values()) / len(per_turn)

        def listed(values: Dict[int, float]) -> List[Optional[float]]:
            return [values.get(t) for t in range(n_turns)]

        return IndicatorValue(sample.id, value, None, {
            "per_turn": listed(per_turn), "loss": listed(conditioned),
            "loss_alone": listed(alone), **_extra(truncated, rate)})
