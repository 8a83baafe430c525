"""GSM-Hard records: GSM8K questions with large numbers, a float ``target`` and the PAL program.

The float target is written out as text (``13138980.0`` → ``"13138980"``, ``561161.7000000001`` kept
in full) because :class:`Task` answers are strings; the float itself stays in
``metadata['target']`` for graders that compare numerically, and the program in ``metadata['code']``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agentdistill.envs.data.fields import answer_text, extra_fields, record_id, require, text
from agentdistill.envs.tasks import Task

NAME = "gsmhard"
TITLE = "GSM-Hard"
FIELDS = "{input, target: float, code?}"
REQUIRED = ("input", "target")


def looks_like(record: Mapping[str, Any]) -> bool:
    """Two of GSM-Hard's three distinctive fields (``input``, ``target``, ``code``)."""
    return sum(field in record for field in ("input", "target", "code")) >= 2


def convert(record: Mapping[str, Any], default_id: str) -> Task:
    """One GSM-Hard record with its float target as answer text."""
    require(record, REQUIRED)
    metadata = extra_fields(record, ("id", "input"))
    metadata.update(format=NAME)
    return Task(
        task_id=record_id(record, ("id",), default_id),
        question=text(record, "input"),
        answer=answer_text(record["target"], "target"),
        metadata=metadata,
    )
