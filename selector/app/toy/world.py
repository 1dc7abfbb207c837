"""The toy world itself: what an image shows (its truth), how it is drawn, its faithful caption,
the five planted faults, and the pool written as a cc_sbu_align folder with ``planted.json``.

Every draw comes from :func:`sample_rng`, one generator per (purpose, seed, index), so sample i is
the same whatever the pool size, and the pool and each model's training set (:mod:`.clip`,
:mod:`.text`) draw from disjoint streams. Heavy imports (PIL) happen only when drawing.
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from selector.core.atomic import atomic_open
from selector.core.errors import InputError
from selector.core.jsonio import PathLike, read_json, write_json

# -- the world ---------------------------------------------------------------------------------

SHAPES = ("circle", "square", "triangle", "star")
#: shape colours (RGB); none of these names is used for a background
COLOURS: Dict[str, Tuple[int, int, int]] = {
    "red": (215, 35, 35), "green": (35, 160, 60), "blue": (35, 75, 215),
    "yellow": (240, 205, 30), "orange": (245, 130, 20), "purple": (135, 50, 175),
    "black": (20, 20, 20)}
BACKGROUNDS: Dict[str, Tuple[int, int, int]] = {
    "white": (250, 250, 250), "grey": (160, 160, 160), "beige": (225, 210, 165)}
COUNT_WORDS = ("zero", "one", "two", "three", "four", "five", "six")
BAD_KINDS = ("wrong_colour", "wrong_count", "truncated", "repetitive", "off_topic")

# 3 x 3 grid cells, row-major, and how a caption says "where"
REGIONS = ("upper left", "top", "upper right", "left", "centre", "right", "lower left", "bottom",
           "lower right")
WHERE = {"upper left": "in the upper left corner", "top": "at the top",
         "upper right": "in the upper right corner", "left": "on the left side",
         "centre": "in the centre", "right": "on the right side",
         "lower left": "in the lower left corner", "bottom": "at the bottom",
         "lower right": "in the lower right corner"}


def plural(shape: str, count: int) -> str:
    return shape if count == 1 else f"{shape}s"


def count_phrase(count: int, colour: str, shape: str) -> str:
    """'a red circle', 'two red circles'."""
    article = "an" if colour[0] in "aeiou" else "a"
    return f"{article if count == 1 else COUNT_WORDS[count]} {colour} {plural(shape, count)}"


def region_of(x: float, y: float) -> str:
    return REGIONS[min(int(y * 3), 2) * 3 + min(int(x * 3), 2)]


def random_truth(rng: random.Random) -> Dict[str, Any]:
    """What one image shows: background and 1-4 shapes (centre x/y and size as fractions of the
    side), placed without heavy overlap so each one stays visible and countable."""
    backgrounds = rng.sample(sorted(BACKGROUNDS), 2)
    two_tone = rng.random() < 0.4
    background = {"colours": backgrounds if two_tone else backgrounds[:1],
                  "split": rng.choice(("horizontal", "vertical")) if two_tone else None}
    # a few groups of the same colour and shape, so counts above one are common
    n_shapes = rng.randint(1, 4)
    groups: List[Tuple[str, str]] = []
    kinds: List[Tuple[str, str]] = []
    for _ in range(n_shapes):
        if groups and rng.random() < 0.45:
            kinds.append(rng.choice(groups))
        else:
            kind = (rng.choice(sorted(COLOURS)), rng.choice(SHAPES))
            groups.append(kind)
            kinds.append(kind)
    shapes: List[Dict[str, Any]] = []
    for colour, shape in kinds:
        for _ in range(50):
            size = round(rng.uniform(0.09, 0.17), 3)
            x, y = (round(rng.uniform(size, 1 - size), 3) for _ in range(2))
            if all((x - s["x"]) ** 2 + (y - s["y"]) ** 2 > (0.9 * (size + s["size"])) ** 2
                   for s in shapes):
                break
        shapes.append({"shape": shape, "colour": colour, "x": x, "y": y, "size": size,
                       "region": region_of(x, y)})
    return {"background": background, "shapes": shapes}


def draw(truth: Mapping[str, Any], size: int = 64) -> "Any":
    """The truth as a PIL image (drawn at 4x and downsampled, so edges are smooth)."""
    import math

    from PIL import Image, ImageDraw

    scale = 4
    side = size * scale
    background = truth["background"]
    image = Image.new("RGB", (side, side), BACKGROUNDS[background["colours"][0]])
    pen = ImageDraw.Draw(image)
    if background["split"] == "horizontal":
        pen.rectangle((0, side // 2, side, side), fill=BACKGROUNDS[background["colours"][1]])
    elif background["split"] == "vertical":
        pen.rectangle((side // 2, 0, side, side), fill=BACKGROUNDS[background["colours"][1]])
    for item in truth["shapes"]:
        cx, cy, r = item["x"] * side, item["y"] * side, item["size"] * side
        fill = COLOURS[item["colour"]]
        if item["shape"] == "circle":
            pen.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
        elif item["shape"] == "square":
            half = r * 0.85
            pen.rectangle((cx - half, cy - half, cx + half, cy + half), fill=fill)
        elif item["shape"] == "triangle":
            pen.polygon([(cx, cy - r), (cx - r * 0.95, cy + r * 0.75),
                         (cx + r * 0.95, cy + r * 0.75)], fill=fill)
        else:  # a five-pointed star
            points = [(cx + (r if k % 2 == 0 else r * 0.45) * math.sin(k * math.pi / 5),
                       cy - (r if k % 2 == 0 else r * 0.45) * math.cos(k * math.pi / 5))
                      for k in range(10)]
            pen.polygon(points, fill=fill)
    return image.resize((size, size), Image.LANCZOS)


# -- captions ----------------------------------------------------------------------------------

INVENTORY = ("The image shows {things} on {background}.",
             "This picture contains {things} against {background}.",
             "In this image there {be} {things} on {background}.",
             "A simple drawing of {things} on {background}.")
ONE_WHERE = ("The {colour} {shape} is {where}.", "The {colour} {shape} sits {where}.",
             "You can see the {colour} {shape} {where}.")
MANY_WHERE = ("The {count} {colour} {shapes} are {where}.",
              "{Count} {colour} {shapes} can be seen {where}.")
CLOSING = ("The shapes are flat and have no outlines.", "There is no text in the image.",
           "The colours are bright and clearly separated.", "")


def groups_of(shapes: Sequence[Mapping[str, Any]]) -> List[Dict[str, Any]]:
    """Shapes grouped by (colour, shape) in order of first appearance, with their regions."""
    groups: Dict[Tuple[str, str], Dict[str, Any]] = {}
    for item in shapes:
        key = (item["colour"], item["shape"])
        group = groups.setdefault(key, {"colour": key[0], "shape": key[1], "count": 0,
                                        "regions": []})
        group["count"] += 1
        group["regions"].append(item["region"])
    return list(groups.values())


def background_phrase(background: Mapping[str, Any]) -> str:
    first, *rest = background["colours"]
    if not rest:
        return f"a plain {first} background"
    if background["split"] == "horizontal":
        return f"a background that is {first} at the top and {rest[0]} at the bottom"
    return f"a background that is {first} on the left and {rest[0]} on the right"


def where_phrase(regions: Sequence[str]) -> str:
    distinct = list(dict.fromkeys(regions))
    if len(distinct) == 1:
        return WHERE[distinct[0]]
    if len(distinct) == 2:
        return f"{WHERE[distinct[0]]} and {WHERE[distinct[1]]}"
    return "spread across the image"


def describe(groups: Sequence[Mapping[str, Any]], background: Mapping[str, Any],
             rng: random.Random) -> str:
    """A detailed caption: what is there (with counts and colours), where, and a closing remark.
    The first sentence always lists every group, so a reader can parse the inventory back."""
    things = [count_phrase(g["count"], g["colour"], g["shape"]) for g in groups]
    listed = things[0] if len(things) == 1 else ", ".join(things[:-1]) + " and " + things[-1]
    total = sum(g["count"] for g in groups)
    sentences = [rng.choice(INVENTORY).format(things=listed, background=background_phrase(
        background), be="is" if total == 1 else "are")]
    for group in groups:
        where = where_phrase(group["regions"])
        if group["count"] == 1:
            sentences.append(rng.choice(ONE_WHERE).format(colour=group["colour"],
                                                          shape=group["shape"], where=where))
        else:
            count = COUNT_WORDS[group["count"]]
            sentences.append(rng.choice(MANY_WHERE).format(
                count=count, Count=count.capitalize(), colour=group["colour"],
                shapes=plural(group["shape"], group["count"]), where=where))
    closing = rng.choice(CLOSING)
    return " ".join(sentences + ([closing] if closing else []))


def caption_of(truth: Mapping[str, Any], rng: random.Random) -> str:
    """The faithful caption of a drawing."""
    return describe(groups_of(truth["shapes"]), truth["background"], rng)


OFF_TOPIC_SUBJECTS = ("An old fishing boat", "A man in a heavy coat", "A crowded train station",
                      "A bowl of noodle soup", "A small brown dog", "A wooden bridge",
                      "A group of students", "A tall lighthouse", "A vintage bicycle")
OFF_TOPIC_ACTIONS = ("rests near a quiet harbour", "waits under a cloudy sky",
                     "stands beside a busy road", "appears in the early morning light",
                     "is photographed from a low angle", "is surrounded by tall trees")
OFF_TOPIC_DETAILS = ("People walk past without noticing it.", "Snow covers the hills far away.",
                     "A few birds fly overhead.", "The scene feels calm and peaceful.",
                     "Rain has left puddles on the ground.", "A sign in the distance is hard "
                     "to read.", "The photo seems to have been taken in autumn.")


def off_topic_caption(rng: random.Random) -> str:
    """A fluent caption about something that is not in the image (no shape or colour words)."""
    details = rng.sample(OFF_TOPIC_DETAILS, rng.randint(2, 3))
    return " ".join([f"{rng.choice(OFF_TOPIC_SUBJECTS)} {rng.choice(OFF_TOPIC_ACTIONS)}."]
                    + details)


def faulty_caption(kind: str, truth: Mapping[str, Any], clean: str, rng: random.Random
                   ) -> Tuple[str, Dict[str, Any]]:
    """(bad caption, what was done) for one bad kind; ``clean`` is the faithful caption."""
    groups = [dict(g) for g in groups_of(truth["shapes"])]
    if kind == "wrong_colour":
        group = rng.choice(groups)
        present = {g["colour"] for g in groups}
        new = rng.choice(sorted(set(COLOURS) - present))
        fault = {"shape": group["shape"], "from": group["colour"], "to": new}
        group["colour"] = new
        return describe(groups, truth["background"], rng), fault
    if kind == "wrong_count":
        group = rng.choice(groups)
        new = group["count"] + 1 if group["count"] == 1 or rng.random() < 0.5 \
            else group["count"] - 1
        fault = {"shape": group["shape"], "colour": group["colour"], "from": group["count"],
                 "to": new}
        group["count"] = new
        return describe(groups, truth["background"], rng), fault
    if kind == "truncated":
        # cut at a word boundary strictly inside a sentence, a third to two thirds of the way in
        cuts = [m.start() for m in re.finditer(r" ", clean)
                if len(clean) / 3 <= m.start() <= 2 * len(clean) / 3
                and clean[m.start() - 1] not in ".,"]
        cut = rng.choice(cuts) if cuts else len(clean) // 2
        return clean[:cut], {"kept_chars": cut, "of": len(clean)}
    if kind == "repetitive":
        sentences = split_sentences(clean)
        index = rng.randrange(len(sentences))
        times = rng.randint(6, 10)
        repeated = sentences[:index + 1] + [sentences[index]] * (times - 1) + sentences[index + 1:]
        return " ".join(repeated), {"sentence": sentences[index], "times": times}
    if kind == "off_topic":
        return off_topic_caption(rng), {}
    raise ValueError(f"unknown bad kind {kind!r} (one of {', '.join(BAD_KINDS)})")


def split_sentences(text: str) -> List[str]:
    return [s for s in re.split(r"(?<=\.)\s+", text.strip()) if s]


# -- the pool ----------------------------------------------------------------------------------

@dataclass
class ToyPool:
    """A generated pool: its cc_sbu_align folder and, per sample id, what was planted."""

    folder: Path
    ids: List[str]
    bad: Dict[str, bool]
    kinds: Dict[str, Optional[str]]  # the bad kind, None for a good sample
    truth: Dict[str, Dict[str, Any]]  # what each image shows

    def bad_fraction(self, ids: Sequence[str]) -> float:
        return sum(self.bad[i] for i in ids) / len(ids) if ids else 0.0


def sample_rng(purpose: str, seed: int, index: int) -> random.Random:
    """One generator per drawn sample: sample i is the same whatever n is, and the pool and the
    models' training set draw from disjoint streams."""
    return random.Random(f"igpt4-toy:{purpose}:{seed}:{index}")


