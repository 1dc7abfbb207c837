"""Pins for selector.core.cache and selector.scoring.store (found by tests/mutation_score.py):
what the cache key is made of, the 500-id lookup chunks, what a chunk of embeddings stores, and
the chunk sizes that scoring uses.

All in process and on small synthetic samples (no image decoding), so each runs in milliseconds.
"""
from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

from selector.data.samples import Sample, Turn
from selector.core.cache import Failure, IndicatorValue, ReplyStore, Store, settings_hash
from selector.scoring.indicators import Indicator
from selector.scoring.store import sample_hash, score_cached


def _sample(sample_id: str, answer: str = "an answer", image: Path = Path("/nonexistent/x.jpg"),
            ref: str = "x.jpg", question: str = "<image> what?") -> Sample:
    return Sample(sample_id, image, (Turn("human", question), Turn("gpt", answer)), ref)


class Recording(Indicator):
    """Scores ``len(answer)``; records the size of every ``score`` call."""

    name = "recording"

    def __init__(self, chunk_size=None, fail=()):
        self.chunk_size = chunk_size
        self.calls = []
        self.fail = set(fail)
        self.store = None

    def settings(self):
        return {"v": 1}

    def attach_store(self, store):
        self.store = store

    def score(self, samples):
        self.calls.append(len(samples))
        return [IndicatorValue(s.id, None, Failure("HTTP 503")) if s.id in self.fail
                else IndicatorValue(s.id, float(len(s.answer)), None, {"n": len(s.answer)})
                for s in samples]


# --- the cache key -----------------------------------------------------------------------------

def test_settings_hash_is_the_documented_digest_of_name_and_settings():
    # a change of this formula silently recomputes (and re-pays for) every user's cache
    assert settings_hash("length", {"scale": 10.0, "normaliser": 1009.0}) == "24891b7557c9ba56"
    assert settings_hash("length", {"normaliser": 1009.0, "scale": 10.0}) == "24891b7557c9ba56"
    assert settings_hash("clip", {"scale": 10.0, "normaliser": 1009.0}) != "24891b7557c9ba56"
    assert settings_hash("length", {"path": Path("/a")}) == settings_hash("length", {"path": "/a"})


def test_sample_hash_covers_turns_and_image_bytes_not_the_image_path(tmp_path):
    image = tmp_path / "a.jpg"
    image.write_bytes(b"\xff\xd8 some jpeg bytes")
    base = sample_hash(_sample("1", image=image, ref="a.jpg"))
    assert len(base) == 32 and base == "39411acc90f9d096fe4ab3f6151005a3"
    moved = tmp_path / "elsewhere" / "b.jpg"
    moved.parent.mkdir()
    moved.write_bytes(image.read_bytes())
    # the same bytes under another name or folder (a copied data set) keep the cache
    assert sample_hash(_sample("2", image=moved, ref="b.jpg")) == base
    moved.write_bytes(b"\xff\xd8 other bytes")
    assert sample_hash(_sample("1", image=moved, ref="a.jpg")) != base
    assert sample_hash(_sample("1", "another answer", image=image)) != base
    assert sample_hash(_sample("1", image=image, question="<image> why?")) != base
    swapped = Sample("1", image, (Turn("gpt", "<image> what?"), Turn("human", "an answer")), "a")
    assert sample_hash(swapped) != base  # roles count, not only the texts


def test_sample_hash_reads_images_larger_than_one_block(tmp_path):
    image = tmp_path / "big.jpg"
    image.write_bytes(b"a" * (1 << 20) + b"b" * 10)
    other = tmp_path / "big2.jpg"
    other.write_bytes(b"a" * (1 << 20) + b"c" * 10)
    assert sample_hash(_sample("1", image=image)) != sample_hash(_sample("1", image=other))


