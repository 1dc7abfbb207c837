"""Mutation score of the core modules, per module (``pip install -e '.[mutation]'``).

    python tests/mutation_score.py                 # every core module, fails below 90%
    python tests/mutation_score.py --module store  # one (substring of its path)
    python tests/mutation_score.py --min 95 --show-survivors

Why a script and not a bare ``mutmut run``: each core module is scored against only the test files
that pin it (``tests/mutation.json``), so a mutant's verdict costs seconds, not a suite run, and
"killed" means killed by that module's own tests rather than by some far-away test by accident.

mutmut 3 writes its mutants into ``mutants/`` beside the sources it is pointed at. This script
never points it at the checkout: every module is mutated in a fresh copy of the sources and tests
in a temporary folder, so a checkout in use (an editor, other runs) never sees a mutated file, and
an interrupted run leaves nothing behind in it. It runs at the lowest CPU priority with one worker.

Score = killed / (mutants - equivalent). A mutant whose code no selected test reaches ("no tests"),
or that survives, counts against the score. Timeouts (an infinite loop the mutation created) count
as killed: the tests did notice. Equivalent mutants (no test can tell them from the original) are
listed in ``tests/mutation.json`` with a reason, matched by function and mutated line, and shown in
the output; they are not counted either way.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

REPO = Path(__file__).resolve().parents[1]
CONFIG = Path(__file__).with_name("mutation.json")
#: what a copy needs: the packages (all of them, so imports between them resolve inside the copy)
#: and the tests with their data
COPIED = ("selector", "eval_arena", "lavis_plugins", "configs", "tests")
SOURCE_PACKAGES = ("selector", "eval_arena", "lavis_plugins")
IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", "mutants", ".pytest_cache")
KILLED = {"killed", "timeout", "segfault", "caught by type check"}
#: mutmut's exit-code classes (mutmut.stats.status_by_exit_code), read without importing mutmut
STATUS = {1: "killed", 3: "killed", 0: "survived", 5: "no tests", 33: "no tests", 34: "skipped",
          35: "suspicious", 36: "timeout", 24: "timeout", -24: "timeout", 152: "timeout",
          255: "timeout", 37: "caught by type check", -11: "segfault", -9: "segfault",
          2: "interrupted", None: "not checked"}


@dataclass
class Equivalent:
    """One equivalent mutant (``function`` and the mutated ``line``), or a class of them:
    ``case_only`` (a regular expression) matches every mutant that only changes the letter case
    of lines the expression finds (SQL: SQLite reads keywords and names in any case)."""

    module: str
    reason: str
    function: str = ""  # the function or method as mutmut names it (e.g. "x_sample_hash")
    line: str = ""  # the mutated line ("+" side of the diff), stripped
    case_only: str = ""
    used: int = 0

    def matches(self, name: str, diff: str) -> bool:
        if self.case_only:
            removed, added = changed_lines(diff, "-"), changed_lines(diff, "+")
            return bool(removed) and removed != added and \
                [x.lower() for x in removed] == [x.lower() for x in added] and \
                all(re.search(self.case_only, x) for x in removed)
        return self.function == function_of(name) and self.line in changed_lines(diff, "+")


@dataclass
class ModuleScore:
    module: str
    statuses: Dict[str, str] = field(default_factory=dict)  # mutant name -> status
    equivalent: Dict[str, Equivalent] = field(default_factory=dict)
    diffs: Dict[str, str] = field(default_factory=dict)  # surviving mutant -> diff
    error: Optional[str] = None

    @property
    def counted(self) -> List[str]:
        """Mutants in the score: all but the equivalent ones and, after a time limit, those
        never checked."""
        return [name for name, status in self.statuses.items()
                if name not in self.equivalent and status != "not checked"]

    @property
    def unchecked(self) -> int:
        return sum(1 for status in self.statuses.values() if status == "not checked")

    @property
    def killed(self) -> int:
        return sum(1 for name in self.counted if self.statuses[name] in KILLED)

    @property
    def total(self) -> int:
        return len(self.counted)

    @property
    def percent(self) -> float:
        return 100.0 * self.killed / self.total if self.total else 100.0

    @property
    def survivors(self) -> List[str]:
        return [name for name in self.counted if self.statuses[name] not in KILLED]


@dataclass
class Module:
    path: str
    tests: List[str]
    deselect: Dict[str, str]  # test id -> why it is left out of mutation runs


def load_config(path: Path = CONFIG) -> Tuple[Dict[str, Module], List[Equivalent]]:
    document = json.loads(path.read_text(encoding="utf-8"))
    modules = {name: Module(name, list(entry["tests"]), dict(entry.get("deselect", {})))
               for name, entry in document["modules"].items()}
    equivalent = [Equivalent(e["module"], e["reason"], e.get("function", ""),
                             e.get("line", "").strip(), e.get("case_only", ""))
                  for e in document.get("equivalent", [])]
    return modules, equivalent


def prepare_copy(module: Module, folder: Path) -> Path:
    """A copy of the sources and tests with a mutmut configuration for one module."""
    tests = module.tests
    copy = folder / "repo"
    copy.mkdir(parents=True)
    for name in COPIED:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, copy / name, ignore=IGNORED, symlinks=True)
    present = [t for t in tests if (REPO / t).is_file()]
    if not present:
        raise SystemExit(f"mutation_score: {module.path}: none of its test files exist "
                         f"({', '.join(tests)})")
    deselect = [arg for test in module.deselect for arg in ("--deselect", test)]
    lines = ["[mutmut]", "source_paths =", *(f"    {p}" for p in SOURCE_PACKAGES),
             f"only_mutate = {module.path}", "pytest_add_cli_args_test_selection =",
             *(f"    {t}" for t in present), "pytest_add_cli_args =", "    -p", "    no:cacheprovider",
             *(f"    {arg}" for arg in deselect),
             "use_git_change_detection = false", "track_dependencies = false",
             "process_isolation = forkserver", ""]
    (copy / "setup.cfg").write_text("\n".join(lines), encoding="utf-8")
    return copy


#: The installed package's autoload .pth imports ``selector`` (from the checkout) at every
#: interpreter start; left there, the tests would import the checkout's modules instead of the
#: copy's mutants. This ``sitecustomize`` (run after the .pth files) forgets them again.
SITECUSTOMIZE = """import sys
for _name in list(sys.modules):
    if _name.split(".")[0] in {packages!r}:
        del sys.modules[_name]
