"""Whatever a model writes, ``step`` returns an observation in the space and never raises."""

from __future__ import annotations

import gymnasium as gym
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import agentdistill  # noqa: F401 - registers the env ids
from agentdistill.envs.tools.sandbox import SandboxLimits

_code_lines = st.sampled_from(["x = 1", "print(x)", "```", "```py", "final_answer(", "\ud800", "import os", "1/0", "<end_code>"])
_fenced = st.builds(
    lambda thought, lang, lines, close: f"Thought: {thought}\n```{lang}\n" + "\n".join(lines) + ("\n```" if close else ""),
    st.text(max_size=40),
    st.sampled_from(["py", "python", "", "bash", "py\n```py"]),
    st.lists(_code_lines, max_size=6),
    st.booleans(),
)
_actions = st.one_of(
    st.text(max_size=300),
    st.text(alphabet=st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), max_size=20),
    _fenced,
    st.builds(lambda inner: f"```py\n```py\n{inner}\n```\n```", st.text(max_size=50)),
)


@pytest.fixture(scope="module")
def env() -> gym.Env:
    made = gym.make("AgentMath-Synthetic-v0", sandbox_limits=SandboxLimits(step_timeout_s=1.0, kill_grace_s=1.0), max_action_chars=5_000)
    yield made
    made.close()


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(action=_actions)
def test_step_never_raises_and_stays_in_the_space(env: gym.Env, action: str) -> None:
    env.reset(options={"task_index": 0})
    observation, reward, terminated, truncated, info = env.step(action)
    assert env.observation_space.contains(observation)
    assert reward in (0.0, 1.0) and isinstance(terminated, bool) and isinstance(truncated, bool)
    assert isinstance(info["parse_error"], bool)


def test_huge_action_is_refused_with_an_observation(env: gym.Env) -> None:
    env.reset(options={"task_index": 0})
    observation, reward, terminated, truncated, info = env.step("```py\n" + "x = 1\n" * 10_000 + "```")
    assert info["parse_error"] and "more than the 5000 allowed" in observation
    assert env.observation_space.contains(observation) and not terminated
