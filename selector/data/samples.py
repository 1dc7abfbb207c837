"""One sample model for both kinds of instruction data, with readers, validation and writers.

* cc_sbu_align (MiniGPT-4 stage 2): ``filter_cap.json`` = ``{"annotations": [{"image_id",
  "caption"}]}`` and ``image/{image_id}.jpg``. There is no instruction in the data; MiniGPT-4 (and the
  InstructionGPT-4 scorers) use :data:`DEFAULT_INSTRUCTION`.
* LLaVA-style conversations: ``[{"id", "image", "conversations": [{"from": "human"|"gpt",
  "value"}]}]``, multi-round, with the ``<image>`` token in the first human turn. A record without
  an ``image`` key is a **text-only** sample (LLaVA-mix-665K holds about 40k, from ShareGPT): its
  :attr:`Sample.image` is None, :attr:`Sample.has_image` False, and no turn may hold ``<image>``
  (LLaVA would feed a blank image in its place). cc_sbu_align samples always have an image.

Every problem is reported as one line naming the file and the sample. With ``skip_invalid`` the
reader drops bad samples instead and records why in :attr:`DataPool.skipped`.

What is refused, rather than read some way that could be wrong:

* ids that are not strings or integers (``true``, ``1.5``, ``null``, lists), empty ids, and ids
  holding whitespace or control characters (a newline would break ``selected.txt``, one id per
  line) or longer than 250 bytes (ids are image file names; a file name has at most 255 bytes);
* conversations that do not alternate human, gpt, human, gpt ... (two human turns in a row would
  pair an answer with the wrong question), that start with a gpt turn or end with an unanswered
  human turn, turns holding only ``<image>``, and an ``<image>`` token anywhere but once in the
  first human turn (LLaVA's ``preprocess_multimodal`` only moves a token it finds to the front of
  its turn and adds none: an image sample without one would be trained with its image dropped);
* images that do not fully decode (a truncated JPEG passes a header check: every image is
  decoded), that exceed Pillow's decompression-bomb limit, or that cannot be opened at all (a
  file name too long, no permission): one line each, never a traceback.
"""
from __future__ import annotations

import os
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from selector.core.errors import InputError
from selector.core.jsonio import PathLike, read_json, write_json
from selector.data.images import image_problem

DEFAULT_INSTRUCTION = "Describe this image in detail."
IMAGE_TOKEN = "<image>"
CC_SBU_ALIGN = "cc_sbu_align"
CONVERSATIONS = "conversations"
HUMAN, GPT = "human", "gpt"
IMAGE, TEXT_ONLY = "image", "text-only"  # the kinds of sample (:attr:`Sample.kind`)


@dataclass(frozen=True)
class Turn:
    role: str  # "human" or "gpt"
    text: str


@dataclass(frozen=True)
class Sample:
    """One instruction sample: an image (None for a text-only conversation) and one or more
    (instruction, answer) rounds."""

    id: str
    image: Optional[Path]  # absolute path of the image file; None: a text-only sample
    turns: Tuple[Turn, ...]
    image_ref: Optional[str]  # the image as the source file names it (relative to the data folder)

    @property
    def has_image(self) -> bool:
        return self.image is not None

    @property
    def kind(self) -> str:
        """:data:`IMAGE` or :data:`TEXT_ONLY` (what image-only indicators and builders check)."""
        return IMAGE if self.has_image else TEXT_ONLY

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
    def text_only(self) -> int:
        """How many samples have no image (LLaVA-style text-only conversations)."""
        return sum(not sample.has_image for sample in self.samples)

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


MAX_ID_BYTES = 250  # ids name image files ("{id}.jpg"): a file name has at most 255 bytes


def _describe(index: int, key: str, record: Any) -> str:
    if isinstance(record, dict) and isinstance(record.get(key), (str, int)) \
            and not isinstance(record.get(key), bool):
        shown = repr(str(record[key]))
        if len(shown) > 60:
            shown = f"{shown[:40]}...' ({len(str(record[key]))} characters)"
        return f"sample #{index} ({key} {shown})"
    return f"sample #{index}"


_CONTROL_NAMES = {"\n": "a line feed", "\r": "a carriage return", "\t": "a tab", "\x00": "a NUL",
                  "\x0b": "a vertical tab", "\x0c": "a form feed", "\x85": "a next-line (NEL)"}


