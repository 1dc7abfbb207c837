"""The Arena's on-disk dataset layouts: one loader per dataset, reading its files into
:class:`~eval_arena.records.VQAItem` in the Arena's order, with the Arena's prompts.

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

The ``tiny`` variant (tiny LVLM-eHub) changes the prompts of IconQA and VSR and reads
ScienceQA from its own file; :mod:`eval_arena.datasets` says what else it changes.

Known differences from the Arena, on purpose: IconQA sample folders are listed in sorted order
(the Arena uses ``os.listdir``, whose order depends on the file system; pass
``directory_order="os"`` to get the Arena's order on the Arena's machine); a missing file or a
malformed item raises :class:`InputError` naming the file and the item instead of a traceback.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Sequence, Tuple

from eval_arena.records import (VQAItem, answers_of, field_of, item_where, json_part, jsonl_records,
                                line_where, load_json)
from selector.core.errors import InputError
from selector.core.jsonio import PathLike

FULL, TINY = "full", "tiny"
VARIANTS = (FULL, TINY)
PRESAMPLED_FILE = "dataset.json"  # tiny LVLM-eHub's sampled subsets: <root>/<Name>/dataset.json


def _options_prompt(question: str, choices: Sequence[str]) -> str:
    """The Arena's multiple-choice prompt (IconQA, ScienceQA)."""
    return f"Question: {question}\nOptions: {' '.join(choices)}\n"


def _tiny_choices_prompt(question: str, choices: Sequence[str]) -> str:
    """Tiny LVLM-eHub's IconQA prompt."""
    options = "\n- ".join(choices)
    return f"Question: {question}\nChoose the best answer from the following choices:\n- {options}\n"


def _choice_index(record: dict, where: str, choices: Sequence[str], key: str = "answer") -> int:
    index = field_of(record, key, int, where)
    if not 0 <= index < len(choices):
        raise InputError(f"{where}: {key!r} {index} is not an index into the {len(choices)} choices")
    return index


def _choices(record: dict, where: str) -> List[str]:
    choices = field_of(record, "choices", list, where)
    if not choices or not all(isinstance(c, str) for c in choices):
        raise InputError(f"{where}: 'choices' must be a non-empty list of strings")
    return choices


# ------------------------------------------------------------------------------------- loaders
Loader = Callable[[Path, str, str, Dict[str, Any]], List[VQAItem]]


def _gqa(root: Path, split: str, variant: str, options: Dict[str, Any]) -> List[VQAItem]:
    path = root / "questions" / f"{split}_balanced_questions.json"
    questions = json_part(load_json(path), path)
    items = []
    for qid, record in questions.items():
        where = item_where(path, qid)
        image = field_of(record, "imageId", str, where)
        items.append(VQAItem(f"{root}/images/{image}.jpg", field_of(record, "question", str, where),
                             field_of(record, "answer", str, where), where))
    return items


def _coco_vqa(prefix: str) -> Loader:
    """OKVQA and VQAv2: questions joined to annotations; every annotator's answer kept."""

    def load(root: Path, split: str, variant: str, options: Dict[str, Any]) -> List[VQAItem]:
        qpath = root / f"{prefix}OpenEnded_mscoco_{split}2014_questions.json"
        apath = root / f"{prefix}mscoco_{split}2014_annotations.json"
        questions = json_part(load_json(qpath), qpath, "questions", list)
        text = {}
        for n, record in enumerate(questions):
            where = item_where(qpath, n)
            text[field_of(record, "question_id", int, where)] = field_of(record, "question", str, where)
        items = []
        for n, record in enumerate(json_part(load_json(apath), apath, "annotations", list)):
            where = item_where(apath, n)
            qid = field_of(record, "question_id", int, where)
            where = f"{apath}: item {n} (question_id {qid})"
            if qid not in text:
                raise InputError(f"{where}: question_id {qid} is not in {qpath.name}")
            answers = []
            for m, answer in enumerate(field_of(record, "answers", list, where)):
                answers.append(field_of(answer, "answer", str, f"{where} answer {m}"))
            image_id = field_of(record, "image_id", int, where)
            image = f"{root}/{split}2014/COCO_{split}2014_000000{image_id:06d}.jpg"
            items.append(VQAItem(image, text[qid], answers_of(answers, where), where))
        return items

    return load


def _textvqa(root: Path, split: str, variant: str, options: Dict[str, Any]) -> List[VQAItem]:
    path = root / f"TextVQA_0.5.1_{split}.json"
    items = []
    for n, record in enumerate(json_part(load_json(path), path, "data", list)):
        where = item_where(path, n)
        image_id = field_of(record, "image_id", str, where)
        items.append(VQAItem(os.path.join(f"{root}/train_images", f"{image_id}.jpg"),
                             field_of(record, "question", str, where),
                             answers_of(field_of(record, "answers", list, where), where), where))
    return items


def _vizwiz(root: Path, split: str, variant: str, options: Dict[str, Any]) -> List[VQAItem]:
    path = root / f"{split}_grounding.json"
    items = []
    for image, record in json_part(load_json(path), path).items():
        where = item_where(path, image)
        items.append(VQAItem(f"{root}/{split}/{image}", field_of(record, "question", str, where),
                             answers_of(field_of(record, "answers", (list, str), where), where), where))
    return items


