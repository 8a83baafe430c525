"""Parsing actions into thought and code, and writing observations."""

from __future__ import annotations

import pytest

from agentdistill.envs.codeact import END_CODE, execution_observation, parse_action, truncate_middle


@pytest.mark.parametrize(
    ("action", "thought", "code"),
    [
        ("Thought: add\n```py\nx = 1 + 1\n```<end_code>", "add", "x = 1 + 1"),
        ("Thought: add\nCode:\n```python\nprint(2)\n```", "add", "print(2)"),
        ("Thought: bare fence\n```\nprint(3)\n```", "bare fence", "print(3)"),
        # a stop string cut the closing fence
        ("Thought: cut\n```py\nprint(4)\n", "cut", "print(4)"),
        ("Thought: cut at marker\n```py\nprint(5)\n" + END_CODE, "cut at marker", "print(5)"),
        # two python blocks run in order; a bash block is ignored
        ("Thought: t\n```py\na = 1\n```\nthen\n```bash\nls\n```\n```py\nprint(a)\n```", "t", "a = 1\n\nprint(a)"),
    ],
)
def test_parse_action_extracts_thought_and_code(action: str, thought: str, code: str) -> None:
    parsed = parse_action(action)
    assert parsed.error is None
    assert parsed.thought == thought
    assert parsed.code == code


@pytest.mark.parametrize(
    ("action", "reason"),
    [
        ("Thought: I know the answer, it is 4.", "no code block"),
        ("Thought: shell\n```bash\nls\n```", "not python"),
        ("Thought: empty\n```py\n\n```", "empty"),
        ("", "no code block"),
    ],
)
def test_parse_action_reports_why_there_is_no_code(action: str, reason: str) -> None:
    parsed = parse_action(action)
    assert parsed.code is None
    assert parsed.error is not None and reason in parsed.error


def test_truncate_middle_keeps_head_and_tail_within_bound() -> None:
    text = "HEAD" + "x" * 10_000 + "TAIL"
    cut = truncate_middle(text, 500)
    assert len(cut) <= 500
    assert cut.startswith("HEAD") and cut.endswith("TAIL")
    assert "truncated" in cut
    assert truncate_middle("short", 500) == "short"


def test_execution_observation_shows_logs_then_value_or_error() -> None:
    assert execution_observation("hi\n", "42", None) == (
        "Observation:\nExecution logs:\nhi\nLast output from code snippet:\n42"
    )
    failed = execution_observation("", None, "Code execution failed at line 'x' due to: NameError: x")
    assert failed.endswith("NameError: x") and "Last output" not in failed
    assert "print()" in execution_observation("", None, None)
