"""Problem/answer math records: MATH-500, and the hub layouts of AIME and OlymMATH.

All three name the question ``problem`` and give a final ``answer`` (LaTeX text, or an integer for
AIME); everything else (``subject``, ``level``, ``solution``, ``url``) is kept as metadata. The id
is ``unique_id`` (MATH-500, OlymMATH) or ``id`` (AIME).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agentdistill.envs.data.fields import answer_text, extra_fields, record_id, require, text
from agentdistill.envs.tasks import Task

NAME = "math500"
TITLE = "MATH-500 / AIME / OlymMATH (problem, answer)"
FIELDS = "{problem, answer, unique_id|id?, subject?, level?, solution?}"
REQUIRED = ("problem", "answer")


def looks_like(record: Mapping[str, Any]) -> bool:
    """A ``problem`` with an ``answer`` (a problem without one is Hendrycks MATH, asked earlier)."""
    return "problem" in record and ("answer" in record or "solution" not in record)


def convert(record: Mapping[str, Any], default_id: str) -> Task:
    """One problem/answer record."""
    require(record, REQUIRED)
    metadata = extra_fields(record, ("unique_id", "id", "problem", "answer"))
    metadata.update(format=NAME)
    return Task(
        task_id=record_id(record, ("unique_id", "id"), default_id),
        question=text(record, "problem"),
        answer=answer_text(record["answer"]),
        metadata=metadata,
    )
