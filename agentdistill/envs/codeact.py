"""CodeAct text handling: split a model's action into thought and code, and write observations.

An action is what a model writes: ``Thought: ...`` followed by one or more fenced python blocks
(```` ```py ```` or ```` ```python ````), optionally closed by ``<end_code>``. A stop string may cut the
closing fence, so an opened block that never closes still counts as code. Parsing never raises: a
malformed action becomes a :class:`ParsedAction` with ``error`` set, which the env turns into an
observation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

END_CODE = "<end_code>"
"""Marker that closes a code action in the paper's format (also used as a stop string)."""

_OPENING_FENCE = re.compile(r"```[ \t]*(?P<lang>[A-Za-z0-9_+-]*)[ \t]*\n")
_CLOSING_FENCE = re.compile(r"\n?[ \t]*```")
_PYTHON_LANGS = frozenset({"", "py", "python", "python3"})


@dataclass(frozen=True)
class ParsedAction:
    """The parts of one action. Exactly one of ``code`` and ``error`` is set."""

    thought: str
    code: str | None
    error: str | None = None


def parse_action(text: str) -> ParsedAction:
    """Split ``text`` into its thought and the python code of all its fenced blocks, joined in order.

    The thought is everything before the first fence, without a leading ``Thought:``. Blocks in other
    languages are ignored; an action with no python block, or only empty ones, is an error.
    """
    blocks: list[str] = []
    other_languages: list[str] = []
    thought_end: int | None = None
    position = 0
    while (opening := _OPENING_FENCE.search(text, position)) is not None:
        if thought_end is None:
            thought_end = opening.start()
        closing = _CLOSING_FENCE.search(text, opening.end())
        body_end = closing.start() if closing else len(text)
        body = text[opening.end() : body_end]
        if not closing:
            body = body.split(END_CODE, 1)[0]
        if opening.group("lang").lower() in _PYTHON_LANGS:
            blocks.append(body)
        else:
            other_languages.append(opening.group("lang"))
        if not closing:
            break
        position = closing.end()

    thought = _strip_thought_label(text[: thought_end if thought_end is not None else len(text)])
    code = "\n\n".join(block.strip("\n") for block in blocks)
    if code.strip():
        return ParsedAction(thought=thought, code=code)
    if other_languages:
        reason = f"the code blocks are marked {sorted(set(other_languages))}, not python"
    elif blocks:
        reason = "the python code block is empty"
    else:
        reason = "no code block was found"
    return ParsedAction(thought=thought, code=None, error=reason)


def _strip_thought_label(text: str) -> str:
    stripped = text.strip()
    if stripped.lower().startswith("thought:"):
        stripped = stripped[len("thought:") :].strip()
    if stripped.endswith("Code:"):
        stripped = stripped[: -len("Code:")].rstrip()
    return stripped


def truncate_middle(text: str, max_chars: int) -> str:
    """Keep the head and the tail of ``text`` within ``max_chars``, saying how much was cut.

    Errors usually sit at the end of a log and the context at its start, so both ends are kept.
    """
    if len(text) <= max_chars:
        return text
    marker = f"\n[... {{}} characters truncated to stay within {max_chars} ...]\n"
    budget = max(max_chars - len(marker.format(len(text))), 0)
    head = budget // 2
    tail = budget - head
    removed = len(text) - head - tail
    return text[:head] + marker.format(removed) + (text[len(text) - tail :] if tail else "")


def parse_error_observation(reason: str) -> str:
    """The observation for an action the env could not read as code."""
    return (
        f"Error in code parsing: {reason}.\n"
        "Write your action as 'Thought: ...' followed by a python code block:\n"
        "```py\n# your code here\n```<end_code>\n"
        "Correct the format and try again."
    )


def execution_observation(logs: str, last_value: str | None, error: str | None) -> str:
    """The observation after running a cell: its printed logs, then its last value or its error."""
    parts = ["Execution logs:", logs.rstrip("\n")] if logs else []
    if error is not None:
        parts.append(error)
    elif last_value is not None:
        parts += ["Last output from code snippet:", last_value]
    elif not logs:
        parts.append("The code ran without printing anything. Use print() to see values.")
    return "Observation:\n" + "\n".join(parts)


def final_observation(logs: str, answer: str) -> str:
    """The observation after ``final_answer``: what the cell printed, then the answer given."""
    parts = ["Execution logs:", logs.rstrip("\n")] if logs else []
    return "Observation:\n" + "\n".join([*parts, f"Final answer: {answer}"])
