"""`show` renders what a model wrote without letting it drive the terminal; prefix files are never overwritten,
and the paper's first-thought prefixes are cut and read as its code cuts and writes them.

Real trajectory files from the scripted expert, rendered by rich into a captured console; real prefix files; the
paper's prompts and HotpotQA questions from ../shared/data.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from pathlib import Path

import gymnasium as gym
import pytest
from rich.console import Console

import agentdistill  # noqa: F401 - registers the env ids
from agentdistill.envs.paper.prompts import PaperPrompts
from agentdistill.errors import OutputConflictError, UserError
from agentdistill.policies.base import Completion, PolicyRequest, SamplingParams
from agentdistill.policies.expert import ExpertPolicy
from agentdistill.rollouts.collect import collect_trajectories
from agentdistill.rollouts.ftp import (
    build_prefix_file,
    build_prefixes,
    load_prefixes,
    paper_first_thought,
    prefix_for,
    save_prefixes,
)
from agentdistill.rollouts.show import show_file
from tests.conftest import SHARED_DATA, env_kwargs


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


class _ServerDown:
    """A backend whose every call fails: its episodes end before any action."""

    name = "down"

    def generate(self, requests: Sequence[PolicyRequest], params: SamplingParams) -> list[list[Completion]]:
        return [[Completion.failed("HTTP 503")] for _ in requests]

    def close(self) -> None:
        pass


def test_an_episode_shows_how_many_of_its_actions_were_invalid_or_that_it_took_none(tmp_path: Path) -> None:
    sloppy, down = tmp_path / "sloppy.jsonl", tmp_path / "down.jsonl"
    collect_trajectories(ExpertPolicy(error_rate=0.5), "AgentMath-Synthetic-v0", out=sloppy, episodes=4, progress=False)
    collect_trajectories(_ServerDown(), "AgentMath-Synthetic-v0", out=down, episodes=1, progress=False)
    console, buffer = _console()
    show_file(sloppy, console=console)
    printed = buffer.getvalue()
    lines = [json.loads(line) for line in sloppy.read_text().splitlines()]
    for record in lines:
        broken = sum("Code parsing failed" in step["observation"] for step in record["steps"])
        assert f"invalid actions {broken}/{len(record['steps'])}" in printed
    assert any("Code parsing failed" in step["observation"] for record in lines for step in record["steps"])
    console, buffer = _console()
    show_file(down, console=console)
    assert "policy error: HTTP 503" in buffer.getvalue() and "no action taken" in buffer.getvalue()


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


# --- the paper's first-thought prefixes -----------------------------------------------------------

PROMPTS_DIR = SHARED_DATA / "agent-distillation" / "prompts"


class Reasoner:
    """Answers every chain-of-thought request with the same text, keeping the requests it saw."""

    name = "reasoner"

    def __init__(self, text: str) -> None:
        self.text, self.seen = text, []

    def generate(self, requests: Sequence[PolicyRequest], params: SamplingParams) -> list[list[Completion]]:
        self.seen += list(requests)
        return [[Completion(self.text)] for _ in requests]

    def close(self) -> None:
        pass


def test_the_papers_prefix_is_the_first_paragraph_with_its_whitespace() -> None:
    assert paper_first_thought("  I need X.  \nThen Y.\n\nSo Z.\n\n<answer>Z</answer>") == "  I need X.  \nThen Y.\n\n"
    assert paper_first_thought("\n\nLate start.") == "\n\n"
    assert paper_first_thought("One paragraph only.") == "One paragraph only.\n\n"


def test_paper_prefixes_are_asked_with_the_teachers_prompt_and_keyed_by_task(tmp_path: Path) -> None:
    env = gym.make("AgentQA-HotpotQA-v0", **env_kwargs("AgentQA-HotpotQA-v0"))
    policy = Reasoner(" To find the answer, I need the film's director.\n\nThe director is X.\n\n<answer>X</answer>")
    try:
        prefixes = build_prefixes(env, policy, range(2), protocol="paper", prompts_dir=PROMPTS_DIR)
        tasks = [env.unwrapped.task_at(index) for index in range(2)]
    finally:
        env.close()
    teacher = PaperPrompts.load(PROMPTS_DIR).teacher_system_prompt
    assert [request.messages for request in policy.seen] == [
        ({"role": "system", "content": teacher}, {"role": "user", "content": task.question}) for task in tasks
    ]
    assert prefixes == {task.task_id: " To find the answer, I need the film's director.\n\n" for task in tasks}
    with pytest.raises(UserError, match="needs prompts_dir"):
        build_prefix_file(policy, "AgentMath-Synthetic-v0", range(1), tmp_path / "ftp.json", protocol="paper")
    assert not (tmp_path / "ftp.json").exists()


def test_a_paper_prefix_opens_the_first_turn_as_the_papers_does(tmp_path: Path) -> None:
    prefix_file = tmp_path / "ftp.json"
    prefixes = build_prefix_file(ExpertPolicy(), "AgentMath-Synthetic-v0", range(2), prefix_file, protocol="paper",
                                 prompts_dir=PROMPTS_DIR)
    out = tmp_path / "teacher.jsonl"
    collect_trajectories(ExpertPolicy(), "AgentMath-Synthetic-v0", out=out, episodes=2, progress=False,
                         ftp_prefixes=load_prefixes(prefix_file))
    for record in json.loads("[" + ",".join(out.read_text().splitlines()) + "]"):
        first_turn = record["messages"][2]["content"]
        # the paper's stored prefix, "Thought: " + response.split("\n\n")[0] + "\n\n", then the teacher's code
        assert first_turn.startswith("Thought: " + prefixes[record["task_id"]] + "\n```py")
        assert prefixes[record["task_id"]].endswith(".\n\n") and record["score"] == 1.0


def test_the_papers_own_prefix_memory_is_read_and_matched_by_question(tmp_path: Path) -> None:
    memory = tmp_path / "prefix_memory.json"
    memory.write_text(json.dumps(
        {" In what year was X born?": "Thought: I need X's birth year.\n\n", "Who is Y?": "Thought: \n\n"}, indent=4
    ))
    prefixes = load_prefixes(memory)
    assert prefixes == {"In what year was X born?": "I need X's birth year.\n\n", "Who is Y?": "\n\n"}
    assert prefix_for(prefixes, task_id="5a8d73", question="In what year was X born?") == "I need X's birth year.\n\n"
    assert prefix_for(prefixes, task_id="5a8d73", question="Who is Z?") is None
    ours = tmp_path / "ours.json"
    ours.write_text(json.dumps({"task-1": "Thought: about the plan.", "task-2": "I plan."}))
    assert load_prefixes(ours) == {"task-1": "Thought: about the plan.", "task-2": "I plan."}  # not every value
    assert prefix_for(load_prefixes(ours), task_id="task-2", question="anything") == "I plan."
