"""selector.store: reruns compute only what is missing; kill -9 loses nothing finished."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

from conftest import REPO, make_cc_sbu_align
from selector.data.samples import read_cc_sbu_align
from selector.scoring.indicators.length import LengthScore
from selector.core.cache import Store
from selector.scoring.store import score_cached


class Counting(LengthScore):
    def __init__(self, **settings):
        super().__init__(**settings)
        self.scored = 0

    def score(self, samples):
        self.scored += len(samples)
        return super().score(samples)


def _pool(tmp_path, n=12):
    return read_cc_sbu_align(make_cc_sbu_align(tmp_path / "cc", {str(i): "x. " * (i + 1)
                                                                 for i in range(n)}))


def test_rerun_and_changed_settings_and_samples(tmp_path):
    pool = _pool(tmp_path)
    with Store(tmp_path / "work") as store:
        first = Counting()
        values = score_cached(store, first, pool.samples, chunk_size=5)
        assert first.scored == 12 and store.count() == 12
        again = Counting()
        assert score_cached(store, again, pool.samples) == values and again.scored == 0
        other = Counting(normaliser=500)
        score_cached(store, other, pool.samples)
        assert other.scored == 12 and store.count("length") == 24
    (tmp_path / "cc" / "filter_cap.json").write_text(json.dumps({"annotations": [
        {"image_id": str(i), "caption": "changed" if i == 3 else "x. " * (i + 1)}
        for i in range(12)]}))
    edited = read_cc_sbu_align(tmp_path / "cc")
    with Store(tmp_path / "work") as store:
        counting = Counting()
        values = score_cached(store, counting, edited.samples)
        assert counting.scored == 1 and values[3].value == 10 * 7 / 1009


SCRIPT = """
import json, sys, time
from selector.data.samples import read_cc_sbu_align
from selector.scoring.indicators.length import LengthScore
from selector.core.cache import Store
from selector.scoring.store import score_cached

class Slow(LengthScore):
    def score(self, samples):
        time.sleep(float(sys.argv[3]))
        return super().score(samples)

pool = read_cc_sbu_align(sys.argv[1])
with Store(sys.argv[2]) as store:
    values = score_cached(store, Slow(), pool.samples, chunk_size=5)
    print(json.dumps([[v.sample_id, v.value] for v in values]), store.count())
"""


def test_sigkill_mid_run_then_rerun(tmp_path):
    pool = _pool(tmp_path, n=40)
    script = tmp_path / "score.py"
    script.write_text(SCRIPT)

    def run(work, delay, wait=True):
        command = [sys.executable, str(script), str(tmp_path / "cc"), str(work), str(delay)]
        if wait:
            return subprocess.run(command, capture_output=True, text=True, cwd=REPO, check=True)
        return subprocess.Popen(command, cwd=REPO)

    reference = run(tmp_path / "clean", 0).stdout
    process = run(tmp_path / "killed", 0.3, wait=False)
    deadline = time.time() + 60
    while time.time() < deadline:
        time.sleep(0.1)
        if (tmp_path / "killed" / "cache.sqlite").exists():
            with Store(tmp_path / "killed") as store:
                if store.count() >= 10:
                    break
    process.send_signal(signal.SIGKILL)
    process.wait()
    with Store(tmp_path / "killed") as store:
        kept = store.count()
    assert 10 <= kept < 40 and kept % 5 == 0
    resumed = run(tmp_path / "killed", 0).stdout
    assert resumed == reference and resumed.split()[-1] == "40"
    assert len(pool) == 40


ARRAY_SCRIPT = """
import sys, time
import numpy as np
from selector.data.samples import read_cc_sbu_align
from selector.scoring.embedders import Embedder, embed_cached
from selector.core.cache import Store
from selector.scoring.store import sample_hash

class SlowLengths(Embedder):
    kind = "text"
    def settings(self):
        return {"encoder": "lengths"}
    def embed(self, samples):
        time.sleep(float(sys.argv[3]))
        return np.array([[len(s.answer), i] for i, s in enumerate(samples)], np.float32), \\
            [None] * len(samples)

pool = read_cc_sbu_align(sys.argv[1])
with Store(sys.argv[2]) as store:
    matrix, _ = embed_cached(store, SlowLengths(), pool.samples,
                             [sample_hash(s) for s in pool.samples], chunk_size=5)
    np.save(sys.argv[2] + "/result.npy", matrix)
    print(store.connection.execute("SELECT COUNT(*) FROM array_rows").fetchone()[0])
