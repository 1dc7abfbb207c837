"""eval_arena.datasets, .layouts, .sampling: the Arena's layouts, prompts, splits, sampling, errors.

``build_arena_layouts`` writes a small copy of every dataset in Multi-Modality-Arena's layout
(``DATA_DIR/VQA_Datasets/<Name>``). tests/data/arena_datasets_golden.json holds what the Arena's
own dataset classes and sampling functions return on exactly these files (see tests/data/README.md).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest

from eval_arena.datasets import build_dataset
from eval_arena.layouts import DATASET_NAMES
from eval_arena.sampling import arena_sample_indices, read_tiny_positions, tiny_sample_indices
from selector.core.errors import InputError

DATA = Path(__file__).resolve().parents[1] / "data"


def _image(path: Path, shade: int) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (6, 4), (shade % 256, 80, 160)).save(
        path, format="JPEG" if path.suffix == ".jpg" else "PNG")


def _json(path: Path, value) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, ensure_ascii=False, indent=1), encoding="utf-8")


def build_arena_layouts(data_dir: Path) -> Dict[str, str]:
    """Write every dataset under ``data_dir/VQA_Datasets`` in the Arena's layout; return a
    scripted model's answer for each raw question (questions are unique, none contains another).

    Deterministic: the golden generator runs the Arena's classes on the same files.
    """
    root = Path(data_dir) / "VQA_Datasets"
    model: Dict[str, str] = {}
    shade = iter(range(0, 10000, 7))

    def q(text: str, answer: str) -> str:
        assert text not in model
        model[text] = answer
        return text

    # GQA: {qid: {imageId, question, answer}}; testdev (the Arena's) and val
    gqa = root / "GQA"
    for split, count in (("testdev", 9), ("val", 4)):
        questions = {}
        for i in range(count):
            image = f"n{split[0]}{1000 + i}"
            questions[f"{2000 + i}{split[0]}"] = {
                "imageId": image, "answer": ["yes", "no", "left", "red", "wood"][i % 5],
                "question": q(f"GQA {split} question {i}: is it so?", ["Yes, it is.", "no", "It is on the right.",
                                                                         "Red!", "metal"][i % 5]),
                "types": {"structural": "verify"}}
            _image(gqa / "images" / f"{image}.jpg", next(shade))
        _json(gqa / "questions" / f"{split}_balanced_questions.json", questions)

    # OKVQA / VQAv2: questions joined to annotations (in another order), 10 answers each
    for name, prefix in (("OKVQA", ""), ("VQAv2", "v2_")):
        folder = root / name
        for split, count in (("val", 8), ("train", 3)):
            questions, annotations = [], []
            for i in range(count):
                image_id = 42 + 1000 * i + (1 if name == "VQAv2" else 0)
                qid = image_id * 10 + 5
                answers = [["two"] * 6 + ["2"] * 4, ["surfing", "surf", "surfing", "surfboarding"] * 2 + ["x", "y"],
                           ["1,000"] * 5 + ["1000"] * 5, ["the beach"] * 10][i % 4]
                questions.append({"image_id": image_id, "question_id": qid,
                                  "question": q(f"{name} {split} q{i}: what is shown — «café»?",
                                                ["2 people", "Surfing.", "1000", "beach", "The beach."][i % 5])})
                annotations.append({"image_id": image_id, "question_id": qid, "question_type": "what",
                                    "answer_type": "other",
                                    "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": k + 1}
                                                for k, a in enumerate(answers)]})
                _image(folder / f"{split}2014" / f"COCO_{split}2014_{image_id:012d}.jpg", next(shade))
            _json(folder / f"{prefix}OpenEnded_mscoco_{split}2014_questions.json",
                  {"questions": list(reversed(questions))})
            _json(folder / f"{prefix}mscoco_{split}2014_annotations.json", {"annotations": annotations})

    # TextVQA: data = [{question, answers, image_id}], images in train_images/
    tv = root / "TextVQA"
    data = []
    for i in range(6):
        image_id = f"{0xabc0 + i:x}"
        data.append({"image_id": image_id, "question": q(f"TextVQA q{i}: what does the sign say?",
                                                         ["STOP", "it says coca cola", "nothing"][i % 3]),
                     "answers": [["stop"] * 10, ["coca-cola"] * 7 + ["coca cola"] * 3, ["exit"] * 10][i % 3]})
        _image(tv / "train_images" / f"{image_id}.jpg", next(shade))
    _json(tv / "TextVQA_0.5.1_val.json", {"dataset_name": "textvqa", "data": data})

    # VizWiz: {image: {question, answers}}
    vz = root / "VizWiz"
    grounding = {}
    for i in range(5):
        image = f"VizWiz_val_{i:08d}.jpg"
        answer = ["unanswerable", "a can of soup", "I see a bottle"][i % 3]
        grounding[image] = {"question": q(f"VizWiz q{i}: what is this?", answer),
                            "answers": [["unanswerable"] * 10, ["soup"] * 6 + ["tomato soup"] * 4][i % 2]}
        _image(vz / "val" / image, next(shade))
    _json(vz / "val_grounding.json", grounding)

    # DocVQA: val/val_v1.0.json data = [{question, answers, image}], image relative to val/
    dv = root / "DocVQA"
    data = []
    for i in range(5):
        image = f"documents/doc{i}.png"
        data.append({"questionId": i, "question": q(f"DocVQA q{i}: what is the date?", ["12/05/1998", "in May"][i % 2]),
                     "answers": [["12/05/1998", "12-05-1998"], ["1998"]][i % 2], "image": image})
        _image(dv / "val" / image, next(shade))
    _json(dv / "val" / "val_v1.0.json", {"dataset_name": "docvqa", "data": data})

    # OCRVQA: {id: {imageURL, questions, answers, split}}; split 2 is the Arena's
    oc = root / "OCRVQA"
    books = {}
    for i in range(6):
        name = f"{100000 + i}"
        split = [2, 1, 2, 3, 2, 2][i]
        books[name] = {"imageURL": f"http://images.example.com/images/I/{name}.jpg", "split": split,
                       "questions": [q(f"OCRVQA book {i}: who wrote this book?", ["Jane Austen", "unknown"][i % 2]),
                                     q(f"OCRVQA book {i}: is this a comic book?", "No")],
                       "answers": ["Jane Austen", "No"], "title": "t", "authorName": "a", "genre": "g"}
        _image(oc / "images" / f"{name}.jpg", next(shade))
    _json(oc / "dataset.json", books)

    # IconQA: dataset/{split}/choose_txt/{id}/data.json + image.png
    for split, count in (("test", 7), ("val", 3)):
        for i in range(count):
            folder = root / "IconQA" / "dataset" / split / "choose_txt" / str(300 + 17 * i)
            choices = [["circle", "square", "triangle"], ["3", "4"], ["yes", "no"]][i % 3]
            _json(folder / "data.json", {"question": q(f"IconQA {split} {i}: which shape comes next?",
                                                       ["square", "There are 4.", "no"][i % 3]),
                                         "choices": choices, "answer": [1, 1, 0][i % 3],
                                         "ques_type": "choose_txt", "grade": "prek"})
            _image(folder / "image.png", next(shade))

    # ScienceQA: the Arena's cache {split}_anns.json = [{answer, image_path, question}]
    sq = root / "ScienceQA"
    anns = []
    for i in range(6):
        choices = [["Africa", "Asia", "Europe"], ["yes", "no"]][i % 2]
        question = q(f"ScienceQA {i}: which continent is highlighted?", ["Asia", "no", "Europe"][i % 3])
        anns.append({"answer": choices[1 - i % 2], "image_path": f"test_imgs/{i:04d}.png",
                     "question": f"Question: {question}\nOptions: {' '.join(choices)}\n"})
        _image(sq / "test_imgs" / f"{i:04d}.png", next(shade))
    _json(sq / "test_anns.json", anns)

    # VSR: all_vsr_validated_data.jsonl (image, caption, label)
    vsr = root / "VSR"
    lines = []
    for i in range(7):
        image = f"0000000{i}{i}.jpg"
        caption = q(f"The cat number {i} is on the table.", ["Yes", "No", "yes it is"][i % 3])
        lines.append(json.dumps({"image": image, "caption": caption, "label": [1, 0, 0][i % 3],
                                 "relation": "on", "image_link": "x"}))
        _image(vsr / "images" / image, next(shade))
    (vsr / "all_vsr_validated_data.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return model


def relative(path: str, base: Path) -> str:
    prefix = str(base).rstrip("/") + "/"
    assert path.startswith(prefix), (path, prefix)
    return path[len(prefix):]


@pytest.fixture(scope="module")
def arena_dir(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("arena")
    build_arena_layouts(base)
    return base


def golden() -> dict:
    return json.loads((DATA / "arena_datasets_golden.json").read_text(encoding="utf-8"))


def _items(dataset, base: Path) -> List[dict]:
    return [{"image_path": relative(i["image_path"], base), "question": i["question"],
             "gt_answers": i["gt_answers"]} for i in dataset]


@pytest.mark.parametrize("name", sorted(DATASET_NAMES))
def test_items_equal_the_arena_classes(arena_dir, name):
    """Whole datasets (Arena split) and a sampled subset, item for item, against the Arena's own
    classes and eval.py's sample_dataset run on the same files."""
    expected = golden()["datasets"][name]
    assert _items(build_dataset(name, arena_dir), arena_dir) == expected["full"]
    sampled = build_dataset(name.lower(), arena_dir, sample_num=expected["sample_num"],
                            sample_seed=expected["sample_seed"])
    assert _items(sampled, arena_dir) == expected["sampled"]


