"""The registry of record layouts: how each is recognised, what it holds, how it converts.

Sniffing asks the layouts in a fixed order, most specific first (2Wiki before HotpotQA, whose records
it resembles; Hendrycks MATH before problem/answer), and looks at field *names* only, so a record
that lacks a required field is still recognised and then rejected with the field named, rather
than reported as an unknown format.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal

from agentdistill.envs.data import (
    bamboogle,
    gsm8k,
    gsmhard,
    hotpotqa,
    math500,
    math_solutions,
    musique,
    paper_lists,
    twowiki,
)
from agentdistill.envs.tasks import Task

TaskKind = Literal["qa", "math"]
TASK_KINDS: tuple[TaskKind, ...] = ("qa", "math")


@dataclass(frozen=True)
class RecordFormat:
    """One record layout: its name, the kind of tasks it holds, its fields and its converter.

    ``kind`` is ``None`` for the paper lists, which hold either kind. ``convert`` turns one record
    and the id to use when the record has none into a :class:`Task`, raising ``RecordProblem``.
    """

    name: str
    title: str
    kind: TaskKind | None
    fields: str
    looks_like: Callable[[Mapping[str, Any]], bool]
    convert: Callable[[Mapping[str, Any], str], Task]

    def describe(self) -> str:
        """``"HotpotQA (qa): {...fields...}"`` — the line an error message lists it with."""
        kind = "qa or math" if self.kind is None else self.kind
        return f"{self.title} ({kind}): {self.fields}"


def _format(module: Any, kind: TaskKind | None) -> RecordFormat:
    return RecordFormat(
        name=module.NAME,
        title=module.TITLE,
        kind=kind,
        fields=module.FIELDS,
        looks_like=module.looks_like,
        convert=module.convert,
    )


PAPER_LIST = _format(paper_lists, None)

# Sniffing order matters: see the module docstring.
_RECORD_FORMATS: tuple[RecordFormat, ...] = (
    _format(musique, "qa"),
    _format(twowiki, "qa"),
    _format(hotpotqa, "qa"),
    _format(bamboogle, "qa"),
    _format(gsmhard, "math"),
    _format(math_solutions, "math"),
    _format(math500, "math"),
    _format(gsm8k, "math"),
)

FORMATS: Mapping[str, RecordFormat] = MappingProxyType(
    {fmt.name: fmt for fmt in (PAPER_LIST, *_RECORD_FORMATS)}
)


def sniff_record_format(record: Mapping[str, Any]) -> RecordFormat | None:
    """The first layout whose distinctive fields the record has, or ``None``."""
    return next((fmt for fmt in _RECORD_FORMATS if fmt.looks_like(record)), None)


def expected_formats() -> str:
    """Every accepted layout, one per line, for the tail of an error message."""
    return "\n".join(f"  - {fmt.describe()}" for fmt in FORMATS.values())
