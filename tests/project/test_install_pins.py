"""setup.py's ranges and the two constraints files: installing never changes a MiniGPT-4 host.

Checked here without installing anything: every requirement of every documented extra admits the
versions MiniGPT-4's environment pins (constraints-minigpt4.txt restates them) and the modern set
(constraints.txt); the versions installed in the environment running the tests satisfy the
ranges (CI runs this file in both environments); a missing optional module gives one line naming
the extra. The install itself, with `pip freeze` compared before and after, is .ci/minigpt4_host.sh.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[2]
#: MiniGPT-4's environment.yml (current HEAD), as the issue lists it
MINIGPT4_PINS = {"transformers": "4.30.0", "timm": "0.6.13", "huggingface-hub": "0.18.0",
                 "tokenizers": "0.13.2", "accelerate": "0.20.3", "peft": "0.2.0",
                 "omegaconf": "2.3.0", "torch": "2.0.0", "matplotlib": "3.7.0",
                 "regex": "2022.10.31", "tqdm": "4.64.1", "pyyaml": "6.0"}
#: the extras a MiniGPT-4 environment is documented to take (README "Install")
HOST_EXTRAS = ("indicators", "gpt", "report", "parquet", "test")


def setup_kwargs() -> Dict[str, Any]:
    """The keyword arguments setup.py passes to setup(), without running it."""
    import setuptools

    captured: Dict[str, Any] = {}
    original = setuptools.setup
    setuptools.setup = lambda **kwargs: captured.update(kwargs)
    try:
        source = (REPO / "setup.py").read_text(encoding="utf-8")
        namespace = {"__file__": str(REPO / "setup.py"), "__name__": "setup"}
        import os

        cwd = os.getcwd()
        os.chdir(REPO)
        try:
            exec(compile(source, "setup.py", "exec"), namespace)
        finally:
            os.chdir(cwd)
    finally:
        setuptools.setup = original
    return captured


def requirements(extras=None) -> List[Requirement]:
    kwargs = setup_kwargs()
    names = kwargs["extras_require"] if extras is None else extras
    found = [Requirement(r) for r in kwargs["install_requires"]]
    for extra in names:
        found += [Requirement(r) for r in kwargs["extras_require"][extra]]
    return found


def pins(path: Path) -> Dict[str, Version]:
    found = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#")[0].strip()
        if line:
            requirement = Requirement(line)
            (specifier,) = requirement.specifier
            assert specifier.operator == "==", line
            found[canonicalize_name(requirement.name)] = Version(specifier.version.split("+")[0])
    return found


def test_constraints_file_restates_the_minigpt4_pins():
    host = pins(REPO / "constraints-minigpt4.txt")
    for name, version in MINIGPT4_PINS.items():
        if name != "torch":  # the installed torch satisfies torch>=2.0: pip leaves it alone
            assert host[canonicalize_name(name)] == Version(version), name


@pytest.mark.parametrize("environment", ["minigpt4", "modern"])
def test_every_extra_admits_the_pinned_versions(environment):
    if environment == "minigpt4":
        pinned = {**{canonicalize_name(k): Version(v) for k, v in MINIGPT4_PINS.items()},
                  **pins(REPO / "constraints-minigpt4.txt")}
        extras = HOST_EXTRAS
    else:
        pinned, extras = pins(REPO / "constraints.txt"), None
    checked = 0
    for requirement in requirements(extras):
        version = pinned.get(canonicalize_name(requirement.name))
        if version is not None:
            assert requirement.specifier.contains(version, prereleases=True), \
                f"{requirement} excludes {requirement.name}=={version} ({environment})"
            checked += 1
    assert checked >= 8


def test_python_39_is_admitted():
    assert SpecifierSet(setup_kwargs()["python_requires"]).contains("3.9")


def test_installed_versions_satisfy_the_ranges():
    """In whichever environment runs this (the tested one, or CI's MiniGPT-4 host)."""
    from importlib.metadata import PackageNotFoundError, version

    marker_env = default_environment()
    for requirement in requirements(("indicators",)):
        if requirement.marker is not None and not requirement.marker.evaluate(marker_env):
            continue
        try:
            installed = Version(version(requirement.name).split("+")[0])
        except PackageNotFoundError:
            continue
        assert requirement.specifier.contains(installed, prereleases=True), \
            f"installed {requirement.name} {installed} is outside {requirement}"


# -------------------------------------------------------------------- missing optional modules
BLOCK = "import sys\nfor name in sys.argv[1].split(','):\n    sys.modules[name] = None\n"


@pytest.mark.parametrize("blocked, argv, extra", [
    ("open_clip", ["demo", "--out", "{tmp}/demo"], "indicators"),
])
def test_a_missing_optional_module_is_one_line_naming_the_extra(blocked, argv, extra, tmp_path):
    """``igpt4 demo`` without open_clip: ``needs the [indicators] extra: pip install ...``."""
    script = BLOCK + ("from selector.app.cli import main\n"
                      "sys.exit(main(sys.argv[2:]))\n")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    result = subprocess.run([sys.executable, "-c", script, blocked, *argv], capture_output=True,
                            text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    (line,) = [l for l in result.stderr.splitlines() if l.startswith("igpt4: error:")]
    assert f"[{extra}]" in line and f"instructiongpt4[{extra}]" in line, line


def test_missing_extra_line_knows_only_optional_modules():
    from selector.core.extras import MODULE_EXTRAS, missing_extra_line

    line = missing_extra_line(ModuleNotFoundError("No module named 'open_clip'", name="open_clip"))
    assert line.startswith("needs the [indicators] extra") and "\n" not in line
    assert "constraints-minigpt4.txt" in line
    sub = ModuleNotFoundError("No module named 'transformers.models.x'",
                              name="transformers.models.x")
    assert "[indicators]" in missing_extra_line(sub)
    assert missing_extra_line(ModuleNotFoundError("x", name="numpy")) is None  # a core one: a bug
    assert missing_extra_line(ImportError("cannot import name 'x'")) is None
    assert set(MODULE_EXTRAS.values()) <= set(setup_kwargs()["extras_require"])


def test_cli_debug_keeps_the_traceback(tmp_path):
    script = BLOCK + "from selector.app.cli import main\nsys.exit(main(sys.argv[2:]))\n"
    result = subprocess.run([sys.executable, "-c", script, "open_clip", "--debug", "demo", "--out",
                             str(tmp_path / "d")], capture_output=True, text=True, timeout=600,
                            cwd=tmp_path)
    assert result.returncode != 0 and "ModuleNotFoundError" in result.stderr
