"""``agentdistill show``: trajectory records rendered for a person reading them in a terminal."""

from __future__ import annotations

import os
from typing import Any

from rich.console import Console, Group
from rich.panel import Panel
from rich.syntax import Syntax
from rich.text import Text

from agentdistill.errors import UserError
from agentdistill.rollouts.figures import count_actions, is_agent_episode, is_invalid_step
from agentdistill.rollouts.records import EpisodeRecord, StepRecord, read_trajectories

_CONTROL = {code: f"\\x{code:02x}" for code in (*range(0x00, 0x20), 0x7F) if chr(code) not in "\n\t"}
_CONTROL.update({code: f"\\x{code:02x}" for code in range(0x80, 0xA0)})
_CONTROL.update({0x0D: "\\r", 0x1B: "\\x1b"})
"""Control characters (C0, DEL, C1) as visible escapes; newlines and tabs stay layout."""


def visible(text: object) -> str:
    """``text`` with every control character shown as an escape (``\\x1b``, ``\\r``): data from a model or a
    web page must not move the cursor, recolour or clear the reader's terminal."""
    return str(text).translate(_CONTROL)


def render_episode(record: EpisodeRecord) -> Panel:
    """One episode: the task, then per step the thought, the code and the observation (red for an invalid
    action), then the score and, for an agent, its invalid actions."""
    messages = record.get("messages", [])
    task = next((m["content"] for m in messages if m.get("role") == "user"), "")
    parts: list[Any] = [Text(visible(task), style="bold")]
    if record.get("ftp_prefix"):
        parts.append(Text(visible(f"first-thought prefix: {record['ftp_prefix']}"), style="magenta"))
    for number, step in enumerate(record.get("steps", []), 1):
        parts.append(_render_step(number, step))
    if record.get("failed"):
        parts.append(Text(visible(f"episode failed: {record['failed']}"), style="bold red"))
    score = float(record.get("score") or 0.0)
    actions = f"  {_invalid_actions(record)}" if is_agent_episode(record) else ""
    verdict = Text(
        visible(f"answer {record.get('answer')!r}  gold {record.get('gold')!r}  score {score:g}{actions}"),
        style="bold green" if score >= 1.0 else "bold red",
    )
    parts.append(verdict)
    title = f"{record.get('env_id')} · task {record.get('task_index')} ({record.get('task_id')}) · {record.get('policy')}"
    return Panel(Group(*parts), title=visible(title), title_align="left")


def _invalid_actions(record: EpisodeRecord) -> str:
    """How many of the episode's actions were invalid, or that it took none (and so has no invalid-action rate,
    as :mod:`agentdistill.rollouts.figures` counts)."""
    count = count_actions([record])
    return f"invalid actions {count.invalid}/{count.actions}" if count.actions else "no action taken"


def _render_step(number: int, step: StepRecord) -> Group:
    lines: list[Any] = []
    header = f"step {number}"
    if step.get("sag"):
        sag = step["sag"]
        header += f"  (SAG: {sag.get('valid')}/{sag.get('candidates')} valid, {sag.get('votes')} votes)"
    lines.append(Text(visible(header), style="bold cyan"))
    if step.get("policy_error"):
        lines.append(Text(visible(f"policy error: {step['policy_error']}"), style="red"))
        return Group(*lines)
    if step.get("thought"):
        lines.append(Text(visible(f"Thought: {step['thought']}"), style="italic"))
    if step.get("code"):
        lines.append(Syntax(visible(step["code"]), "python", theme="ansi_dark", line_numbers=False))
    lines.append(Text(visible(step.get("observation") or ""), style="red" if is_invalid_step(step) else "dim"))
    return Group(*lines)


def show_file(path: str | os.PathLike[str], *, index: int | None = None, limit: int | None = None, console: Console | None = None) -> int:
    """Print the episodes of a trajectory file (the ``index``-th only, or the first ``limit``, all when
    ``None``); returns how many were shown."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise UserError(f"limit must be a positive number of episodes (or None for all), got {limit!r}")
    if index is not None and (isinstance(index, bool) or not isinstance(index, int) or index < 0):
        raise UserError(f"index must be a non-negative episode position, got {index!r}")
    console = console or Console()
    shown = 0
    held = 0
    for position, record in enumerate(read_trajectories(path)):
        held = position + 1
        if index is not None and position != index:
            continue
        console.print(render_episode(record))
        shown += 1
        if index is not None or (limit is not None and shown >= limit):
            break
    if index is not None and shown == 0:
        raise UserError(f"{path} has no episode at index {index}: it holds {held} (indices start at 0)")
    return shown
