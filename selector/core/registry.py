"""The one registry mechanism: things chosen by name in settings (indicators, embedders, selection
methods) are classes registered under that name and created from their settings.

Why one mechanism: each kind used to keep its own dict, decorator and "unknown name" message, and
they drifted apart. A :class:`Registry` fills itself from a class decorator, imports the module that
registers a name only when that name is asked for (so listing or parsing imports nothing heavy),
and turns an unknown name or a setting the class does not take into one line naming it.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable, Dict, List, Mapping, Optional

from selector.core.errors import InputError


class Registry:
    """``what``: the kind's name in messages (``unknown indicator 'x' (known: ...)``).
    ``modules``: name -> module that registers it, imported on first use of that name.
    ``setting_label``: how a setting error is introduced (default ``<what> 'name'``)."""

    def __init__(self, what: str, modules: Optional[Mapping[str, str]] = None,
                 setting_label: Optional[Callable[[str, type], str]] = None) -> None:
        self.what = what
        self.modules: Dict[str, str] = dict(modules or {})
        self.setting_label = setting_label or (lambda name, cls: f"{what} {name!r}")
        self._classes: Dict[str, type] = {}

    def register(self, name: str) -> Callable[[type], type]:
        """Class decorator: the class is created by ``name`` (and knows it as ``cls.name``)."""
        def decorate(cls: type) -> type:
            cls.name = name
            self._classes[name] = cls
            return cls
        return decorate

    def names(self) -> List[str]:
        """Every name, registered or registrable (sorted), without importing anything."""
        return sorted(set(self.modules) | set(self._classes))

    def registered(self) -> Dict[str, type]:
        """The classes registered so far (what the imported modules registered)."""
        return dict(self._classes)

    def known(self, name: str) -> bool:
        """Whether ``name`` is registered or registrable (imports nothing)."""
        return name in self._classes or name in self.modules

    def unknown(self, name: str) -> InputError:
        """The one line for a name that is neither registered nor registrable, with the closest
        known name when there is one."""
        import difflib

        close = difflib.get_close_matches(str(name), self.names(), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return InputError(f"unknown {self.what} {name!r} (known: {', '.join(self.names())}){hint}")

    def get(self, name: str) -> type:
        """The class of ``name``, its module imported first when it has one."""
        if name not in self._classes and name in self.modules:
            module = self.modules[name]
            try:
                importlib.import_module(module)
            except ModuleNotFoundError as error:  # the module itself absent: this version lacks it
                if error.name != module:
                    raise
        if name not in self._classes:
            if name in self.modules:
                raise InputError(f"{self.what} {name!r} is not available in this version")
            raise self.unknown(name)
        return self._classes[name]

    def create(self, name: str, **settings: Any) -> Any:
        """An instance of ``name`` with these settings; a setting it does not take is one line."""
        cls = self.get(name)
        try:
            return cls(**settings)
        except TypeError as exc:  # a setting it does not take, named without Python internals
            import re

            text = re.sub(r"^\S+\(\) got an unexpected keyword argument ", "unknown setting ",
                          str(exc))
            raise InputError(f"{self.setting_label(name, cls)}: {text}") from None
