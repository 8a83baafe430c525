"""Math envs on real data: code with numpy/sympy in a real worker, graded by math-verify."""

from __future__ import annotations

import gymnasium as gym
import pytest

import agentdistill  # noqa: F401 - registers the env ids
from tests.conftest import code_action, env_kwargs


@pytest.fixture(scope="module")
def math500() -> gym.Env:
    env = gym.make("AgentMath-MATH500-v0", **env_kwargs("AgentMath-MATH500-v0"))
    yield env
    env.close()


def test_polar_coordinates_answer_in_another_latex_form_is_correct(math500: gym.Env) -> None:
    observation, info = math500.reset(options={"task_index": 0})
    assert "rectangular coordinates to polar coordinates" in observation
    assert "numpy" in info["system_prompt"] and "web_search" not in info["system_prompt"]
    observation, *_ = math500.step(
        code_action("import sympy\nr = sympy.sqrt(0**2 + 3**2)\ntheta = sympy.atan2(3, 0)\nprint(r, theta)")
    )
    assert "3 pi/2" in observation
    _, reward, terminated, _, info = math500.step(code_action('final_answer("(3, \\\\pi/2)")'))
    assert terminated and reward == 1.0 and info["gold"] == "\\left( 3, \\frac{\\pi}{2} \\right)"


def test_wrong_answer_scores_zero(math500: gym.Env) -> None:
    math500.reset(options={"task_index": 0})
    _, reward, terminated, _, _ = math500.step(code_action("final_answer('(3, pi)')"))
    assert terminated and reward == 0.0


def test_numpy_is_allowed_and_system_modules_are_not(math500: gym.Env) -> None:
    math500.reset(options={"task_index": 1})
    observation, *_ = math500.step(code_action("import numpy as np\nprint(int(np.arange(10).sum()))"))
    assert "Execution logs:\n45" in observation
    observation, *_, info = math500.step(code_action("import subprocess"))
    assert "not allowed" in observation and info["execution_error"]


def test_gsm_hard_float_gold_accepts_an_integer_answer() -> None:
    env = gym.make("AgentMath-GSMHard-v0", **env_kwargs("AgentMath-GSMHard-v0"), max_tasks=3)
    try:
        env.reset(options={"task_index": 0})
        gold = env.unwrapped.task.answer
        _, reward, *_ = env.step(code_action(f"final_answer({int(float(gold))})"))
        assert reward == 1.0
    finally:
        env.close()