def _unsafe_char(text: str) -> Optional[str]:
    for char in text:
        if char.isspace() or unicodedata.category(char) in ("Cc", "Cf", "Cs", "Zl", "Zp"):
            return char
    return None


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    return {float: "number with a fraction", list: "list", dict: "object", bool: "boolean",
            int: "number", str: "string"}.get(type(value), type(value).__name__)


def sample_id_problem(value: Any, key: str = "id") -> Optional[str]:
    """Why ``value`` cannot be a sample id, or None. Ids are strings or integers (``true`` and
    ``1.5`` are refused, not turned into "True" and "1.5"), hold no whitespace or control
    character (``selected.txt`` is one id per line; ids name image files) and fit a file name."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return f"{key} {value!r:.60} is a JSON {_json_kind(value)}; ids are strings or integers"
    text = str(value)
    if not text:
        return f"{key} is empty"
    bad = _unsafe_char(text)
    if bad is not None:
        what = _CONTROL_NAMES.get(bad) or unicodedata.name(bad, "a control character").lower()
        return (f"{key} {text!r:.60} holds {what} U+{ord(bad):04X}; ids may not hold whitespace or control characters (one id "
                "per line in selected.txt, ids name files)")
    if text in (".", "..") or "/" in text or "\\" in text:
        return f"{key} {text!r:.60} is not a plain file name (it would escape the data folder)"
    size = len(text.encode("utf-8"))
    if size > MAX_ID_BYTES:
        return (f"{key} is {size} bytes long ({text[:20]!r}...); ids name image files and may "
                f"have at most {MAX_ID_BYTES} bytes")
    return None


def check_sample_ids(ids: Iterable[Any], where: str) -> None:
    """One line naming ``where`` and the first unusable id (see :func:`sample_id_problem`)."""
    for index, sample_id in enumerate(ids):
        problem = sample_id_problem(sample_id)
        if problem is not None:
            raise InputError(f"{where}: sample #{index}: {problem}")


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


SampleBuilder = Callable[[str, Dict[str, Any]], Tuple[Optional[Sample], str]]


def _collect(source: Path, records: List[Any], id_key: str, required: Sequence[str],
             build: SampleBuilder, skip_invalid: bool, check_images: bool
             ) -> Tuple[List[Sample], List[Skipped]]:
    """The checks both formats share (object, keys, id, duplicates, image), around ``build``."""
    if not records:  # an empty data set is a mistake to report, not a valid set of 0 samples
        raise InputError(f"{source}: holds no samples")
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
        problem = sample_id_problem(record[id_key], id_key)
        if problem is not None:
            collector.problem(name, problem)
            continue
        sample_id = str(record[id_key])
        if sample_id in seen:
            collector.problem(name, f"duplicate {id_key} (first at sample #{seen[sample_id]})")
            continue
        sample, reason = build(sample_id, record)
        if sample is None:
            collector.problem(name, reason)
            continue
        reason = image_problem(sample.image) if check_images and sample.has_image else ""
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
    if not source.exists():  # anything else there (a folder, a pipe) is named by read_json
        raise InputError(f"{root}: not a cc_sbu_align folder (no filter_cap.json)")
    document, encoding = read_json(source)
    if not isinstance(document, dict) or not isinstance(document.get("annotations"), list):
        raise InputError(f"{source}: expected {{\"annotations\": [...]}} at the top level")
    image_root = root / "image"

    def build(sample_id: str, record: Dict[str, Any]) -> Tuple[Optional[Sample], str]:
        caption = record["caption"]
        if not isinstance(caption, str):
            return None, f"caption is a JSON {_json_kind(caption)}, not text"
        if not caption.strip():
            return None, "empty caption"
        image = _inside(image_root, f"{sample_id}.jpg")
        if image is None:
            return None, "image path escapes the data folder"
        return Sample(sample_id, image, (Turn(GPT, caption),), f"{sample_id}.jpg"), ""

    samples, skipped = _collect(source, document["annotations"], "image_id",
                                ("image_id", "caption"), build, skip_invalid, check_images)
    return DataPool(CC_SBU_ALIGN, source, image_root, encoding, samples, skipped)


def _read_turns(record: Dict[str, Any], has_image: bool = True
                ) -> Tuple[Optional[Tuple[Turn, ...]], str]:
    """The turns, strictly human, gpt, human, gpt, ...: every answer has its own question (two
    human turns in a row would pair the answer with the wrong one), and ``<image>`` appears once,
    in the first human turn (where MiniGPT-4 and LLaVA place the image), or nowhere in a
    text-only sample (no ``image`` key)."""
    conversation = record.get("conversations")
    if not isinstance(conversation, list):
        return None, f"conversations is a JSON {_json_kind(conversation)}, expected a list of turns"
    if not conversation:
        return None, "empty conversation"
    turns = []
    for position, turn in enumerate(conversation):
        if not isinstance(turn, dict) or "from" not in turn or "value" not in turn:
            return None, f"turn {position} needs 'from' and 'value'"
        role, value = turn["from"], turn["value"]
        if role not in (HUMAN, GPT):
            return None, f"turn {position} is from {role!r:.40}, expected 'human' or 'gpt'"
        if not isinstance(value, str):
            return None, f"turn {position} value is a JSON {_json_kind(value)}, not text"
        if not value.replace(IMAGE_TOKEN, "").strip():
            return None, (f"turn {position} holds only the {IMAGE_TOKEN} token"
                          if IMAGE_TOKEN in value else f"turn {position} is empty")
        expected = HUMAN if position % 2 == 0 else GPT
        if role != expected:
            if position == 0:
                return None, "conversation starts with a gpt turn, expected human first"
            return None, (f"turn {position} is a second {role} turn in a row (turns must "
                          "alternate human, gpt)")
        tokens = value.count(IMAGE_TOKEN)
        if tokens and not has_image:
            return None, (f"turn {position} ({role}) holds an {IMAGE_TOKEN} token but the sample "
                          "has no 'image' key (a text-only sample has no image to place)")
        if position == 0 and tokens > 1:
            return None, f"first human turn holds {IMAGE_TOKEN} {tokens} times, expected once"
        if position > 0 and tokens:
            return None, (f"turn {position} ({role}) holds an {IMAGE_TOKEN} token; only the first "
                          "human turn may")
        turns.append(Turn(role, value))
    if has_image and IMAGE_TOKEN not in turns[0].text:
        return None, f"first human turn has no {IMAGE_TOKEN} token"
    if turns[-1].role == HUMAN:
        if len(turns) == 1:
            return None, "conversation has no gpt answer"
        return None, f"turn {len(turns) - 1} (human) has no gpt answer after it"
    return tuple(turns), ""


def read_conversations(path: PathLike, image_root: Optional[PathLike] = None,
                       skip_invalid: bool = False, check_images: bool = True) -> DataPool:
    """Read LLaVA-style conversation JSON; images are relative to ``image_root`` (default: the
    JSON file's folder). A record without an ``image`` key is a text-only sample."""
    source = Path(path)
    document, encoding = read_json(source)
    if not isinstance(document, list):
        raise InputError(f"{source}: expected a JSON list of conversation samples")
    root = Path(image_root) if image_root is not None else source.parent

    def build(sample_id: str, record: Dict[str, Any]) -> Tuple[Optional[Sample], str]:
        turns, reason = _read_turns(record, "image" in record)
        if turns is None:
            return None, reason
        if "image" not in record:  # text-only (LLaVA-mix-665K's ShareGPT conversations)
            return Sample(sample_id, None, turns, None), ""
        image_ref = record["image"]
        if not isinstance(image_ref, str):
            return None, f"image is a JSON {_json_kind(image_ref)}, expected a relative path"
        image = _inside(root, image_ref)
        if image is None:
            return None, f"image path {image_ref!r} escapes the image folder {root}"
        return Sample(sample_id, image, turns, image_ref), ""

    samples, skipped = _collect(source, document, "id", ("id", "conversations"), build,
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


def _check_image_targets(pairs: Sequence[Tuple[Path, Path]], mode: str) -> None:
    """Before any image is written: no target may be the source image itself (reached through
    a link or not), or placing it would replace the only copy with a link to itself (or copy a
    file over itself). Two samples may not share a target either."""
    if mode not in ("link", "copy"):
        raise ValueError(f"image mode must be 'link' or 'copy', not {mode!r}")
    def where(path: Path) -> str:  # the file a path names, its last component not followed
        return os.path.join(os.path.realpath(path.parent), path.name)

    seen: Dict[str, Path] = {}
    for source, target in pairs:
        real_target = where(target)  # a link there (an earlier selection) is replaced, harmless
        if real_target in (where(source), os.path.realpath(source)):
            raise InputError(f"{target}: is the source image {source} itself (the output lies "
                             "over the data, through a link); write the selection elsewhere")
        if real_target in seen and seen[real_target] != source:
            raise InputError(f"{target}: two samples' images would land on the same file "
                             f"({seen[real_target]} and {source})")
        seen[real_target] = source


def _place_image(source: Path, target: Path, mode: str) -> None:
    """Link (to the resolved source) or copy, atomically: the target is replaced in one step,
    never deleted first."""
    from selector.core.atomic import copy_file, symlink

    if mode == "link":
        symlink(target, os.path.realpath(source))
    else:
        copy_file(source, target)


def write_cc_sbu_align(samples: Sequence[Sample], out_dir: PathLike, image_mode: str = "link",
                       extra: Optional[Dict[str, Dict[str, Any]]] = None) -> Path:
    """Write a valid cc_sbu_align folder: ``filter_cap.json`` + ``image/{id}.jpg`` (links or copies).

    Only single-answer samples fit this format. ``extra`` adds per-sample fields by id.
    """
    out_dir = Path(out_dir)
    annotations = []
    for sample in samples:
        if not sample.has_image:
            raise InputError(f"sample {sample.id!r} is text-only; cc_sbu_align holds an image per "
                             "caption (write it as conversations instead)")
        if len(sample.answers) != 1:
            raise InputError(
                f"sample {sample.id!r} has {len(sample.answers)} answers; cc_sbu_align holds one "
                "caption per image (write it as conversations instead)")
        annotation: Dict[str, Any] = {"image_id": sample.id, "caption": sample.answer}
        annotation.update((extra or {}).get(sample.id, {}))
        annotations.append(annotation)
    pairs = [(sample.image, out_dir / "image" / f"{sample.id}.jpg") for sample in samples]
    _check_image_targets(pairs, image_mode)
    for source, target in pairs:
        _place_image(source, target, image_mode)
    write_json(out_dir / "filter_cap.json", {"annotations": annotations}, indent=4)
    return out_dir


def write_conversations(samples: Sequence[Sample], out_json: PathLike,
                        image_dir: Optional[PathLike] = None, image_mode: str = "link") -> Path:
    """Write LLaVA-style JSON. Image references keep their relative form; with ``image_dir`` the
    images are linked or copied there under those references, so the output is self-contained.
    A text-only sample is written without an ``image`` key, as LLaVA-mix-665K has it."""
    records = []
    for sample in samples:
        record: Dict[str, Any] = {"id": sample.id}
        if sample.has_image:
            record["image"] = sample.image_ref
        record["conversations"] = [{"from": t.role, "value": t.text} for t in sample.turns]
        records.append(record)
    if image_dir is not None:
        pairs = [(sample.image, Path(image_dir) / sample.image_ref) for sample in samples
                 if sample.image is not None and sample.image_ref is not None]
        _check_image_targets(pairs, image_mode)
        for source, target in pairs:
            _place_image(source, target, image_mode)
    out_json = Path(out_json)
    write_json(out_json, records)
    return out_json


def write_conversation_folder(samples: Sequence[Sample], out: PathLike,
                              image_mode: str = "link") -> int:
    """``out/conversations.json`` (LLaVA format, text-only samples as they came) and the images
    under ``out/image/<reference>``, each ``image`` then read as ``image/<reference>``: a
    self-contained folder (a selection, a subset of ``igpt4 split``). Returns the number of
    text-only samples written."""
    from dataclasses import replace

    out = Path(out)
    moved = [replace(s, image_ref=f"image/{s.image_ref}") if s.has_image else s for s in samples]
    write_conversations(moved, out / "conversations.json", image_dir=out, image_mode=image_mode)
    return sum(not s.has_image for s in samples)
