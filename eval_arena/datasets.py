"""VQA test sets in Multi-Modality-Arena's on-disk layouts, with the Arena's prompts and sampling.

Every item is the Arena's ``{image_path, question, gt_answers}``. Image paths are built from the
dataset folder exactly as the Arena's ``task_datasets/vqa_datasets.py`` builds them from its
``DATA_DIR/VQA_Datasets/<Name>``, and items come in the Arena's order, so that
``--sample-num N --sample-seed S`` picks the same questions as ``eval.py`` does (sampling draws
positions, so the order is part of the result).

Layouts (``root`` is the dataset's folder, e.g. ``DATA_DIR/VQA_Datasets/GQA``; the first split
listed is the Arena's and the default):

* GQA (testdev, val, train): ``questions/{split}_balanced_questions.json`` =
  ``{qid: {imageId, question, answer}}``; ``images/{imageId}.jpg``.
* OKVQA (val, train): ``OpenEnded_mscoco_{split}2014_questions.json`` joined by question_id to
  ``mscoco_{split}2014_annotations.json`` (all 10 answers);
  ``{split}2014/COCO_{split}2014_000000{image_id:06d}.jpg``.
* VQAv2 (val, train): the same files with a ``v2_`` prefix.
* TextVQA (val, train): ``TextVQA_0.5.1_{split}.json`` (``data``: question, answers, image_id);
  ``train_images/{image_id}.jpg`` (the val images live there too).
* VizWiz (val, train): ``{split}_grounding.json`` = ``{image: {question, answers}}``;
  ``{split}/{image}``.
* DocVQA (val, train): ``{split}/{split}_v1.0.json`` (``data``: question, answers, image);
  ``{split}/{image}``.
* OCRVQA (val, train, test): ``dataset.json`` = ``{id: {imageURL, questions, answers, split}}``
  with split 2 / 1 / 3; ``images/{last part of imageURL}``; one item per question.
* IconQA (test, val, train): ``dataset/{split}/choose_txt/{id}/data.json`` (question, choices,
  answer index) + ``image.png``; prompt ``Question: ...\nOptions: <choices joined by spaces>\n``,
  ground truth the chosen option's text.
* ScienceQA (test, val, train): ``{split}_anns.json`` = ``[{question, answer, image_path}]`` (the
  cache the Arena saves from the HF ``derek-thomas/ScienceQA`` image questions, prompt included),
  or the official ``problems.json`` + ``pid_splits.json`` + ``images/{split}/{pid}/image.png``
  (image questions of the split in ``pid_splits`` order, the IconQA prompt).
* VSR (all, train, val, test): ``all_vsr_validated_data.jsonl`` (image, caption, label), or
  ``splits/random/{train,dev,test}.jsonl``; ``images/{image}``; prompt ``Question: Is the
  following caption right? {caption}\nOptions: No Yes\n``, ground truth ``No``/``Yes``.
* ``jsonl:PATH``, your own data: one ``{"image", "question", "answers"}`` per line, image relative
  to the file, answers a string or a list of strings; the answers file is named after the file.

Tiny LVLM-eHub (``variant="tiny"``) changes the prompts of IconQA ("Choose the best answer from
the following choices:" with one ``- option`` line each) and VSR (the ``<choice>``/"Answer:"
format), reads ScienceQA from ``annos_test_image_2017samples.jsonl`` (failing that, from the
official files with the prompt of tiny LVLM-eHub's README table), samples 50 questions with
seed 20230719 and without the Arena's ``len > n`` guard, and reads pre-sampled subsets
(``<sampled root>/<Name>/dataset.json``) as they are.

Known differences from the Arena, on purpose: IconQA sample folders are listed in sorted order
(the Arena uses ``os.listdir``, whose order depends on the file system; pass
``directory_order="os"`` to get the Arena's order on the Arena's machine); a missing file or a
malformed item raises :class:`InputError` naming the file and the item instead of a traceback.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

from selector.core.errors import InputError
from selector.core.jsonio import PathLike, read_json, read_text

GroundTruth = Union[str, List[str]]
FULL, TINY = "full", "tiny"
VARIANTS = (FULL, TINY)
TINY_SAMPLE_NUM = 50
TINY_SAMPLE_SEED = 20230719
PRESAMPLED_FILE = "dataset.json"  # tiny LVLM-eHub's sampled subsets: <root>/<Name>/dataset.json


@dataclass(frozen=True)
class VQAItem:
    """One question. ``source`` says where it came from (file and item) for error messages."""

    image_path: str
    question: str
    gt_answers: GroundTruth
    source: str = ""

    def as_arena(self) -> Dict[str, Any]:
        """The dict the Arena's datasets return."""
        return {"image_path": self.image_path, "question": self.question,
                "gt_answers": self.gt_answers}