@pytest.mark.parametrize("name", ["IconQA", "VSR"])
def test_tiny_prompts_equal_tiny_lvlm_classes(arena_dir, name):
    expected = golden()["tiny"][name]
    dataset = build_dataset(name, arena_dir, variant="tiny", sample_num=-1)
    assert _items(dataset, arena_dir) == expected


def test_prompts_by_hand(arena_dir):
    """The prompt formats, written from reading the Arena's vqa_datasets.py."""
    icon = build_dataset("iconqa", arena_dir)
    assert icon[0]["question"] == ("Question: IconQA test 0: which shape comes next?\n"
                                   "Options: circle square triangle\n")
    assert icon[0]["gt_answers"] == "square"
    assert icon[0]["image_path"].endswith("/VQA_Datasets/IconQA/dataset/test/choose_txt/300/image.png")
    tiny = build_dataset("iconqa", arena_dir, variant="tiny", sample_num=-1)
    assert tiny[0]["question"] == ("Question: IconQA test 0: which shape comes next?\nChoose the best "
                                   "answer from the following choices:\n- circle\n- square\n- triangle\n")
    vsr = build_dataset("vsr", arena_dir)
    assert vsr[0]["question"] == ("Question: Is the following caption right? The cat number 0 is on "
                                  "the table.\nOptions: No Yes\n")
    assert [vsr[i]["gt_answers"] for i in range(3)] == ["Yes", "No", "No"]
    okvqa = build_dataset("okvqa", arena_dir)
    assert okvqa[0]["gt_answers"] == ["two"] * 6 + ["2"] * 4
    assert okvqa[0]["image_path"].endswith("/OKVQA/val2014/COCO_val2014_000000000042.jpg")
    gqa = build_dataset("GQA", arena_dir)
    assert gqa[0] == {"image_path": f"{arena_dir}/VQA_Datasets/GQA/images/nt1000.jpg",
                      "question": "GQA testdev question 0: is it so?", "gt_answers": "yes"}
    ocr = build_dataset("ocrvqa", arena_dir)
    assert len(ocr) == 2 * 4  # four books of split 2, two questions each


