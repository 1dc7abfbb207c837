"""Settings from the shipped YAML configs, a user's YAML and ``--set key=value`` overrides,
merged with OmegaConf (the config system of LAVIS and MiniGPT-4) and validated when they are
loaded, against the section schemas of :mod:`selector.schema`.

Each source is a :class:`Layer` that knows where it came from, so that a bad value is reported as
one line naming the key and its source: the shipped default, the ``--config`` file (with the line)
or the very ``--set`` that set it. Malformed YAML is reported with its file, line and column.
"""
from __future__ import annotations

import dataclasses
import difflib
import io
import math
import operator
import re
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

from selector.core.errors import InputError

Key = Tuple[str, ...]
_ABSENT = object()
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def config_dir() -> Path:
    """The shipped ``configs/`` folder (installed as the ``igpt4_configs`` package)."""
    import igpt4_configs

    return Path(list(igpt4_configs.__path__)[0])


# ---------------------------------------------------------------------------------------------
# layers: a source of settings and where it came from
# ---------------------------------------------------------------------------------------------

@dataclass
class Layer:
    """One source of settings: ``label`` names it in errors (a file path, ``--set KEY=VALUE``);
    ``values`` is its plain, unresolved content; ``file`` and ``inside`` (where ``values`` sits in
    that file) let an error point at the line."""

    label: str
    values: Dict[str, Any]
    file: Optional[Path] = None
    inside: Key = ()

    def get(self, key: Key) -> Any:
        node: Any = self.values
        for part in key:
            if not isinstance(node, dict) or part not in node:
                return _ABSENT
            node = node[part]
        return node

    def sub(self, key: Key) -> Optional["Layer"]:
        """The part of this layer under ``key`` (a nested block), or None when it has none."""
        node = self.get(key)
        if not isinstance(node, dict):
            return None
        return Layer(self.label, node, self.file, self.inside + key)

    def where(self, key: Key) -> str:
        line = _yaml_line(self.file, self.inside + key) if self.file is not None else None
        return f"{self.label} line {line}" if line else self.label


def _yaml_line(path: Path, key: Key) -> Optional[int]:
    """The line of ``key`` in a YAML file (the deepest part of it found), for error messages."""
    import yaml

    try:
        node = yaml.compose(path.read_text(encoding="utf-8"), Loader=yaml.SafeLoader)
    except (OSError, ValueError, yaml.YAMLError):
        return None
    line = None
    for part in key:
        if not isinstance(node, yaml.MappingNode):
            break
        for name, value in node.value:
            if isinstance(name, yaml.ScalarNode) and name.value == part:
                line, node = name.start_mark.line + 1, value
                break
        else:
            break
    return line


def _plain(config: Any) -> Dict[str, Any]:
    from omegaconf import OmegaConf

    values = OmegaConf.to_container(config, resolve=False)
    return values if isinstance(values, dict) else {}


def check_yaml_nesting(text: str, label: str, lines: bool = True) -> None:
    """Refuse YAML that nests lists and mappings more than ``MAX_NESTING`` deep, with one line
    naming ``label`` and the line, *before* it is parsed into values: building the values
    recurses once per level, and deep enough input overflows Python's recursion limit or, inside
    the YAML parser, the C stack (a segmentation fault that no ``except`` can catch). PyYAML's
    event parser is a state machine, not a recursion, so counting its events is safe at any
    depth; it stops at the first level too deep. Malformed YAML is left to the real parse, which
    reports it with its line and column."""
    import yaml

    from selector.core.jsonio import MAX_NESTING

    depth = 0
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                depth += 1
                if depth > MAX_NESTING:
                    where = f"{label} line {event.start_mark.line + 1}" if lines else label
                    raise InputError(f"{where}: nested more than "
                                     f"{MAX_NESTING} levels deep (no setting nests like that)")
            elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                depth -= 1
    except yaml.YAMLError:
        return