def test_sample_hash_without_image_bytes_uses_the_reference(tmp_path):
    image = tmp_path / "a.jpg"
    image.write_bytes(b"bytes")
    by_ref = sample_hash(_sample("1", image=image, ref="a.jpg"), image_bytes=False)
    assert by_ref == sample_hash(_sample("1", ref="a.jpg"))  # a missing file: the reference
    assert by_ref != sample_hash(_sample("1", ref="b.jpg"))
    assert by_ref != sample_hash(_sample("1", image=image, ref="a.jpg"))
    assert by_ref == "9394af0f72269588df79839e4c9ddf7c"


# --- the store ---------------------------------------------------------------------------------

def test_store_file_lives_in_the_work_dir_in_wal_mode(tmp_path):
    with Store(tmp_path / "new" / "work") as store:
        assert store.path == tmp_path / "new" / "work" / "cache.sqlite"
        assert store.connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert store.connection.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
        store.put("x", "k", {"a": 1}, [("h", IndicatorValue("s", 1.0))])
    connection = sqlite3.connect(str(tmp_path / "new" / "work" / "cache.sqlite"))
    assert connection.execute("SELECT COUNT(*) FROM indicator_values").fetchone()[0] == 1
    connection.close()


def test_lookups_cross_the_500_id_chunk_boundary(tmp_path):
    hashes = [f"h{i:04d}" for i in range(1201)]
    with Store(tmp_path) as store:
        store.put("x", "k", {}, [(h, IndicatorValue(h, float(i))) for i, h in enumerate(hashes)])
        for n in (499, 500, 501, 1000, 1001, 1201):
            found = store.get("x", "k", hashes[:n])
            assert sorted(found) == hashes[:n], n
        statements = []
        store.connection.set_trace_callback(statements.append)
        found = store.get("x", "k", hashes)
        store.connection.set_trace_callback(None)
        selects = [s for s in statements if s.startswith("SELECT")]
        assert len(selects) == 3  # 500 + 500 + 201 ids, each id in one lookup only
        assert [s.count("'h") for s in selects] == [500, 500, 201]
        assert found["h0500"].value == 500.0 and found["h1200"].value == 1200.0
        assert store.get("x", "k", []) == {}
        vectors = np.arange(1201 * 2, dtype=np.float32).reshape(1201, 2)
        store.put_arrays("text", "k", {}, hashes, hashes, vectors, [None] * 1201)
        arrays = store.get_arrays("text", "k", hashes)
        assert len(arrays) == 1201
        np.testing.assert_array_equal(arrays["h0500"][0], vectors[500])
        np.testing.assert_array_equal(arrays["h1000"][0], vectors[1000])


def test_values_are_keyed_by_indicator_and_settings_and_round_trip(tmp_path):
    with Store(tmp_path) as store:
        stored = store.put("length", "k1", {"b": 2, "a": 1}, [
            ("h1", IndicatorValue("s1", 0.5, None, {"per_turn": [0.25, 0.75]})),
            ("h2", IndicatorValue("s2", None, "empty answer"))])
        assert stored == 2
        assert store.get("length", "k1", ["h1", "h2", "h3"]) == {
            "h1": IndicatorValue("s1", 0.5, None, {"per_turn": [0.25, 0.75]}),
            "h2": IndicatorValue("s2", None, "empty answer", {})}
        assert store.get("clip", "k1", ["h1"]) == {}
        assert store.get("length", "k2", ["h1"]) == {}
        store.put("clip", "k9", {}, [("h1", IndicatorValue("s1", 3.0))])
        assert store.count() == 3 and store.count("length") == 2 and store.count("clip") == 1
        assert store.count("gpt") == 0
        settings = store.connection.execute(
            "SELECT settings_hash, indicator, settings FROM settings ORDER BY indicator").fetchall()
        assert settings == [("k9", "clip", "{}"), ("k1", "length", '{"a": 1, "b": 2}')]
        # a second put under the same key replaces the row, never duplicates it
        store.put("length", "k1", {"b": 2, "a": 1}, [("h1", IndicatorValue("s1", 0.9))])
        assert store.count("length") == 2 and store.get("length", "k1", ["h1"])["h1"].value == 0.9


