"""Selection methods (issue 14): determinism per seed, the budget met exactly, the diversity
step's quotas, each method's defining property, and the one-line refusals through the CLI."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import assert_one_line_error, make_cc_sbu_align, make_conversations, run_cli
from selector.core.errors import InputError
from selector.core.settings import load_settings
from selector.data.samples import read_pool
from selector.scoring.pool import FeaturePool
from selector.selection import methods
from selector.selection.rule import cluster_quota, random_k, top_k_by
from selector.selection.select import select

N, BUDGET = 300, 30
CLUSTERS = np.repeat([0, 1, 2], N // 3)  # three equal clusters: quota 31 * 100 // 300 = 10 each


def make_pool(n: int = N, seed: int = 0) -> FeaturePool:
    rng = np.random.default_rng(seed)
    centres = np.array([[5.0, 0, 0, 0], [0, 5.0, 0, 0], [0, 0, 5.0, 0]])
    image = centres[np.repeat([0, 1, 2], n // 3)] + rng.normal(0, 0.1, (n, 4))
    clip = rng.normal(25, 5, n)
    reward = rng.normal(0, 1, n)
    clip[:100] += 10  # the best CLIP scores all in cluster 0: top/threshold ignore diversity
    return FeaturePool([f"s{i:03d}" for i in range(n)], image, rng.normal(0, 1, (n, 3)),
                       np.stack([clip, reward], axis=1), ["clip", "reward"])


def inputs_for(pool, seed=0, argument=None, data=None, settings=None, num=BUDGET):
    return methods.MethodInputs(pool=pool, num_samples=num, seed=seed, settings=settings or {},
                                argument=argument, data=data,
                                selection={"quota_total": BUDGET + 1})


def run(spec, pool, seed=0, diversity=None, data=None, settings=None, num=BUDGET):
    method, argument = methods.create(spec)
    inputs = inputs_for(pool, seed, argument, data, settings, num)
    scored = method.score(inputs)
    on = method.diversity if diversity is None else diversity
    return methods.choose(scored, inputs, on, CLUSTERS if on else None, method=spec), scored


POOL = make_pool()
SEEDED = ["random", "cluster-random", "threshold:clip=25"]
DETERMINISTIC = ["top:clip", "bottom:reward"]


def test_registry_and_spec_parsing():
    names = methods.method_names()
    for name in ("random", "cluster-random", "top", "bottom", "threshold", "length", "selector"):
        assert name in names
    assert methods.parse_spec("top:clip") == ("top", "clip")
    assert methods.parse_spec("threshold:clip=30") == ("threshold", "clip=30")
    assert methods.parse_spec("random") == ("random", None)
    with pytest.raises(InputError, match="did you mean 'random'"):
        methods.parse_spec("randon")


@pytest.mark.parametrize("spec", SEEDED)
def test_seeded_methods_are_deterministic_per_seed(spec):
    first, _ = run(spec, POOL, seed=1)
    again, _ = run(spec, POOL, seed=1)
    other, _ = run(spec, POOL, seed=2)
    assert first.selected == again.selected and first.selected != other.selected
    assert methods.create(spec)[0].uses_seed


@pytest.mark.parametrize("spec", DETERMINISTIC)
def test_deterministic_methods_ignore_the_seed(spec):
    assert run(spec, POOL, seed=1)[0].selected == run(spec, POOL, seed=99)[0].selected
    assert not methods.create(spec)[0].uses_seed


@pytest.mark.parametrize("spec", SEEDED + DETERMINISTIC)
@pytest.mark.parametrize("diversity", [False, True])
def test_budget_exactly_met(spec, diversity):
    for num in (1, 7, BUDGET):
        selection, _ = run(spec, POOL, diversity=diversity, num=num)
        assert len(selection.selected) == num == len(set(selection.selected))


@pytest.mark.parametrize("spec", SEEDED + DETERMINISTIC)
def test_quotas_respected_with_diversity_on(spec):
    selection, _ = run(spec, POOL, diversity=True)
    counts = np.bincount([int(selection.cluster_of[i]) for i in selection.selected], minlength=3)
    quotas = np.array([selection.quotas[str(c)] for c in range(3)])
    filled = selection.rule["filled"]  # the fill-up past truncated quotas (only when they fall short)
    assert (counts <= quotas + filled).all() and counts.sum() == BUDGET
    assert filled == max(0, BUDGET - int(quotas.sum()))
    if not spec.startswith("threshold"):  # every row eligible: the selector's own quotas
        quota = cluster_quota(N // 3, BUDGET + 1, N)
        assert filled == 0 and (quotas == quota).all() and (counts <= quota).all()


def test_cluster_random_keeps_the_selector_quotas_and_random_does_not_need_them():
    clustered, _ = run("cluster-random", POOL, seed=3)
    counts = np.bincount([int(i[1:]) // 100 for i in clustered.selected], minlength=3)
    assert counts.tolist() == [10, 10, 10]  # quota 10 each, a budget of 30: exactly the quotas
    plain, scored = run("random", POOL, seed=3)
    assert plain.quotas == {} and scored.eligible is None
    # random is the top of one uniform draw per row: a uniform sample without replacement
    draws = np.random.default_rng(3).random(N)
    assert plain.selected == sorted(POOL.ids[i] for i in np.argsort(-draws)[:BUDGET])


def test_top_and_bottom_are_the_extremes():
    clip = POOL.indicator("clip")
    top, _ = run("top:clip", POOL)
    bottom, _ = run("bottom:clip", POOL)
    rows = POOL.positions(top.selected)
    assert clip[rows].min() >= np.sort(clip)[-BUDGET]
    assert top.selected == top_k_by(POOL.ids, clip, BUDGET)
    rows = POOL.positions(bottom.selected)
    assert clip[rows].max() <= np.sort(clip)[BUDGET - 1]


def test_threshold_keeps_only_values_above_it():
    clip = POOL.indicator("clip")
    for value in (20.0, 30.0, float(np.sort(clip)[-BUDGET - 1])):
        for seed in (0, 1):
            selection, scored = run(f"threshold:clip={value}", POOL, seed=seed)
            assert (clip[POOL.positions(selection.selected)] > value).all()
            assert scored.details["eligible"] == int((clip > value).sum())
    # exactly BUDGET above: those are kept, whatever the seed
    edge = float(np.sort(clip)[-BUDGET - 1])
    assert run(f"threshold:clip={edge}", POOL)[0].selected == run("top:clip", POOL)[0].selected
    by_score, _ = run("threshold:clip=20", POOL, settings={"fill": "score"})
    assert by_score.selected == run("top:clip", POOL)[0].selected


def test_threshold_with_too_few_eligible_is_refused():
    with pytest.raises(InputError, match="threshold:clip=1000: only 0 of the pool's 300"):
        run("threshold:clip=1000", POOL)
    for bad in ("threshold:clip", "threshold:clip=abc", "threshold:=3", "threshold:clip=nan"):
        with pytest.raises(InputError, match="threshold"):
            run(bad, POOL)
    with pytest.raises(InputError, match="no indicator 'nope'"):
        run("threshold:nope=3", POOL)
    with pytest.raises(InputError, match="needs an indicator"):
        run("top", POOL)


def test_length_picks_the_longest_answers(tmp_path):
    ids = [f"s{i:03d}" for i in range(12)]
    captions = {i: " ".join(["word"] * (n % 7 + 1)) + " x" * (n // 7) for n, i in enumerate(ids)}
    data = read_pool(make_cc_sbu_align(tmp_path / "cc", captions), check_images=False)
    pool = make_pool(12).take(ids)
    words = np.array([len(captions[i].split()) for i in ids])
    selection, scored = run("length", pool, data=data, num=4, seed=5)
    assert scored.scores.tolist() == words.tolist()
    assert sorted(words[pool.positions(selection.selected)]) == sorted(words)[-4:]
    assert selection.selected == run("length", pool, data=data, num=4, seed=6)[0].selected
    chars, _ = run("length", pool, data=data, num=4, settings={"unit": "characters"})
    assert chars.selected == sorted(sorted(ids, key=lambda i: -len(captions[i]))[:4])
    assert not methods.create("length")[0].uses_seed
    with pytest.raises(InputError, match="needs the samples' text: give --data"):
        run("length", pool)


def test_length_of_a_conversation_sums_its_gpt_turns(tmp_path):
    path = make_conversations(tmp_path)  # a1: "A red square." + "Red."; b2: "A blue field."
    data = read_pool(path, check_images=False)
    pool = make_pool(3).take(["s000", "s001"])
    pool.ids = ["a1", "b2"]
    _, scored = run("length", pool, data=data, num=1)
    assert scored.scores.tolist() == [4.0, 3.0]


def test_choose_restricts_diversity_to_eligible_rows():
    eligible = np.zeros(N, dtype=bool)
    eligible[::3] = True
    scored = methods.MethodScores(np.arange(N, dtype=float), eligible)
    inputs = inputs_for(POOL)
    for diversity in (False, True):
        selection = methods.choose(scored, inputs, diversity, CLUSTERS if diversity else None)
        assert eligible[POOL.positions(selection.selected)].all()
        assert len(selection.selected) == BUDGET


# -- select(): the baselines keep their draws, the manifest records the method ----------------

@pytest.fixture(scope="module")
def pool_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("pool") / "pool.safetensors"
    make_pool().save(path)
    return path


def test_baselines_keep_the_draws_of_earlier_releases(pool_file, tmp_path):
    settings = load_settings(None, [f"selection.num_samples={BUDGET}", "selection.cluster_seed=7"])
    chosen = select(tmp_path / "r", settings, pool_file, baseline="random")
    assert chosen == random_k(POOL.ids, BUDGET, 7)
    chosen = select(tmp_path / "t", settings, pool_file, baseline="top:clip")
    assert chosen == top_k_by(POOL.ids, POOL.indicator("clip"), BUDGET)
    manifest = json.loads((tmp_path / "t" / "manifest.json").read_text())
    assert manifest["method"] == {"name": "top", "argument": "clip", "seed": None,
                                  "diversity": False, "settings": {"diversity": False},
                                  "indicator": "clip"}
    scores = [s["score"] for s in manifest["samples"]]
    assert np.allclose(scores, POOL.indicator("clip"))


def test_select_records_method_seed_and_diversity(pool_file, tmp_path):
    settings = load_settings(None, [f"selection.num_samples={BUDGET}", "selection.n_clusters=3",
                                    f"selection.quota_total={BUDGET + 1}"])
    chosen = select(tmp_path / "c", settings, pool_file, method="cluster-random", seed=4)
    manifest = json.loads((tmp_path / "c" / "manifest.json").read_text())
    assert manifest["method"]["name"] == "cluster-random" and manifest["method"]["seed"] == 4
    assert manifest["method"]["diversity"] is True and manifest["settings"]["seed"] == 4
    assert len(chosen) == BUDGET and manifest["quotas"] == {"0": 10, "1": 10, "2": 10}
    assert manifest["clustering"]["n_clusters"] == 3
    assert "methods" not in manifest["settings"]
    assert select(tmp_path / "c2", settings, pool_file, method="cluster-random", seed=4) == chosen
    off = select(tmp_path / "n", settings, pool_file, method="cluster-random", seed=4,
                 diversity=False)
    assert off == run("random", POOL, seed=4)[0].selected


# -- the CLI: one line, exit 2 -----------------------------------------------------------------

def test_cli_method_runs_and_refusals_are_one_line(pool_file, tmp_path):
    result = run_cli("select", "--pool", pool_file, "--method", "threshold:clip=25", "--seed",
                     "3", "--num", "10", "--out", tmp_path / "ok")
    assert result.returncode == 0, result.stderr
    assert len((tmp_path / "ok" / "selected.txt").read_text().split()) == 10
    for args, fragment in [
            (["--method", "nonsense"], "unknown selection method 'nonsense'"),
            (["--method", "top:nope"], "no indicator 'nope'"),
            (["--method", "threshold:clip=abc"], "'abc' is not a finite number"),
            (["--method", "threshold:clip=1000"], "only 0 of the pool's 300 samples"),
            (["--method", "length"], "give --data"),
            (["--method", "random", "--baseline", "random"], "not both"),
            (["--baseline", "random", "--diversity"], "--baseline keeps the draws"),
            (["--method", "random", "--set", "model.score_rounds=2"], "not to --method random")]:
        assert_one_line_error(run_cli("select", "--pool", pool_file, "--num", "10", "--out",
                                      tmp_path / "bad", *args), fragment)
    assert not (tmp_path / "bad").exists()


def test_cli_length_reads_the_data_and_keeps_the_longest(tmp_path):
    pool = make_pool(12)
    pool.save(tmp_path / "pool.safetensors")
    captions = {i: " ".join(["word"] * (n + 1)) for n, i in enumerate(pool.ids)}
    data = make_cc_sbu_align(tmp_path / "cc", captions)
    result = run_cli("select", "--pool", tmp_path / "pool.safetensors", "--method", "length",
                     "--num", "3", "--data", data, "--out", tmp_path / "out", "--diversity",
                     "--set", "selection.n_clusters=3", "--set", "selection.quota_total=3")
    assert result.returncode == 0, result.stderr
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["method"]["diversity"] is True and manifest["method"]["seed"] is None
    assert [s["score"] for s in manifest["samples"]] == [float(n + 1) for n in range(12)]
    assert sum(manifest["quotas"].values()) == 3 and manifest["num_selected"] == 3
    for cluster in manifest["quotas"]:  # one per cluster: the longest answer of each
        members = [s for s in manifest["samples"] if s["cluster"] == cluster]
        assert [s["selected"] for s in members if s["score"] == max(m["score"] for m in
                                                                     members)] == [True]
    assert (tmp_path / "out" / "filter_cap.json").is_file()
