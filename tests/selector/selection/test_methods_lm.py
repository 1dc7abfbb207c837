"""The causal-LM selection methods' rules on a synthetic pool with ``perplexity`` / ``ifd``
columns (no LM): the bands of ``perplexity``, ``ifd``'s threshold, determinism, the budget, the
diversity quotas, and the one-line refusals. The values computed by a real LM through the cache:
tests/selector/scoring/test_lm.py."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import assert_one_line_error, run_cli
from selector.core.errors import InputError
from selector.core.settings import load_settings
from selector.scoring.pool import FeaturePool
from selector.selection import methods
from selector.selection.rule import cluster_quota

N, BUDGET = 300, 30
CLUSTERS = np.repeat([0, 1, 2], N // 3)


def make_pool(n: int = N, seed: int = 0) -> FeaturePool:
    rng = np.random.default_rng(seed)
    centres = np.eye(4)[:3] * 5.0
    image = centres[np.repeat([0, 1, 2], n // 3)] + rng.normal(0, 0.1, (n, 4))
    perplexity = np.exp(rng.normal(2.0, 0.6, n))
    ifd = rng.uniform(0.3, 1.3, n)  # about a fifth at or above 1
    perplexity[:100] *= 3  # the highest perplexities mostly in cluster 0
    return FeaturePool([f"s{i:03d}" for i in range(n)], image, rng.normal(0, 1, (n, 3)),
                       np.stack([perplexity, ifd], axis=1), ["perplexity", "ifd"])


POOL = make_pool()
SETTINGS = load_settings(base="selector/default.yaml")["methods"]


def run(spec, pool=POOL, diversity=None, settings=None, num=BUDGET, seed=0):
    method, argument = methods.create(spec)
    name = method.name.replace("-", "_")
    inputs = methods.MethodInputs(pool=pool, num_samples=num, seed=seed,
                                  settings=settings if settings is not None else SETTINGS[name],
                                  argument=argument, selection={"quota_total": BUDGET + 1})
    scored = method.score(inputs)
    on = method.diversity if diversity is None else diversity
    return methods.choose(scored, inputs, on, CLUSTERS if on else None, method=spec), scored


def chosen_rows(selection, pool=POOL):
    return np.array(sorted(pool.ids.index(i) for i in selection.selected))


def test_registered_and_shipped_defaults():
    assert {"perplexity", "ifd"} <= set(methods.method_names())
    assert SETTINGS["perplexity"]["band"] == "middle" and SETTINGS["ifd"]["threshold"] == 1.0
    assert not SETTINGS["perplexity"]["diversity"] and not SETTINGS["ifd"]["diversity"]
    for spec in ("perplexity", "ifd"):
        assert not methods.create(spec)[0].uses_seed


def test_perplexity_bands():
    values = POOL.indicator("perplexity")
    order = np.argsort(values, kind="stable")
    low, _ = run("perplexity:low")
    high, _ = run("perplexity:high")
    assert list(chosen_rows(low)) == sorted(order[:BUDGET])
    assert list(chosen_rows(high)) == sorted(order[-BUDGET:])
    middle, scored = run("perplexity:middle")
    median = np.median(values)
    assert scored.details["median"] == pytest.approx(median) and scored.details["band"] == "middle"
    distance = np.abs(values - median)
    kept = distance[chosen_rows(middle)]
    dropped = np.delete(distance, chosen_rows(middle))
    assert kept.max() <= dropped.min()  # the budget closest to the median, nothing closer left
    assert values[chosen_rows(middle)].min() > values[chosen_rows(low)].max()
    # no argument: the shipped band (middle); another band through the settings
    assert run("perplexity")[0].selected == middle.selected
    assert run("perplexity", settings={"band": "low"})[0].selected == low.selected


def test_perplexity_band_bad_argument_is_one_line():
    with pytest.raises(InputError, match="band must be one of low, middle, high"):
        run("perplexity:median")


def test_ifd_keeps_the_highest_below_the_threshold():
    values = POOL.indicator("ifd")
    selection, scored = run("ifd")
    rows = chosen_rows(selection)
    assert len(rows) == BUDGET and (values[rows] < 1).all()
    below = values[values < 1]
    assert values[rows].min() >= np.sort(below)[-BUDGET]  # the highest eligible ones
    assert scored.details["eligible"] == int((values < 1).sum())
    assert scored.details["at_or_above_threshold"] == int((values >= 1).sum()) > 0
    assert scored.details["values"] == "pool column 'ifd'"
    strict, _ = run("ifd", settings={"threshold": 0.8})
    assert (values[chosen_rows(strict)] < 0.8).all()


def test_ifd_with_too_few_below_the_threshold_is_refused():
    with pytest.raises(InputError, match="eligible, fewer than the"):
        run("ifd", settings={"threshold": 0.31})
    with pytest.raises(InputError, match="takes no argument"):
        run("ifd:high")


@pytest.mark.parametrize("spec", ["perplexity:low", "perplexity:middle", "ifd"])
@pytest.mark.parametrize("diversity", [False, True])
def test_budget_determinism_and_quotas(spec, diversity):
    first, _ = run(spec, diversity=diversity)
    assert len(first.selected) == BUDGET == len(set(first.selected))
    assert run(spec, diversity=diversity, seed=7)[0].selected == first.selected
    if diversity:  # the quotas of the eligible rows' clusters (ifd: those below 1)
        rows = chosen_rows(first)
        counts = np.bincount(CLUSTERS[rows], minlength=3)
        quotas = np.array([first.quotas[str(c)] for c in range(3)])
        assert (counts <= quotas + first.rule["filled"]).all()
        if spec == "ifd":
            assert (POOL.indicator("ifd")[rows] < 1).all()
        else:
            assert counts.tolist() == [10, 10, 10] == [cluster_quota(N // 3, BUDGET + 1, N)] * 3


def test_without_the_column_or_data_and_work_is_one_line():
    pool = FeaturePool(POOL.ids, POOL.image, POOL.text, POOL.indicators[:, :1], ["perplexity"])
    with pytest.raises(InputError) as caught:
        run("ifd", pool=pool)
    message = str(caught.value)
    assert "\n" not in message and "no 'ifd' column" in message and "--data and --work" in message


def test_cli_refuses_an_ifd_pool_without_column_in_one_line(tmp_path):
    pool = FeaturePool(POOL.ids, POOL.image, POOL.text, POOL.indicators[:, :1], ["perplexity"])
    pool.save(tmp_path / "pool.safetensors")
    result = run_cli("select", "--pool", str(tmp_path / "pool.safetensors"), "--method", "ifd",
                     "--num", "5", "--out", str(tmp_path / "sel"))
    assert_one_line_error(result, "no 'ifd' column", "--data and --work")
    ok = run_cli("select", "--pool", str(tmp_path / "pool.safetensors"), "--method",
                 "perplexity:high", "--num", "5", "--out", str(tmp_path / "sel"))
    assert ok.returncode == 0, ok.stderr
    manifest = json.loads((tmp_path / "sel" / "manifest.json").read_text())
    assert manifest["method"]["band"] == "high" and manifest["method"]["seed"] is None
    top = np.argsort(-POOL.indicator("perplexity"), kind="stable")[:5]
    assert sorted(manifest["selected"]) == sorted(POOL.ids[i] for i in top)


def test_settings_schema_checks_the_blocks():
    with pytest.raises(InputError, match="methods.perplexity.band"):
        load_settings(base="selector/default.yaml", overrides=["methods.perplexity.band=median"])
    with pytest.raises(InputError, match="methods.ifd.threshold"):
        load_settings(base="selector/default.yaml", overrides=["methods.ifd.threshold=-1"])
    changed = load_settings(base="selector/default.yaml",
                            overrides=["methods.ifd.lm.max_length=64"])
    assert changed["methods"]["ifd"]["lm"] == {"max_length": 64}