def test_a_failure_is_never_stored(tmp_path):
    with Store(tmp_path) as store:
        assert store.put("x", "k", {}, [("h1", IndicatorValue("s1", None, Failure("HTTP 500")))]) == 0
        assert store.count() == 0
        assert store.connection.execute("SELECT COUNT(*) FROM settings").fetchone()[0] == 0
        assert store.put("x", "k", {}, [("h1", IndicatorValue("s1", None, Failure("timeout"))),
                                        ("h2", IndicatorValue("s2", None, "no score"))]) == 1
        assert list(store.get("x", "k", ["h1", "h2"])) == ["h2"]
        assert store.put_one("x", "k", {}, "h3", IndicatorValue("s3", 4.0)) is True
        assert store.put_one("x", "k", {}, "h4", IndicatorValue("s4", None, Failure("503"))) is False
        assert store.count() == 2


def test_an_embedding_chunk_keeps_good_rows_in_one_shard_and_problems_without_one(tmp_path):
    vectors = np.array([[1, 2], [3, 4], [5, 6], [7, 8]], dtype=np.float64)
    with Store(tmp_path) as store:
        store.put_arrays("image", "k", {"model": "m"}, ["a", "b", "c", "d"], ["A", "B", "C", "D"],
                         vectors, [None, "image is corrupt", None, Failure("OS error")])
        rows = store.connection.execute(
            "SELECT sample_hash, sample_id, shard, row, problem FROM array_rows "
            "ORDER BY sample_hash").fetchall()
        assert [r[0] for r in rows] == ["a", "b", "c"]  # the failure is not stored at all
        assert rows[1] == ("b", "B", None, None, "image is corrupt")  # a problem gets no shard
        assert rows[0][1:] == ("A", rows[0][2], 0, None) and rows[2][1:] == ("C", rows[0][2], 1, None)
        shard = tmp_path / "arrays" / rows[0][2]
        assert shard.parent == tmp_path / "arrays" / "image-k" and shard.suffix == ".npy"
        saved = np.load(shard)
        assert saved.dtype == np.float32
        np.testing.assert_array_equal(saved, [[1, 2], [5, 6]])
        found = store.get_arrays("image", "k", ["a", "b", "c", "d"])
        assert sorted(found) == ["a", "b", "c"]
        assert found["b"] == (None, "image is corrupt")
        np.testing.assert_array_equal(found["c"][0], [5, 6])
        assert found["a"][1] is None and found["c"][1] is None
        assert store.get_arrays("text", "k", ["a"]) == {} and store.get_arrays("image", "j", ["a"]) == {}
        assert store.connection.execute("SELECT * FROM settings").fetchall() == \
            [("k", "image", '{"model": "m"}')]
        # nothing is written outside the cache file and WORK/arrays/<kind>-<key>/
        assert [p.name for p in tmp_path.iterdir() if p.is_dir()] == ["arrays"]
        assert [p.name for p in (tmp_path / "arrays").iterdir()] == ["image-k"]


def test_a_chunk_of_problems_writes_no_shard(tmp_path):
    with Store(tmp_path) as store:
        store.put_arrays("text", "k", {}, ["a", "b"], ["A", "B"], np.zeros((2, 3)),
                         ["empty", "empty"])
        assert not (tmp_path / "arrays").exists()
        assert store.get_arrays("text", "k", ["a", "b"]) == {"a": (None, "empty"),
                                                             "b": (None, "empty")}


def test_two_chunks_of_vectors_get_two_shards(tmp_path):
    with Store(tmp_path) as store:
        store.put_arrays("text", "k", {}, ["a"], ["A"], np.ones((1, 2)), [None])
        store.put_arrays("text", "k", {}, ["b"], ["B"], np.zeros((1, 2)), [None])
        assert len(list((tmp_path / "arrays" / "text-k").glob("*.npy"))) == 2
        assert not list((tmp_path / "arrays" / "text-k").glob(".*"))  # no temporary left
        found = store.get_arrays("text", "k", ["a", "b"])
        np.testing.assert_array_equal(found["a"][0], [1, 1])
        np.testing.assert_array_equal(found["b"][0], [0, 0])


