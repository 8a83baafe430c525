"""Shared test fixtures: where the real task data lives, and small helpers for writing actions."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentdistill.rollouts.evaluate import SUITE_DATA

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
"""Real public task data staged beside the repo (read in place, never copied into the repo)."""


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"the shared test data is missing: expected it at {SHARED_DATA}")
    return SHARED_DATA


def code_action(code: str, thought: str = "I will run some code.") -> str:
    """An action in the paper's format: a thought, then a python block closed by <end_code>."""
    return f"Thought: {thought}\n```py\n{code}\n```<end_code>"


ENV_DATA_KWARGS: dict[str, dict[str, str]] = {
    **{env_id: dict(kwargs) for env_id, kwargs in SUITE_DATA.items()},
    "AgentMath-MATH-v0": {"data_path": "agent-distillation/math_dataset/train/math_1000_20250414.json"},
    "AgentQA-Synthetic-v0": {},
    "AgentMath-Synthetic-v0": {},
}
"""For every env id, the local files (relative to the shared data folder) a test builds it from."""


def env_kwargs(env_id: str) -> dict[str, str]:
    """Constructor arguments that make ``env_id`` from the shared data, with absolute paths."""
    return {key: str(SHARED_DATA / relative) for key, relative in ENV_DATA_KWARGS[env_id].items()}
