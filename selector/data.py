"""One sample model for both kinds of instruction data, with readers, validation and writers.

* cc_sbu_align (MiniGPT-4 stage 2): ``filter_cap.json`` = ``{"annotations": [{"image_id",
  "caption"}]}`` and ``image/{image_id}.jpg``. There is no instruction in the data; MiniGPT-4 (and the
  InstructionGPT-4 scorers) use :data:`DEFAULT_INSTRUCTION`.
* LLaVA-style conversations: ``[{"id", "image", "conversations": [{"from": "human"|"gpt",
  "value"}]}]``, multi-round, with the ``<image>`` token in the first human turn.

Every problem is reported as one line naming the file and the sample. With ``skip_invalid`` the
reader drops bad samples instead and records why in :attr:`DataPool.skipped`.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from .errors import InputError
from .jsonio import PathLike, read_json, write_json

DEFAULT_INSTRUCTION = "Describe this image in detail."
IMAGE_TOKEN = "<image>"
CC_SBU_ALIGN = "cc_sbu_align"
CONVERSATIONS = "conversations"
HUMAN, GPT = "human", "gpt"


@dataclass(frozen=True)
class Turn:
    role: str  # "human" or "gpt"
    text: str


@dataclass(frozen=True)
class Sample:
    """One instruction sample: an image and one or more (instruction, answer) rounds."""

    id: str
    image: Path  # absolute path of the image file
    turns: Tuple[Turn, ...]
    image_ref: str  # the image as the source file names it (relative to the data folder)

    @property
    def instructions(self) -> List[str]:
        """The human turns without the ``<image>`` token; cc_sbu_align gets the MiniGPT-4 default."""
        found = [t.text.replace(IMAGE_TOKEN, "").strip() for t in self.turns if t.role == HUMAN]
        return found or [DEFAULT_INSTRUCTION]

    @property
    def answers(self) -> List[str]:
        return [t.text for t in self.turns if t.role == GPT]

    @property
    def instruction(self) -> str:
        return self.instructions[0]

    @property
    def answer(self) -> str:
        """The first answer; for cc_sbu_align, the caption."""
        return self.answers[0]

    @property
    def rounds(self) -> List[Tuple[str, str]]:
        """(instruction, answer) pairs, one per round."""
        instructions = self.instructions
        return [(instructions[min(i, len(instructions) - 1)], answer)
                for i, answer in enumerate(self.answers)]


@dataclass(frozen=True)
class Skipped:
    file: str
    sample: str
    reason: str

    def line(self) -> str:
        return f"{self.file}: {self.sample}: {self.reason}"


@dataclass
class DataPool:
    """The samples of one data set, in file order."""

    kind: str
    source: Path  # filter_cap.json or the conversation JSON
    image_root: Path
    encoding: str
    samples: List[Sample]
    skipped: List[Skipped] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def ids(self) -> List[str]:
        return [s.id for s in self.samples]

    def by_id(self) -> Dict[str, Sample]:
        return {s.id: s for s in self.samples}

    def subset(self, ids: Iterable[str]) -> "DataPool":
        """The samples with these ids, in the given order (unknown ids are an error)."""
        index = self.by_id()
        chosen = []
        for sample_id in ids:
            if sample_id not in index:
                raise InputError(f"{self.source}: no sample with id {sample_id!r}")
            chosen.append(index[sample_id])
        return DataPool(self.kind, self.source, self.image_root, self.encoding, chosen)

    def write_skip_report(self, path: PathLike) -> None:
        write_json(path, {"source": str(self.source), "kept": len(self.samples),
                          "skipped": [vars(s) for s in self.skipped]})


class _Collector:
    """Raises on the first problem, or records it when skipping invalid samples."""

    def __init__(self, source: Path, skip_invalid: bool) -> None:
        self.source = source
        self.skip_invalid = skip_invalid
        self.skipped: List[Skipped] = []

    def problem(self, sample: str, reason: str) -> None:
        if not self.skip_invalid:
            raise InputError(f"{self.source}: {sample}: {reason}")
        self.skipped.append(Skipped(str(self.source), sample, reason))


def _describe(index: int, key: str, record: Any) -> str:
    if isinstance(record, dict) and isinstance(record.get(key), (str, int)):
        return f"sample #{index} ({key} {str(record[key])!r})"
    return f"sample #{index}"


def _safe_id(value: Any) -> Optional[str]:
    """A sample id as a string, or None when it is unusable as a file name part."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return None
    text = str(value).strip()
    if not text or text in (".", "..") or "/" in text or "\\" in text or "\x00" in text:
        return None
    return text