"""


def test_sigkill_while_embedding_then_rerun_gives_the_uninterrupted_arrays(tmp_path):
    import numpy as np

    _pool(tmp_path, n=40)
    script = tmp_path / "embed.py"
    script.write_text(ARRAY_SCRIPT)

    def command(work, delay):
        return [sys.executable, str(script), str(tmp_path / "cc"), str(work), str(delay)]

    subprocess.run(command(tmp_path / "clean", 0), cwd=REPO, check=True, capture_output=True)
    process = subprocess.Popen(command(tmp_path / "killed", 0.3), cwd=REPO)
    deadline = time.time() + 60
    while time.time() < deadline and len(list((tmp_path / "killed").glob("arrays/*/*.npy"))) < 2:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    shards_before = len(list((tmp_path / "killed").glob("arrays/*/*.npy")))
    assert 2 <= shards_before < 8
    rerun = subprocess.run(command(tmp_path / "killed", 0), cwd=REPO, check=True,
                           capture_output=True, text=True)
    assert rerun.stdout.split()[-1] == "40"  # one row per sample, nothing duplicated
    np.testing.assert_array_equal(np.load(tmp_path / "killed" / "result.npy"),
                                  np.load(tmp_path / "clean" / "result.npy"))
    # 8 chunks of 5: the rerun wrote only the missing shards, never a finished one again (a kill
    # between a shard's rename and its rows' commit may leave one unreferenced shard behind)
    with Store(tmp_path / "killed") as store:
        referenced = {shard for (shard,) in store.connection.execute(
            "SELECT DISTINCT shard FROM array_rows WHERE shard IS NOT NULL")}
    assert len(referenced) == 8
    assert all((tmp_path / "killed" / "arrays" / shard).is_file() for shard in referenced)
    assert len(list((tmp_path / "killed").glob("arrays/*/*.npy"))) in (8, 9)


# ----------------------------------------------------------- durability: per row, no failures

def test_put_one_is_committed_at_once_and_failures_are_never_stored(tmp_path):
    import sqlite3

    import numpy as np

    from selector.core.cache import Failure, IndicatorValue

    with Store(tmp_path) as store:
        assert store.put_one("gpt:request", "k", {}, "h1", IndicatorValue("a#0", 70.0))
        other = sqlite3.connect(str(tmp_path / "cache.sqlite"))  # another process's view
        assert other.execute("SELECT COUNT(*) FROM indicator_values").fetchone()[0] == 1
        assert not store.put_one("gpt:request", "k", {}, "h2",
                                 IndicatorValue("b#0", None, Failure("HTTP 500")))
        assert store.put("gpt", "k", {}, [("h3", IndicatorValue("c", None, "empty answer")),
                                          ("h4", IndicatorValue("d", None, Failure("timeout")))]) \
            == 1
        assert set(store.get("gpt", "k", ["h3", "h4"])) == {"h3"}  # a flagged value is a value
        store.put_arrays("image", "k", {}, ["h5", "h6", "h7"], ["e", "f", "g"],
                         np.ones((3, 2), np.float32),
                         [None, "image unreadable (UnidentifiedImageError)",
                          Failure("image unreadable (PermissionError)")])
        assert set(store.get_arrays("image", "k", ["h5", "h6", "h7"])) == {"h5", "h6"}
        other.close()


def test_everything_stored_is_redacted(tmp_path, monkeypatch):
    from selector.core.cache import IndicatorValue

    secret = "sk-store-SECRET-0123456789"
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    with Store(tmp_path) as store:
        store.put("gpt", "k", {"base_url": f"http://x/?key={secret}"}, [(
            "h", IndicatorValue(f"id-{secret}", None, f"HTTP 400: from Bearer {secret}",
                                {"reply": f"echo {secret}", secret: [secret]}))])
        [value] = store.get("gpt", "k", ["h"]).values()
        assert value.problem == "HTTP 400: from Bearer ***"
        assert value.detail == {"reply": "echo ***", "***": ["***"]}
    stored = b"".join(p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())
    assert secret.encode() not in stored


def test_an_image_the_os_cannot_read_is_a_failure_a_bad_file_is_not(tmp_path, monkeypatch):
    import errno

    from PIL import Image

    from selector.data.samples import Sample, Turn
    from selector.scoring.indicators.clip import _ImageDataset
    from selector.core.cache import is_failure

    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"not a jpeg at all")
    samples = [Sample(name, tmp_path / f"{name}.jpg", (Turn("gpt", "x"),), f"{name}.jpg")
               for name in ("corrupt", "io")]
    dataset = _ImageDataset(samples, preprocess=lambda image: image)
    _, _, problem = dataset[0]
    assert problem.startswith("image unreadable") and not is_failure(problem)  # cached
    opened = Image.open

    def failing_open(path, *args, **kwargs):
        if str(path).endswith("io.jpg"):
            raise OSError(errno.EIO, "Input/output error")
        return opened(path, *args, **kwargs)

    monkeypatch.setattr(Image, "open", failing_open)
    _, _, problem = dataset[1]
    assert problem.startswith("image unreadable") and is_failure(problem)  # retried next run
