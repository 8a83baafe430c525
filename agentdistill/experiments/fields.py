"""Typed, strict config sections: a YAML mapping becomes a frozen dataclass, or an error that says where.

Every experiment config is a tree of dataclasses (:mod:`agentdistill.experiments.schema` and the kind
modules). :func:`build` walks a parsed YAML mapping down that tree using the dataclasses' type hints, so
the schema is written once, as ordinary typed code, and the checking follows from it:

- an unknown key is an error naming it, the file and the section, with close matches and the valid keys
  (a misspelt ``learning_rte`` must never fall back silently to a default);
- a missing required key, a value of the wrong type (``num_envs: eight``) or a value a section's
  ``__post_init__`` rejects is an error naming the key path (``tasks[1].episodes``);
- scalars are coerced as every settings file of the package coerces them
  (:func:`agentdistill.settings.coerce_setting`: YAML's ``2e-4`` is a string, lists stand for tuples);
- a nested section whose field has a ``default_factory`` starts from that default: the keys given
  override it, the others keep the default of this context (a chain-of-thought ``sampling`` section
  keeps its empty stop list when only ``temperature`` is given).

A field can carry its own converter in ``field(metadata={"convert": fn})`` (``fn(value, where)``), for
values that are built by library code with its own checks, such as SFT settings given as a file path.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, Union

from agentdistill.settings import coerce_setting

T = TypeVar("T")

CONVERT = "convert"
"""Field metadata key of a custom converter ``(value, where) -> value``."""


class ConfigError(ValueError):
    """A config that does not fit its schema; the message names the file, the key path and what was expected."""


@dataclass(frozen=True)
class Location:
    """Where a value sits: the config file and the key path inside it (for error messages)."""

    file: str
    path: tuple[str | int, ...] = ()

    def child(self, key: str | int) -> Location:
        return Location(self.file, (*self.path, key))

    @property
    def dotted(self) -> str:
        """``tasks[0].data.data_path``; empty at the top level."""
        text = ""
        for part in self.path:
            text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
        return text

    def __str__(self) -> str:
        return f"{self.file}: {self.dotted}" if self.path else self.file

    def error(self, message: str) -> ConfigError:
        return ConfigError(f"{self}: {message}")


def build(cls: type[T], data: Any, where: Location, base: T | None = None) -> T:
    """``cls`` built from the mapping ``data``, every key checked and every value converted (see the module);
    with ``base``, keys not in ``data`` keep ``base``'s values."""
    section = f"section '{where.dotted}'" if where.path else "the top level"
    if not isinstance(data, Mapping):
        raise where.error(f"expected a mapping of keys for {section}, got {_kind(data)} {data!r}")
    fields = {field.name: field for field in dataclasses.fields(cls) if field.init}  # type: ignore[arg-type]
    unknown = [key for key in data if key not in fields]
    if unknown:
        raise where.error(_unknown_keys_message(unknown, sorted(fields), section))
    missing = [name for name, field in fields.items() if base is None and _required(field) and name not in data]
    if missing:
        raise where.error(f"missing required key(s) {', '.join(repr(name) for name in missing)} in {section}")
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for key, value in data.items():
        field = fields[key]
        converter = field.metadata.get(CONVERT)
        place = where.child(key)
        if converter is not None:
            values[key] = converter(value, place)
        elif dataclasses.is_dataclass(hints[key]) and field.default_factory is not dataclasses.MISSING:
            values[key] = build(hints[key], value, place, base=field.default_factory())
        else:
            values[key] = convert(value, hints[key], place)
    try:
        return dataclasses.replace(base, **values) if base is not None else cls(**values)  # type: ignore[type-var]
    except ConfigError:
        raise
    except (TypeError, ValueError) as error:  # a section's own checks (__post_init__)
        raise where.error(str(error)) from error


