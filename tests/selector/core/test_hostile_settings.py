"""Hostile settings and inputs (issue 11, hostile findings 8, 9, 13, 14, 15): one line, exit 2,
no traceback, no hang, no crash.

- nesting: YAML (``--config``, recipes, ``split --template``), ``--set`` values and keys, and JSON
  files nested absurdly deep are refused with one line before any parser recurses (50 000 levels
  of YAML used to crash the process with a segmentation fault);
- a whole section set to a list (``--set model=[1]``, YAML ``score: [1]``) names the key;
- every seed is an unsigned 32-bit integer, checked when settings are loaded (and ``split --seed``);
- ``score --indicators ',,,'`` is "no indicators", not an export of ids alone;
- errors name the file: ``--pca-from`` a pool without PCA, ``--captions`` lacking a caption, a
  clusters file with a repeated or shared id (and call its groups clusters);
- a named pipe or device given as any input is refused at once instead of blocking forever.

Every case runs ``igpt4`` in-process (``selector.cli.main``)."""
from __future__ import annotations

import contextlib
import json
import os
import signal
from pathlib import Path
from typing import Iterator, List

import pytest

from conftest import make_cc_sbu_align, trained_world
from selector.app.cli import main

LIMIT = 64  # selector.jsonio.MAX_NESTING


