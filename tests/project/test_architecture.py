"""The shape of the house, enforced (issue 13).

The rules (the README's "Layout" section says the same in words):

* ``selector/`` holds only subpackages, in the order the data flows (``LAYERS``). A stage imports
  only ``selector.core`` and the stages before it; ``selector.app`` (CLI, pipeline, demo, the toy
  world) may import anything.
* ``lavis_plugins`` imports only selector's ``core``, ``data`` and ``selection``; ``eval_arena``
  only selector's ``core`` and ``data`` (and ``lavis_plugins``, whose registry its MiniGPT-4 tester
  builds models through). Nothing in ``selector`` below ``app`` imports either of them, and
  ``lavis_plugins`` never imports ``eval_arena``.
* ``benchmarks/`` never imports ``tests/``.
* No import cycle between modules, counting imports inside functions.
* No module over ``MAX_LINES`` lines.

Imports are read from the AST of every module, including imports inside functions and behind
``TYPE_CHECKING``: a lazy import is still a dependency.
"""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, Iterable, List, Set, Tuple

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("selector", "lavis_plugins", "eval_arena")
#: selector's stages, in the order the data flows
LAYERS = ("core", "data", "scoring", "labels", "model", "selection", "report", "app")
MAX_LINES = 500

#: what each outside package may import of selector (its own modules are always allowed)
OUTSIDE = {
    "lavis_plugins": {"selector.core", "selector.data", "selector.selection"},
    "eval_arena": {"selector.core", "selector.data", "lavis_plugins"},
}


def module_name(path: Path, root: Path = REPO) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules_of(root: Path = REPO, packages: Iterable[str] = PACKAGES) -> Dict[str, Path]:
    found = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            found[module_name(path, root)] = path
    return found


