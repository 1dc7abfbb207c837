"""Run a tester over datasets, Multi-Modality-Arena style, resumably; rescore saved answers.

Output is the Arena's (``LVLM_evaluation/eval.py`` + ``utils/vqa.py``)::

    {out}/{model}/{time}/{Dataset}.json   [{question, answer, gt_answers, image_path, model_name}]
                                           (+ task_type "VQA" for the tiny variant)
    {out}/{model}/{time}/result.json      {Dataset: accuracy, ...}

``{time}`` is ``%Y%m%d%H%M%S`` at start unless a run name is given. The Arena writes a dataset's
answers only at its end, so a crash loses everything; here each batch's predictions are appended to
``{time}/.igpt4/{Dataset}.jsonl`` (flushed and fsynced before the next batch starts), so a killed
run loses at most the batch in flight: rerunning with the same run folder re-asks only the
questions with no saved answer. ``result.json`` is rewritten after every dataset.

A resumed run never mixes models: ``{time}/.igpt4/run.json`` records the settings that decide the
answers (the tester's name, arguments and resolved settings, the sha256 of every file its
arguments name, e.g. the checkpoint, ``max_new_tokens`` and ``batch_size``) with their
:func:`fingerprint`, and each dataset's settings with a fingerprint of its questions. Resuming a
run with any of them different is refused with one line naming the run folder and the differing
keys; ``new_run=True`` (``igpt4 eval --new-run``) starts a fresh run folder beside it instead.

:func:`rerun` rescores the saved ``{Dataset}.json`` files without a model, with either metric, into
``result.{metric}.json`` beside the run's ``result.json``, which it never changes.
"""
from __future__ import annotations

import datetime
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from selector.core.atomic import os_error_line
from selector.core.errors import InputError
from selector.core.fingerprint import file_sha256
from selector.core.jsonio import PathLike, read_json, write_json

from .datasets import TINY, VQADataset
from .metric import METRICS, accuracy, get_metric
from .testers import ANSWER_NEUTRAL_ARGS, DEFAULT_MAX_NEW_TOKENS, tester_name

RESULT_FILE = "result.json"
STATE_DIR = ".igpt4"
RUN_FILE = "run.json"
TIME_FORMAT = "%Y%m%d%H%M%S"


def new_run_name() -> str:
    """The Arena's run folder name: the start time."""
    return datetime.datetime.now().strftime(TIME_FORMAT)


def answer_record(dataset: VQADataset, index: int, answer: str, model_name: str) -> Dict[str, Any]:
    """One entry of ``{Dataset}.json``, with the Arena's keys in the Arena's order."""
    item = dataset.items[index]
    record = {"question": item.question, "answer": answer, "gt_answers": item.gt_answers,
              "image_path": item.image_path, "model_name": model_name}
    if dataset.variant == TINY:
        record["task_type"] = dataset.task_type
    return record