@dataclass
class VQADataset:
    """A named list of :class:`VQAItem` in the Arena's order; ``indices`` are the sampled
    positions in the unsampled list (``None``: not sampled)."""

    name: str
    split: str
    variant: str
    root: str
    items: List[VQAItem]
    indices: Optional[List[int]] = None
    full_size: int = 0
    presampled: bool = False
    meta: Dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Dict[str, Any]:
        return self.items[index].as_arena()

    def __iter__(self) -> Iterator[Dict[str, Any]]:
        return (item.as_arena() for item in self.items)

    @property
    def task_type(self) -> str:
        return "VQA"

    def subset(self, indices: Sequence[int]) -> "VQADataset":
        picked = [int(i) for i in indices]
        base = self.indices
        return replace(self, items=[self.items[i] for i in picked],
                       indices=[base[i] for i in picked] if base is not None else picked)

    def fingerprint(self) -> str:
        """Hash of the (image, question) sequence: a resumed run must see the same questions."""
        digest = hashlib.sha256()
        for item in self.items:
            digest.update(json.dumps([item.image_path, item.question]).encode("utf-8"))
        return digest.hexdigest()

    def check_images(self) -> None:
        for item in self.items:
            if not os.path.isfile(item.image_path):
                raise InputError(f"{item.source}: image {item.image_path} not found")

    def describe(self) -> Dict[str, Any]:
        return {"name": self.name, "split": self.split, "variant": self.variant,
                "root": self.root, "questions": len(self.items), "full_size": self.full_size,
                "presampled": self.presampled, "fingerprint": self.fingerprint(), **self.meta}


# ------------------------------------------------------------------------------------ sampling
def arena_sample_indices(size: int, sample_num: int, seed: int) -> Optional[List[int]]:
    """Positions ``eval.py``'s ``sample_dataset`` keeps, in its order; ``None`` = everything.

    The Arena: ``-1`` keeps all; only a dataset longer than ``sample_num`` is sampled, by
    ``np.random.seed(seed)`` then ``np.random.choice(len, sample_num, replace=False)``; a
    ``RandomState(seed)`` draws the same numbers without touching numpy's global state.
    """
    import numpy as np

    if sample_num == -1 or size <= sample_num:
        return None
    if sample_num <= 0:
        raise InputError(f"sample_num must be positive or -1 (all), got {sample_num}")
    return [int(i) for i in np.random.RandomState(seed).choice(size, sample_num, replace=False)]


def tiny_sample_indices(size: int, sample_num: int, seed: int,
                        positions: Optional[Sequence[int]] = None) -> Optional[List[int]]:
    """Tiny LVLM-eHub's ``sample_dataset`` (as released with the paper, Aug 2023).

    Without ``positions``: ``np.random.choice(len, sample_num, replace=False)`` after seeding,
    with no ``len > n`` guard (the Arena fails when the dataset is smaller; so do we, with an
    InputError). With ``positions`` (a dataset's list from the Arena's
    ``bard_RandomSeed20230719_50samples_per_dataset.jsonl``): draw ``max(positions) + 1`` and keep
    those positions, which is how the published 50-sample subsets were chosen.
    """
    import numpy as np

    if sample_num == -1:
        return None
    state = np.random.RandomState(seed)
    if positions:
        drawn = state.choice(size, max(positions) + 1, replace=False)
        return [int(drawn[p]) for p in positions]
    if sample_num <= 0 or sample_num > size:
        raise InputError(f"tiny sampling draws {sample_num} of {size} questions without "
                         f"replacement; choose 1..{size} or -1 (all)")
    return [int(i) for i in state.choice(size, sample_num, replace=False)]


