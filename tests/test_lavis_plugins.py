"""lavis_plugins: host detection without importing the hosts."""
from __future__ import annotations

import pytest

import lavis_plugins
from selector.errors import InputError


def test_no_host_gives_one_clear_message(monkeypatch):
    monkeypatch.setattr(lavis_plugins.importlib.util, "find_spec", lambda name: None)
    assert lavis_plugins.available_hosts() == []
    with pytest.raises(InputError, match="neither MiniGPT-4 nor LAVIS is importable"):
        lavis_plugins.require_host()


def test_detects_installed_hosts(monkeypatch):
    monkeypatch.setattr(lavis_plugins.importlib.util, "find_spec",
                        lambda name: object() if name == "lavis" else None)
    assert lavis_plugins.available_hosts() == ["lavis"]
