"""Typed config files: a YAML/JSON mapping checked field by field against a dataclass.

The dataclass's annotations are the schema: ``str``, ``int``, ``float``, ``bool``,
``X | None``, ``tuple[str, ...]`` and ``Literal[...]`` (the allowed values). Checks are
strict, because YAML's own typing is not: ``"false"`` is a string and is refused where a
boolean belongs (it would be truthy), ``1`` is refused where a boolean belongs, ``true``
where a number belongs. Every error names the file, the field, what was expected and
what was found.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, Union

__all__ = ["ConfigError", "from_mapping"]


class ConfigError(ValueError):
    """A config file or mapping has an unknown, missing or mistyped field."""


def _describe(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin is Literal:
        return "one of " + ", ".join(repr(v) for v in typing.get_args(hint))
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(hint))
    if origin is tuple:
        inner = _describe(typing.get_args(hint)[0])
        return "a list of " + {"a string": "strings", "an integer": "integers"}.get(inner, inner)
    if hint is type(None):
        return "null"
    return {str: "a string", bool: "true or false", int: "an integer", float: "a number"}.get(
        hint, getattr(hint, "__name__", str(hint))
    )


def _convert(value: Any, hint: Any) -> tuple[bool, Any]:
    """(matches, value converted to the field's Python type)."""
    origin = typing.get_origin(hint)
    if hint is Any:
        return True, value
    if hint is type(None):
        return value is None, None
    if origin is Literal:
        allowed = typing.get_args(hint)
        return (type(value) in {type(a) for a in allowed} and value in allowed), value
    if origin in (Union, types.UnionType):
        for option in typing.get_args(hint):
            ok, converted = _convert(value, option)
            if ok:
                return True, converted
        return False, value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            return False, value
        inner = typing.get_args(hint)[0]
        converted = []
        for element in value:
            ok, element = _convert(element, inner)
            if not ok:
                return False, value
            converted.append(element)
        return True, tuple(converted)
    if hint is bool:
        return type(value) is bool, value
    if hint is int:
        return type(value) is int, value
    if hint is float:
        return type(value) in (int, float), float(value) if type(value) in (int, float) else value
    if hint is str:
        return isinstance(value, str), value
    return isinstance(value, hint), value


def from_mapping(
    cls: type, data: Mapping[str, Any], source: str, aliases: Mapping[str, str] | None = None
) -> Any:
    """``cls(**data)`` after checking every key of ``data`` against ``cls``'s annotations.

    ``source`` names the file (or ``"<mapping>"``) in error messages; ``aliases`` maps
    accepted alternative keys to field names. Raises :class:`ConfigError`.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: expected a mapping of fields, got {type(data).__name__}.")
    hints = typing.get_type_hints(cls)
    known = [f.name for f in dataclasses.fields(cls) if f.init]
    required = [
        f.name
        for f in dataclasses.fields(cls)
        if f.init and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    aliases = dict(aliases or {})
    values: dict[str, Any] = {}
    for key, value in data.items():
        name = aliases.get(key, key)
        if not isinstance(name, str) or name not in known:
            close = difflib.get_close_matches(str(key), known + list(aliases), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(
                f"{source}: unknown field {key!r}.{hint} Valid fields: {', '.join(sorted(known))}."
            )
        if name in values:
            raise ConfigError(f"{source}: field {name!r} is given twice (as {key!r} and an alias).")
        ok, converted = _convert(value, hints[name])
        if not ok:
            quoted = " (quoted in the file: remove the quotes)" if isinstance(value, str) else ""
            raise ConfigError(
                f"{source}: field {name!r} must be {_describe(hints[name])}, got "
                f"{type(value).__name__} {value!r}{quoted}."
            )
        values[name] = converted
    missing = [name for name in required if name not in values]
    if missing:
        raise ConfigError(f"{source}: missing required field(s) {missing}.")
    try:
        return cls(**values)
    except ConfigError:
        raise
    except ValueError as err:
        raise ConfigError(f"{source}: {err}") from err
