"""A policy backend outside the package, written as a new backend is: one module with its policy and its spec
parser, and one :class:`~agentdistill.policies.PolicyBackend` line (:data:`BACKEND`) in a table.

``answer:TEXT`` answers every task at once with ``final_answer(TEXT)``.
"""

from __future__ import annotations

from collections.abc import Sequence

from agentdistill.policies import PolicyBackend, PolicySpec
from agentdistill.policies.base import Completion, PolicyRequest, SamplingParams


def parse_answer_spec(spec: str) -> PolicySpec:
    """``answer:TEXT``: the answer is the spec's target."""
    _, _, text = spec.partition(":")
    return PolicySpec(kind="answer", model=text)


class AnsweringPolicy:
    """Gives the same final answer to every request."""

    def __init__(self, answer: str, *, thought: str = "I know this one.") -> None:
        self.answer = answer
        self.thought = thought
        self.name = f"answer:{answer}"

    def generate(self, requests: Sequence[PolicyRequest], params: SamplingParams) -> list[list[Completion]]:
        action = f"Thought: {self.thought}\n```py\nfinal_answer({self.answer!r})\n```<end_code>"
        return [[Completion(text=action) for _ in range(params.n)] for _ in requests]

    def close(self) -> None:
        pass


BACKEND = PolicyBackend(
    "answer", "answer:TEXT", f"{__name__}:parse_answer_spec", f"{__name__}:AnsweringPolicy", {"answer": "model"}
)