def _inside(root: Path, relative: str) -> Optional[Path]:
    """``root / relative`` when it stays inside root (no absolute paths, no ``..`` escapes)."""
    if not relative or os.path.isabs(relative) or "\x00" in relative:
        return None
    # Lexical check, not resolve(): images may be symlinks (our own writer makes them), and a
    # link placed in the folder on purpose is the user's choice, not an escape.
    base = os.path.normpath(os.path.abspath(root))
    candidate = os.path.normpath(os.path.join(base, relative))
    if os.path.commonpath([base, candidate]) != base:
        return None
    return Path(candidate)


def image_problem(path: Path) -> Optional[str]:
    """Why this image cannot be used, or None when it decodes."""
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        return f"image {path} is missing"
    if path.stat().st_size == 0:
        return f"image {path} is empty (0 bytes)"
    try:
        with Image.open(path) as image:
            image.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        return f"image {path} is corrupt ({type(exc).__name__}: {' '.join(str(exc).split())[:120]})"
    return None


SampleBuilder = Callable[[str, Dict[str, Any]], Tuple[Optional[Sample], str]]


def _collect(source: Path, records: List[Any], id_key: str, required: Sequence[str],
             build: SampleBuilder, skip_invalid: bool, check_images: bool
             ) -> Tuple[List[Sample], List[Skipped]]:
    """The checks both formats share (object, keys, id, duplicates, image), around ``build``."""
    collector = _Collector(source, skip_invalid)
    samples: List[Sample] = []
    seen: Dict[str, int] = {}
    for index, record in enumerate(records):
        name = _describe(index, id_key, record)
        if not isinstance(record, dict):
            collector.problem(name, "is not a JSON object")
            continue
        missing = [key for key in required if key not in record]
        if missing:
            collector.problem(name, f"missing key {', '.join(repr(k) for k in missing)}")
            continue
        sample_id = _safe_id(record[id_key])
        if sample_id is None:
            collector.problem(name, f"{id_key} {record[id_key]!r} is not a plain file name "
                                    "(it would escape the data folder)")
            continue
        if sample_id in seen:
            collector.problem(name, f"duplicate {id_key} (first at sample #{seen[sample_id]})")
            continue
        sample, reason = build(sample_id, record)
        if sample is None:
            collector.problem(name, reason)
            continue
        reason = image_problem(sample.image) if check_images else ""
        if reason:
            collector.problem(name, reason)
            continue
        seen[sample_id] = index
        samples.append(sample)
    return samples, collector.skipped


def read_cc_sbu_align(root: PathLike, skip_invalid: bool = False,
                      check_images: bool = True) -> DataPool:
    """Read a cc_sbu_align folder (``filter_cap.json`` + ``image/{image_id}.jpg``)."""
    root = Path(root)
    source = root / "filter_cap.json"
    if not root.is_dir():
        raise InputError(f"{root}: cc_sbu_align folder not found")
    if not source.is_file():
        raise InputError(f"{root}: not a cc_sbu_align folder (no filter_cap.json)")
    document, encoding = read_json(source)
    if not isinstance(document, dict) or not isinstance(document.get("annotations"), list):
        raise InputError(f"{source}: expected {{\"annotations\": [...]}} at the top level")
    image_root = root / "image"

    def build(sample_id: str, record: Dict[str, Any]) -> Tuple[Optional[Sample], str]:
        caption = record["caption"]
        if not isinstance(caption, str) or not caption.strip():
            return None, "empty caption"
        image = _inside(image_root, f"{sample_id}.jpg")
        if image is None:
            return None, "image path escapes the data folder"
        return Sample(sample_id, image, (Turn(GPT, caption),), f"{sample_id}.jpg"), ""

    samples, skipped = _collect(source, document["annotations"], "image_id",
                                ("image_id", "caption"), build, skip_invalid, check_images)
    return DataPool(CC_SBU_ALIGN, source, image_root, encoding, samples, skipped)


