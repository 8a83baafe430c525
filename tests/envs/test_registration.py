"""Every env id is registered, passes gymnasium's checker, and vectorizes with text observations."""

from __future__ import annotations

import subprocess
import sys
import warnings

import gymnasium as gym
import pytest
from gymnasium.utils.env_checker import check_env

import agentdistill
from tests.conftest import ENV_DATA_KWARGS, code_action, env_kwargs

EXPECTED_IDS = {
    "AgentQA-HotpotQA-v0", "AgentQA-Bamboogle-v0", "AgentQA-MuSiQue-v0", "AgentQA-2WikiMultiHopQA-v0",
    "AgentMath-MATH-v0", "AgentMath-MATH500-v0", "AgentMath-GSMHard-v0", "AgentMath-AIME-v0",
    "AgentMath-OlymMATH-v0", "AgentQA-Synthetic-v0", "AgentMath-Synthetic-v0",
}


def test_import_registers_every_id() -> None:
    assert set(agentdistill.ENV_IDS) == EXPECTED_IDS == set(ENV_DATA_KWARGS)
    assert EXPECTED_IDS <= set(gym.registry)


def test_module_prefixed_id_works_without_importing_the_package() -> None:
    code = (
        "import gymnasium as gym\n"
        "env = gym.make('agentdistill:AgentMath-Synthetic-v0')\n"
        "print(env.reset(seed=0)[0][:5])\n"
        "env.close()\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "Task:"


@pytest.mark.parametrize("env_id", sorted(EXPECTED_IDS))
def test_check_env_passes(env_id: str) -> None:
    env = gym.make(env_id, **env_kwargs(env_id), render_mode="ansi")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            check_env(env.unwrapped)  # the render check too, with the ansi transcript
        from_gymnasium = [str(w.message) for w in caught if "gymnasium" in w.filename]
        assert from_gymnasium == [], from_gymnasium  # e.g. a render mode without render_fps
    finally:
        env.close()


@pytest.mark.parametrize("env_id", ["AgentMath-Synthetic-v0", "AgentQA-HotpotQA-v0"])
def test_async_vector_env_matches_sync_with_default_settings(env_id: str) -> None:
    kwargs = env_kwargs(env_id)
    actions = (
        code_action("print('héllo\\nwörld ✓', 6 * 7)"),
        code_action("final_answer('Denise Levertov')"),
    )
    results = {}
    for mode in ("sync", "async"):
        envs = gym.make_vec(env_id, num_envs=2, vectorization_mode=mode, **kwargs)
        try:
            observations, _ = envs.reset(seed=[11, 12])
            trace = [tuple(observations)]
            for action in actions:
                observations, rewards, terminated, truncated, _ = envs.step((action, action))
                trace.append((tuple(observations), tuple(rewards), tuple(terminated), tuple(truncated)))
            results[mode] = trace
        finally:
            envs.close()
    assert results["async"] == results["sync"]
    first_observations = results["sync"][0]
    assert all(isinstance(text, str) and text.startswith("Task: ") for text in first_observations)
    assert "héllo\nwörld ✓ 42" in results["sync"][1][0][0]
