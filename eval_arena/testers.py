"""Testers: the models under evaluation, behind Multi-Modality-Arena's interface.

An Arena tester (``LVLM_evaluation/models/test_*.py``) has ``generate(image, question,
max_new_tokens=...)`` and ``batch_generate(image_list, question_list, max_new_tokens=...)``; images
are paths (or PIL images) and answers are strings. Any object with those two methods can be run by
:mod:`eval_arena.runner`, including the Arena's own testers (the interface:
:mod:`eval_arena.tester_api`).

:data:`TESTERS` maps a name (``--tester NAME``) to a factory called with the ``--tester-arg
key=value`` pairs as string keyword arguments. Heavy testers (MiniGPT-4, the tiny model) import
torch and their host stacks inside their factory, never at module import time.
"""
from __future__ import annotations

import inspect
import math
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from eval_arena.tester_api import DEFAULT_MAX_NEW_TOKENS, Image, Tester
from selector.core.errors import InputError

Answerer = Callable[[str, str], str]


class ScriptedTester:
    """Answers from a table or a function: for tests, and to replay saved predictions.

    ``answers`` is a callable ``(image, question) -> answer`` or a mapping keyed by
    ``(image, question)`` tuples or by question text. A question it has no answer for gets
    ``default`` or raises :class:`InputError`. ``delay`` seconds are slept per ``batch_generate``
    call (to simulate a slow model). ``calls`` records every question asked, in order.
    """

    def __init__(self, answers: Union[Answerer, Mapping[Any, str]], default: Optional[str] = None,
                 delay: float = 0.0, name: str = "scripted") -> None:
        self.answers = answers
        self.default = default
        self.delay = float(delay)
        if not math.isfinite(self.delay) or self.delay < 0:
            raise InputError(f"--tester-arg delay={delay}: the scripted tester's delay must be a "
                             "finite number of seconds, 0 or more")
        self.name = name
        self.calls: List[Tuple[str, str]] = []

    def _answer(self, image: Image, question: str) -> str:
        self.calls.append((str(image), question))
        if callable(self.answers):
            return str(self.answers(str(image), question))
        for key in ((str(image), question), question):
            if key in self.answers:
                return self.answers[key]
        if self.default is not None:
            return self.default
        raise InputError(f"scripted tester: no answer for question {question[:80]!r} "
                         f"(image {image})")

    def generate(self, image: Image, question: str,
                 max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS) -> str:
        return self._answer(image, question)

    def batch_generate(self, images: Sequence[Image], questions: Sequence[str],
                       max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS) -> List[str]:
        if self.delay:
            time.sleep(self.delay)
        return [self._answer(image, question) for image, question in zip(images, questions)]

    @classmethod
    def from_file(cls, path: Union[str, Path], **kwargs: Any) -> "ScriptedTester":
        """Replay answers from an Arena answers file (``[{question, answer, image_path, ...}]``),
        a ``{question: answer}`` JSON object, or JSONL of ``{image_path?, question, answer}``."""
        from eval_arena.records import json_line
        from selector.core.jsonio import read_json, read_text

        path = Path(path)
        if path.suffix == ".jsonl":
            records: Any = []
            for number, line in enumerate(read_text(path)[0].splitlines(), 1):
                if line.strip():
                    records.append(json_line(path, number, line))
        else:
            records = read_json(path)[0]
        if isinstance(records, dict) and all(isinstance(v, str) for v in records.values()):
            return cls(dict(records), **kwargs)
        if not isinstance(records, list):
            raise InputError(f"{path}: expected a list of answer records or a {{question: answer}} object")
        table: Dict[Any, str] = {}
        for n, record in enumerate(records):
            if not (isinstance(record, dict) and isinstance(record.get("question"), str)
                    and isinstance(record.get("answer"), str)):
                raise InputError(f"{path}: item {n}: expected {{question, answer}} strings")
            if isinstance(record.get("image_path"), str):
                table[(record["image_path"], record["question"])] = record["answer"]
            else:
                table[record["question"]] = record["answer"]
        return cls(table, **kwargs)


def _scripted_factory(answers: Optional[str] = None, default: Optional[str] = None,
                      delay: str = "0", name: str = "scripted", echo: str = "") -> ScriptedTester:
    """``--tester scripted``: ``answers=FILE`` (see :meth:`ScriptedTester.from_file`),
    ``default=TEXT`` for unknown questions, ``echo=1`` to answer with the question itself,
    ``delay=SECONDS`` per batch, ``name=NAME`` for the answers folder."""
    try:
        seconds = float(delay)
    except ValueError:
        raise InputError(f"scripted tester: delay must be a number of seconds, got {delay!r}") from None
    if echo not in ("", "0", "1"):
        raise InputError(f"scripted tester: echo must be 0 or 1, got {echo!r}")
    if echo == "1":
        return ScriptedTester(lambda image, question: question, delay=seconds, name=name)
    if answers is None:
        if default is None:
            raise InputError("scripted tester needs answers=FILE, default=TEXT or echo=1")
        return ScriptedTester({}, default=default, delay=seconds, name=name)
    return ScriptedTester.from_file(answers, default=default, delay=seconds, name=name)