def test_splits_and_roots(arena_dir):
    assert len(build_dataset("gqa", arena_dir, split="val")) == 4
    assert build_dataset("gqa", arena_dir, split="val").split == "val"
    assert len(build_dataset("okvqa", arena_dir, split="train")) == 3
    assert len(build_dataset("iconqa", arena_dir, split="val")) == 3
    assert [i["gt_answers"] for i in build_dataset("ocrvqa", arena_dir, split="train")] == ["Jane Austen", "No"]
    # the dataset's own folder works as root too, and gives the same items
    own = build_dataset("TextVQA", arena_dir / "VQA_Datasets" / "TextVQA")
    assert list(own) == list(build_dataset("textvqa", arena_dir))
    with pytest.raises(InputError, match="GQA has no split 'dev'.*testdev, val, train"):
        build_dataset("gqa", arena_dir, split="dev")
    with pytest.raises(InputError, match=r"VizWiz \(train\): train_grounding.json not found"):
        build_dataset("vizwiz", arena_dir, split="train")
    with pytest.raises(InputError, match="unknown dataset 'coco'"):
        build_dataset("coco", arena_dir)


def test_iconqa_os_order_is_the_listing(arena_dir):
    folder = arena_dir / "VQA_Datasets" / "IconQA" / "dataset" / "test" / "choose_txt"
    listed = os.listdir(folder)
    dataset = build_dataset("iconqa", arena_dir, directory_order="os")
    assert [Path(i["image_path"]).parent.name for i in dataset] == listed


