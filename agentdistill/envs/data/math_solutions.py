"""Hendrycks MATH records, which have a worked ``solution`` but no separate answer field.

The gold answer is the content of the solution's last ``\\boxed{...}`` (or ``\\fbox{...}``),
found by matching braces, since answers such as ``\\frac{1}{2}`` nest them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agentdistill.envs.data.errors import RecordProblem
from agentdistill.envs.data.fields import extra_fields, record_id, require, text
from agentdistill.envs.tasks import Task

NAME = "math_solution"
TITLE = "MATH (Hendrycks: problem, solution with \\boxed{answer})"
FIELDS = "{problem, solution containing \\boxed{answer}, level?, type?}"
REQUIRED = ("problem", "solution")
_BOX_COMMANDS = ("\\boxed", "\\fbox")


def looks_like(record: Mapping[str, Any]) -> bool:
    """A ``problem`` with a ``solution`` but no ``answer``."""
    return "problem" in record and "solution" in record and "answer" not in record


def last_boxed(solution: str) -> str | None:
    """The content of the last ``\\boxed{...}`` / ``\\fbox{...}``, or ``None`` when there is none."""
    start = max(solution.rfind(command) for command in _BOX_COMMANDS)
    if start < 0:
        return None
    command = next(command for command in _BOX_COMMANDS if solution.startswith(command, start))
    rest = solution[start + len(command):]
    stripped = rest.lstrip()
    if not stripped.startswith("{"):
        # "\boxed 5": the argument is the next token.
        token = stripped.split("$", 1)[0].split()
        return token[0] if token else None
    depth = 0
    for position, char in enumerate(stripped):
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return stripped[1:position].strip()
    return None


def convert(record: Mapping[str, Any], default_id: str) -> Task:
    """One MATH record with its boxed answer extracted; the solution stays in metadata."""
    require(record, REQUIRED)
    solution = text(record, "solution")
    answer = last_boxed(solution)
    if not answer:
        raise RecordProblem("field 'solution' has no \\boxed{...} answer")
    metadata = extra_fields(record, ("unique_id", "id", "problem"))
    metadata.update(format=NAME)
    return Task(
        task_id=record_id(record, ("unique_id", "id"), default_id),
        question=text(record, "problem"),
        answer=answer,
        metadata=metadata,
    )
