"""selector.app.toy: the drawn toy pool with planted bad samples, the tiny models, the oracle."""
from __future__ import annotations

import hashlib
import importlib.util
import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from selector.app.toy import clip, models, oracle, text, world
from selector.app.toy.world import BAD_KINDS, COLOURS, SHAPES
from selector.core.errors import InputError
from selector.data.samples import read_cc_sbu_align

# the caption parser of these tests: written against English, not against the module's templates
NUMBERS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6}
THING = re.compile(r"\b(a|an|one|two|three|four|five|six) (%s) (%s)s?\b"
                   % ("|".join(COLOURS), "|".join(SHAPES)), re.IGNORECASE)

needs_models = pytest.mark.skipif(
    importlib.util.find_spec("open_clip") is None
    or importlib.util.find_spec("transformers") is None,
    reason="open_clip / transformers are not installed (make test installs them)")


def inventory(caption: str) -> Counter:
    """{(colour, shape): count} listed in the caption's first sentence."""
    first = caption.split(".")[0]
    found: Counter = Counter()
    for number, colour, shape in THING.findall(first):
        found[(colour.lower(), shape.lower())] += NUMBERS[number.lower()]
    return found


def truth_inventory(truth) -> Counter:
    return Counter((s["colour"], s["shape"]) for s in truth["shapes"])


def captions_of(folder: Path):
    document = json.loads((folder / "filter_cap.json").read_text(encoding="utf-8"))
    return {a["image_id"]: a["caption"] for a in document["annotations"]}


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    return world.make_toy_pool(tmp_path_factory.mktemp("toy") / "cc", n=200, seed=7)


@pytest.fixture(scope="module")
def planted(pool):
    return json.loads((pool.folder / "planted.json").read_text(encoding="utf-8"))


def test_a_seed_gives_the_same_pool_byte_for_byte_and_another_seed_another(tmp_path):
    first = world.make_toy_pool(tmp_path / "a", n=30, seed=3)
    again = world.make_toy_pool(tmp_path / "b", n=30, seed=3)
    other = world.make_toy_pool(tmp_path / "c", n=30, seed=4)
    for name in ("filter_cap.json", "planted.json", "image/2.jpg", "image/31.jpg"):
        assert (first.folder / name).read_bytes() == (again.folder / name).read_bytes()
    assert (first.folder / "filter_cap.json").read_bytes() \
        != (other.folder / "filter_cap.json").read_bytes()
    assert first.kinds == again.kinds and first.kinds != other.kinds


def test_the_bad_fraction_is_exact_and_every_kind_is_planted(pool, tmp_path):
    assert pool.ids == [str(i) for i in range(2, 202)]  # cc_sbu_align's ids start at 2
    assert sum(pool.bad.values()) == 50
    kinds = Counter(k for k in pool.kinds.values() if k is not None)
    assert set(kinds) == set(BAD_KINDS) and set(kinds.values()) == {10}
    assert all(pool.bad[i] == (pool.kinds[i] is not None) for i in pool.ids)
    clean = world.make_toy_pool(tmp_path / "clean", n=12, bad_fraction=0.0)
    assert not any(clean.bad.values())
    with pytest.raises(InputError, match="bad_fraction"):
        world.make_toy_pool(tmp_path / "x", n=5, bad_fraction=1.5)


def test_good_captions_list_exactly_the_drawn_shapes(pool):
    captions = captions_of(pool.folder)
    good = [i for i in pool.ids if not pool.bad[i]]
    assert len(good) == 150
    counts_seen = Counter()
    for sample_id in good:
        truth = pool.truth[sample_id]
        assert inventory(captions[sample_id]) == truth_inventory(truth), captions[sample_id]
        for colour in truth["background"]["colours"]:
            assert colour in captions[sample_id].split(".")[0]
        assert captions[sample_id].endswith(".")
        counts_seen.update(truth_inventory(truth).values())
    assert {1, 2} <= set(counts_seen)  # counts above one do occur


