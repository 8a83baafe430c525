"""``agentdistill show``: trajectory records rendered for a person reading them in a terminal."""

from __future__ import annotations

import os
from typing import Any

from rich.console import Console, Group
from rich.panel import Panel
from rich.syntax import Syntax
from rich.text import Text

from agentdistill.rollouts.records import read_trajectories


def render_episode(record: dict[str, Any]) -> Panel:
    """One episode: the task, then per step the thought, the code and the observation, then the score."""
    messages = record.get("messages", [])
    task = next((m["content"] for m in messages if m.get("role") == "user"), "")
    parts: list[Any] = [Text(task, style="bold")]
    if record.get("ftp_prefix"):
        parts.append(Text(f"first-thought prefix: {record['ftp_prefix']}", style="magenta"))
    for number, step in enumerate(record.get("steps", []), 1):
        parts.append(_render_step(number, step))
    if record.get("failed"):
        parts.append(Text(f"episode failed: {record['failed']}", style="bold red"))
    score = float(record.get("score") or 0.0)
    verdict = Text(
        f"answer {record.get('answer')!r}  gold {record.get('gold')!r}  score {score:g}",
        style="bold green" if score >= 1.0 else "bold red",
    )
    parts.append(verdict)
    title = f"{record.get('env_id')} · task {record.get('task_index')} ({record.get('task_id')}) · {record.get('policy')}"
    return Panel(Group(*parts), title=title, title_align="left")


def _render_step(number: int, step: dict[str, Any]) -> Group:
    lines: list[Any] = []
    header = f"step {number}"
    if step.get("sag"):
        sag = step["sag"]
        header += f"  (SAG: {sag.get('valid')}/{sag.get('candidates')} valid, {sag.get('votes')} votes)"
    lines.append(Text(header, style="bold cyan"))
    if step.get("policy_error"):
        lines.append(Text(f"policy error: {step['policy_error']}", style="red"))
        return Group(*lines)
    if step.get("thought"):
        lines.append(Text(f"Thought: {step['thought']}", style="italic"))
    if step.get("code"):
        lines.append(Syntax(step["code"], "python", theme="ansi_dark", line_numbers=False))
    failed = step.get("parse_error") or step.get("execution_error")
    lines.append(Text(str(step.get("observation", "")), style="red" if failed else "dim"))
    return Group(*lines)


def show_file(path: str | os.PathLike[str], *, index: int | None = None, limit: int | None = None, console: Console | None = None) -> int:
    """Print the episodes of a trajectory file (the ``index``-th only, or the first ``limit``);
    returns how many were shown."""
    console = console or Console()
    shown = 0
    for position, record in enumerate(read_trajectories(path)):
        if index is not None and position != index:
            continue
        console.print(render_episode(record))
        shown += 1
        if index is not None or (limit is not None and shown >= limit):
            break
    if index is not None and shown == 0:
        raise IndexError(f"{path} has no episode at index {index}")
    return shown