def load_yaml(path: Path, label: Optional[str] = None):
    """A YAML file as an OmegaConf ``DictConfig``; malformed YAML, a file that is not a mapping,
    or one that cannot be read is one :class:`InputError` line naming the file (and line)."""
    import yaml
    from omegaconf import DictConfig, OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from selector.core.jsonio import read_bytes

    label = label or str(path)
    try:
        text = read_bytes(path, label).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{label}: not UTF-8 text (bad byte at offset {exc.start})") from None
    check_yaml_nesting(text, label)
    try:
        config = OmegaConf.load(io.StringIO(text))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" line {mark.line + 1} column {mark.column + 1}" if mark else ""
        raise InputError(f"{label}{where}: malformed YAML ({exc.problem or exc.context})") from None
    except yaml.YAMLError as exc:
        raise InputError(f"{label}: malformed YAML ({' '.join(str(exc).split())[:160]})") from None
    except (OmegaConfBaseException, ValueError, TypeError) as exc:
        raise InputError(f"{label}: not a valid config "
                         f"({' '.join(str(exc).split())[:160]})") from None
    if not isinstance(config, DictConfig):
        raise InputError(f"{label}: expected a YAML mapping of settings, got a list")
    return config


def shipped(base: str, *key: str) -> Any:
    """A value of a shipped YAML file (``shipped("pipeline/base.yaml", "split", "k")``): where a
    command-line flag or a library call left a setting out, its default is read here, so the
    shipped YAML stays the one place defaults live."""
    node: Any = _plain(load_yaml(config_dir() / base, base))
    for name in key:
        if not isinstance(node, dict) or name not in node:
            raise KeyError(f"{base}: no {'.'.join(key)}")
        node = node[name]
    return node


def file_layer(path: Path, label: Optional[str] = None) -> Layer:
    return Layer(label or str(path), _plain(load_yaml(path, label)), Path(path))


def _show_override(item: str) -> str:
    """``KEY=VALUE`` as an error names it: whole, unless it is too long for one line."""
    return item if len(item) <= 120 else item[:100] + f"... ({len(item)} characters)"


def override_layers(overrides: Sequence[str], source: str = "--set") -> List[Layer]:
    """One layer per ``KEY=VALUE`` (so an error names the very override that caused it)."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from selector.core.jsonio import MAX_NESTING

    layers = []
    for item in overrides:
        label = f"{source} {_show_override(str(item))}"
        key = str(item).split("=", 1)[0].strip()
        if "=" not in str(item) or not key:
            raise InputError(f"{label}: expected KEY=VALUE (e.g. training.epochs=50)")
        if key.count(".") + key.count("[") >= MAX_NESTING:
            raise InputError(f"{label}: the key has more than {MAX_NESTING} parts (no setting "
                             "nests like that)")
        check_yaml_nesting(str(item).split("=", 1)[1], label, lines=False)
        try:
            layer = OmegaConf.from_dotlist([str(item)])
        except (OmegaConfBaseException, ValueError, TypeError) as exc:
            raise InputError(f"{label}: cannot read the value "
                             f"({' '.join(str(exc).split())[:160]})") from None
        except Exception as exc:  # the YAML parser of the value raises its own types
            import yaml

            if not isinstance(exc, yaml.YAMLError):
                raise
            raise InputError(f"{label}: malformed value ({' '.join(str(exc).split())[:160]})"
                             ) from None
        layers.append(Layer(label, _plain(layer)))
    return layers


# ---------------------------------------------------------------------------------------------
# merging and validation
# ---------------------------------------------------------------------------------------------

def _origin(layers: Sequence[Layer], key: Key) -> Layer:
    """The layer whose value for ``key`` (or the nearest enclosing section) wins the merge."""
    for length in range(len(key), 0, -1):
        for layer in reversed(layers):
            if layer.get(key[:length]) is not _ABSENT:
                return layer
    return layers[-1]


def _kind_word(value: Any) -> str:
    return "a mapping of settings" if isinstance(value, dict) else "a list"


def check_shapes(layers: Sequence[Layer], prefix: Key = ()) -> None:
    """Refuse a layer that puts a list where an earlier one has a mapping, or the reverse
    (``--set model=[1]``, YAML ``score: [1]``): OmegaConf cannot merge them and raises a bare
    ``TypeError``. Checked by merging plain copies the way OmegaConf does (mappings merge key by
    key, anything else replaces), so the line names the key and the layer that set it; a scalar
    replacing a section is left to :func:`validate` ("must be a mapping")."""
    merged: Dict[str, Any] = {}
    for layer in layers:
        pending: List[Tuple[Dict[str, Any], Dict[str, Any], Key]] = [(merged, layer.values, ())]
        while pending:  # no recursion: the layers' depth is checked, but stay safe anyway
            target, source, at = pending.pop()
            for name, value in source.items():
                key = at + (str(name),)
                old = target.get(name, _ABSENT)
                conflict = (isinstance(old, dict) and isinstance(value, list)) or \
                           (isinstance(old, list) and isinstance(value, dict))
                if conflict:
                    raise InputError(f"{layer.where(key)}: {'.'.join(prefix + key)} must be "
                                     f"{_kind_word(old)} (got {_show(value)})")
                if isinstance(old, dict) and isinstance(value, dict):
                    pending.append((old, value, key))
                else:
                    target[name] = _copy_shape(value)


def _copy_shape(value: Any) -> Any:
    """A copy of ``value``'s mappings (so merging later layers never edits a layer's values)."""
    if not isinstance(value, dict):
        return value
    top: Dict[str, Any] = {}
    pending = [(top, value)]
    while pending:
        target, source = pending.pop()
        for name, item in source.items():
            if isinstance(item, dict):
                target[name] = {}
                pending.append((target[name], item))
            else:
                target[name] = item
    return top


def merge_layers(layers: Sequence[Layer], prefix: Key = ()) -> Dict[str, Any]:
    """Merge (later layers win) and resolve interpolations; a list where a mapping belongs (or
    the reverse) and an unresolvable interpolation are one line naming the key and source."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    check_shapes(layers, prefix)
    try:
        merged = OmegaConf.merge(*[OmegaConf.create(layer.values) for layer in layers])
        return OmegaConf.to_container(merged, resolve=True, throw_on_missing=True)
    except OmegaConfBaseException as exc:
        full_key = str(getattr(exc, "full_key", "") or "")
        key = tuple(full_key.split(".")) if full_key else ()
        where = _origin(layers, key).where(key) if key else layers[-1].label
        text = str(exc)
        reason = " ".join(text.splitlines()[0].split())[:160] if text else type(exc).__name__
        raise InputError(f"{where}: {full_key or 'settings'}: {reason}") from None