def _seed(seed: Optional[str]) -> Optional[int]:
    if seed is None or seed == "":
        return None
    try:
        value = int(seed)
    except ValueError:
        raise InputError(f"--tester-arg seed={seed}: the tester seed must be an integer") from None
    if not 0 <= value <= MAX_TESTER_SEED:  # torch.manual_seed's range; beyond it overflows
        raise InputError(f"--tester-arg seed={seed}: the tester seed must be from 0 to "
                         f"{MAX_TESTER_SEED}")
    return value


MAX_TESTER_SEED = 2 ** 64 - 1


def _minigpt4_factory(checkout: Optional[str] = None, cfg_path: Optional[str] = None,
                      ckpt: Optional[str] = None, device: Optional[str] = None,
                      mode: str = "arena", dtype: str = "auto", seed: Optional[str] = None,
                      options: str = "", name: str = "MiniGPT-4") -> Any:
    """``--tester minigpt4``: a model built by a MiniGPT-4 checkout (``checkout=DIR``, default
    $MINIGPT4_DIR) from ``cfg_path`` (the training config, or a MiniGPT-4 eval config; default:
    the config saved in ``ckpt``) with ``options="k=v ..."`` as train.py's ``--options``;
    ``ckpt`` (a training checkpoint) merged over it; ``mode=arena`` (the Arena's sampling) or
    ``deterministic``; ``device``, ``dtype`` (auto|float32|float16|bfloat16), ``seed``, ``name``.
    See :mod:`eval_arena.minigpt4_tester`."""
    from eval_arena.minigpt4_host import parse_options
    from eval_arena.minigpt4_tester import MiniGPT4Tester, check_mode

    check_mode(mode)  # before the slow imports and model building
    tester = MiniGPT4Tester.from_checkout(checkout, cfg_path or None, ckpt or None, device or None,
                                          mode, dtype, _seed(seed), parse_options(options), name)
    print(f"tester {tester.describe()}", file=sys.stderr)
    return tester


def _tiny_factory(cfg_path: Optional[str] = None, ckpt: Optional[str] = None,
                  device: Optional[str] = None, mode: str = "arena", dtype: str = "auto",
                  seed: Optional[str] = None, name: str = "tiny") -> Any:
    """``--tester tiny``: the tiny MiniGPT-4-shaped model, no host: ``cfg_path`` (our training
    config or configs/models/igpt4_tiny_minigpt4.yaml, the default), ``ckpt`` (a checkpoint of a
    tiny run), ``mode``, ``device``, ``dtype``, ``seed``, ``name`` as for ``minigpt4``. The
    model is built beside it, by :func:`lavis_plugins.tiny_tester.load_tiny`, and answers through
    the one MiniGPT-4 generation path (:class:`eval_arena.minigpt4_tester.MiniGPT4Tester`)."""
    from eval_arena.minigpt4_tester import DECODING, MiniGPT4Tester, check_mode
    from lavis_plugins.tiny_tester import load_tiny

    check_mode(mode)
    chosen_seed = _seed(seed)
    tiny = load_tiny(cfg_path or None, ckpt or None, device or None, dtype,
                     eval_transform=DECODING[mode].eval_transform)
    tester = MiniGPT4Tester(tiny.model, tiny.vis_processor, mode=mode, seed=chosen_seed, name=name,
                            settings=tiny.settings)
    print(f"tester {tester.describe()}", file=sys.stderr)
    return tester


# name -> factory(**string kwargs); heavy factories import torch / minigpt4 inside themselves.
TESTERS: Dict[str, Callable[..., Any]] = {
    "scripted": _scripted_factory,
    "minigpt4": _minigpt4_factory,
    "tiny": _tiny_factory,
}


#: tester arguments that cannot change an answer, left out of a run's settings fingerprint (so a
#: resumed run may change them): the scripted tester's simulated slowness.
ANSWER_NEUTRAL_ARGS: Dict[str, Tuple[str, ...]] = {"scripted": ("delay",)}


def build_tester(name: str, args: Optional[Mapping[str, str]] = None) -> Any:
    """Instantiate ``TESTERS[name]`` with string keyword arguments (``--tester-arg k=v``)."""
    if name not in TESTERS:
        raise InputError(f"unknown tester {name!r}; choose one of {', '.join(sorted(TESTERS))}")
    factory, kwargs = TESTERS[name], dict(args or {})
    try:
        inspect.signature(factory).bind(**kwargs)
    except TypeError as exc:
        raise InputError(f"tester {name!r}: bad --tester-arg ({exc})") from None
    tester = factory(**kwargs)
    if not isinstance(tester, Tester):
        raise TypeError(f"tester factory {name!r} returned {type(tester).__name__}, which lacks "
                        "generate / batch_generate")
    return tester


def tester_name(tester: Any, fallback: str = "model") -> str:
    return str(getattr(tester, "name", None) or getattr(tester, "model_name", None) or fallback)
