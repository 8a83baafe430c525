"""Strict settings from YAML: a misspelt key is an error naming it, never a silently ignored default.

Every settings dataclass of the package (SFT, GRPO, ...) reads its YAML through :func:`settings_from_mapping`,
so they all reject unknown keys the same way (with close matches suggested) and tolerate YAML's quirks the
same way (``2e-4`` loads as a string, lists stand for tuples).
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Self, TypeVar

SettingsT = TypeVar("SettingsT")


def settings_from_mapping(cls: type[SettingsT], mapping: Mapping[str, Any], *, what: str) -> SettingsT:
    """``cls(**mapping)`` with every key checked against ``cls``'s fields and every value coerced to its type.

    Raises:
        ValueError: naming each unknown key (with close matches) and the known ones, or the ill-typed value.
    """
    known = {field.name for field in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = [key for key in mapping if key not in known]
    if unknown:
        problems = []
        for key in unknown:
            close = difflib.get_close_matches(str(key), sorted(known), n=3)
            hint = f" (did you mean {', '.join(repr(match) for match in close)}?)" if close else ""
            problems.append(f"{key!r}{hint}")
        raise ValueError(f"unknown {what} setting(s) {'; '.join(problems)}; known settings: {', '.join(sorted(known))}")
    hints = typing.get_type_hints(cls)
    values = {key: coerce_setting(key, value, hints[key]) for key, value in mapping.items()}
    return cls(**values)


def load_yaml_mapping(path: str | os.PathLike[str], *, what: str) -> dict[str, Any]:
    """The top-level mapping of a YAML file (an empty file is ``{}``)."""
    import yaml

    with open(path, encoding="utf-8") as handle:
        try:
            loaded = yaml.safe_load(handle)
        except yaml.YAMLError as error:
            raise ValueError(f"{path}: not valid YAML{_where(error)}: {_problem(error)}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, Mapping):
        # A ValueError like every other bad config, so callers catch one exception type.
        raise ValueError(f"{path}: expected a mapping of {what} settings, got {type(loaded).__name__}")  # noqa: TRY004
    return dict(loaded)


def _where(error: Exception) -> str:
    """`` (line L, column C)`` of a YAML error, 1-based, when it has a position."""
    mark = getattr(error, "problem_mark", None)
    return f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""


def _problem(error: Exception) -> str:
    problem = getattr(error, "problem", None)
    context = getattr(error, "context", None)
    text = " ".join(part for part in (context, problem) if part)
    return text or str(error).splitlines()[0]


def settings_from_yaml(cls: type[SettingsT], path: str | os.PathLike[str], *, what: str) -> SettingsT:
    """:func:`settings_from_mapping` of a YAML file; errors name the file."""
    loaded = load_yaml_mapping(path, what=what)
    try:
        return settings_from_mapping(cls, loaded, what=what)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from error


def settings_to_dict(settings: Any) -> dict[str, Any]:
    """Plain values (tuples as lists, mappings as dicts), as YAML and W&B want them."""
    def plain(value: Any) -> Any:
        if isinstance(value, tuple):
            return [plain(item) for item in value]
        if isinstance(value, Mapping):
            return {key: plain(item) for key, item in value.items()}
        return value

    return {key: plain(value) for key, value in dataclasses.asdict(settings).items()}


def coerce_setting(key: str, value: Any, hint: Any) -> Any:
    """``value`` as the field's type; YAML's quirks (``2e-4`` is a string, lists for tuples) are tolerated."""
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if value is None:
        if type(None) in options:
            return None
        raise ValueError(f"setting {key!r} cannot be null")
    for option in options:  # exact types first, so that a bool stays a bool in ``bool | str``
        if option is bool and isinstance(value, bool):
            return value
        if option in (int, float, str) and type(value) is option:
            return value
    for option in options:
        try:
            if option is float and isinstance(value, (int, str)) and not isinstance(value, bool):
                return float(value)
            if option is int and isinstance(value, str):
                return int(value)
            if option is int and isinstance(value, float) and value.is_integer():
                return int(value)
            if typing.get_origin(option) is tuple and isinstance(value, (list, tuple)):
                return _coerce_items(key, value, option)
            if typing.get_origin(option) in (Mapping, dict) and isinstance(value, Mapping):
                if all(isinstance(name, str) for name in value):
                    return dict(value)
        except ValueError:
            continue
    raise ValueError(f"setting {key!r} expects {hint}, got {value!r}")


def _coerce_items(key: str, value: list[Any] | tuple[Any, ...], hint: Any) -> tuple[Any, ...]:
    """A list as the tuple ``hint`` says (``tuple[X, ...]``: every item an ``X``, coerced as a setting is)."""
    arguments = typing.get_args(hint)
    item_hint = arguments[0] if len(arguments) == 2 and arguments[1] is Ellipsis else str
    return tuple(coerce_setting(f"{key}[{index}]", item, item_hint) for index, item in enumerate(value))


class StrictSettings:
    """Base of a frozen settings dataclass: reading (a mapping or YAML, strictly), writing and copying.

    A subclass is a ``@dataclass(frozen=True)`` with defaults for every field and sets :attr:`settings_name`
    (``"SFT"``, ``"GRPO"``), which error messages use. Validation stays in the subclass's ``__post_init__``, so
    a copy made by :meth:`replace` is checked like one read from a file.
    """

    settings_name: ClassVar[str] = "training"

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any]) -> Self:
        """Settings from a mapping of field names; unknown keys and ill-typed values raise ``ValueError``."""
        return settings_from_mapping(cls, mapping, what=cls.settings_name)

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str]) -> Self:
        """Settings from a flat YAML mapping (an empty file gives the defaults); errors name the file."""
        return settings_from_yaml(cls, path, what=cls.settings_name)

    def to_dict(self) -> dict[str, Any]:
        """Plain values (tuples as lists), as YAML and W&B want them."""
        return settings_to_dict(self)

    def to_yaml(self, path: str | os.PathLike[str]) -> None:
        """Write :meth:`to_dict` as YAML (the directory is created), readable by :meth:`from_yaml`."""
        import yaml

        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", encoding="utf-8") as handle:
            yaml.safe_dump(self.to_dict(), handle, sort_keys=False)

    def replace(self, **changes: Any) -> Self:
        """A copy with ``changes`` (checked like :meth:`from_mapping`)."""
        return type(self).from_mapping({**self.to_dict(), **changes})