def read_tiny_positions(path: PathLike) -> Dict[str, List[int]]:
    """``{dataset: positions}`` from the Arena's bard_RandomSeed20230719 JSONL file."""
    out: Dict[str, List[int]] = {}
    for number, line in enumerate(read_text(path)[0].splitlines(), 1):
        if not line.strip():
            continue
        record = json_line(path, number, line)
        try:
            out[str(record["dataset"])] = [int(i) for i in record["indices"]]
        except (ValueError, KeyError, TypeError):
            raise InputError(f"{path}: line {number}: expected {{\"dataset\", \"indices\"}}") from None
    return out


# ------------------------------------------------------------------------------ item checking
def _where(path: PathLike, item: Any) -> str:
    return f"{path}: item {item}"


def _line(path: PathLike, number: int) -> str:
    return f"{path}: line {number}"


def _field(record: Any, key: str, kind: Union[type, Tuple[type, ...]], where: str) -> Any:
    if not isinstance(record, dict):
        raise InputError(f"{where}: expected an object, got {type(record).__name__}")
    if key not in record:
        raise InputError(f"{where}: missing {key!r}")
    value = record[key]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is int:
        expected = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise InputError(f"{where}: {key!r} must be {expected}, got {value!r}"[:300])
    return value


def _answers(value: Any, where: str, key: str = "answers") -> GroundTruth:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and all(isinstance(a, str) for a in value):
        return list(value)
    raise InputError(f"{where}: {key!r} must be a string or a non-empty list of strings, "
                     f"got {value!r}"[:300])


def _load(path: Path) -> Any:
    return read_json(path)[0]


def _object(value: Any, path: Path, key: Optional[str] = None, kind: type = dict) -> Any:
    if key is not None:
        if not isinstance(value, dict) or key not in value:
            raise InputError(f"{path}: expected a JSON object with {key!r}")
        value = value[key]
    if not isinstance(value, kind):
        raise InputError(f"{path}: expected a JSON {'object' if kind is dict else 'list'}"
                         + (f" under {key!r}" if key else ""))
    return value


def json_line(path: PathLike, number: int, line: str, hint: str = "") -> Any:
    """One JSONL line parsed, or one :class:`InputError` naming the file and line: malformed
    JSON and JSON nested too deeply for Python's parser (a RecursionError) are bad input, not
    crashes. ``hint`` is appended to the malformed-JSON message."""
    try:
        return json.loads(line)
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: line {number}: malformed JSON ({exc.msg}){hint}") from None
    except RecursionError:
        raise InputError(f"{path}: line {number}: JSON nested too deeply to read") from None


def _jsonl(path: Path) -> List[Tuple[int, Any]]:
    return [(number, json_line(path, number, line))
            for number, line in enumerate(read_text(path)[0].splitlines(), 1) if line.strip()]


def _options_prompt(question: str, choices: Sequence[str]) -> str:
    """The Arena's multiple-choice prompt (IconQA, ScienceQA)."""
    return f"Question: {question}\nOptions: {' '.join(choices)}\n"


def _tiny_choices_prompt(question: str, choices: Sequence[str]) -> str:
    """Tiny LVLM-eHub's IconQA prompt."""
    options = "\n- ".join(choices)
    return f"Question: {question}\nChoose the best answer from the following choices:\n- {options}\n"


def _choice_index(record: dict, where: str, choices: Sequence[str], key: str = "answer") -> int:
    index = _field(record, key, int, where)
    if not 0 <= index < len(choices):
        raise InputError(f"{where}: {key!r} {index} is not an index into the {len(choices)} choices")
    return index


def _choices(record: dict, where: str) -> List[str]:
    choices = _field(record, "choices", list, where)
    if not choices or not all(isinstance(c, str) for c in choices):
        raise InputError(f"{where}: 'choices' must be a non-empty list of strings")
    return choices


# ------------------------------------------------------------------------------------- loaders
Loader = Callable[[Path, str, str, Dict[str, Any]], List[VQAItem]]


def _gqa(root: Path, split: str, variant: str, options: Dict[str, Any]) -> List[VQAItem]:
    path = root / "questions" / f"{split}_balanced_questions.json"
    questions = _object(_load(path), path)
    items = []
    for qid, record in questions.items():
        where = _where(path, qid)
        image = _field(record, "imageId", str, where)
        items.append(VQAItem(f"{root}/images/{image}.jpg", _field(record, "question", str, where),
                             _field(record, "answer", str, where), where))
    return items


