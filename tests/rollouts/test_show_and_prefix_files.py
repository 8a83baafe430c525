"""`show` renders what a model wrote without letting it drive the terminal; prefix files are never overwritten.

Real trajectory files from the scripted expert, rendered by rich into a captured console; real prefix files.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console

import agentdistill  # noqa: F401 - registers the env ids
from agentdistill.errors import OutputConflictError, UserError
from agentdistill.policies.expert import ExpertPolicy
from agentdistill.rollouts.collect import collect_trajectories
from agentdistill.rollouts.ftp import build_prefix_file, load_prefixes, save_prefixes
from agentdistill.rollouts.show import show_file


def _console() -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return Console(file=buffer, force_terminal=True, width=120, color_system="standard"), buffer


def test_control_characters_of_the_data_are_shown_not_sent_to_the_terminal(tmp_path: Path) -> None:
    out = tmp_path / "t.jsonl"
    collect_trajectories(ExpertPolicy(), "AgentMath-Synthetic-v0", out=out, episodes=1, progress=False)
    record = json.loads(out.read_text())
    hostile = "\x1b[2J\x1b]0;pwned\x07\rclear\x9b31m"
    record["steps"][0]["observation"] = hostile + "\nsecond line\tend"
    record["answer"] = hostile
    record["steps"][0]["sag"] = {"valid": hostile, "candidates": 3, "votes": 2}
    out.write_text(json.dumps(record) + "\n")
    console, buffer = _console()
    assert show_file(out, console=console) == 1
    printed = buffer.getvalue()
    assert "\\x1b[2J" in printed and "\\x07" in printed and "\\r" in printed and "\\x9b" in printed
    assert "\x1b[2J" not in printed and "\x07" not in printed and "\r" not in printed and "\x9b" not in printed
    assert "second line" in printed  # newlines and tabs keep their layout


def test_limit_and_index_are_checked_and_a_bad_line_is_named(tmp_path: Path) -> None:
    out = tmp_path / "t.jsonl"
    collect_trajectories(ExpertPolicy(), "AgentMath-Synthetic-v0", out=out, episodes=3, progress=False)
    console, _ = _console()
    assert show_file(out, limit=2, console=console) == 2
    assert show_file(out, limit=None, console=console) == 3
    for bad in (0, -1):
        with pytest.raises(UserError, match="limit must be a positive number"):
            show_file(out, limit=bad, console=console)
    with pytest.raises(UserError, match="has no episode at index 7: it holds 3"):
        show_file(out, index=7, console=console)
    with out.open("a") as handle:
        handle.write("not json\n")
    with pytest.raises(UserError, match=rf"{out}: line 4 is not JSON"):
        show_file(out, console=console)


def test_a_prefix_file_is_never_overwritten(tmp_path: Path) -> None:
    mine = tmp_path / "ftp.json"
    mine.write_text('{"task-1": "my own prefix"}')
    with pytest.raises(OutputConflictError, match="already exists and prefix files are never overwritten"):
        build_prefix_file(ExpertPolicy(), "AgentMath-Synthetic-v0", range(2), mine)
    with pytest.raises(OutputConflictError):
        save_prefixes({"task-2": "x"}, mine)
    assert mine.read_text() == '{"task-1": "my own prefix"}'
    fresh = tmp_path / "new" / "ftp.json"
    prefixes = build_prefix_file(ExpertPolicy(), "AgentMath-Synthetic-v0", range(2), fresh)
    assert load_prefixes(fresh) == prefixes and len(prefixes) == 2
    assert [path.name for path in fresh.parent.iterdir()] == ["ftp.json"]  # no temporary file left


def test_a_bad_prefix_file_names_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "ftp.json"
    path.write_text('{\n "task-1": "a",\n "task-2": \n}')
    with pytest.raises(UserError, match=rf"{path}: not a prefix file: invalid JSON \(line 4, column 1\)"):
        load_prefixes(path)
    path.write_text('["a", "b"]')
    with pytest.raises(UserError, match="expected a JSON object mapping task ids to prefix strings"):
        load_prefixes(path)