def _describe(kind: Any) -> str:
    origin = typing.get_origin(kind)
    if origin is typing.Union:
        inner = [k for k in typing.get_args(kind) if k is not type(None)]
        return f"{_describe(inner[0])} or null"
    if origin in (list, List):
        return "a list"
    if origin in (dict, Dict) or dataclasses.is_dataclass(kind):
        return "a mapping"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(
        kind, "a value")


def _fits(kind: Any, value: Any) -> bool:
    origin = typing.get_origin(kind)
    if kind is Any:
        return True
    if origin is typing.Union:
        return any(_fits(k, value) for k in typing.get_args(kind))
    if kind is type(None):
        return value is None
    if origin in (list, List):
        (item,) = typing.get_args(kind) or (Any,)
        return isinstance(value, list) and all(_fits(item, v) for v in value)
    if origin in (dict, Dict) or dataclasses.is_dataclass(kind):
        return isinstance(value, dict)
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, kind)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _range_problem(value: Any, meta: Dict[str, Any]) -> Optional[str]:
    """Why ``value`` (of the right type) is not allowed, or None."""
    if isinstance(value, float) and not math.isfinite(value):
        return f"must be a finite number (got {_show(value)})"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        for name, test, word in (("min", operator.ge, ">="), ("max", operator.le, "<="),
                                 ("above", operator.gt, ">"), ("below", operator.lt, "<")):
            if name in meta and not test(value, meta[name]):
                return f"must be {word} {meta[name]} (got {_show(value)})"
    if isinstance(value, str):
        if meta.get("env_name") and not _ENV_NAME.match(value):
            return "must be the NAME of an environment variable (the value is not shown)"
        if "choices" in meta and value not in meta["choices"]:
            return f"must be one of {', '.join(meta['choices'])} (got {_show(value)})"
    if isinstance(value, list):
        if meta.get("nonempty") and not value:
            return "must not be empty"
        if "items" in meta:
            wrong = [v for v in value if v not in meta["items"]]
            if wrong:
                return (f"holds {_show(wrong[0])}; each item must be one of "
                        f"{', '.join(meta['items'])}")
        if meta.get("unique") and len(set(map(str, value))) != len(value):
            repeated = next(v for n, v in enumerate(value) if v in value[:n])
            return f"lists {_show(repeated)} twice"
    return None


def _leaf_keys(schema: type, prefix: Key = ()) -> Iterator[Key]:
    for spec in dataclasses.fields(schema):
        kind = typing.get_type_hints(schema)[spec.name]
        if dataclasses.is_dataclass(kind):
            yield from _leaf_keys(kind, prefix + (spec.name,))
        else:
            yield prefix + (spec.name,)