# --- scoring through the cache -----------------------------------------------------------------

def test_score_cached_uses_the_indicators_own_chunk_size(tmp_path):
    samples = [_sample(str(i), "x" * (i + 1)) for i in range(7)]
    with Store(tmp_path) as store:
        indicator = Recording(chunk_size=3)
        values = score_cached(store, indicator, samples, chunk_size=5)
        assert indicator.calls == [3, 3, 1] and indicator.store is store
        assert [v.value for v in values] == [float(i + 1) for i in range(7)]
        other = Recording()
        score_cached(store, other, [_sample(str(i), "y" * (i + 1)) for i in range(7)], chunk_size=5)
        assert other.calls == [5, 2]


def test_score_cached_default_chunk_is_256(tmp_path):
    samples = [_sample(str(i), "x" * (i % 7 + 1) + str(i)) for i in range(300)]
    with Store(tmp_path) as store:
        indicator = Recording()
        score_cached(store, indicator, samples)
        assert indicator.calls == [256, 44]


def test_score_cached_computes_only_what_is_missing_and_never_caches_a_failure(tmp_path):
    samples = [_sample(str(i), "x" * (i + 1)) for i in range(5)]
    with Store(tmp_path) as store:
        first = Recording(fail={"3"})
        values = score_cached(store, first, samples, chunk_size=2)
        assert first.calls == [2, 2, 1]
        assert values[3] == IndicatorValue("3", None, "HTTP 503")
        assert values[4] == IndicatorValue("4", 5.0, None, {"n": 5})
        assert store.count("recording") == 4
        again = Recording()
        values = score_cached(store, again, samples, chunk_size=2)
        assert again.calls == [1]  # only the failed one is computed again
        assert [v.value for v in values] == [1.0, 2.0, 3.0, 4.0, 5.0]
        assert all(v.problem is None for v in values)


def test_score_cached_returns_each_samples_own_id_and_uses_given_hashes(tmp_path):
    twins = [_sample("first"), _sample("second")]  # same content, same hash
    with Store(tmp_path) as store:
        indicator = Recording()
        values = score_cached(store, indicator, twins)
        assert [v.sample_id for v in values] == ["first", "second"]
        given = Recording()
        values = score_cached(store, given, twins, hashes=["h-a", "h-b"])
        assert given.calls == [2] and [v.sample_id for v in values] == ["first", "second"]
        assert sorted(store.get("recording", settings_hash("recording", {"v": 1}),
                                ["h-a", "h-b"])) == ["h-a", "h-b"]


# --- per-request results -----------------------------------------------------------------------

class _Request:
    def __init__(self, key):
        self.key = key


def test_reply_store_commits_delivered_replies_under_its_own_key(tmp_path):
    with Store(tmp_path) as store:
        replies = ReplyStore(store, "gpt_reply", {"model": "m"},
                             lambda request, outcome: IndicatorValue(request.key, float(outcome)))
        assert replies.settings_key == settings_hash("gpt_reply", {"model": "m"})
        replies.keep([])
        assert store.count() == 0
        replies.keep([(_Request("r1"), "80"), (_Request("r2"), "90")])
        assert replies.get(["r1", "r2", "r3"]) == {"r1": IndicatorValue("r1", 80.0),
                                                  "r2": IndicatorValue("r2", 90.0)}
        assert store.count("gpt_reply") == 2
        other = ReplyStore(store, "gpt_reply", {"model": "other"}, lambda r, o: None)
        assert other.get(["r1"]) == {}


def _settings_rows(store):
    return store.connection.execute(
        "SELECT settings_hash, indicator, settings FROM settings ORDER BY indicator").fetchall()


