"""lavis_plugins.autoload and setup.py's .pth: drop-in activation in unmodified host scripts."""
from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import lavis_plugins

REPO = Path(__file__).resolve().parents[2]
CHECK_LAVIS = textwrap.dedent("""
    import sys
    from lavis.common.registry import registry
    cls = registry.get_builder_class("cc_sbu_align_selected")
    runner = registry.get_runner_class("igpt4_portable")
    print("registered" if cls is not None and runner is not None else "absent")
""")


def _python(code, **env):
    environment = {**os.environ, **env}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=environment, timeout=300)


def _lavis():
    if "lavis" not in lavis_plugins.available_hosts():
        pytest.skip("salesforce-lavis is not installed (make test installs it with --no-deps)")


def _autoload_installed():
    import sysconfig

    pth = Path(sysconfig.get_paths()["purelib"]) / "instructiongpt4-autoload.pth"
    if not pth.is_file():
        pytest.skip(f"{pth} is missing: this environment did not pip-install the plugin")


def test_plain_import_of_lavis_registers_our_names():
    _lavis()
    _autoload_installed()
    result = _python(CHECK_LAVIS)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "registered"


def test_environment_variable_switches_the_hook_off():
    _lavis()
    _autoload_installed()
    shim = ("from selector.core.compat import ensure_torchvision_importable\n"
            "ensure_torchvision_importable()\n")  # the hook does this too; here nobody else does
    result = _python(shim + CHECK_LAVIS, IGPT4_AUTOLOAD="0")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "absent"


def test_hook_registers_when_a_host_package_finishes_importing(tmp_path, monkeypatch):
    """A fake host package: the hook wraps its loader, and registration runs after __init__."""
    from lavis_plugins import autoload

    package = tmp_path / "minigpt4"
    package.mkdir()
    (package / "__init__.py").write_text("import sys\nsys.modules[__name__].ready = True\n")
    seen = []
    monkeypatch.setattr(autoload, "after_host_import",
                        lambda host: seen.append((host, sys.modules[host].ready)))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "minigpt4", raising=False)
    hook = autoload.HostImportHook()
    monkeypatch.setattr(sys, "meta_path", [hook] + list(sys.meta_path))
    importlib.import_module("minigpt4")

    assert seen == [("minigpt4", True)]
    monkeypatch.delitem(sys.modules, "minigpt4")


def test_a_failing_registration_warns_and_never_breaks_the_host(monkeypatch):
    from lavis_plugins import autoload, registration

    def broken(hosts=None):
        raise RuntimeError("registry exploded")

    monkeypatch.setattr(registration, "register", broken)
    with pytest.warns(RuntimeWarning, match="could not register into lavis.*registry exploded"):
        autoload.after_host_import("lavis")


def test_install_is_idempotent_and_respects_the_switch(monkeypatch):
    from lavis_plugins import autoload

    monkeypatch.setattr(sys, "meta_path", [f for f in sys.meta_path
                                           if not isinstance(f, autoload.HostImportHook)])
    monkeypatch.setenv("IGPT4_AUTOLOAD", "0")
    assert autoload.install() is False
    monkeypatch.setenv("IGPT4_AUTOLOAD", "1")
    monkeypatch.setattr(autoload, "after_host_import", lambda host: None)
    assert autoload.install() is True and autoload.install() is False
    assert sum(isinstance(f, autoload.HostImportHook) for f in sys.meta_path) == 1


@pytest.mark.parametrize("editable", [False, True], ids=["regular", "editable"])
def test_pip_install_puts_the_pth_into_site_packages(tmp_path, editable):
    """Both install kinds, offline: a copy of the source installed with this environment's pip
    and setuptools (no dependencies, no build isolation) into a fresh prefix, which an isolated
    interpreter then uses as its only site dir."""
    import sysconfig

    source = tmp_path / "src"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "__pycache__", "build", "*.egg-info", "demo_out", "output"))
    prefix = tmp_path / "prefix"
    # --ignore-installed: without it pip would first uninstall this environment's own copy
    command = [sys.executable, "-m", "pip", "install", "-q", "--ignore-installed", "--no-deps",
               "--no-build-isolation", "--no-index", "--prefix", str(prefix)]
    command += ["-e", str(source)] if editable else [str(source)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    purelib = Path(sysconfig.get_path("purelib", vars={"base": str(prefix)}))
    assert (purelib / "instructiongpt4-autoload.pth").read_text() == \
        "import lavis_plugins._startup\n"
    probe = ("import site, sys; site.addsitedir(sys.argv[1]); import lavis_plugins; "
             "from lavis_plugins.autoload import HostImportHook; print(lavis_plugins.__file__); "
             "print(any(isinstance(f, HostImportHook) for f in sys.meta_path))")
    result = subprocess.run([sys.executable, "-I", "-S", "-c", probe, str(purelib)],
                            capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    location, hooked = result.stdout.split()
    assert hooked == "True"
    assert location.startswith(str(source) if editable else str(purelib))