def imports_of(name: str, path: Path, known: Iterable[str]) -> List[Tuple[int, str]]:
    """``(line, module)`` for every import of one of ours in this module, wherever it sits.
    ``from package import name`` counts as importing ``package.name`` when that is a module."""
    known = set(known)
    is_package = path.name == "__init__.py"
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[:len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            for alias in node.names:
                child = f"{module}.{alias.name}"
                found.append((node.lineno, child if child in known else module))
    return [(line, module) for line, module in found if module.split(".")[0] in PACKAGES]


def group_of(module: str) -> str:
    """``selector.<stage>`` for selector's modules, the package for the others."""
    parts = module.split(".")
    if parts[0] == "selector" and len(parts) > 1:
        return f"selector.{parts[1]}"
    return parts[0]


def allowed(importer: str, imported: str) -> bool:
    source, target = group_of(importer), group_of(imported)
    if source == target:
        return True
    if source.startswith("selector."):
        stage = source.split(".")[1]
        if stage == "app":
            return True
        if not target.startswith("selector."):
            return False
        if target == "selector":  # the package's own __init__ (version only)
            return True
        return LAYERS.index(target.split(".")[1]) <= LAYERS.index(stage)
    if target == "selector":
        return True
    return target in OUTSIDE.get(source, set())


def broken_rules(modules: Dict[str, Path], root: Path = REPO) -> List[str]:
    problems = []
    for name, path in modules.items():
        for line, imported in imports_of(name, path, modules):
            if not allowed(name, imported):
                problems.append(f"{path.relative_to(root)}:{line}: {group_of(name)} may not "
                                f"import {imported}")
    return problems


def cycles(modules: Dict[str, Path]) -> List[List[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    graph = {name: sorted({m for _, m in imports_of(name, path, modules) if m in modules and m != name})
             for name, path in modules.items()}
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    found: List[List[str]] = []
    counter = [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def long_modules(modules: Dict[str, Path], limit: int = MAX_LINES, root: Path = REPO) -> List[str]:
    return [f"{path.relative_to(root)}: {n} lines" for path in modules.values()
            if (n := len(path.read_text(encoding="utf-8").splitlines())) > limit]


# ----------------------------------------------------------------------------- the rules, here

def test_dependencies_run_one_way():
    problems = broken_rules(modules_of())
    assert not problems, "imports against the layering:\n" + "\n".join(problems)


def test_no_import_cycles():
    found = cycles(modules_of())
    assert not found, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_no_module_over_the_limit():
    found = long_modules(modules_of())
    assert not found, f"modules over {MAX_LINES} lines:\n" + "\n".join(found)


def test_selector_top_level_holds_only_subpackages():
    top = REPO / "selector"
    strays = [p.name for p in top.iterdir()
              if p.name not in ("__init__.py", "__pycache__")
              and not (p.is_dir() and (p / "__init__.py").is_file())]
    assert not strays, f"selector/ should hold only subpackages, found: {strays}"
    assert sorted(p.name for p in top.iterdir() if p.is_dir() and p.name != "__pycache__") \
        == sorted(LAYERS)


def test_benchmarks_do_not_import_tests():
    problems = []
    for path in sorted((REPO / "benchmarks").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            problems += [f"{path.name}:{node.lineno}: {n}" for n in names
                         if n.split(".")[0] in ("tests", "conftest", "tiny_models")]
    assert not problems, problems


def test_tests_mirror_the_packages():
    """Every test module sits in the folder of the package it tests (tests/<package>/...)."""
    tests = REPO / "tests"
    allowed_folders = ({f"selector/{layer}" for layer in LAYERS}
                       | {"lavis_plugins", "eval_arena", "project"})
    folders = {p.parent.relative_to(tests).as_posix() for p in tests.rglob("test_*.py")}
    assert folders <= allowed_folders, f"test modules outside a package folder: " \
        f"{sorted(folders - allowed_folders)}"
    # each package's folder exists (project/: the README, the install, the rules of this file)
    assert folders == allowed_folders, sorted(allowed_folders - folders)


# ----------------------------------------------------------------------------- the test, tested

def _tree(tmp_path: Path, files: Dict[str, str]) -> Dict[str, Path]:
    for relative, text in files.items():
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return modules_of(tmp_path)


def _rules_on(tmp_path: Path, files: Dict[str, str]) -> List[str]:
    return broken_rules(_tree(tmp_path, files), tmp_path)


BASE = {f"selector/{layer}/__init__.py": "" for layer in LAYERS}
BASE.update({"selector/__init__.py": "", "lavis_plugins/__init__.py": "",
             "eval_arena/__init__.py": ""})


@pytest.mark.parametrize("importer, text, expected", [
    # a stage importing a later stage, also lazily inside a function
    ("selector/core/jsonio.py", "def f():\n    from selector.scoring.store import Store\n",
     "selector.core may not import selector.scoring.store"),
    ("selector/scoring/pool.py", "from selector.labels import split\n",
     "selector.scoring may not import selector.labels.split"),
    ("selector/model/fit.py", "import selector.app.cli as cli\n",
     "selector.model may not import selector.app.cli"),
    # relative imports are resolved
    ("selector/data/samples.py", "from ..selection.rule import select\n",
     "selector.data may not import selector.selection.rule"),
    # the outside packages
    ("lavis_plugins/builders.py", "from selector.model.network import build\n",
     "lavis_plugins may not import selector.model.network"),
    ("eval_arena/judge.py", "from selector.scoring.store import Store\n",
     "eval_arena may not import selector.scoring.store"),
    ("lavis_plugins/tiny_tester.py", "import eval_arena.testers\n",
     "lavis_plugins may not import eval_arena.testers"),
    ("selector/selection/select.py", "from eval_arena import metric\n",
     "selector.selection may not import eval_arena.metric"),
])
def test_a_wrong_import_is_caught(tmp_path, importer, text, expected):
    files = dict(BASE)
    for module in ("selector/scoring/store.py", "selector/labels/split.py", "selector/app/cli.py",
                   "selector/selection/rule.py", "selector/model/network.py",
                   "eval_arena/testers.py", "eval_arena/metric.py"):
        files[module] = ""
    files[importer] = text
    problems = _rules_on(tmp_path, files)
    assert len(problems) == 1 and problems[0].endswith(expected), problems


@pytest.mark.parametrize("importer, text", [
    ("selector/model/fit.py", "from selector.scoring.pool import FeaturePool\n"),
    ("selector/app/cli.py", "from eval_arena import cli\nfrom selector.report import page\n"),
    ("lavis_plugins/builders.py", "from selector.selection.run_selection import x\n"),
    ("eval_arena/minigpt4_tester.py", "from lavis_plugins.registration import register\n"),
    ("selector/labels/split.py", "from ..core.atomic import write_text\n"),
])
def test_a_right_import_passes(tmp_path, importer, text):
    files = dict(BASE)
    files[importer] = text
    assert _rules_on(tmp_path, files) == []


def test_a_cycle_is_caught_also_through_a_lazy_import(tmp_path):
    files = dict(BASE)
    files["selector/core/a.py"] = "from selector.core import b\n"
    files["selector/core/b.py"] = "def later():\n    import selector.core.c\n"
    files["selector/core/c.py"] = "from .a import thing\n"
    assert cycles(_tree(tmp_path, files)) == [["selector.core.a", "selector.core.b",
                                              "selector.core.c"]]
    files["selector/core/c.py"] = ""
    assert cycles(_tree(tmp_path / "fixed", files)) == []


def test_a_long_module_is_caught(tmp_path):
    files = dict(BASE)
    files["selector/core/long.py"] = "x = 1\n" * (MAX_LINES + 1)
    files["selector/core/short.py"] = "x = 1\n" * MAX_LINES
    assert long_modules(_tree(tmp_path, files), root=tmp_path) == [
        f"selector/core/long.py: {MAX_LINES + 1} lines"]
