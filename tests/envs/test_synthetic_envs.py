"""The synthetic envs: following the generator's plan through the real env solves every task."""

from __future__ import annotations

import gymnasium as gym
import pytest

import agentdistill  # noqa: F401 - registers the env ids
from tests.conftest import code_action


def _follow_plan(env: gym.Env, task_index: int) -> tuple[float, list[str]]:
    """Act as a scripted expert would: one step per plan entry, through the env's real tools."""
    _, info = env.reset(options={"task_index": task_index})
    observations = []
    reward = 0.0
    for entry in info["plan"]:
        if entry["action"] == "search":
            action = code_action(f"print(web_search({entry['query']!r}))")
        elif entry["action"] == "code":
            action = code_action(entry["code"])
        else:
            action = code_action(f"final_answer({entry['answer']!r})")
        observation, reward, terminated, truncated, _ = env.step(action)
        observations.append(observation)
        if terminated or truncated:
            break
    return reward, observations


@pytest.mark.parametrize("env_id", ["AgentQA-Synthetic-v0", "AgentMath-Synthetic-v0"])
def test_plan_following_expert_solves_every_task(env_id: str) -> None:
    env = gym.make(env_id)
    try:
        for task_index in range(15):
            reward, _ = _follow_plan(env, task_index)
            assert reward == 1.0, f"task {task_index} of {env_id} was not solved by its plan"
    finally:
        env.close()


def test_qa_searches_return_the_next_hop_and_the_plan_stays_out_of_the_observation() -> None:
    env = gym.make("AgentQA-Synthetic-v0")
    try:
        observation, info = env.reset(options={"task_index": 3})
        plan = info["plan"]
        assert plan[-1]["answer"] not in observation
        _, observations = _follow_plan(env, 3)
        for entry, seen in zip(plan, observations):
            if entry["action"] == "search":
                assert entry["expect"] in seen
    finally:
        env.close()


def test_train_and_test_splits_are_disjoint_and_deterministic() -> None:
    train = gym.make("AgentMath-Synthetic-v0", split="train")
    test = gym.make("AgentMath-Synthetic-v0", split="test")
    try:
        train_questions = {train.reset(options={"task_index": i})[0] for i in range(50)}
        test_questions = {test.reset(options={"task_index": i})[0] for i in range(50)}
        assert not train_questions & test_questions
        assert train.reset(seed=7)[0] == train.reset(seed=7)[0]
    finally:
        train.close()
        test.close()


def test_unknown_split_is_rejected() -> None:
    with pytest.raises(ValueError, match="split must be one of \\['test', 'train'\\], got 'dev'"):
        gym.make("AgentQA-Synthetic-v0", split="dev")