def _read_turns(record: Dict[str, Any]) -> Tuple[Optional[Tuple[Turn, ...]], str]:
    conversation = record.get("conversations")
    if not isinstance(conversation, list) or not conversation:
        return None, "empty conversation"
    turns = []
    for position, turn in enumerate(conversation):
        if not isinstance(turn, dict) or "from" not in turn or "value" not in turn:
            return None, f"turn {position} needs 'from' and 'value'"
        if turn["from"] not in (HUMAN, GPT):
            return None, f"turn {position} is from {turn['from']!r}, expected 'human' or 'gpt'"
        if not isinstance(turn["value"], str) or not turn["value"].replace(IMAGE_TOKEN, "").strip():
            return None, f"turn {position} is empty"
        turns.append(Turn(turn["from"], turn["value"]))
    if turns[0].role != HUMAN:
        return None, "conversation does not start with a human turn"
    if not any(t.role == GPT for t in turns):
        return None, "conversation has no gpt answer"
    if IMAGE_TOKEN not in turns[0].text:
        return None, f"first human turn has no {IMAGE_TOKEN} token"
    return tuple(turns), ""


def read_conversations(path: PathLike, image_root: Optional[PathLike] = None,
                       skip_invalid: bool = False, check_images: bool = True) -> DataPool:
    """Read LLaVA-style conversation JSON; images are relative to ``image_root`` (default: the
    JSON file's folder)."""
    source = Path(path)
    document, encoding = read_json(source)
    if not isinstance(document, list):
        raise InputError(f"{source}: expected a JSON list of conversation samples")
    root = Path(image_root) if image_root is not None else source.parent

    def build(sample_id: str, record: Dict[str, Any]) -> Tuple[Optional[Sample], str]:
        turns, reason = _read_turns(record)
        if turns is None:
            return None, reason
        image_ref = record["image"]
        image = _inside(root, image_ref) if isinstance(image_ref, str) else None
        if image is None:
            return None, f"image path {image_ref!r} escapes the image folder {root}"
        return Sample(sample_id, image, turns, image_ref), ""

    samples, skipped = _collect(source, document, "id", ("id", "image", "conversations"), build,
                                skip_invalid, check_images)
    return DataPool(CONVERSATIONS, source, root, encoding, samples, skipped)


def read_pool(path: PathLike, image_root: Optional[PathLike] = None, skip_invalid: bool = False,
              check_images: bool = True) -> DataPool:
    """A cc_sbu_align folder, or a conversation JSON file (told apart by what ``path`` is)."""
    path = Path(path)
    if path.is_dir():
        return read_cc_sbu_align(path, skip_invalid, check_images)
    if path.name == "filter_cap.json":
        return read_cc_sbu_align(path.parent, skip_invalid, check_images)
    return read_conversations(path, image_root, skip_invalid, check_images)


def _place_image(source: Path, target: Path, mode: str) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_symlink() or target.exists():
        target.unlink()
    if mode == "link":
        target.symlink_to(source.resolve())
    elif mode == "copy":
        shutil.copyfile(source, target)
    else:
        raise ValueError(f"image mode must be 'link' or 'copy', not {mode!r}")


def write_cc_sbu_align(samples: Sequence[Sample], out_dir: PathLike, image_mode: str = "link",
                       extra: Optional[Dict[str, Dict[str, Any]]] = None) -> Path:
    """Write a valid cc_sbu_align folder: ``filter_cap.json`` + ``image/{id}.jpg`` (links or copies).

    Only single-answer samples fit this format. ``extra`` adds per-sample fields by id.
    """
    out_dir = Path(out_dir)
    annotations = []
    for sample in samples:
        if len(sample.answers) != 1:
            raise InputError(
                f"sample {sample.id!r} has {len(sample.answers)} answers; cc_sbu_align holds one "
                "caption per image (write it as conversations instead)")
        annotation: Dict[str, Any] = {"image_id": sample.id, "caption": sample.answer}
        annotation.update((extra or {}).get(sample.id, {}))
        annotations.append(annotation)
        _place_image(sample.image, out_dir / "image" / f"{sample.id}.jpg", image_mode)
    write_json(out_dir / "filter_cap.json", {"annotations": annotations}, indent=4)
    return out_dir


def write_conversations(samples: Sequence[Sample], out_json: PathLike,
                        image_dir: Optional[PathLike] = None, image_mode: str = "link") -> Path:
    """Write LLaVA-style JSON. Image references keep their relative form; with ``image_dir`` the
    images are linked or copied there under those references, so the output is self-contained."""
    records = []
    for sample in samples:
        records.append({
            "id": sample.id,
            "image": sample.image_ref,
            "conversations": [{"from": t.role, "value": t.text} for t in sample.turns],
        })
        if image_dir is not None:
            _place_image(sample.image, Path(image_dir) / sample.image_ref, image_mode)
    out_json = Path(out_json)
    write_json(out_json, records)
    return out_json