def test_the_images_show_the_truth(pool):
    """The centre pixel of the last-drawn shape (nothing covers it) has that shape's colour."""
    from PIL import Image

    for sample_id in pool.ids[:60]:
        with Image.open(pool.folder / "image" / f"{sample_id}.jpg") as image:
            rgb = np.asarray(image.convert("RGB"), dtype=np.float64)
        top = pool.truth[sample_id]["shapes"][-1]
        side = rgb.shape[0]
        pixel = rgb[int(top["y"] * side), int(top["x"] * side)]
        distances = {name: np.abs(pixel - np.array(value)).sum()
                     for name, value in COLOURS.items()}
        assert min(distances, key=distances.get) == top["colour"], (sample_id, pixel)


def test_bad_captions_break_the_truth_in_their_planted_way(pool, planted):
    captions = captions_of(pool.folder)
    checked = Counter()
    for sample_id in pool.ids:
        kind, caption = pool.kinds[sample_id], captions[sample_id]
        truth = truth_inventory(pool.truth[sample_id])
        clean = planted[sample_id]["clean_caption"]
        assert inventory(clean) == truth  # the caption before the fault was faithful
        if kind == "wrong_colour":
            said = inventory(caption)
            assert said != truth
            # the same shapes and counts, one group's colour replaced by an absent colour
            assert sorted((s, n) for (_, s), n in said.items()) \
                == sorted((s, n) for (_, s), n in truth.items())
            new_colours = {c for c, _ in said} - {c for c, _ in truth}
            assert len(new_colours) == 1
        elif kind == "wrong_count":
            said = inventory(caption)
            assert set(said) == set(truth)
            assert sum(said[key] != truth[key] for key in truth) == 1
        elif kind == "truncated":
            assert clean.startswith(caption) and len(caption) < len(clean)
            assert not caption.endswith(".") and clean[len(caption)] == " "
            assert not clean[:len(caption)].rstrip().endswith(".")  # cut inside a sentence
        elif kind == "repetitive":
            sentences = re.split(r"(?<=\.) ", caption)
            sentence, times = Counter(sentences).most_common(1)[0]
            assert times >= 5
            assert " ".join(s for n, s in enumerate(sentences)
                            if n == 0 or s != sentences[n - 1]) == clean
        elif kind == "off_topic":
            words = set(re.findall(r"[a-z]+", caption.lower()))
            assert not words & (set(SHAPES) | {f"{s}s" for s in SHAPES} | set(COLOURS))
            assert caption.endswith(".")
        else:
            assert caption == clean
        checked[kind] += 1
    assert set(checked) == set(BAD_KINDS) | {None}


def test_the_folder_reads_back_as_cc_sbu_align_and_as_a_toy_pool(pool):
    data = read_cc_sbu_align(pool.folder)  # checks every image decodes
    assert data.ids == pool.ids and not data.skipped
    assert [s.answer for s in data.samples] == [captions_of(pool.folder)[i] for i in pool.ids]
    again = world.load_toy_pool(pool.folder)
    assert (again.ids, again.bad, again.kinds, again.truth) \
        == (pool.ids, pool.bad, pool.kinds, pool.truth)


def test_a_smaller_pool_in_the_same_folder_leaves_no_stale_images(tmp_path):
    world.make_toy_pool(tmp_path / "cc", n=8)
    small = world.make_toy_pool(tmp_path / "cc", n=3)
    assert sorted(p.name for p in (small.folder / "image").iterdir()) \
        == ["2.jpg", "3.jpg", "4.jpg"]
    with pytest.raises(InputError, match="planted.json"):
        world.load_toy_pool(tmp_path)


