"""The interface every grader implements.

An env turns a final answer into a reward with one call to :meth:`Grader.grade`, which returns the
reward and every metric the grader knows (for the env's ``info``, so a run can log more than the metric
it trains on). One call, not one per metric, because a check can be slow (a bounded symbolic check, a
paid LLM judge). Keeping this a :class:`typing.Protocol` lets any object with that method (an LLM
judge, a test double) serve as a grader without inheriting from anything.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Protocol, runtime_checkable

from agentdistill.envs.tasks import Task

__all__ = ["Grade", "Grader"]


@dataclass(frozen=True)
class Grade:
    """The reward for one answer, in ``[0, 1]``, and every metric computed on the way, by name."""

    score: float
    metrics: Mapping[str, float] = field(default_factory=dict)


@runtime_checkable
class Grader(Protocol):
    """Scores a predicted answer against a task's gold answers."""

    def grade(self, prediction: str, task: Task) -> Grade:
        """The reward for ``prediction`` on ``task`` and the metrics behind it."""
        ...
