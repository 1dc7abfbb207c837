"""selector.labels.steps: the work behind ``igpt4 split`` and ``igpt4 labels collect``."""
from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from selector.core.errors import InputError
from selector.data.samples import read_cc_sbu_align
from selector.labels.collect import collect_labels
from selector.labels.steps import labels_collect_command, split_command
from selector.labels.split import balanced_kmeans_subsets
from selector.scoring.pool import FeaturePool, read_subsets
from test_collect import ARENA_NAMES, write_result
from test_jobs import export, make_split_data, three_subsets, write_template
from test_split import blobs


def test_split_command_from_a_pool_and_from_a_subsets_file(tmp_path, capsys):
    data_dir, template = make_split_data(tmp_path), write_template(tmp_path)
    ids = read_cc_sbu_align(data_dir).ids  # 24 samples
    _, X, _ = blobs([10, 8, 4, 2], seed=5)
    rng = np.random.default_rng(0)
    pool = FeaturePool(ids, X, rng.normal(size=(24, 3)), rng.normal(size=(24, 4)),
                       ["clip", "reward", "length", "gpt"]).save(tmp_path / "pool.safetensors")
    layout = split_command(tmp_path / "split", data_dir, pool=pool, k=5, seed=0,
                           template=template, slurm=True)
    written = read_subsets(layout.subsets_file)
    assert written == balanced_kmeans_subsets(ids, X, k=5, seed=0, drop_remainder=False)
    assert Counter(len(m) for m in written.values()) == {5: 4, 4: 1}
    manifest = json.loads((layout.out_dir / "split.json").read_text())
    assert manifest["k"] == 5 and manifest["dropped"] == 0 and manifest["moved_by_balancing"] > 0
    assert "#SBATCH --array=0-4" in layout.slurm.read_text()
    assert "5 subsets of 4..5 samples" in capsys.readouterr().err
    given = tmp_path / "given.json"
    given.write_text(json.dumps({"7": ids[:12], "8": ids[12:]}))
    again = split_command(tmp_path / "given", data_dir, subsets=given, template=template)
    assert [job.name for job in again.jobs] == ["7", "8"]
    assert read_cc_sbu_align(tmp_path / "given" / "8" / "cc_sbu_align").ids == ids[12:]
    with pytest.raises(InputError, match="either --pool .* or --subsets"):
        split_command(tmp_path / "x", data_dir, template=template)



def test_collect_labels_from_a_split_folder(tmp_path, capsys):
    data_dir, template = make_split_data(tmp_path), write_template(tmp_path)
    subsets = three_subsets(data_dir)
    layout = export(subsets, data_dir, tmp_path / "split", template)
    for run, time in enumerate(("20240101000000", "20240102000000")):
        write_result(layout.out_dir / "00" / "answers", time,
                     {d: 0.30 + 0.01 * run for d in ARENA_NAMES})
    write_result(layout.out_dir / "02" / "answers", "20240101000000",
                 {d: 0.32 for d in ARENA_NAMES})
    document = labels_collect_command([layout.out_dir], tmp_path / "labels.json")
    assert document["labels"] == {"00": pytest.approx(30.5), "02": pytest.approx(32.0)}
    assert document["unevaluated"] == ["01"]
    assert document["label_std"]["00"] == pytest.approx(np.std([30.0, 31.0], ddof=1))
    err = capsys.readouterr().err
    assert "1 subsets have no result.json yet: 01" in err and "2 labels ->" in err
    assert "evaluation noise (pooled std of repeated runs) 0.707" in err
    with pytest.raises(InputError, match="subset '00' was already found"):
        collect_labels([layout.out_dir, layout.out_dir / "00"], list(ARENA_NAMES), False)

