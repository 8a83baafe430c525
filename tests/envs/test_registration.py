"""Every env id is registered, passes gymnasium's checker, vectorizes with text observations, and its registry
entry says truly what the env is (its domain, whether it generates tasks, its local data)."""

from __future__ import annotations

import subprocess
import sys
import warnings

import gymnasium as gym
import pytest
from gymnasium.utils.env_checker import check_env

import agentdistill
from agentdistill.envs.registration import ENV_ENTRIES, EnvEntry, benchmark_name, domain_of
from agentdistill.errors import UserError
from tests.conftest import ENV_DATA_KWARGS, SHARED_DATA, code_action, env_kwargs

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


PAPER_LIST_SIZES = {
    "AgentQA-HotpotQA-v0": 500, "AgentQA-Bamboogle-v0": 125, "AgentQA-MuSiQue-v0": 500,
    "AgentQA-2WikiMultiHopQA-v0": 500, "AgentMath-MATH500-v0": 500, "AgentMath-GSMHard-v0": 500,
    "AgentMath-AIME-v0": 90, "AgentMath-OlymMATH-v0": 200,
}
"""The sizes of the paper's eight test lists."""


@pytest.mark.parametrize("entry", ENV_ENTRIES, ids=lambda entry: entry.env_id)
def test_the_entry_says_what_the_env_is(entry: EnvEntry) -> None:
    env = gym.make(entry.env_id, **env_kwargs(entry.env_id))
    try:
        searches = "web_search" in env.unwrapped.system_prompt()
        generates = env.unwrapped.num_tasks is None
    finally:
        env.close()
    assert (entry.domain == "factual") == searches and domain_of(entry.env_id) == entry.domain
    assert entry.synthetic == generates
    assert benchmark_name(entry.env_id) == entry.benchmark and entry.benchmark in entry.env_id


@pytest.mark.parametrize("entry", [entry for entry in ENV_ENTRIES if entry.paper_data], ids=lambda entry: entry.env_id)
def test_the_paper_test_lists_of_the_entries_are_the_papers(entry: EnvEntry) -> None:
    paper = {key: str(SHARED_DATA / relative) for key, relative in entry.paper_data.items()}
    env = gym.make(entry.env_id, **paper)
    try:
        assert env.unwrapped.num_tasks == PAPER_LIST_SIZES[entry.env_id]
    finally:
        env.close()


def test_an_unknown_id_has_no_domain_and_the_entries_cannot_be_changed() -> None:
    with pytest.raises(UserError, match=r"unknown env id 'AgentQA-Hotpot-v0'; did you mean 'AgentQA-HotpotQA-v0'"):
        domain_of("AgentQA-Hotpot-v0")
    with pytest.raises(UserError, match=r"unknown env id 'MATH500'"):
        benchmark_name("MATH500")
    entry = ENV_ENTRIES[0]
    with pytest.raises(TypeError):
        entry.local_data["data_path"] = "elsewhere.jsonl"  # type: ignore[index]
    with pytest.raises(TypeError):
        entry.kwargs["task_name"] = "MuSiQue"  # type: ignore[index]