class PredictionLog:
    """Append-only JSONL of finished predictions (``{index, answer, question, image_path}``).

    Every :meth:`append` is flushed and fsynced before it returns, so what it wrote survives
    ``kill -9`` and power loss. A torn last line (killed mid-write) is cut off on :meth:`load`.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self, dataset: VQADataset) -> Dict[int, str]:
        """Saved answers by question index; checks they belong to ``dataset``'s questions."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        end = raw.rfind(b"\n") + 1
        if end < len(raw):  # a torn final line: drop it so that appends start on a clean line
            with open(self.path, "r+b") as handle:
                handle.truncate(end)
                handle.flush()
                os.fsync(handle.fileno())
        done: Dict[int, str] = {}
        for number, line in enumerate(raw[:end].decode("utf-8").splitlines(), 1):
            if not line.strip():
                continue
            where = f"{self.path}: line {number}"
            try:
                record = json.loads(line)
                index, answer = int(record["index"]), record["answer"]
            except (ValueError, KeyError, TypeError):
                raise InputError(f"{where}: not a saved prediction; delete the file to start "
                                 "this dataset over") from None
            if not 0 <= index < len(dataset) or not isinstance(answer, str):
                raise InputError(f"{where}: question index {index} does not fit {dataset.name} "
                                 f"({len(dataset)} questions)")
            item = dataset.items[index]
            if record.get("question") != item.question or record.get("image_path") != item.image_path:
                raise InputError(f"{where}: saved question {index} differs from {dataset.name}'s "
                                 "question (other data or sampling); use a new run name")
            done[index] = answer
        return done

    def append(self, dataset: VQADataset, answers: Mapping[int, str]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new_file = not self.path.exists()
        lines = "".join(json.dumps({"index": i, "answer": a, "question": dataset.items[i].question,
                                    "image_path": dataset.items[i].image_path},
                                   ensure_ascii=False) + "\n" for i, a in answers.items())
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(lines)
            handle.flush()
            os.fsync(handle.fileno())
        if new_file and hasattr(os, "O_DIRECTORY"):  # make the new file's name durable too
            descriptor = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(descriptor)
            finally:
                os.close(descriptor)


def _check_outputs(outputs: Any, expected: int, model_name: str) -> List[str]:
    if not isinstance(outputs, (list, tuple)) or len(outputs) != expected:
        got = len(outputs) if isinstance(outputs, (list, tuple)) else type(outputs).__name__
        raise RuntimeError(f"tester {model_name}: batch_generate returned {got} answers for "
                           f"{expected} questions")
    bad = [o for o in outputs if not isinstance(o, str)]
    if bad:
        raise RuntimeError(f"tester {model_name}: batch_generate returned a non-string answer {bad[0]!r}")
    return list(outputs)


def predict(tester: Any, dataset: VQADataset, log: PredictionLog, batch_size: int = 1,
            max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, model_name: str = "model",
            progress: bool = True) -> List[str]:
    """Every question's answer in dataset order, asking the tester only for unsaved ones,
    in batches of consecutive questions (as the Arena's DataLoader forms them)."""
    from tqdm.auto import tqdm

    done = log.load(dataset)
    todo = [i for i in range(len(dataset)) if i not in done]
    with tqdm(total=len(dataset), initial=len(done), desc=f"{model_name} {dataset.name}",
              unit="question", disable=not progress, file=sys.stderr) as bar:
        for start in range(0, len(todo), batch_size):
            batch = todo[start:start + batch_size]
            items = [dataset.items[i] for i in batch]
            outputs = tester.batch_generate([it.image_path for it in items],
                                            [it.question for it in items],
                                            max_new_tokens=max_new_tokens)
            answers = dict(zip(batch, _check_outputs(outputs, len(batch), model_name)))
            log.append(dataset, answers)
            done.update(answers)
            bar.update(len(batch))
    return [done[i] for i in range(len(dataset))]


def fingerprint(settings: Mapping[str, Any]) -> str:
    """The run's settings fingerprint: the one canonical-JSON sha256 of settings, as the scoring
    cache keys an indicator's settings (``"eval-run"`` in the indicator's place)."""
    from selector.core.fingerprint import fingerprint as settings_fingerprint

    return settings_fingerprint({"indicator": "eval-run", "settings": dict(settings)}, length=16)


def answer_settings(tester_settings: Mapping[str, Any], max_new_tokens: int,
                    batch_size: int) -> Dict[str, Any]:
    """What decides a run's answers: the tester's settings without the arguments that cannot
    change an answer (:data:`~eval_arena.testers.ANSWER_NEUTRAL_ARGS`, e.g. the scripted
    tester's ``delay``), ``max_new_tokens`` and ``batch_size`` (padding and the sampler's state
    make a batched model's answers depend on its batches)."""
    tester = json.loads(json.dumps(dict(tester_settings), default=str))  # a plain copy
    neutral = set(ANSWER_NEUTRAL_ARGS.get(str(tester.get("name")), ()))
    files = tester.get("files") if isinstance(tester.get("files"), dict) else {}
    # a file is its bytes (``files``), not how its path was spelled
    if isinstance(tester.get("args"), dict):
        tester["args"] = {k: v for k, v in tester["args"].items()
                          if k not in neutral and k not in files}
    if isinstance(tester.get("resolved"), dict):
        tester["resolved"] = {k: v for k, v in tester["resolved"].items()
                              if f"resolved.{k}" not in files}
    if files:
        tester["files"] = {k: v for k, v in files.items() if k not in neutral}
    return {"tester": tester, "max_new_tokens": max_new_tokens, "batch_size": batch_size}


def _flat(value: Any, prefix: str = "") -> Dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``: settings as dotted keys, to name what differs."""
    if isinstance(value, dict):  # an empty block has no keys (its settings are all absent)
        out: Dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flat(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value}


def differing_keys(old: Any, new: Any, prefix: str = "") -> List[str]:
    """The dotted keys whose values differ between two settings trees (missing = different)."""
    before, after = ({} if tree is None else _flat(tree, prefix) for tree in (old, new))
    return sorted(k for k in set(before) | set(after)
                  if k not in before or k not in after or before[k] != after[k])


def _run_state(folder: Path, settings: Dict[str, Any], answers: Dict[str, Any],
               datasets: Sequence[VQADataset]) -> Dict[str, Any]:
    """Load or start ``.igpt4/run.json``; refuse, before writing anything, to resume a run that
    was started with other answer settings or other questions."""
    path = folder / STATE_DIR / RUN_FILE
    state = read_json(path)[0] if path.is_file() else {"datasets": {}}
    if not isinstance(state, dict) or not isinstance(state.get("datasets"), dict):
        raise InputError(f"{path}: not a run state file; use a new run name or --new-run")
    keys: List[str] = []
    if path.is_file() and state.get("fingerprint") != fingerprint(answers):
        # a run state without answer settings (an older version's) cannot be checked: refused
        keys += differing_keys(state.get("answers"), answers) or ["fingerprint"]
    for dataset in datasets:
        described = json.loads(json.dumps(dataset.describe(), default=str))
        previous = state["datasets"].get(dataset.name)
        if previous is not None:  # the same questions, however the data root was spelled
            previous = previous if isinstance(previous, dict) else {"state": previous}
            changed = differing_keys({k: v for k, v in previous.items() if k != "root"},
                                     {k: v for k, v in described.items() if k != "root"},
                                     f"datasets.{dataset.name}")
            keys += changed
        state["datasets"][dataset.name] = described
    if keys:
        raise InputError(f"{folder}: this run was started with other settings (differing: "
                         f"{', '.join(keys)}); resume with the same settings, or pass --new-run "
                         "to start a new run")
    state.update(settings, answers=answers, fingerprint=fingerprint(answers))
    write_json(path, state)
    return state


def _fresh_folder(parent: Path, run_name: str) -> Path:
    """``parent/run_name``, or the first free ``run_name-2``, ``run_name-3``, ... beside it,
    claimed by creating it (``mkdir`` fails when it exists), so two ``--new-run`` runs started
    at once never share a folder."""
    number = 1
    while True:
        folder = parent / (run_name if number == 1 else f"{run_name}-{number}")
        try:
            folder.mkdir(parents=True)
            return folder
        except FileExistsError:
            number += 1
        except OSError as exc:
            raise os_error_line(folder, exc, "cannot create the run folder") from None


def check_folder_name(value: Any, what: str) -> str:
    """``value`` if it can name exactly one folder under the answers root; else one
    :class:`InputError` naming ``what`` (e.g. ``"--run-name"``): no path separators, no ``.`` or
    ``..``, no control characters (a newline in a folder name breaks every listing and log line),
    at most 255 bytes (the file systems' limit)."""
    import unicodedata

    text = str(value)
    reason = None
    if not text.strip():
        reason = "it is empty"
    elif text in (".", ".."):
        reason = f"{text!r} is not a new folder"
    elif "/" in text or os.sep in text or (os.altsep and os.altsep in text):
        reason = "it holds a path separator"
    elif any(unicodedata.category(c) in ("Cc", "Cs") or c in "\u2028\u2029" for c in text):
        reason = "it holds a control character"
    elif len(text.encode("utf-8", "surrogatepass")) > 255:
        reason = "it is longer than 255 bytes"
    if reason:
        raise InputError(f"{what} {text[:80]!r}: cannot name a folder ({reason})")
    return text


def check_max_new_tokens(max_new_tokens: Any, tester: Any = None) -> int:
    """``max_new_tokens`` if the tester can generate that many: at least 1, and below the
    tester's ``max_length`` (prompt and answer share it; the prompt needs at least a token)."""
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise InputError(f"--max-new-tokens {max_new_tokens!r}: must be a whole number of at "
                         "least 1")
    limit = getattr(tester, "max_length", None)
    if isinstance(limit, int) and not isinstance(limit, bool) and max_new_tokens >= limit:
        raise InputError(f"--max-new-tokens {max_new_tokens}: must be below the model's maximum "
                         f"length of {limit} tokens (the prompt and the answer share it)")
    return max_new_tokens


class RunLock:
    """An exclusive, non-blocking ``flock`` on ``{run}/.igpt4/lock`` held for a whole run, so
    two ``igpt4 eval`` processes never answer into one run folder at once (their answers would
    interleave in one journal). The kernel drops the lock when the process ends, however it
    ends (``kill -9`` included): a stale lock file never blocks a later run. The lock file stays
    empty and is never rewritten (a refused run leaves the run folder byte-identical); the
    holder's pid is read from ``/proc/locks``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.path = folder / STATE_DIR / "lock"
        self.descriptor: Optional[int] = None

    def __enter__(self) -> "RunLock":
        try:
            import fcntl
        except ImportError:  # not POSIX: no advisory locks; run unlocked
            return self
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # read-only is enough for flock, and works on a finished run on read-only media
            descriptor = os.open(self.path, os.O_RDONLY | os.O_CREAT, 0o644)
        except OSError as exc:
            raise os_error_line(self.path, exc, "cannot create the run's lock file") from None
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            try:
                holder = _lock_holder(os.fstat(descriptor).st_ino)
            finally:
                os.close(descriptor)
            raise InputError(f"run folder {self.folder} is in use by another igpt4 eval "
                             f"(pid {holder}); wait for it to finish or choose another "
                             "--run-name") from None
        self.descriptor = descriptor
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.descriptor is not None:
            os.close(self.descriptor)  # closing the only descriptor releases the flock
            self.descriptor = None


def _lock_holder(inode: int) -> str:
    """The pid holding a FLOCK on the file with this inode, from Linux's ``/proc/locks``
    (``1: FLOCK  ADVISORY  WRITE 4242 08:01:1234 0 EOF``); ``?`` where it cannot be told."""
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as handle:
            for line in handle:
                fields = line.split()
                if "FLOCK" in fields and len(fields) >= 6 and "->" not in fields:
                    pid, where = fields[-4], fields[-3]
                    if where.rsplit(":", 1)[-1] == str(inode):
                        return pid
    except OSError:
        pass
    return "?"


def _object_settings(tester: Any) -> Dict[str, Any]:
    """A tester object's identity when no CLI settings are given: its class and the settings
    it reports (checkpoint, mode, seed, ... for the MiniGPT-4 testers)."""
    kind = type(tester)
    resolved = getattr(tester, "settings", None)
    return {"class": f"{kind.__module__}.{kind.__qualname__}",
            "resolved": dict(resolved) if isinstance(resolved, Mapping) else {}}


def evaluate(tester: Any, datasets: Sequence[VQADataset], out: PathLike = "answers",
             model_name: Optional[str] = None, run_name: Optional[str] = None,
             batch_size: int = 1, metric: str = "arena",
             max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, progress: bool = True,
             tester_settings: Optional[Mapping[str, Any]] = None,
             log: Optional[Callable[[str], None]] = None,
             new_run: bool = False) -> Tuple[Dict[str, float], Path]:
    """Answer every dataset with ``tester``; write the Arena's files; return
    ``({Dataset: accuracy}, run folder)``. Rerunning with the same ``run_name`` resumes when the
    answer settings are the same (``tester_settings``: what ``igpt4 eval`` resolved; default:
    the tester's class and ``settings``) and is refused otherwise; ``new_run`` never resumes:
    an existing run folder gets a fresh one beside it (``NAME-2``, ...)."""
    get_metric(metric)
    if batch_size < 1:
        raise InputError(f"batch size must be at least 1, got {batch_size}")
    names = [d.name for d in datasets]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InputError(f"dataset {duplicates[0]} is listed twice (answers/{duplicates[0]}.json "
                         "would be overwritten)")
    clashing = [n for n in names if n == "result" or n.startswith("result.")]
    if clashing:
        raise InputError(f"dataset {clashing[0]!r}: its answers file would be the run's "
                         f"{clashing[0]}.json result file; rename the dataset file")
    check_max_new_tokens(max_new_tokens, tester)
    model_name = check_folder_name(model_name or tester_name(tester),
                                   "model name (--model-name, or the tester's name)")
    run_name = check_folder_name(run_name or new_run_name(), "run name (--run-name)")
    folder = Path(out) / model_name / run_name
    if new_run:
        folder = _fresh_folder(folder.parent, run_name)
    with RunLock(folder):
        return _evaluate_locked(tester, datasets, folder, model_name, batch_size, metric,
                                max_new_tokens, progress, tester_settings, log)


def _evaluate_locked(tester: Any, datasets: Sequence[VQADataset], folder: Path, model_name: str,
                     batch_size: int, metric: str, max_new_tokens: int, progress: bool,
                     tester_settings: Optional[Mapping[str, Any]],
                     log: Optional[Callable[[str], None]]) -> Tuple[Dict[str, float], Path]:
    """:func:`evaluate`'s work, with the run folder's lock held."""
    tester_block = dict(tester_settings) if tester_settings is not None else _object_settings(tester)
    _run_state(folder, {"model_name": model_name, "metric": metric, "max_new_tokens": max_new_tokens,
                        "batch_size": batch_size, "tester": tester_block},
               answer_settings(tester_block, max_new_tokens, batch_size), datasets)
    results: Dict[str, float] = {}
    for dataset in datasets:
        answers = predict(tester, dataset, PredictionLog(folder / STATE_DIR / f"{dataset.name}.jsonl"),
                          batch_size, max_new_tokens, model_name, progress)
        records = [answer_record(dataset, i, a, model_name) for i, a in enumerate(answers)]
        write_json(folder / f"{dataset.name}.json", records, indent=4)
        results[dataset.name] = accuracy(records, metric)
        write_json(folder / RESULT_FILE, results, indent=4)
        if log:
            log(f"{dataset.name}:{results[dataset.name]}")
    return results, folder


# --------------------------------------------------------------------------------------- rerun
def is_result_file(name: str) -> bool:
    """``result.json`` (the run's) or ``result.{metric}.json`` (a rerun's): not answers."""
    return name == RESULT_FILE or name.startswith("result.") and name.endswith(".json")


def rerun_result_path(answers_dir: PathLike, metric: str) -> Path:
    """Where ``eval rerun`` writes: ``result.{metric}.json`` beside the run's ``result.json``."""
    return Path(answers_dir) / f"result.{metric}.json"


def _answer_files(folder: Path) -> List[Path]:
    files = {p.name: p for p in folder.glob("*.json") if not is_result_file(p.name) and p.is_file()}
    order: List[str] = []
    result = folder / RESULT_FILE
    if result.is_file():
        saved = read_json(result)[0]
        if isinstance(saved, dict):
            order = [f"{name}.json" for name in saved if f"{name}.json" in files]
    return [files[n] for n in order] + [files[n] for n in sorted(files) if n not in order]


def read_answers(path: Path) -> List[Dict[str, Any]]:
    """An Arena answers file, checked: a non-empty list of ``{answer, gt_answers, ...}``."""
    # model output, read as written: generated text may hold U+FFFD (a model cut off in the
    # middle of a character), which the mojibake checks for user data would refuse
    records = read_json(path, encoding="utf-8")[0]
    if not isinstance(records, list) or not records:
        raise InputError(f"{path}: expected a non-empty list of answer records")
    for n, record in enumerate(records):
        if not isinstance(record, dict) or not isinstance(record.get("answer"), str):
            raise InputError(f"{path}: item {n}: expected an object with a string 'answer'")
        gt = record.get("gt_answers")
        if not (isinstance(gt, str) or isinstance(gt, list) and all(isinstance(a, str) for a in gt)):
            raise InputError(f"{path}: item {n}: 'gt_answers' must be a string or a list of strings")
    return records


def rerun(answers_dir: PathLike, metric: str = "arena", write: bool = True) -> Dict[str, float]:
    """Rescore a run folder's saved answers (no model) and, unless ``write`` is false, write them
    to :func:`rerun_result_path` (``result.{metric}.json``). The run's own ``result.json`` and
    its state are never changed: what the run measured stays as it measured it. Returns
    ``{Dataset: accuracy}`` in ``result.json``'s order."""
    get_metric(metric)
    folder = Path(answers_dir)
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder (expected answers/<model>/<time>)")
    files = _answer_files(folder)
    if not files:
        raise InputError(f"{folder}: no answer files (*.json besides result.json); "
                         "expected an answers/<model>/<time> folder")
    results = {path.stem: accuracy(read_answers(path), metric) for path in files}
    if write:
        write_json(rerun_result_path(folder, metric), results, indent=4)
    return results


__all__ = ["evaluate", "rerun", "check_folder_name", "check_max_new_tokens", "RunLock", "predict", "PredictionLog", "answer_record", "read_answers",
           "new_run_name", "fingerprint", "answer_settings", "differing_keys", "file_sha256",
           "rerun_result_path", "is_result_file", "METRICS", "RESULT_FILE", "STATE_DIR"]