def _coco_vqa(prefix: str) -> Loader:
    """OKVQA and VQAv2: questions joined to annotations; every annotator's answer kept."""

    def load(root: Path, split: str, variant: str, options: Dict[str, Any]) -> List[VQAItem]:
        qpath = root / f"{prefix}OpenEnded_mscoco_{split}2014_questions.json"
        apath = root / f"{prefix}mscoco_{split}2014_annotations.json"
        questions = _object(_load(qpath), qpath, "questions", list)
        text = {}
        for n, record in enumerate(questions):
            where = _where(qpath, n)
            text[_field(record, "question_id", int, where)] = _field(record, "question", str, where)
        items = []
        for n, record in enumerate(_object(_load(apath), apath, "annotations", list)):
            where = _where(apath, n)
            qid = _field(record, "question_id", int, where)
            where = f"{apath}: item {n} (question_id {qid})"
            if qid not in text:
                raise InputError(f"{where}: question_id {qid} is not in {qpath.name}")
            answers = []
            for m, answer in enumerate(_field(record, "answers", list, where)):
                answers.append(_field(answer, "answer", str, f"{where} answer {m}"))
            image_id = _field(record, "image_id", int, where)
            image = f"{root}/{split}2014/COCO_{split}2014_000000{image_id:06d}.jpg"
            items.append(VQAItem(image, text[qid], _answers(answers, where), where))
        return items

    return load


def _textvqa(root: Path, split: str, variant: str, options: Dict[str, Any]) -> List[VQAItem]:
    path = root / f"TextVQA_0.5.1_{split}.json"
    items = []
    for n, record in enumerate(_object(_load(path), path, "data", list)):
        where = _where(path, n)
        image_id = _field(record, "image_id", str, where)
        items.append(VQAItem(os.path.join(f"{root}/train_images", f"{image_id}.jpg"),
                             _field(record, "question", str, where),
                             _answers(_field(record, "answers", list, where), where), where))
    return items


def _vizwiz(root: Path, split: str, variant: str, options: Dict[str, Any]) -> List[VQAItem]:
    path = root / f"{split}_grounding.json"
    items = []
    for image, record in _object(_load(path), path).items():
        where = _where(path, image)
        items.append(VQAItem(f"{root}/{split}/{image}", _field(record, "question", str, where),
                             _answers(_field(record, "answers", (list, str), where), where), where))
    return items


def _docvqa(root: Path, split: str, variant: str, options: Dict[str, Any]) -> List[VQAItem]:
    folder = root / split
    path = folder / f"{split}_v1.0.json"
    items = []
    for n, record in enumerate(_object(_load(path), path, "data", list)):
        where = _where(path, n)
        items.append(VQAItem(os.path.join(str(folder), _field(record, "image", str, where)),
                             _field(record, "question", str, where),
                             _answers(_field(record, "answers", list, where), where), where))
    return items


OCRVQA_SPLITS = {"train": 1, "val": 2, "test": 3}


def _ocrvqa(root: Path, split: str, variant: str, options: Dict[str, Any]) -> List[VQAItem]:
    path = root / "dataset.json"
    code = OCRVQA_SPLITS[split]
    items = []
    for key, record in _object(_load(path), path).items():
        where = _where(path, key)
        if _field(record, "split", int, where) != code:
            continue
        questions = _field(record, "questions", list, where)
        answers = _field(record, "answers", list, where)
        if len(answers) != len(questions):
            raise InputError(f"{where}: {len(questions)} questions but {len(answers)} answers")
        image = os.path.join(str(root), "images", _field(record, "imageURL", str, where).split("/")[-1])
        for m, (question, answer) in enumerate(zip(questions, answers)):
            if not isinstance(question, str) or not isinstance(answer, str):
                raise InputError(f"{where}: question {m} and its answer must be strings")
            items.append(VQAItem(image, question, answer, f"{where} question {m}"))
    return items