@needs_models
def test_the_toy_model_settings_run_igpt4_score_end_to_end(tmp_path):
    from omegaconf import OmegaConf

    from selector.scoring.pool import FeaturePool
    from selector.scoring.score import score
    from selector.core.settings import config_dir

    small = world.make_toy_pool(tmp_path / "cc", n=40, seed=1)
    overrides = models.build_toy_models(tmp_path / "models", seed=1, train_clip=False,
                                        train_reward=False, progress=False)
    settings = OmegaConf.to_container(OmegaConf.merge(
        OmegaConf.load(config_dir() / "indicators" / "default.yaml"),
        OmegaConf.create(json.loads(json.dumps(overrides)))), resolve=True)
    names = settings["pool"]["indicators"]
    assert names == ["clip", "reward", "length"]
    summary = score(small.folder, tmp_path / "work", tmp_path / "scores.jsonl", names, settings,
                    pool_out=tmp_path / "pool.safetensors")
    assert summary.complete and summary.samples == 40
    features = FeaturePool.load(tmp_path / "pool.safetensors")
    assert features.ids == small.ids and features.indicator_names == names
    assert features.image.shape == (40, models.PCA_COMPONENTS)
    rows = [json.loads(line) for line in (tmp_path / "scores.jsonl").read_text().splitlines()]
    for name in names:
        assert len({round(r[name], 6) for r in rows}) > 10, name  # real per-sample values

    # cached: the same folder and seed reuse the files; another seed rebuilds
    checkpoint = Path(overrides["indicators"]["clip"]["pretrained"])
    weights, stamp = checkpoint.read_bytes(), checkpoint.stat().st_mtime_ns
    assert models.build_toy_models(tmp_path / "models", seed=1, train_clip=False,
                                   train_reward=False, progress=False) == overrides
    assert checkpoint.stat().st_mtime_ns == stamp
    models.build_toy_models(tmp_path / "models", seed=2, train_clip=False, train_reward=False,
                            progress=False)
    assert checkpoint.read_bytes() != weights


@needs_models
def test_contrastive_training_on_separate_good_pairs_makes_the_clip_score_see_colours(
        pool, tmp_path):
    from selector.scoring.indicators import create

    data = read_cc_sbu_align(pool.folder)
    auc = {}
    for label, train in (("random", False), ("trained", True)):
        config, checkpoint, report = clip.toy_clip(
            tmp_path / label, seed=0, train=train, progress=False,
            training={"pairs": 600, "steps": 60})  # a third of the real build's training
        indicator = create("clip", model=clip.TOY_CLIP_NAME, pretrained=str(checkpoint),
                           model_config=str(config), num_workers=0, progress=False)
        values = {v.sample_id: v.value for v in indicator.score(data.samples)}
        auc[label] = oracle.planted_auc(pool, values)
    assert report["trained"] and report["loss_last"] < report["loss_first"]
    # colour swaps and off-topic captions now score below faithful captions
    assert auc["trained"]["wrong_colour"] > 0.75
    assert auc["trained"]["wrong_colour"] > auc["random"]["wrong_colour"] + 0.15
    assert auc["trained"]["off_topic"] > max(0.75, auc["random"]["off_topic"] + 0.15)


@needs_models
def test_preference_training_makes_the_reward_punish_truncation_and_repetition(pool, tmp_path):
    from selector.scoring.indicators import create

    data = read_cc_sbu_align(pool.folder)
    auc = {}
    for label, train in (("random", False), ("trained", True)):
        folder, report = text.toy_reward_model(tmp_path / label, seed=0, train=train,
                                               progress=False, training={"steps": 50})
        indicator = create("reward", model=str(folder), batch_size=32, max_length=128,
                           progress=False)
        auc[label] = oracle.planted_auc(
            pool, {v.sample_id: v.value for v in indicator.score(data.samples)})
    assert report["trained"] and report["loss_last"] < report["loss_first"]
    for kind in text.TEXT_FAULTS:
        assert auc["trained"][kind] > max(0.75, auc["random"][kind] + 0.15), (kind, auc)


def test_planted_auc_is_one_for_a_perfect_indicator_and_flips_with_direction(pool):
    perfect = {i: 0.0 if pool.bad[i] else 1.0 for i in pool.ids}
    assert oracle.planted_auc(pool, perfect) == {k: 1.0 for k in ("all",) + BAD_KINDS}
    assert oracle.planted_auc(pool, perfect, higher_is_better=False)["all"] == 0.0


def test_oracle_labels_fall_with_the_planted_bad_fraction(pool):
    good = [i for i in pool.ids if not pool.bad[i]]
    bad = [i for i in pool.ids if pool.bad[i]]
    subsets = {f"bad{q}": good[:20 - q] + bad[:q] for q in (0, 5, 10, 20)}
    labels = oracle.oracle_labels(subsets, pool, seed=0)
    assert labels["bad0"] > labels["bad5"] > labels["bad10"] > labels["bad20"]
    # deterministic, and a subset's label does not depend on the other subsets or their order
    assert oracle.oracle_labels(dict(reversed(list(subsets.items()))), pool) == labels
    assert oracle.oracle_labels({"bad5": subsets["bad5"]}, pool) == {"bad5": labels["bad5"]}
    noisy = [oracle.oracle_labels({"bad0": subsets["bad0"]}, pool, seed=s)["bad0"]
             for s in range(30)]
    exact = oracle.oracle_labels({"bad0": subsets["bad0"]}, pool, noise=0.0)["bad0"]
    assert 0.02 < float(np.std(noisy)) < 0.3 and abs(float(np.mean(noisy)) - exact) < 0.1