def test_arena_sampling_matches_global_numpy_seeding():
    """eval.py: np.random.seed(seed); np.random.choice(len, n, replace=False), only if len > n."""
    state = np.random.get_state()
    try:
        for size, num, seed in [(10, 3, 0), (1000, 50, 7), (12578, 500, 20230719), (5, 4, 1)]:
            np.random.seed(seed)
            expected = list(np.random.choice(size, num, replace=False))
            assert arena_sample_indices(size, num, seed) == expected
    finally:
        np.random.set_state(state)
    assert arena_sample_indices(10, 10, 0) is None  # not longer than n: everything, in order
    assert arena_sample_indices(10, -1, 0) is None
    with pytest.raises(InputError):
        arena_sample_indices(10, 0, 0)


def test_sampling_equals_the_arena_functions():
    """Index lists produced by the Arena's eval.py and tiny sample_dataset (golden)."""
    cases = golden()["sampling"]
    assert len(cases) >= 10
    for case in cases:
        if case["kind"] == "arena":
            got = arena_sample_indices(case["size"], case["num"], case["seed"])
            got = list(range(case["size"])) if got is None else got
        else:
            got = tiny_sample_indices(case["size"], case["num"], case["seed"], case.get("positions"))
        assert got == case["indices"], case


def test_tiny_positions_file(tmp_path):
    path = tmp_path / "bard.jsonl"
    path.write_text('{"dataset": "GQA", "indices": [3, 0, 7]}\n\n{"dataset": "VSR", "indices": [1]}\n')
    assert read_tiny_positions(path) == {"GQA": [3, 0, 7], "VSR": [1]}
    np.random.seed(20230719)
    drawn = np.random.choice(100, 8, replace=False)
    assert tiny_sample_indices(100, 50, 20230719, [3, 0, 7]) == [drawn[3], drawn[0], drawn[7]]
    path.write_text('{"dataset": "GQA"}\n')
    with pytest.raises(InputError, match="bard.jsonl: line 1"):
        read_tiny_positions(path)
    with pytest.raises(InputError, match="without replacement"):
        tiny_sample_indices(10, 50, 0)


def test_tiny_defaults_sample_fifty(tmp_path):
    lines = [json.dumps({"image": f"i{n}.png", "question": f"q{n}", "answers": ["a"]}) for n in range(80)]
    (tmp_path / "mine.jsonl").write_text("\n".join(lines))
    for n in range(80):
        _image(tmp_path / f"i{n}.png", n)
    tiny = build_dataset("jsonl", tmp_path / "mine.jsonl", variant="tiny")
    np.random.seed(20230719)
    assert tiny.indices == list(np.random.choice(80, 50, replace=False))
    assert len(tiny) == 50


def test_presampled_tiny_subsets(tmp_path):
    """tiny LVLM-eHub's GeneralDataset: <root>/<Name>/dataset.json, used as is (no resampling)."""
    folder = tmp_path / "tiny_lvlm_datasets" / "OCRVQA"
    records = [{"image_path": f"{n:02d}.png", "question": f"q{n}", "gt_answers": "x"} for n in range(3)]
    _json(folder / "dataset.json", records)
    for n in range(3):
        _image(folder / f"{n:02d}.png", n)
    dataset = build_dataset("OCRVQA", tmp_path / "tiny_lvlm_datasets", variant="tiny")
    assert dataset.presampled and dataset.indices is None
    assert [d["image_path"] for d in dataset] == [f"{folder}/{n:02d}.png" for n in range(3)]


def test_jsonl_dataset(tmp_path):
    (tmp_path / "imgs").mkdir()
    _image(tmp_path / "imgs" / "a.png", 1)
    _image(tmp_path / "b.png", 2)
    path = tmp_path / "mine.jsonl"
    path.write_text(json.dumps({"image": "imgs/a.png", "question": "What?", "answers": ["x", "y"]}) + "\n\n"
                    + json.dumps({"image": str(tmp_path / "b.png"), "question": "Q2", "answers": "z"}) + "\n")
    dataset = build_dataset(f"jsonl:{path}", "unused")
    assert dataset.name == "mine"
    assert list(dataset) == [
        {"image_path": str(tmp_path / "imgs" / "a.png"), "question": "What?", "gt_answers": ["x", "y"]},
        {"image_path": str(tmp_path / "b.png"), "question": "Q2", "gt_answers": "z"}]