def convert(value: Any, hint: Any, where: Location) -> Any:
    """``value`` as type ``hint``: nested sections, tuples of sections, literals, unions and scalars."""
    if hint is Any:
        return value
    origin = typing.get_origin(hint)
    if origin is Literal:
        choices = typing.get_args(hint)
        if value not in choices:
            raise where.error(f"expected one of {', '.join(repr(choice) for choice in choices)}, got {value!r}")
        return value
    if origin in (Union, types.UnionType):
        return _convert_union(value, hint, where)
    if dataclasses.is_dataclass(hint):
        return build(hint, value, where)  # type: ignore[arg-type]
    if origin is tuple:
        return _convert_tuple(value, hint, where)
    if origin in (Mapping, dict):
        return _convert_mapping(value, hint, where)
    return _scalar(value, hint, where)


def _convert_union(value: Any, hint: Any, where: Location) -> Any:
    options = typing.get_args(hint)
    if value is None:
        if type(None) in options:
            return None
        raise where.error(f"expected {describe(hint)}, got null")
    sections = [option for option in options if dataclasses.is_dataclass(option)]
    if sections and isinstance(value, Mapping):
        return build(sections[0], value, where)
    others = [option for option in options if option is not type(None) and not dataclasses.is_dataclass(option)]
    for option in others:
        try:
            return convert(value, option, where)
        except ConfigError:
            continue
    raise where.error(f"expected {describe(hint)}, got {_kind(value)} {value!r}")


def _convert_tuple(value: Any, hint: Any, where: Location) -> tuple[Any, ...]:
    if not isinstance(value, (list, tuple)):
        raise where.error(f"expected {describe(hint)}, got {_kind(value)} {value!r}")
    arguments = typing.get_args(hint)
    item_hint = arguments[0] if arguments else Any
    return tuple(convert(item, item_hint, where.child(index)) for index, item in enumerate(value))


def _convert_mapping(value: Any, hint: Any, where: Location) -> dict[str, Any]:
    if not isinstance(value, Mapping) or not all(isinstance(key, str) for key in value):
        raise where.error(f"expected {describe(hint)}, got {_kind(value)} {value!r}")
    arguments = typing.get_args(hint)
    item_hint = arguments[1] if len(arguments) == 2 else Any
    return {key: convert(item, item_hint, where.child(key)) for key, item in value.items()}


def _scalar(value: Any, hint: Any, where: Location) -> Any:
    if value is None:
        raise where.error(f"expected {describe(hint)}, got null")
    try:
        return coerce_setting(where.dotted, value, hint)
    except ValueError:
        raise where.error(f"expected {describe(hint)}, got {_kind(value)} {value!r}") from None


def describe(hint: Any) -> str:
    """A type as a config author reads it: ``int`` -> "an integer", ``str | None`` -> "a string or null"."""
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string", type(None): "null"}
    if hint in names:
        return names[hint]
    if hint is Any:
        return "any value"
    origin = typing.get_origin(hint)
    if origin is Literal:
        return "one of " + ", ".join(repr(choice) for choice in typing.get_args(hint))
    if origin in (Union, types.UnionType):
        return " or ".join(describe(option) for option in typing.get_args(hint))
    if origin is tuple:
        arguments = typing.get_args(hint)
        return f"a list of {_plural(describe(arguments[0]))}" if arguments else "a list"
    if origin in (Mapping, dict):
        return "a mapping"
    if dataclasses.is_dataclass(hint):
        return f"a {hint.__name__} mapping"  # type: ignore[union-attr]
    return getattr(hint, "__name__", str(hint))


def _plural(text: str) -> str:
    for article in ("an ", "a "):
        if text.startswith(article):
            return text[len(article) :] + "s"
    return text


def _kind(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list",
            dict: "a mapping", type(None): "null"}.get(type(value), type(value).__name__)


def _required(field: dataclasses.Field[Any]) -> bool:
    return field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING


def _unknown_keys_message(unknown: list[Any], valid: list[str], section: str) -> str:
    problems = []
    for key in unknown:
        close = difflib.get_close_matches(str(key), valid, n=3)
        hint = f" (did you mean {', '.join(repr(match) for match in close)}?)" if close else ""
        problems.append(f"{key!r}{hint}")
    return f"unknown key(s) {'; '.join(problems)} in {section}; valid keys: {', '.join(valid)}"