def test_oracle_bad_kinds_hurt_differently_and_bad_input_is_named(pool):
    by_kind = {k: [i for i in pool.ids if pool.kinds[i] == k][:5] for k in BAD_KINDS}
    good = [i for i in pool.ids if not pool.bad[i]][:15]
    labels = oracle.oracle_labels({k: good + ids for k, ids in by_kind.items()}, pool,
                                  noise=0.0)
    assert labels["off_topic"] < labels["truncated"]  # ignoring the image vs a cut-off style
    assert len(set(labels.values())) > 2
    with pytest.raises(InputError, match="'9999'"):
        oracle.oracle_labels({"s": ["2", "9999"]}, pool)
    with pytest.raises(InputError, match="empty"):
        oracle.oracle_labels({"s": []}, pool)


def test_the_toy_pool_files_are_pinned_byte_for_byte(tmp_path):
    """The drawing, captions, faults and planting draw exactly what they always drew: the demo's
    pool, and every number a test pins on it, stay the same (images depend on the JPEG encoder,
    so only the JSON files are pinned)."""
    world.make_toy_pool(tmp_path, n=12, bad_fraction=0.5, seed=0)
    digests = {name: hashlib.sha256((tmp_path / name).read_bytes()).hexdigest()
               for name in ("filter_cap.json", "planted.json")}
    assert digests == {
        "filter_cap.json": "1e3bb75c102de287db8381f071cf86e415bd9fd0c4c54e7edeee9dc8e692e931",
        "planted.json": "44f698ecfd0ea1f4a9dce3af4ccdf0707214984b448154cefac7341d5b0d679b"}


def test_the_demo_models_cache_key_and_recipes_are_pinned():
    """A user's cached ``toy_models`` folder is reused only while its key matches: what the key
    holds (version, architectures, training recipes) must not change unless MODELS_VERSION is
    bumped."""
    assert models.MODELS_VERSION == 1 and models.PCA_COMPONENTS == 4
    assert clip.TOY_CLIP_NAME == "igpt4-toy-clip"
    assert clip.TOY_CLIP == {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": 2, "width": 48, "head_width": 24,
                       "patch_size": 4},
        "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 48, "heads": 2,
                     "layers": 1}}
    assert clip.CLIP_TRAINING == {"pairs": 2000, "steps": 200, "batch_size": 64, "lr": 3e-3,
                                  "weight_decay": 0.05}
    assert text.REWARD_TRAINING == {"pairs": 800, "steps": 80, "batch_size": 16, "lr": 2e-3,
                                    "max_length": 128}


@needs_models
def test_tiny_and_toy_text_models_share_one_builder(tmp_path):
    """The tests' tiny models and the demo's come from the same builders: the same architecture,
    only the vocabulary, the positions and the training differ."""
    from transformers import AutoConfig, AutoTokenizer

    tiny = AutoConfig.from_pretrained(text.tiny_reward_model(tmp_path / "tiny"))
    toy = AutoConfig.from_pretrained(text.toy_reward_model(tmp_path / "toy", train=False,
                                                           progress=False)[0])
    shared = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
              "num_labels", "pos_att_type")
    assert [getattr(tiny, k) for k in shared] == [getattr(toy, k) for k in shared]
    assert (tiny.vocab_size, tiny.max_position_embeddings) == (300, 128)
    assert toy.max_position_embeddings == 512
    pair = AutoTokenizer.from_pretrained(tmp_path / "tiny")("a red square", "two stars")
    assert pair.input_ids[0] == 2 and pair.input_ids[-1] == 3  # [CLS] ... [SEP]
    llama = AutoTokenizer.from_pretrained(text.tiny_llama(tmp_path / "llama"))
    assert llama("a red square").input_ids[0] == llama.bos_token_id == 4
    options = models.tiny_score_settings(Path("m/x.json"), Path("m/x.pt"), Path("l"))
    assert options[::2] == ["--set"] * 10 and "indicators.clip.model=x" in options