"""


def environment(folder: Path, copy: Path) -> Dict[str, str]:
    """mutmut's environment. PYTHONPATH: the ``sitecustomize`` above, then the mutants, so that a
    test's subprocess (a CLI run) also imports the mutated copy, never the checkout."""
    site = folder / "site"
    site.mkdir(exist_ok=True)
    # made now, not by mutmut: a PYTHONPATH entry missing at start-up is cached as "no such
    # folder" for the whole process, and imports would fall through to the installed checkout
    (copy / "mutants").mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE.format(packages=SOURCE_PACKAGES),
                                           encoding="utf-8")
    env = dict(os.environ)
    env.update(PYTHONPATH=os.pathsep.join([str(site), str(copy / "mutants")]),
               IGPT4_AUTOLOAD="0", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               OPENBLAS_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", PYTHONHASHSEED="0")
    # the copy sits elsewhere, so point the tests at the reference files the checkout would find
    reference = REPO.parent / "shared" / "reference" / "instructiongpt4"
    if reference.is_dir():
        env.setdefault("IGPT4_REFERENCE", str(reference))
    return env


def _tail(done: "subprocess.CompletedProcess[str]") -> str:
    """The end of mutmut's output without its spinner frames."""
    text = ((done.stdout or "") + (done.stderr or "")).replace("\r", "\n")
    lines = [line for line in text.splitlines()
             if line.strip() and not line.lstrip().startswith(tuple("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"))]
    return "\n".join(lines[-40:])


def mutant_diff(copy: Path, name: str, env: Dict[str, str]) -> str:
    done = subprocess.run([sys.executable, "-m", "mutmut", "show", name], cwd=copy, env=env,
                          capture_output=True, text=True, timeout=300)
    return done.stdout


def function_of(name: str) -> str:
    """``selector.store.x_sample_hash__mutmut_3`` -> ``x_sample_hash``; methods keep their class
    (``xǁStoreǁput__mutmut_2`` -> ``xǁStoreǁput``)."""
    return name.rsplit(".", 1)[-1].rsplit("__mutmut_", 1)[0]


def changed_lines(diff: str, side: str) -> List[str]:
    """The lines of one side of a diff ("-" original, "+" mutant), stripped."""
    return [line[1:].strip() for line in diff.splitlines()
            if line.startswith(side) and not line.startswith(side * 3)]


def _run_for_at_most(command: List[str], cwd: Path, env: Dict[str, str], verbose: bool,
                     max_seconds: Optional[float]) -> "subprocess.CompletedProcess[str]":
    """Run mutmut; past ``max_seconds`` interrupt it (Ctrl-C: it stops and keeps the verdicts so
    far, and the score covers the mutants checked)."""
    pipe = None if verbose else subprocess.PIPE
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=pipe, stderr=pipe, text=True)
    try:
        stdout, stderr = process.communicate(timeout=max_seconds)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGINT)
        try:
            stdout, stderr = process.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            process.kill()
            stdout, stderr = process.communicate()
    except BaseException:
        process.kill()
        process.wait()
        raise
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def score_module(module: Module, equivalent: Sequence[Equivalent], keep: bool,
                 verbose: bool, max_seconds: Optional[float] = None) -> ModuleScore:
    result = ModuleScore(module.path)
    folder = Path(tempfile.mkdtemp(prefix="igpt4-mutation-"))
    try:
        copy = prepare_copy(module, folder)
        env = environment(folder, copy)
        command = ["nice", "-n", "19", sys.executable, "-m", "mutmut", "run", "--max-children", "1"]
        done = _run_for_at_most(command, copy, env, verbose, max_seconds)
        meta = copy / "mutants" / (module.path + ".meta")
        if not meta.is_file():
            tail = "" if verbose else _tail(done)
            result.error = f"mutmut produced no results (exit {done.returncode})\n{tail}"
            return result
        codes = json.loads(meta.read_text(encoding="utf-8"))["exit_code_by_key"]
        result.statuses = {name: STATUS.get(code, "suspicious") for name, code in codes.items()}
        if done.returncode != 0 and all(s == "not checked" for s in result.statuses.values()):
            tail = "" if verbose else _tail(done)
            result.error = f"mutmut checked no mutant (exit {done.returncode}): its clean run of the " \
                           f"tests must pass first\n{tail}"
            return result
        mine = [e for e in equivalent if e.module == module.path]
        for name, status in result.statuses.items():
            if status in KILLED or status == "not checked":
                continue
            diff = mutant_diff(copy, name, env)
            result.diffs[name] = diff
            for candidate in mine:
                if candidate.matches(name, diff):
                    candidate.used += 1
                    result.equivalent[name] = candidate
                    break
    finally:
        if keep:
            print(f"  (kept {folder})")
        else:
            shutil.rmtree(folder, ignore_errors=True)
    return result


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--module", action="append", default=[],
                        help="score only modules whose path contains this (repeatable)")
    parser.add_argument("--min", type=float, default=90.0, help="lowest acceptable score, in %%")
    parser.add_argument("--show-survivors", action="store_true",
                        help="print the diff of every surviving mutant")
    parser.add_argument("--keep", action="store_true", help="keep the temporary copies")
    parser.add_argument("--verbose", action="store_true", help="show mutmut's own output")
    parser.add_argument("--max-seconds", type=float,
                        help="stop each module's run after this long and score the mutants "
                             "checked by then (the output says how many were not)")
    parser.add_argument("--report", type=Path, help="also write the scores and the surviving "
                                                    "mutants' diffs to this JSON file")
    args = parser.parse_args(argv)

    try:
        import mutmut  # noqa: F401
    except ImportError:
        parser.exit(2, "mutation_score: mutmut is not installed: pip install -e '.[mutation]' "
                       "(Python 3.10 or newer)\n")
    modules, equivalent = load_config()
    chosen = [m for m in modules if not args.module or any(s in m for s in args.module)]
    if not chosen:
        parser.error(f"no core module matches {args.module}")
    scores = []
    for module in chosen:
        entry = modules[module]
        print(f"{module}: mutating a copy (tests: {' '.join(entry.tests)}"
              f"{f', {len(entry.deselect)} left out' if entry.deselect else ''}) ...", flush=True)
        scores.append(score_module(entry, equivalent, args.keep, args.verbose, args.max_seconds))

    failed = False
    print()
    for score in scores:
        if score.error:
            print(f"{score.module}: ERROR {score.error}")
            failed = True
            continue
        below = score.percent < args.min
        failed = failed or below
        partial = score.unchecked > 0
        failed = failed or partial
        print(f"{score.module}: {score.killed}/{score.total} = {score.percent:.1f}%"
              f"{'  BELOW ' + format(args.min, 'g') + '%' if below else ''}"
              f"  ({len(score.equivalent)} equivalent excluded"
              f"{f'; PARTIAL: {score.unchecked} not checked in time' if partial else ''})")
        for name in score.survivors:
            print(f"    {score.statuses[name]}: {name}")
            if args.show_survivors:
                print("      " + "\n      ".join(score.diffs.get(name, "").splitlines()))
        for name, why in score.equivalent.items():
            print(f"    equivalent: {name}: {why.reason}")
    for stale in (e for e in equivalent if e.module in chosen and not e.used):
        print(f"note: equivalent entry no longer matches a surviving mutant: "
              f"{stale.module} {stale.function or stale.case_only}: {stale.line}")
    if args.report:
        args.report.write_text(json.dumps({score.module: {
            "killed": score.killed, "total": score.total, "percent": round(score.percent, 1),
            "not_checked": score.unchecked,
            "error": score.error,
            "survivors": {name: {"status": score.statuses[name], "diff": score.diffs.get(name)}
                          for name in score.survivors},
            "equivalent": {name: why.reason for name, why in score.equivalent.items()}}
            for score in scores}, indent=1, ensure_ascii=False), encoding="utf-8")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
