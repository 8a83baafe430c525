"""Bamboogle as the hub ships it (``chiayewken/bamboogle``): capitalised ``Question``/``Answer``.

Bamboogle has no context paragraphs: its questions are meant to be answered by searching.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agentdistill.envs.data.fields import answer_text, extra_fields, record_id, require, text
from agentdistill.envs.tasks import Task

NAME = "bamboogle"
TITLE = "Bamboogle"
FIELDS = "{Question, Answer}"
REQUIRED = ("Question", "Answer")


def looks_like(record: Mapping[str, Any]) -> bool:
    """The capitalised field names are Bamboogle's alone among the supported layouts."""
    return "Question" in record


def convert(record: Mapping[str, Any], default_id: str) -> Task:
    """One Bamboogle row."""
    require(record, REQUIRED)
    metadata = extra_fields(record, ("id", "Question", "Answer"))
    metadata.update(format=NAME)
    return Task(
        task_id=record_id(record, ("id",), default_id),
        question=text(record, "Question"),
        answer=answer_text(record["Answer"], "Answer"),
        metadata=metadata,
    )