@pytest.mark.parametrize("line, message", [
    ('{"image": "a.png", "question": "q"}', "line 2: missing 'answers'"),
    ('{"image": "a.png", "question": 3, "answers": ["x"]}', "line 2: 'question' must be str"),
    ('{"image": "a.png", "question": "q", "answers": []}', "line 2: 'answers' must be a string or a non-empty list"),
    ('{"image": "a.png", "question": "q", "answers": [1]}', "line 2: 'answers' must be"),
    ('["a.png", "q"]', "line 2: expected an object"),
    ('{"image": "a.png", ', "line 2: malformed JSON"),
    ('{"image": "missing.png", "question": "q", "answers": "x"}', "line 2: image .*missing.png not found"),
])
def test_jsonl_errors_name_file_and_line(tmp_path, line, message):
    _image(tmp_path / "a.png", 0)
    path = tmp_path / "bad.jsonl"
    path.write_text('{"image": "a.png", "question": "ok", "answers": "x"}\n' + line + "\n")
    with pytest.raises(InputError, match=f"bad.jsonl: {message}"):
        build_dataset("jsonl", path)


def test_malformed_arena_files_name_file_and_item(tmp_path):
    base = tmp_path / "data"
    build_arena_layouts(base)
    gqa = base / "VQA_Datasets" / "GQA" / "questions" / "testdev_balanced_questions.json"
    questions = json.loads(gqa.read_text())
    del questions["2003t"]["imageId"]
    gqa.write_text(json.dumps(questions))
    with pytest.raises(InputError, match=r"testdev_balanced_questions.json: item 2003t: missing 'imageId'"):
        build_dataset("gqa", base)

    icon = base / "VQA_Datasets" / "IconQA" / "dataset" / "test" / "choose_txt" / "317" / "data.json"
    record = json.loads(icon.read_text())
    record["answer"] = 5
    icon.write_text(json.dumps(record))
    with pytest.raises(InputError, match=r"317/data.json: item 317: 'answer' 5 is not an index"):
        build_dataset("iconqa", base)

    ann = base / "VQA_Datasets" / "OKVQA" / "mscoco_val2014_annotations.json"
    annotations = json.loads(ann.read_text())
    annotations["annotations"][2]["question_id"] = 99
    ann.write_text(json.dumps(annotations))
    with pytest.raises(InputError, match=r"annotations.json: item 2 \(question_id 99\): question_id 99 is not in"):
        build_dataset("okvqa", base)

    (base / "VQA_Datasets" / "VizWiz" / "val" / "VizWiz_val_00000003.jpg").unlink()
    with pytest.raises(InputError, match=r"val_grounding.json: item VizWiz_val_00000003.jpg: image .* not found"):
        build_dataset("vizwiz", base)
    # a sampled run checks only the images it will ask about
    kept = build_dataset("vizwiz", base, check_images=False)
    assert len(kept) == 5

    (base / "VQA_Datasets" / "TextVQA" / "TextVQA_0.5.1_val.json").write_text("{broken")
    with pytest.raises(InputError, match=r"TextVQA_0.5.1_val.json: malformed JSON at line 1"):
        build_dataset("textvqa", base)


def test_scienceqa_official_layout(tmp_path):
    """problems.json + pid_splits.json: image questions of the split, the Arena's options prompt."""
    root = tmp_path / "ScienceQA"
    _json(root / "problems.json", {
        "7": {"question": "Which is a mammal?", "choices": ["frog", "dog"], "answer": 1, "image": "image.png",
              "hint": "Look.", "split": "test"},
        "8": {"question": "No image here", "choices": ["a", "b"], "answer": 0, "image": None, "split": "test"},
        "9": {"question": "Which is hot?", "choices": ["ice", "fire", "snow"], "answer": 1, "image": "image.png",
              "hint": "", "split": "test"}})
    _json(root / "pid_splits.json", {"test": ["9", "8", "7"], "val": []})
    for pid in ("7", "9"):
        _image(root / "images" / "test" / pid / "image.png", int(pid))
    dataset = build_dataset("scienceqa", root)
    assert list(dataset) == [
        {"image_path": f"{root}/images/test/9/image.png", "gt_answers": "fire",
         "question": "Question: Which is hot?\nOptions: ice fire snow\n"},
        {"image_path": f"{root}/images/test/7/image.png", "gt_answers": "dog",
         "question": "Question: Which is a mammal?\nOptions: frog dog\n"}]
    with pytest.raises(InputError, match="no questions"):
        build_dataset("scienceqa", root, split="val")