@contextlib.contextmanager
def no_hang(seconds: int = 60) -> Iterator[None]:
    """Fail (instead of hanging the suite) when the command blocks, e.g. on a named pipe."""
    def expired(signum, frame):
        raise AssertionError(f"the command was still running after {seconds} s (blocked?)")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def one_line(capsys, argv: List, *fragments: str, after_work: bool = False) -> str:
    """``igpt4 ARGV`` exits 2 with one ``igpt4: error:`` line holding every fragment (the last
    line, and with ``after_work`` False the only one), no traceback."""
    with no_hang():
        code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert code == 2, (code, err[-2000:])
    assert "Traceback" not in err, err[-2000:]
    lines = [line for line in err.replace("\r", "\n").splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("igpt4: error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], err[-2000:]
    if not after_work:
        assert len(lines) == 1, err[-2000:]
    assert len(errors[0]) < 400, errors[0]
    for fragment in fragments:
        assert fragment in errors[0], (fragment, errors[0])
    return errors[0]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A small pool (without saved PCA), subsets, labels, a trained checkpoint, captions for
    half the pool."""
    from selector.scoring.pool import FeaturePool

    root = trained_world(tmp_path_factory.mktemp("hostile_settings"), 60, seed=3, epochs=2)
    pool = FeaturePool.load(root / "pool.safetensors")
    (root / "cc").mkdir()
    (root / "cc" / "filter_cap.json").write_text(json.dumps({"annotations": [
        {"image_id": i, "caption": f"A picture {i}."} for i in pool.ids[:1]]}))
    (root / "ids.json").write_text(json.dumps(pool.ids))
    return root


def pool_ids(files: Path) -> List[str]:
    return json.loads((files / "ids.json").read_text())


def select_args(files: Path, out: Path, *extra) -> List:
    return ["select", "--pool", files / "pool.safetensors", "--checkpoint", files / "ckpt",
            "--num", "5", "--out", out, *extra]


def train_args(files: Path, out: Path, *extra) -> List:
    return ["train-selector", "--pool", files / "pool.safetensors", "--subsets",
            files / "subsets.json", "--labels", files / "labels.json", "--out", out, *extra]


def flow(depth: int) -> str:
    return "[" * depth + "]" * depth


def block(depth: int) -> str:
    """``a:`` mappings nested by indentation, ``depth`` levels."""
    return "".join("  " * n + "a:\n" for n in range(depth)) + "  " * depth + "b: 1\n"


# ---------------------------------------------------------------------------------------------
# nesting
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text", [
    f"a: {flow(100)}\n", f"a: {flow(50_000)}\n", block(100),
    "a: " + "{b: " * 3000 + "1" + "}" * 3000 + "\n",
    "model:\n  n_heads: " + "[" * 70 + "1" + "]" * 70 + "\n",
], ids=["flow100", "flow50000", "indent100", "mapping3000", "deep-value"])
@pytest.mark.parametrize("command", ["select", "train-selector"])
def test_deep_yaml_config_is_one_line(capsys, tmp_path, files, text, command):
    config = tmp_path / "deep.yaml"
    config.write_text(text)
    argv = (select_args if command == "select" else train_args)(
        files, tmp_path / "out", "--config", config)
    one_line(capsys, argv, str(config), f"nested more than {LIMIT} levels deep")
    assert not (tmp_path / "out").exists()


def test_yaml_within_the_limit_is_parsed(capsys, tmp_path, files):
    """The limit is far above any real config: 60 levels parse, and fail only as settings."""
    config = tmp_path / "c60.yaml"
    config.write_text(f"model:\n  n_heads: {flow(58)}\n")
    one_line(capsys, select_args(files, tmp_path / "out", "--config", config),
             "model.n_heads must be an integer")


def test_deep_yaml_score_config_and_recipe(capsys, tmp_path):
    config = tmp_path / "deep.yaml"
    config.write_text(f"x: {flow(20_000)}\n")
    data = tmp_path / "data"
    data.mkdir()
    one_line(capsys, ["score", "--data", data, "--work", tmp_path / "w", "--out",
                      tmp_path / "s.csv", "--config", config], "deep.yaml line 1", "nested")
    one_line(capsys, ["run", "--config", config], "deep.yaml", "nested more than")
    assert not (tmp_path / "w").exists()


def test_deep_split_template(capsys, tmp_path, files):
    template = tmp_path / "tmpl.yaml"
    template.write_text(block(200))
    one_line(capsys, ["split", "--pool", files / "pool.safetensors", "--data", files / "cc",
                      "--out", tmp_path / "out", "--k", "3", "--template", template],
             str(template), "nested more than")


@pytest.mark.parametrize("item, fragments", [
    (f"selection.n_clusters={flow(300)}", ["--set selection.n_clusters=[[[", "characters)",
                                            "nested more than"]),
    ("selection.n_clusters=" + "{a: " * 200 + "1" + "}" * 200, ["nested more than"]),
    (".".join(["a"] * 2000) + "=1", ["--set a.a.a", "the key has more than 64 parts"]),
    ("[" * 200 + "a=1", ["--set"]),
])
def test_deep_set_is_one_line(capsys, tmp_path, files, item, fragments):
    one_line(capsys, select_args(files, tmp_path / "out", "--set", item), *fragments)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("depth", [100, 100_000])
@pytest.mark.parametrize("which", ["subsets", "labels"])
def test_deep_json_input_is_one_line(capsys, tmp_path, files, depth, which):
    deep = tmp_path / f"{which}.json"
    deep.write_text('{"a": ' + flow(depth) + "}")
    argv = ["train-selector", "--pool", files / "pool.safetensors",
            "--subsets", deep if which == "subsets" else files / "subsets.json",
            "--labels", deep if which == "labels" else files / "labels.json",
            "--out", tmp_path / "out"]
    one_line(capsys, argv, str(deep), "nested")


def test_deep_json_data_and_clusters(capsys, tmp_path, files):
    data = tmp_path / "data"
    data.mkdir()
    (data / "filter_cap.json").write_text('{"annotations": [' + flow(80) + "]}")
    one_line(capsys, ["validate", data], "filter_cap.json", f"nested more than {LIMIT}")
    clusters = tmp_path / "clusters.json"
    clusters.write_text('{"a": [' + '{"b": ' * 5000 + "1" + "}" * 5000 + "]}")
    one_line(capsys, select_args(files, tmp_path / "out", "--clusters", clusters),
             str(clusters), "nested", after_work=True)


# ---------------------------------------------------------------------------------------------
# a section set to a list (or a list setting to a mapping)
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("item, fragments", [
    ("model=[1]", ["--set model=[1]: model must be a mapping of settings (got [1])"]),
    ("training=[1]", ["--set training=[1]: training must be a mapping"]),
    ("selection=[]", ["selection must be a mapping"]),
    ("selection=[{a: 1}]", ["selection must be a mapping"]),
    ("model=7", ["model must be a mapping"]),
])
def test_selector_section_set_to_a_list(capsys, tmp_path, files, item, fragments):
    one_line(capsys, select_args(files, tmp_path / "out", "--set", item), *fragments)
    one_line(capsys, train_args(files, tmp_path / "out2", "--set", item), *fragments)


@pytest.mark.parametrize("item, fragments", [
    ("indicators=[1]", ["--set indicators=[1]: indicators must be a mapping of settings"]),
    ("indicators.clip=[1]", ["indicators.clip must be a mapping"]),
    ("features.image=[a]", ["features.image must be a mapping"]),
    ("pool.indicators={a: 1}", ["pool.indicators must be a list"]),
])
def test_score_section_set_to_a_list(capsys, tmp_path, item, fragments):
    data = tmp_path / "data"
    data.mkdir()
    one_line(capsys, ["score", "--data", data, "--work", tmp_path / "w", "--out",
                      tmp_path / "s.csv", "--set", item], *fragments)


def test_yaml_section_as_a_list_names_file_and_line(capsys, tmp_path, files):
    config = tmp_path / "lc.yaml"
    config.write_text("training:\n  epochs: 2\nmodel: [1]\n")
    one_line(capsys, select_args(files, tmp_path / "out", "--config", config),
             f"{config} line 3: model must be a mapping of settings (got [1])")


@pytest.mark.parametrize("recipe, sets, fragments", [
    ("pipeline:\n  work: w\nscore: [1]\n", [], ["line 3", "score must be a mapping"]),
    ("pipeline:\n  work: w\n", ["score=[1]"], ["--set score=[1]", "score must be a mapping"]),
    ("pipeline:\n  work: w\nselector:\n  model: [1]\n", [],
     ["line 4", "selector.model must be a mapping"]),
    ("pipeline:\n  work: w\nscore:\n  settings:\n    indicators: [2]\n", [],
     ["score.settings.indicators must be a mapping"]),
    ("pipeline: [1]\n", [], ["pipeline must be a mapping"]),
])
def test_recipe_section_as_a_list(capsys, tmp_path, recipe, sets, fragments):
    path = tmp_path / "recipe.yaml"
    path.write_text(recipe)
    argv = ["run", "--config", path]
    for item in sets:
        argv += ["--set", item]
    one_line(capsys, argv, *fragments)
    assert not (tmp_path / "w").exists() and not Path("w").exists()


# ---------------------------------------------------------------------------------------------
# seeds
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["-1", str(2 ** 32), "99999999999999999999999"])
@pytest.mark.parametrize("key", ["training.seed", "selection.cluster_seed", "model.score_seed"])
def test_selector_seeds_are_32_bit(capsys, tmp_path, files, key, value):
    problem = "must be >= 0" if value == "-1" else "must be < 4294967296"
    one_line(capsys, train_args(files, tmp_path / "out", "--set", f"{key}={value}"),
             f"--set {key}={value}", f"{key} {problem}")


def test_largest_seed_is_accepted(capsys, tmp_path, files):
    code = main([str(a) for a in train_args(
        files, tmp_path / "out", "--set", f"training.seed={2 ** 32 - 1}", "--set",
        "training.epochs=1", "--set", "training.cross_validate=false")])
    assert code == 0, capsys.readouterr().err


@pytest.mark.parametrize("value", ["-1", str(2 ** 32)])
def test_score_pca_seed_is_32_bit(capsys, tmp_path, value):
    data = tmp_path / "data"
    data.mkdir()
    one_line(capsys, ["score", "--data", data, "--work", tmp_path / "w", "--out",
                      tmp_path / "s.csv", "--set", f"features.pca_seed={value}"],
             "features.pca_seed must be")


@pytest.mark.parametrize("key", ["demo.seed", "split.seed"])
def test_recipe_seeds_are_32_bit(capsys, tmp_path, key):
    path = tmp_path / "recipe.yaml"
    path.write_text("pipeline:\n  work: w\n")
    one_line(capsys, ["run", "--config", path, "--set", f"{key}={2 ** 40}"],
             f"{key} must be < 4294967296")


@pytest.mark.parametrize("seed", ["-1", "99999999999999", str(2 ** 32)])
def test_split_seed_is_32_bit(capsys, tmp_path, files, seed):
    one_line(capsys, ["split", "--pool", files / "pool.safetensors", "--data", files / "cc",
                      "--out", tmp_path / "out", "--k", "3", "--seed", seed],
             f"--seed {seed}: must be an integer >= 0 and < 4294967296")
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------
# no indicators; error lines that name their file
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("names, fragment", [
    (",,,", "--indicators: no indicators given"), (" , ", "no indicators given"),
    ("", "no indicators given"), ("length,length", "'length' is listed twice"),
])
def test_score_without_indicators(capsys, tmp_path, names, fragment):
    data = make_cc_sbu_align(tmp_path / "cc", {"1": "A red square on a plain background."})
    one_line(capsys, ["score", "--data", data, "--work", tmp_path / "w", "--indicators", names,
                      "--out", tmp_path / "s.csv"], fragment)
    assert not (tmp_path / "s.csv").exists()


def test_pca_from_a_pool_without_pca_names_it_before_scoring(capsys, tmp_path, files):
    data = make_cc_sbu_align(tmp_path / "cc", {"1": "A red square on a plain background."})
    pool = files / "pool.safetensors"
    one_line(capsys, ["score", "--data", data, "--work", tmp_path / "w", "--indicators",
                      "length", "--pool-out", tmp_path / "p.safetensors", "--pca-from", pool],
             f"--pca-from {pool}: pool file has no saved PCA")
    assert not (tmp_path / "p.safetensors").exists()


def test_missing_caption_names_the_captions_folder(capsys, tmp_path, files):
    one_line(capsys, select_args(files, tmp_path / "out", "--captions", files / "cc"),
             f"{files / 'cc'}: no caption for selected sample", after_work=True)


def test_clusters_file_errors_name_it_and_say_clusters(capsys, tmp_path, files):
    ids = pool_ids(files)
    repeated = tmp_path / "repeated.json"
    repeated.write_text(json.dumps({"a": ids[:20] + ids[:2], "b": ids[20:40]}))
    line = one_line(capsys, select_args(files, tmp_path / "o1", "--clusters", repeated),
                    f"{repeated}: cluster 'a' lists sample {ids[0]!r} more than once", after_work=True)
    assert "subset" not in line
    shared = tmp_path / "shared.json"
    shared.write_text(json.dumps({"a": ids[:20], "b": ids[19:40]}))
    line = one_line(capsys, select_args(files, tmp_path / "o2", "--clusters", shared),
                    f"{shared}: sample {ids[19]!r} is in clusters 'a' and 'b'", after_work=True)
    assert "subset" not in line
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({"a": ids[:20], "b": []}))
    one_line(capsys, select_args(files, tmp_path / "o3", "--clusters", empty),
             f"{empty}: cluster 'b' is empty", after_work=True)


def test_subsets_file_errors_still_say_subset(capsys, tmp_path, files):
    ids = pool_ids(files)
    subsets = tmp_path / "subsets.json"
    subsets.write_text(json.dumps({"0": ids[:6] + ids[:1], "1": ids[6:12]}))
    one_line(capsys, ["train-selector", "--pool", files / "pool.safetensors", "--subsets",
                      subsets, "--labels", files / "labels.json", "--out", tmp_path / "out"],
             f"{subsets}: subset '0' lists sample")


# ---------------------------------------------------------------------------------------------
# named pipes and devices: refused at once, never read
# ---------------------------------------------------------------------------------------------

needs_fifo = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")


@needs_fifo
def test_validate_a_named_pipe(capsys, tmp_path):
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    one_line(capsys, ["validate", fifo], f"{fifo}: is a named pipe, not a regular file")
    folder = tmp_path / "cc"
    folder.mkdir()
    os.mkfifo(folder / "filter_cap.json")
    one_line(capsys, ["validate", folder], "filter_cap.json: is a named pipe")


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="no /dev/zero")
def test_validate_a_device(capsys):
    one_line(capsys, ["validate", "/dev/zero"], "/dev/zero: is a character device")


@needs_fifo
@pytest.mark.parametrize("which", ["config", "subsets", "labels", "clusters"])
def test_named_pipe_inputs(capsys, tmp_path, files, which):
    fifo = tmp_path / f"{which}.fifo"
    os.mkfifo(fifo)
    if which == "config":
        argv = select_args(files, tmp_path / "out", "--config", fifo)
    elif which == "clusters":
        argv = select_args(files, tmp_path / "out", "--clusters", fifo)
    else:
        argv = ["train-selector", "--pool", files / "pool.safetensors",
                "--subsets", fifo if which == "subsets" else files / "subsets.json",
                "--labels", fifo if which == "labels" else files / "labels.json",
                "--out", tmp_path / "out"]
    one_line(capsys, argv, str(fifo), "is a named pipe", after_work=which == "clusters")


def test_read_bytes_refuses_non_regular_files(tmp_path):
    from selector.core.errors import InputError
    from selector.core.jsonio import read_bytes

    (tmp_path / "ok.txt").write_bytes(b"fine")
    assert read_bytes(tmp_path / "ok.txt") == b"fine"
    with pytest.raises(InputError, match="is a folder"):
        read_bytes(tmp_path)
    with pytest.raises(InputError, match="file not found"):
        read_bytes(tmp_path / "missing.txt")
    if hasattr(os, "mkfifo"):
        os.mkfifo(tmp_path / "p")
        with no_hang(20), pytest.raises(InputError, match="named pipe"):
            read_bytes(tmp_path / "p", "LABEL")