def _iconqa(root: Path, split: str, variant: str, options: Dict[str, Any]) -> List[VQAItem]:
    folder = f"{root}/dataset/{split}/choose_txt"
    try:
        names = os.listdir(folder)
    except OSError:
        raise InputError(f"{folder}: folder not found (IconQA choose_txt questions)") from None
    if options.get("directory_order", "sorted") == "sorted":
        names = sorted(names)
    items = []
    for name in names:
        path = Path(folder) / name / "data.json"
        where = _where(path, name)
        record = _load(path)
        choices = _choices(record, where)
        question = _field(record, "question", str, where)
        prompt = (_tiny_choices_prompt if variant == TINY else _options_prompt)(question, choices)
        items.append(VQAItem(f"{folder}/{name}/image.png", prompt,
                             choices[_choice_index(record, where, choices)], where))
    return items


TINY_SCIENCEQA = "annos_test_image_2017samples.jsonl"


def _scienceqa(root: Path, split: str, variant: str, options: Dict[str, Any]) -> List[VQAItem]:
    if variant == TINY and (root / TINY_SCIENCEQA).is_file():
        path = root / TINY_SCIENCEQA
        return [VQAItem(os.path.join(str(root), _field(r, "image_path", str, _line(path, n))),
                        _field(r, "question", str, _line(path, n)),
                        _answers(_field(r, "answer", str, _line(path, n)), _line(path, n), "answer"),
                        _line(path, n)) for n, r in _jsonl(path)]
    cache = root / f"{split}_anns.json"
    if variant == FULL and cache.is_file():
        items = []
        for n, record in enumerate(_object(_load(cache), cache, kind=list)):
            where = _where(cache, n)
            items.append(VQAItem(str(root) + "/" + _field(record, "image_path", str, where),
                                 _field(record, "question", str, where),
                                 _answers(_field(record, "answer", str, where), where, "answer"), where))
        return items
    problems_path, splits_path = root / "problems.json", root / "pid_splits.json"
    if not problems_path.is_file():
        wanted = TINY_SCIENCEQA if variant == TINY else cache.name
        raise InputError(f"{root}: neither {wanted} nor the official problems.json + "
                         "pid_splits.json (ScienceQA)")
    problems = _object(_load(problems_path), problems_path)
    pids = _object(_load(splits_path), splits_path, split, list)
    image_root = root / "images" if (root / "images" / split).is_dir() else root
    items = []
    for pid in pids:
        where = _where(problems_path, pid)
        if str(pid) not in problems:
            raise InputError(f"{splits_path}: problem {pid} of split {split!r} is not in problems.json")
        record = problems[str(pid)]
        if not isinstance(record, dict) or not record.get("image"):
            continue  # the Arena keeps image questions only
        choices = _choices(record, where)
        question = _field(record, "question", str, where)
        answer = choices[_choice_index(record, where, choices)]
        if variant == TINY:  # the prompt of tiny LVLM-eHub's README table
            hint = record.get("hint") or ""
            prompt = (f"Context:\n{hint}\n\nQuestion: {question}\n"
                      "Choose the best answer from the following choices:\n- " + "\n- ".join(choices))
        else:
            prompt = _options_prompt(question, choices)
        items.append(VQAItem(f"{image_root}/{split}/{pid}/{record['image']}", prompt, answer, where))
    return items


VSR_CHOICES = ("No", "Yes")
VSR_SPLIT_FILES = {"all": "all_vsr_validated_data.jsonl", "train": "splits/random/train.jsonl",
                   "val": "splits/random/dev.jsonl", "test": "splits/random/test.jsonl"}


def _vsr(root: Path, split: str, variant: str, options: Dict[str, Any]) -> List[VQAItem]:
    path = root / VSR_SPLIT_FILES[split]
    items = []
    for number, record in _jsonl(path):
        where = _line(path, number)
        caption = _field(record, "caption", str, where)
        label = _field(record, "label", int, where)
        if label not in (0, 1):
            raise InputError(f"{where}: 'label' must be 0 or 1, got {label!r}")
        if variant == TINY:
            question = (f'Question: Is the caption "{caption}" correctly describing the image?\n\n'
                        "Choose the single most likely answer from the following choices <choice>:"
                        "\n- Yes\n- No\n\nThe output format follows exactly as below:\nAnswer: <choice>")
        else:
            question = (f"Question: Is the following caption right? {caption}\n"
                        f"Options: {' '.join(VSR_CHOICES)}\n")
        items.append(VQAItem(f"{root}/images/{_field(record, 'image', str, where)}", question,
                             VSR_CHOICES[label], where))
    return items


