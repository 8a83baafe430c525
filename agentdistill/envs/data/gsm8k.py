"""GSM8K records: the gold number is whatever follows the final ``####`` of the worked answer.

The worked solution before the marker is kept in metadata (it is a natural teacher rationale); the
number loses its thousands separators, so ``#### 1,000`` grades as ``1000``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agentdistill.envs.data.errors import RecordProblem
from agentdistill.envs.data.fields import answer_text, extra_fields, record_id, require, text
from agentdistill.envs.tasks import Task

NAME = "gsm8k"
TITLE = "GSM8K"
FIELDS = "{question, answer: '<worked solution> #### N'}"
REQUIRED = ("question", "answer")
MARKER = "####"


def looks_like(record: Mapping[str, Any]) -> bool:
    """A question whose answer carries the ``####`` marker, and nothing of the QA layouts."""
    answer = record.get("answer")
    return "question" in record and isinstance(answer, str) and MARKER in answer


def final_number(worked_answer: str) -> str:
    """The text after the last ``####``, stripped, thousands commas removed."""
    if MARKER not in worked_answer:
        raise RecordProblem(f"field 'answer' does not end with '{MARKER} N' (the GSM8K gold marker)")
    gold = worked_answer.rsplit(MARKER, 1)[1].strip().replace(",", "")
    if not gold:
        raise RecordProblem(f"field 'answer' has nothing after '{MARKER}'")
    return gold


def convert(record: Mapping[str, Any], default_id: str) -> Task:
    """One GSM8K record; the worked solution goes to ``metadata['solution']``."""
    require(record, REQUIRED)
    question = text(record, "question")
    worked = answer_text(record["answer"])
    metadata = extra_fields(record, ("id", "question", "answer"))
    metadata.update(format=NAME, solution=worked.rsplit(MARKER, 1)[0].strip())
    return Task(
        task_id=record_id(record, ("id",), default_id),
        question=question,
        answer=final_number(worked),
        metadata=metadata,
    )
