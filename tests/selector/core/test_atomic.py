"""One atomic writer: ``selector/core/atomic.py``.

The helper itself (a crash never leaves half a file or a stray temporary; OS errors are one line;
links are replaced, never written through), and a scan of the source tree for any other way of
writing a file (``os.replace``, ``.rename(``, ``write_text(``, ``open(..., "w")``, ``torch.save``
to a path, ...) outside ``selector/core/atomic.py``; the few justified exceptions are listed with the
reason.
"""
from __future__ import annotations

import ast
import os
import stat
from pathlib import Path
from typing import List, Set

import pytest

from conftest import REPO, dotted_name
from selector.core import atomic
from selector.core.errors import InputError

SCANNED = ("selector", "lavis_plugins", "eval_arena")
HELPER = "selector/core/atomic.py"
WRITE_MODES = set("wax+")
#: functions that write their second argument (a path or a handle) -> which positional argument
SAVERS = {"torch.save": 1, "np.save": 0, "numpy.save": 0, "np.savez": 0, "numpy.savez": 0,
          "np.savez_compressed": 0, "numpy.savez_compressed": 0, "OmegaConf.save": 1,
          "save_file": 1}
ALLOWED = {
    # the evaluation's prediction log is append-only on purpose (each batch appended and fsynced:
    # what a kill -9 leaves is every finished batch); a torn last line is cut off in place
    ("eval_arena/runner.py", 'open(..., "a")'),
    ("eval_arena/runner.py", 'open(..., "r+b")'),
    # the run's lock file: opened (created empty) only to hold an flock on it, never written
    ("eval_arena/runner.py", "os.open for writing"),
    # MiniGPT-4's Config reads a file: the merged config goes to a TemporaryDirectory that is
    # removed right after, never to a user's output
    ("eval_arena/minigpt4_host.py", "OmegaConf.save to a path"),
    # whole folders, swapped in one rename (per-file atomicity is atomic.py's; these move a
    # finished folder into place, or the previous split aside with its results)
    ("selector/selection/smoke.py", "os.rename"),
    ("selector/app/stages.py", ".rename("),
}


def _atomic_handles(tree: ast.AST) -> Set[str]:
    """Names bound by ``with atomic_open(...) as NAME`` (or io.BytesIO()): writing to them is
    writing through the helper (or to memory)."""
    names: Set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.With, ast.AsyncWith)):
            for item in node.items:
                if isinstance(item.context_expr, ast.Call) and \
                        dotted_name(item.context_expr.func).split(".")[-1] == "atomic_open" and \
                        isinstance(item.optional_vars, ast.Name):
                    names.add(item.optional_vars.id)
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call) and \
                dotted_name(node.value.func).split(".")[-1] in ("BytesIO", "StringIO"):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return names


def _mode(call: ast.Call, position: int) -> str:
    mode = next((k.value for k in call.keywords if k.arg == "mode"), None)
    if mode is None and len(call.args) > position:
        mode = call.args[position]
    return mode.value if isinstance(mode, ast.Constant) and isinstance(mode.value, str) else \
        ("r" if mode is None else "?")


def hand_written_writes(source: str) -> List[str]:
    """Every write in ``source`` that does not go through selector/core/atomic.py, as ``line: what``."""
    tree = ast.parse(source)
    handles = _atomic_handles(tree)
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name, line = dotted_name(node.func), node.lineno
        last = name.split(".")[-1]
        if name in ("os.replace", "os.rename", "os.renames", "shutil.move"):
            found.append(f"{line}: {name}")
        elif name in ("shutil.copy", "shutil.copy2", "shutil.copyfile", "copyfile"):
            found.append(f"{line}: {name}")
        elif last == "rename" and isinstance(node.func, ast.Attribute):
            found.append(f"{line}: .rename(")
        elif last == "replace" and isinstance(node.func, ast.Attribute) and \
                len(node.args) == 1 and not node.keywords:  # Path.replace (str.replace takes 2)
            found.append(f"{line}: .replace(path)")
        elif last in ("write_text", "write_bytes") and isinstance(node.func, ast.Attribute) and \
                name.split(".")[0] != "atomic":
            found.append(f"{line}: .{last}(")
        elif name in ("open", "io.open", "codecs.open") or (name == "os.fdopen"):
            mode = _mode(node, 1)
            if WRITE_MODES & set(mode) or mode == "?":
                found.append(f'{line}: open(..., "{mode}")')
        elif name == "os.open":
            flags = {dotted_name(n).split(".")[-1] for n in ast.walk(node) if isinstance(n, ast.Attribute)}
            if flags & {"O_WRONLY", "O_RDWR", "O_CREAT", "O_APPEND", "O_TRUNC"}:
                found.append(f"{line}: os.open for writing")
        elif name in SAVERS or last in ("savefig", "to_parquet", "to_csv"):
            position = SAVERS.get(name, 0)
            target = node.args[position] if len(node.args) > position else None
            if not (isinstance(target, ast.Name) and target.id in handles):
                found.append(f"{line}: {name if name in SAVERS else last} to a path")
    return sorted(set(found), key=lambda item: int(item.split(":")[0]))


def test_every_write_in_the_package_goes_through_the_atomic_helper():
    problems, used = [], set()
    files = [p for root in SCANNED for p in sorted((REPO / root).rglob("*.py"))]
    assert len(files) > 40
    for path in files:
        relative = path.relative_to(REPO).as_posix()
        if relative == HELPER:
            continue
        for problem in hand_written_writes(path.read_text(encoding="utf-8")):
            entry = (relative, problem.split(": ", 1)[1])
            if entry in ALLOWED:
                used.add(entry)
            else:
                problems.append(f"{relative}:{problem}")
    assert not problems, "writes that bypass selector/core/atomic.py:\n" + "\n".join(problems)
    assert used == ALLOWED, f"exceptions no longer needed (remove them): {ALLOWED - used}"