def test_every_write_path_records_its_settings(tmp_path):
    with Store(tmp_path) as store:
        store.put("paths", "k0", {"model": Path("/m/x.pt")}, [("h", IndicatorValue("s", 1.0))])
        assert _settings_rows(store) == [("k0", "paths", '{"model": "/m/x.pt"}')]
        store.connection.execute("DELETE FROM settings")
        store.put_one("one", "k1", {"a": 1}, "h", IndicatorValue("s", 1.0))
        ReplyStore(store, "reply", {"model": "m"}, lambda r, o: IndicatorValue(r.key, 1.0)).keep(
            [(_Request("r"), None)])
        score_cached(store, Recording(), [_sample("1")])
        assert _settings_rows(store) == [
            ("k1", "one", '{"a": 1}'), (settings_hash("recording", {"v": 1}), "recording", '{"v": 1}'),
            (settings_hash("reply", {"model": "m"}), "reply", '{"model": "m"}')]


class _TwoRanks:
    """This process is rank 0 of 2: it scores the first half of what is missing; while it waits,
    "rank 1" stores its half, except the last sample, which failed there."""

    world_size = 2

    def __init__(self, store, key):
        self.store, self.key, self.waited = store, key, 0

    def read_together(self, read):
        return read()

    def mine(self, items):
        self.todo = list(items)
        return self.todo[:len(self.todo) // 2]

    def wait(self):
        self.waited += 1
        others = self.todo[len(self.todo) // 2:-1]
        self.store.put("recording", self.key, {"v": 1},
                       [(f"h{i}", IndicatorValue(str(i), 100.0 + i)) for i in others])


def test_under_a_launcher_each_rank_scores_its_share_and_merges_the_others(tmp_path):
    from selector.core.cache import is_failure

    samples = [_sample(str(i), "x" * (i + 1)) for i in range(6)]
    hashes = [f"h{i}" for i in range(6)]
    with Store(tmp_path) as store:
        ranks = _TwoRanks(store, settings_hash("recording", {"v": 1}))
        indicator = Recording()
        values = score_cached(store, indicator, samples, hashes=hashes, ranks=ranks)
        assert indicator.calls == [3] and ranks.waited == 1
        assert [v.value for v in values[:5]] == [1.0, 2.0, 3.0, 103.0, 104.0]
        assert [v.sample_id for v in values] == [str(i) for i in range(6)]
        assert values[0].detail == {"n": 1}  # this rank's own values keep their detail
        lost = values[5]
        assert lost.value is None and lost.detail == {} and is_failure(lost.problem)
        assert lost.problem == "not computed: failed on another process (a rerun retries it)"


def test_without_a_launcher_no_distributed_state_is_started(tmp_path, monkeypatch):
    accelerate = pytest.importorskip("accelerate")

    def refuse(*args, **kwargs):
        raise AssertionError("score_cached started a distributed state")

    monkeypatch.setattr(accelerate, "PartialState", refuse)
    monkeypatch.setenv("WORLD_SIZE", "2")  # left over in the environment: still this process only
    with Store(tmp_path) as store:
        assert score_cached(store, Recording(), [_sample("1")])[0].value == 9.0


def test_the_with_block_closes_the_connection(tmp_path):
    with Store(tmp_path) as store:
        assert isinstance(store, Store)
    with pytest.raises(sqlite3.ProgrammingError):
        store.connection.execute("SELECT 1")


def test_forget_deletes_only_valueless_rows_whose_problem_matches(tmp_path):
    import re

    with Store(tmp_path) as store:
        store.put("gpt", "k1", {}, [("h1", IndicatorValue("1", None, "HTTP 500: server error")),
                                    ("h2", IndicatorValue("2", None, "reply contains no score")),
                                    ("h3", IndicatorValue("3", 50.0, None, {"note": "HTTP 500"}))])
        store.put("gpt", "k2", {}, [("h4", IndicatorValue("4", None, "HTTP 500 again"))])
        store.put("clip", "k1", {}, [("h1", IndicatorValue("1", None, "HTTP 500"))])
        assert store.forget("gpt", re.compile(r"HTTP 5\d\d")) == 2
        assert sorted(store.get("gpt", "k1", ["h1", "h2", "h3"])) == ["h2", "h3"]
        assert store.get("gpt", "k2", ["h4"]) == {} and store.count("clip") == 1
        assert store.forget("gpt", re.compile("HTTP")) == 0
        assert store.count() == 3
