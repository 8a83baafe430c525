"""Small helpers every per-format converter uses to pull typed values out of a raw record.

They raise :class:`RecordProblem` (never a located error): the converter does not know which file
or record index it is looking at, the loader that called it does.
"""

from __future__ import annotations

import ast
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from agentdistill.envs.data.errors import RecordProblem, UnansweredRecord


def require(record: Mapping[str, Any], fields: Sequence[str]) -> None:
    """Raise naming every field of ``fields`` the record lacks (all at once, not the first only)."""
    missing = [name for name in fields if name not in record]
    if missing:
        names = ", ".join(repr(name) for name in missing)
        raise RecordProblem(f"missing field(s) {names}", missing=missing)


def text(record: Mapping[str, Any], field: str) -> str:
    """A required string field, stripped; null or a non-string is a problem named after the field."""
    value = record.get(field)
    if not isinstance(value, str):
        raise RecordProblem(f"field {field!r} must be a string, got {_type_name(value)}", missing=(field,))
    return value.strip()


def answer_text(value: Any, field: str = "answer") -> str:
    """The gold answer as a string: numbers are written out (``13138980.0`` → ``"13138980"``).

    A null or blank answer raises :class:`UnansweredRecord` so the loader can skip (and report) the
    record instead of rejecting the whole file.
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        raise UnansweredRecord(f"field {field!r} is null or empty (no gold answer)")
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)):
        return number_text(value)
    if isinstance(value, str):
        return value.strip()
    raise RecordProblem(f"field {field!r} must be a string or a number, got {_type_name(value)}")


def number_text(value: int | float) -> str:
    """Decimal text for a number: integral floats lose their ``.0``, other floats keep full precision."""
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return str(int(value))
    return repr(value) if isinstance(value, float) else str(value)


def record_id(record: Mapping[str, Any], fields: Sequence[str], default: str) -> str:
    """The first present, non-empty id field as a string, else ``default`` (``"<stem>-<index>"``)."""
    for field in fields:
        value = record.get(field)
        if value is not None and str(value).strip():
            return str(value).strip()
    return default


def literal_value(value: Any, field: str) -> Any:
    """Undo a serialised container: hub exports store some lists as their JSON or Python repr.

    JSON is tried first; a Python literal (single quotes, ``None``) is parsed with
    :func:`ast.literal_eval`, which evaluates literals only and never runs code.
    """
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        pass
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as error:
        raise RecordProblem(
            f"field {field!r} is a string but not a JSON or Python list literal ({type(error).__name__})"
        ) from error


def string_list(value: Any, field: str) -> tuple[str, ...]:
    """A list of strings (possibly serialised as a string), dropping blanks; null is empty."""
    if value is None:
        return ()
    parsed = literal_value(value, field)
    if isinstance(parsed, str):
        parsed = [parsed]
    if not isinstance(parsed, (list, tuple)):
        raise RecordProblem(f"field {field!r} must be a list of strings, got {_type_name(parsed)}")
    return tuple(str(item).strip() for item in parsed if item is not None and str(item).strip())


def extra_fields(record: Mapping[str, Any], used: Sequence[str]) -> dict[str, Any]:
    """Every field the converter did not turn into a Task attribute, kept as metadata."""
    return {key: value for key, value in record.items() if key not in used}


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__