def _docvqa(root: Path, split: str, variant: str, options: Dict[str, Any]) -> List[VQAItem]:
    folder = root / split
    path = folder / f"{split}_v1.0.json"
    items = []
    for n, record in enumerate(json_part(load_json(path), path, "data", list)):
        where = item_where(path, n)
        items.append(VQAItem(os.path.join(str(folder), field_of(record, "image", str, where)),
                             field_of(record, "question", str, where),
                             answers_of(field_of(record, "answers", list, where), where), where))
    return items


OCRVQA_SPLITS = {"train": 1, "val": 2, "test": 3}


def _ocrvqa(root: Path, split: str, variant: str, options: Dict[str, Any]) -> List[VQAItem]:
    path = root / "dataset.json"
    code = OCRVQA_SPLITS[split]
    items = []
    for key, record in json_part(load_json(path), path).items():
        where = item_where(path, key)
        if field_of(record, "split", int, where) != code:
            continue
        questions = field_of(record, "questions", list, where)
        answers = field_of(record, "answers", list, where)
        if len(answers) != len(questions):
            raise InputError(f"{where}: {len(questions)} questions but {len(answers)} answers")
        image = os.path.join(str(root), "images", field_of(record, "imageURL", str, where).split("/")[-1])
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
        where = item_where(path, name)
        record = load_json(path)
        choices = _choices(record, where)
        question = field_of(record, "question", str, where)
        prompt = (_tiny_choices_prompt if variant == TINY else _options_prompt)(question, choices)
        items.append(VQAItem(f"{folder}/{name}/image.png", prompt,
                             choices[_choice_index(record, where, choices)], where))
    return items


TINY_SCIENCEQA = "annos_test_image_2017samples.jsonl"


def _scienceqa(root: Path, split: str, variant: str, options: Dict[str, Any]) -> List[VQAItem]:
    if variant == TINY and (root / TINY_SCIENCEQA).is_file():
        path = root / TINY_SCIENCEQA
        return [VQAItem(os.path.join(str(root), field_of(r, "image_path", str, line_where(path, n))),
                        field_of(r, "question", str, line_where(path, n)),
                        answers_of(field_of(r, "answer", str, line_where(path, n)), line_where(path, n), "answer"),
                        line_where(path, n)) for n, r in jsonl_records(path)]
    cache = root / f"{split}_anns.json"
    if variant == FULL and cache.is_file():
        items = []
        for n, record in enumerate(json_part(load_json(cache), cache, kind=list)):
            where = item_where(cache, n)
            items.append(VQAItem(str(root) + "/" + field_of(record, "image_path", str, where),
                                 field_of(record, "question", str, where),
                                 answers_of(field_of(record, "answer", str, where), where, "answer"), where))
        return items
    problems_path, splits_path = root / "problems.json", root / "pid_splits.json"
    if not problems_path.is_file():
        wanted = TINY_SCIENCEQA if variant == TINY else cache.name
        raise InputError(f"{root}: neither {wanted} nor the official problems.json + "
                         "pid_splits.json (ScienceQA)")
    problems = json_part(load_json(problems_path), problems_path)
    pids = json_part(load_json(splits_path), splits_path, split, list)
    image_root = root / "images" if (root / "images" / split).is_dir() else root
    items = []
    for pid in pids:
        where = item_where(problems_path, pid)
        if str(pid) not in problems:
            raise InputError(f"{splits_path}: problem {pid} of split {split!r} is not in problems.json")
        record = problems[str(pid)]
        if not isinstance(record, dict) or not record.get("image"):
            continue  # the Arena keeps image questions only
        choices = _choices(record, where)
        question = field_of(record, "question", str, where)
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
    for number, record in jsonl_records(path):
        where = line_where(path, number)
        caption = field_of(record, "caption", str, where)
        label = field_of(record, "label", int, where)
        if label not in (0, 1):
            raise InputError(f"{where}: 'label' must be 0 or 1, got {label!r}")
        if variant == TINY:
            question = (f'Question: Is the caption "{caption}" correctly describing the image?\n\n'
                        "Choose the single most likely answer from the following choices <choice>:"
                        "\n- Yes\n- No\n\nThe output format follows exactly as below:\nAnswer: <choice>")
        else:
            question = (f"Question: Is the following caption right? {caption}\n"
                        f"Options: {' '.join(VSR_CHOICES)}\n")
        items.append(VQAItem(f"{root}/images/{field_of(record, 'image', str, where)}", question,
                             VSR_CHOICES[label], where))
    return items


def load_jsonl_items(path: Path) -> List[VQAItem]:
    """Users' own data: ``{"image", "question", "answers"}`` per line, image relative to the file."""
    items = []
    for number, record in jsonl_records(path):
        where = line_where(path, number)
        image = field_of(record, "image", str, where)
        items.append(VQAItem(str(path.parent / image) if not os.path.isabs(image) else image,
                             field_of(record, "question", str, where),
                             answers_of(field_of(record, "answers", (list, str), where), where), where))
    return items


def load_presampled_items(folder: Path) -> List[VQAItem]:
    """Tiny LVLM-eHub's sampled subsets: ``dataset.json`` = Arena items, images beside it."""
    path = folder / PRESAMPLED_FILE
    items = []
    for n, record in enumerate(json_part(load_json(path), path, kind=list)):
        where = item_where(path, n)
        items.append(VQAItem(f"{folder}/{field_of(record, 'image_path', str, where)}",
                             field_of(record, "question", str, where),
                             answers_of(field_of(record, "gt_answers", (list, str), where), where,
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