@pytest.mark.parametrize("source", [
    "import os\nos.replace(a, b)",
    "tmp.rename(path)",
    "tmp.replace(path)",
    "path.write_text(text)",
    "path.write_bytes(data)",
    "open(path, 'w')",
    "open(path, mode='wb')",
    "open(path, 'a', encoding='utf-8')",
    "open(path, 'r+b')",
    "import shutil\nshutil.copyfile(a, b)",
    "import torch\ntorch.save(state, path)",
    "import numpy as np\nnp.save(path, array)",
    "from omegaconf import OmegaConf\nOmegaConf.save(config, path)",
    "from safetensors.numpy import save_file\nsave_file(tensors, path)",
    "figure.savefig(path)",
    "import os\nos.open(path, os.O_WRONLY | os.O_CREAT)",
])
def test_the_scan_finds_hand_written_writes(source):
    assert hand_written_writes(source), source


@pytest.mark.parametrize("source", [
    "from selector.core.atomic import write_text\nwrite_text(path, text)",
    "from selector.core import atomic\natomic.write_bytes(path, data)",
    "with atomic_open(path, 'wb') as handle:\n    torch.save(state, handle)",
    "with atomic_open(path) as out:\n    OmegaConf.save(config, out)",
    "text = name.replace('a', 'b')",
    "open(path, 'rb')",
    "open(path)",
])
def test_the_scan_passes_atomic_writes(source):
    assert hand_written_writes(source) == []


# ------------------------------------------------------------------------------ the helper
def _leftovers(folder: Path) -> List[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_write_text_and_bytes_create_folders_and_replace_whole(tmp_path):
    target = tmp_path / "a" / "b" / "file.txt"
    atomic.write_text(target, "one\n")
    atomic.write_text(target, "two\n")
    assert target.read_text() == "two\n"
    atomic.write_bytes(tmp_path / "x.bin", b"\x00\x01")
    assert (tmp_path / "x.bin").read_bytes() == b"\x00\x01"
    assert _leftovers(target.parent) == [] and _leftovers(tmp_path) == []


def test_a_failing_block_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "keep.json"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic.atomic_open(target) as handle:
            handle.write("half of the new")
            raise RuntimeError("killed mid-write")
    assert target.read_text() == "old" and _leftovers(tmp_path) == []


def test_a_symlink_at_the_destination_is_replaced_not_written_through(tmp_path):
    source = tmp_path / "input.json"
    source.write_text("the user's input")
    link = tmp_path / "out" / "input.json"
    link.parent.mkdir()
    link.symlink_to(source)
    atomic.write_text(link, "new")
    assert source.read_text() == "the user's input"
    assert not link.is_symlink() and link.read_text() == "new"


def test_permissions_follow_the_umask(tmp_path):
    previous = os.umask(0o022)
    try:
        script = atomic.write_text(tmp_path / "run.sh", "#!/bin/sh\n", permissions=0o755)
        plain = atomic.write_text(tmp_path / "plain.txt", "x")
    finally:
        os.umask(previous)
    assert stat.S_IMODE(script.stat().st_mode) == 0o755
    assert stat.S_IMODE(plain.stat().st_mode) == 0o644


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_folder_is_one_line_naming_the_path(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(InputError) as caught:
            atomic.write_text(folder / "x.txt", "x")
    finally:
        folder.chmod(0o700)
    assert "ro/x.txt" in str(caught.value) and "\n" not in str(caught.value)


def test_a_folder_where_a_file_should_go_is_one_line(tmp_path):
    (tmp_path / "taken").mkdir()
    with pytest.raises(InputError, match="taken: cannot write"):
        atomic.write_text(tmp_path / "taken", "x")
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="cannot write"):
        atomic.write_text(tmp_path / "file" / "below.txt", "x")  # a file where a folder should be


def test_copy_file_and_symlink_replace_in_one_step(tmp_path):
    source = tmp_path / "src.jpg"
    source.write_bytes(b"jpeg bytes")
    target = tmp_path / "out" / "x.jpg"
    atomic.symlink(target, source)
    assert target.is_symlink() and target.read_bytes() == b"jpeg bytes"
    atomic.symlink(target, source)  # again: the old link is replaced, no error
    atomic.copy_file(source, target)  # a link replaced by a copy; the source is untouched
    assert not target.is_symlink() and target.read_bytes() == b"jpeg bytes"
    assert source.read_bytes() == b"jpeg bytes" and _leftovers(target.parent) == []
    with pytest.raises(InputError, match="missing.jpg: cannot read"):
        atomic.copy_file(tmp_path / "missing.jpg", tmp_path / "y.jpg")


def test_a_swap_killed_between_its_renames_is_undone_by_the_next(tmp_path):
    """kill -9 after ``out`` was moved aside and before the new folder took its place: the
    next publish brings the previous version back first, and clears killed writers' staging."""
    from selector.core.atomic import publish_folder, restore_interrupted_swap

    out = tmp_path / "sel"
    aside = tmp_path / ".sel.99999.old"
    aside.mkdir()
    (aside / "selected.txt").write_text("previous\n")
    (tmp_path / ".sel.99998.new").mkdir()  # a killed writer's staging
    restore_interrupted_swap(out)
    assert (out / "selected.txt").read_text() == "previous\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sel"]
    staging = tmp_path / ".sel.new-one"
    staging.mkdir()
    (staging / "selected.txt").write_text("new\n")
    publish_folder(staging, out)
    assert (out / "selected.txt").read_text() == "new\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sel"]