def load_jsonl_items(path: Path) -> List[VQAItem]:
    """Users' own data: ``{"image", "question", "answers"}`` per line, image relative to the file."""
    items = []
    for number, record in _jsonl(path):
        where = _line(path, number)
        image = _field(record, "image", str, where)
        items.append(VQAItem(str(path.parent / image) if not os.path.isabs(image) else image,
                             _field(record, "question", str, where),
                             _answers(_field(record, "answers", (list, str), where), where), where))
    return items


def load_presampled_items(folder: Path) -> List[VQAItem]:
    """Tiny LVLM-eHub's sampled subsets: ``dataset.json`` = Arena items, images beside it."""
    path = folder / PRESAMPLED_FILE
    items = []
    for n, record in enumerate(_object(_load(path), path, kind=list)):
        where = _where(path, n)
        items.append(VQAItem(f"{folder}/{_field(record, 'image_path', str, where)}",
                             _field(record, "question", str, where),
                             _answers(_field(record, "gt_answers", (list, str), where), where,
                                      "gt_answers"), where))
    return items


# ------------------------------------------------------------------------------------ registry
@dataclass(frozen=True)
class DatasetSpec:
    name: str  # the Arena's name: answers/<model>/<time>/<name>.json
    loader: Loader
    splits: Tuple[str, ...]  # the first is the Arena's
    marker: Callable[[str, str], str]  # relative path that shows a folder holds this split

    @property
    def arena_split(self) -> str:
        return self.splits[0]


DATASETS: Dict[str, DatasetSpec] = {spec.name.lower(): spec for spec in (
    DatasetSpec("GQA", _gqa, ("testdev", "val", "train"),
                lambda s, v: f"questions/{s}_balanced_questions.json"),
    DatasetSpec("OKVQA", _coco_vqa(""), ("val", "train"),
                lambda s, v: f"mscoco_{s}2014_annotations.json"),
    DatasetSpec("VQAv2", _coco_vqa("v2_"), ("val", "train"),
                lambda s, v: f"v2_mscoco_{s}2014_annotations.json"),
    DatasetSpec("TextVQA", _textvqa, ("val", "train"), lambda s, v: f"TextVQA_0.5.1_{s}.json"),
    DatasetSpec("VizWiz", _vizwiz, ("val", "train"), lambda s, v: f"{s}_grounding.json"),
    DatasetSpec("DocVQA", _docvqa, ("val", "train"), lambda s, v: f"{s}/{s}_v1.0.json"),
    DatasetSpec("OCRVQA", _ocrvqa, ("val", "train", "test"), lambda s, v: "dataset.json"),
    DatasetSpec("IconQA", _iconqa, ("test", "val", "train"),
                lambda s, v: f"dataset/{s}/choose_txt"),
    DatasetSpec("ScienceQA", _scienceqa, ("test", "val", "train"),
                lambda s, v: TINY_SCIENCEQA if v == TINY else f"{s}_anns.json"),
    DatasetSpec("VSR", _vsr, ("all", "train", "val", "test"), lambda s, v: VSR_SPLIT_FILES[s]),
)}
DATASET_NAMES = tuple(spec.name for spec in DATASETS.values())
JSONL = "jsonl"


def get_spec(name: str) -> DatasetSpec:
    try:
        return DATASETS[name.lower()]
    except KeyError:
        raise InputError(f"unknown dataset {name!r}; choose from {', '.join(DATASET_NAMES)} "
                         "or jsonl:PATH") from None


def locate_root(spec: DatasetSpec, root: PathLike, split: str, variant: str) -> Tuple[Path, bool]:
    """The dataset folder under ``root`` and whether it is a tiny pre-sampled subset.

    ``root`` may be the dataset's own folder, the Arena's ``DATA_DIR`` (``VQA_Datasets/<Name>``
    below it), a folder holding ``<Name>/``, or a tiny LVLM-eHub sampled root
    (``<Name>/dataset.json``).
    """
    root = Path(root).expanduser().absolute()
    candidates = [root / "VQA_Datasets" / spec.name, root / spec.name, root]
    marker = spec.marker(split, variant)
    for folder in candidates:
        if _is_presampled(folder):
            return folder, True
        if (folder / marker).exists():
            return folder, False
    if spec.name == "ScienceQA":
        for folder in candidates:
            if (folder / "problems.json").is_file():
                return folder, False
    raise InputError(f"{spec.name} ({split}): {marker} not found in any of "
                     + ", ".join(str(c) for c in candidates))