def deal_bad_kinds(ids: Sequence[str], bad_fraction: float, kinds: Sequence[str],
                   chooser: random.Random) -> Dict[str, Optional[str]]:
    """Exactly ``round(bad_fraction * len(ids))`` ids get a bad kind, the kinds dealt in turn
    (every kind present from ``len(kinds)`` bad ones on) to ids drawn with ``chooser``; the
    others None."""
    n_bad = int(round(bad_fraction * len(ids)))
    kinds_dealt = [kinds[j % len(kinds)] for j in range(n_bad)]
    chooser.shuffle(kinds_dealt)
    planted_kind: Dict[str, Optional[str]] = {i: None for i in ids}
    for sample_id, kind in zip(chooser.sample(list(ids), n_bad), kinds_dealt):
        planted_kind[sample_id] = kind
    return planted_kind


def make_toy_pool(out_dir: PathLike, n: int = 300, bad_fraction: float = 0.25, seed: int = 0,
                  image_size: int = 64) -> ToyPool:
    """Draw ``n`` images and write a cc_sbu_align folder (``filter_cap.json`` +
    ``image/<id>.jpg``, ids ``"2"``..``str(n + 1)`` as cc_sbu_align) and ``planted.json``.

    Exactly ``round(bad_fraction * n)`` samples are bad, the kinds dealt in turn (so every kind is
    present from 5 bad samples on) to randomly chosen samples.
    """
    if n < 1:
        raise InputError(f"toy pool: n must be at least 1 (got {n})")
    if not 0.0 <= bad_fraction <= 1.0:
        raise InputError(f"toy pool: bad_fraction must be in [0, 1] (got {bad_fraction})")
    out_dir = Path(out_dir)
    image_dir = out_dir / "image"
    image_dir.mkdir(parents=True, exist_ok=True)
    ids = [str(i) for i in range(2, n + 2)]
    planted_kind = deal_bad_kinds(ids, bad_fraction, BAD_KINDS,
                                  random.Random(f"igpt4-toy:planting:{seed}:{n}:{bad_fraction}"))
    wanted = {f"{i}.jpg" for i in ids}
    for stale in image_dir.glob("*.jpg"):  # a previous, larger pool in the same folder
        if stale.name not in wanted:
            stale.unlink()
    annotations, planted = [], {}
    for index, sample_id in enumerate(ids):
        rng = sample_rng("pool", seed, index)
        truth = random_truth(rng)
        with atomic_open(image_dir / f"{sample_id}.jpg", "wb") as handle:
            draw(truth, image_size).save(handle, format="JPEG", quality=92)
        clean = caption_of(truth, rng)
        kind = planted_kind[sample_id]
        caption, fault = (clean, None) if kind is None else faulty_caption(kind, truth, clean, rng)
        annotations.append({"image_id": sample_id, "caption": caption})
        planted[sample_id] = {"bad": kind is not None, "kind": kind, "truth": truth,
                              "fault": fault, "clean_caption": clean}
    write_json(out_dir / "filter_cap.json", {"annotations": annotations}, indent=4)
    write_json(out_dir / "planted.json", planted)
    return _pool_from(out_dir, ids, planted)


def _pool_from(folder: Path, ids: List[str], planted: Mapping[str, Mapping[str, Any]]) -> ToyPool:
    return ToyPool(folder, ids, {i: bool(planted[i]["bad"]) for i in ids},
                   {i: planted[i]["kind"] for i in ids}, {i: planted[i]["truth"] for i in ids})


def load_toy_pool(folder: PathLike) -> ToyPool:
    """A pool written by :func:`make_toy_pool`, read back from its ``planted.json``."""
    folder = Path(folder)
    path = folder / "planted.json"
    if not path.is_file():
        raise InputError(f"{folder}: not a toy pool (no planted.json; make it with "
                         "selector.app.toy.world.make_toy_pool)")
    planted, _ = read_json(path)
    if not isinstance(planted, dict) or not all(
            isinstance(v, dict) and {"bad", "kind", "truth"} <= set(v) for v in planted.values()):
        raise InputError(f"{path}: expected {{id: {{bad, kind, truth}}}}")
    return _pool_from(folder, list(planted), planted)