def _suggestion(schema: type, key: Key) -> str:
    """``(did you mean a.b.c?)`` for a mistyped key (a near name in the same section), or a
    right name in the wrong place (``normaliser`` for ``indicators.length.normaliser``)."""
    leaves = list(_leaf_keys(schema))
    keys = leaves + sorted({k[:n] for k in leaves for n in range(1, len(k))})
    siblings = [k[-1] for k in keys if k[:-1] == key[:-1]]
    near = difflib.get_close_matches(key[-1], siblings, n=1, cutoff=0.7)
    if near:
        return f" (did you mean {'.'.join(key[:-1] + (near[0],))}?)"
    by_name: Dict[str, Key] = {}
    for found in keys:
        by_name.setdefault(found[-1], found)
    near = difflib.get_close_matches(key[-1], list(by_name), n=1, cutoff=0.8)
    return f" (did you mean {'.'.join(by_name[near[0]])}?)" if near else ""


def validate(schema: type, values: Dict[str, Any], layers: Sequence[Layer], prefix: Key = (),
             root: Optional[type] = None, key: Key = ()) -> None:
    """Check merged, resolved ``values`` against ``schema``: unknown keys, types, ranges. The
    first problem is one :class:`InputError` line naming the dotted key (after ``prefix``, where
    a nested block sits in its file) and the layer that set it."""
    root = root or schema
    hints = typing.get_type_hints(schema)
    specs = {spec.name: spec for spec in dataclasses.fields(schema)}

    def fail(at: Key, problem: str) -> InputError:
        return InputError(f"{_origin(layers, at).where(at)}: {'.'.join(prefix + at)} {problem}")

    for name, value in values.items():
        at = key + (str(name),)
        if name not in specs:
            raise InputError(f"{_origin(layers, at).where(at)}: unknown setting "
                             f"{'.'.join(prefix + at)!r}{_suggestion(root, at)}")
        kind = hints[name]
        if not _fits(kind, value):
            raise fail(at, f"must be {_describe(kind)} (got {_show(value)})")
        if dataclasses.is_dataclass(kind):
            validate(kind, value, layers, prefix, root, at)
            continue
        problem = _range_problem(value, dict(specs[name].metadata))
        if problem:
            raise fail(at, problem)
    for name, spec in specs.items():
        if name not in values and spec.default is dataclasses.MISSING and \
                spec.default_factory is dataclasses.MISSING:  # type: ignore[misc]
            raise fail(key + (name,), "is not set")


def _shipped_layer(base: str) -> Layer:
    path = config_dir() / base
    return file_layer(path, f"{path} (shipped default)")


def settings_from_layers(base: str, layers: Sequence[Layer], prefix: Key = ()) -> Dict[str, Any]:
    """The shipped ``base`` under ``layers``, merged, resolved and validated against the base's
    schema (and any nested block against its own base's schema)."""
    from selector.core.schema import NESTED, SCHEMAS

    layers = [_shipped_layer(base), *layers]
    values = merge_layers(layers, prefix)
    schema = SCHEMAS.get(base)
    if schema is not None:
        validate(schema, values, layers, prefix)
    for key, nested_base in NESTED.get(base, {}).items():
        sub = [s for s in (layer.sub(key) for layer in layers[1:]) if s is not None]
        settings_from_layers(nested_base, sub, prefix + key)
    return values


def user_layers(config: Optional[str] = None, overrides: Sequence[str] = (),
                override_source: str = "--set") -> List[Layer]:
    """The layers of ``--config FILE`` (a path, or a shipped config by relative name) and
    ``--set`` overrides, in merge order."""
    layers = []
    if config:
        path = Path(config)
        if not path.is_file():
            shipped = config_dir() / str(config)
            if shipped.is_file():
                path = shipped
            elif path.is_dir():
                raise InputError(f"{config}: is a folder, expected a YAML config file")
            elif not path.exists():
                raise InputError(f"{config}: config file not found")
        layers.append(file_layer(path, str(config)))
    layers.extend(override_layers(overrides, override_source))
    return layers


def load_settings(config: Optional[str] = None, overrides: Sequence[str] = (),
                  base: str = "selector/default.yaml",
                  override_source: str = "--set") -> Dict[str, Any]:
    """The shipped ``base`` config, then ``config`` (a path or shipped name), then ``overrides``
    (``KEY=VALUE``), merged and validated: a bad key or value is one :class:`InputError` line
    naming the key and where it came from (``override_source`` labels the overrides)."""
    return settings_from_layers(base, user_layers(config, overrides, override_source))