def _is_presampled(folder: Path) -> bool:
    """A tiny pre-sampled subset: ``dataset.json`` holding a list (OCRVQA's own ``dataset.json``
    is an object), told apart by its first character so that big files are not parsed twice."""
    try:
        with open(folder / PRESAMPLED_FILE, "rb") as handle:
            head = handle.read(64).lstrip(b"\xef\xbb\xbf \t\r\n")
    except OSError:
        return False
    return head.startswith(b"[")


MAX_SAMPLE_SEED = 2 ** 32 - 1  # numpy.random.RandomState's largest seed


def build_dataset(name: str, root: PathLike, split: Optional[str] = None, variant: str = FULL,
                  sample_num: Optional[int] = None, sample_seed: Optional[int] = None,
                  check_images: bool = True, directory_order: str = "sorted",
                  tiny_positions: Optional[Dict[str, List[int]]] = None) -> VQADataset:
    """Load one dataset the way the Arena does and sample it like ``eval.py`` (or tiny's).

    ``name`` is an Arena name (case-insensitive: ``gqa``, ``OKVQA``, ...) or ``jsonl`` with
    ``root`` = the file (``jsonl:PATH`` also works, ``root`` then unused). ``split`` defaults
    to the Arena's split. ``sample_num`` / ``sample_seed`` default to ``-1`` / ``0`` (the Arena's
    defaults) or ``50`` / ``20230719`` for the tiny variant. ``check_images`` verifies that every
    kept question's image exists (after sampling, so large test sets stay cheap).
    """
    if variant not in VARIANTS:
        raise InputError(f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    if directory_order not in ("sorted", "os"):
        raise InputError(f"directory_order must be 'sorted' or 'os', got {directory_order!r}")
    if sample_num is None:
        sample_num = TINY_SAMPLE_NUM if variant == TINY else -1
    if sample_seed is None:
        sample_seed = TINY_SAMPLE_SEED if variant == TINY else 0
    if isinstance(sample_num, bool) or not isinstance(sample_num, int) or (
            sample_num != -1 and sample_num < 1):
        raise InputError(f"--sample-num {sample_num!r}: must be a positive number of questions "
                         "or -1 (all)")
    # numpy's RandomState takes seeds 0..2**32-1; anything else is refused, not wrapped
    if isinstance(sample_seed, bool) or not isinstance(sample_seed, int) or not (
            0 <= sample_seed <= MAX_SAMPLE_SEED):
        raise InputError(f"--sample-seed {sample_seed!r}: must be a whole number from 0 to "
                         f"{MAX_SAMPLE_SEED}")
    presampled = False
    if name.lower() == JSONL or name.lower().startswith(JSONL + ":"):
        path = Path(name.split(":", 1)[1] if ":" in name else root).expanduser().absolute()
        if not path.is_file():
            raise InputError(f"{path}: file not found (JSONL VQA set)")
        canonical, split, folder = path.stem, split or "all", path
        items = load_jsonl_items(path)
    else:
        spec = get_spec(name)
        split = split or spec.arena_split
        if split not in spec.splits:
            raise InputError(f"{spec.name} has no split {split!r}; choose from {', '.join(spec.splits)}")
        canonical = spec.name
        folder, presampled = locate_root(spec, root, split, variant)
        if presampled:
            items = load_presampled_items(folder)
        else:
            items = spec.loader(folder, split, variant, {"directory_order": directory_order})
    if not items:
        raise InputError(f"{canonical} ({split}) in {folder}: no questions")
    dataset = VQADataset(canonical, split, variant, str(folder), items, None, len(items), presampled,
                         {"sample_num": sample_num, "sample_seed": sample_seed})
    if not presampled:
        if variant == TINY:
            picked = tiny_sample_indices(len(items), sample_num, sample_seed,
                                         (tiny_positions or {}).get(canonical))
        else:
            picked = arena_sample_indices(len(items), sample_num, sample_seed)
        if picked is not None:
            dataset = dataset.subset(picked)
    if check_images:
        dataset.check_images()
    return dataset
