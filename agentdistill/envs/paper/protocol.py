"""The paper's episode rules, for an env built with ``protocol="paper"``.

What differs from our own protocol, and why it is reproduced rather than improved on: a student distilled
from the paper's teacher learnt the paper's texts, and its numbers were measured under the paper's rules.

- The tools: every task gets ``web_search`` (math included: the paper's agent always had it) and
  ``final_answer``; code may import smolagents' base modules plus numpy and sympy.
- The step limit: after ``max_steps`` action steps without an answer, the paper asks the model once more,
  with the whole episode under a "you are tasked with providing an answer instead" system turn, and grades
  the free-text reply. The env asks for that call in ``info["final_answer_request"]`` (the system text, and the
  text that ends the last user turn) and takes the reply as the next action; the episode then ends truncated,
  with that answer's score as reward. The rollout loop makes the call.
- The texts: :mod:`agentdistill.envs.paper.codeact` and :mod:`agentdistill.envs.paper.prompts`.

What is still ours: the code runs in real CPython in an isolated worker (not smolagents' interpreter, whose
quirks a model should not have to learn), so error messages are CPython's, and SAG runs its candidates in
forks of the episode's state and adopts the winner's, instead of running them all in the live state and the
winner once more.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agentdistill.envs.paper.codeact import PaperParse, error_turn, observation_turn
from agentdistill.envs.paper.prompts import PaperPrompts, authorized_imports
from agentdistill.envs.tools.retrieval.tool import WebSearchTool
from agentdistill.envs.tools.sandbox.base import ExecutionResult, ToolFunction

NO_RETRIEVER = (
    "web_search has no retriever in this env: pass retriever= (the paper's agents searched wiki-18, "
    "e.g. an `agentdistill index build` directory or a retrieval server URL)"
)


def paper_module_roots() -> tuple[str, ...]:
    """The top-level modules the paper lets agent code import (``numpy.linalg`` is under ``numpy``)."""
    return tuple(sorted({name.split(".", 1)[0] for name in authorized_imports()}))


class PaperEpisode:
    """The state the paper's protocol adds to an episode: whether the extra answer call is due."""

    def __init__(self, prompts: PaperPrompts) -> None:
        self.prompts = prompts
        self.awaiting_answer = False

    def start(self) -> None:
        """A new episode: action steps again."""
        self.awaiting_answer = False

    def tools(self, tools: Mapping[str, ToolFunction]) -> dict[str, ToolFunction]:
        """The env's tools with the paper's output formats, and ``web_search`` even where the env has none."""
        chosen = dict(tools)
        for tool in chosen.values():
            if isinstance(tool, WebSearchTool):
                tool.paper_format = True
        chosen.setdefault("web_search", _search_without_retriever)
        return chosen

    def observation(self, call_number: int, parsed: PaperParse, result: ExecutionResult | None) -> str:
        """The user turn after action step ``call_number``: the paper's texts for what happened."""
        if parsed.code is None or result is None:
            return error_turn(None, "", parsed.error or "")
        if result.error is not None:
            return error_turn(call_number, result.logs, result.error)
        if result.is_final:
            return observation_turn(call_number, result.logs, result.final_answer or "")
        last = result.last_output if result.last_output is not None else (result.value or "None")
        return observation_turn(call_number, result.logs, last)

    def final_answer_request(self, question: str) -> dict[str, Any]:
        """What the extra answer call sends (and mark it due): the system text replacing the system prompt, and
        the text appended to the last user turn (the paper merges them into one turn, no separator)."""
        self.awaiting_answer = True
        return {"system": self.prompts.final_answer_system(), "append_to_last_user": self.prompts.final_answer_request(question)}


def _search_without_retriever(query: str) -> str:
    raise RuntimeError(NO_RETRIEVER)
