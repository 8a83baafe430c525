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


def test_difficulty_defaults_are_unchanged() -> None:
    """Without difficulty arguments the envs generate exactly the generators' default tasks."""
    from agentdistill.envs.synthetic.math import generate_math_task
    from agentdistill.envs.synthetic.qa import generate_qa_task

    qa = gym.make("AgentQA-Synthetic-v0")
    math_env = gym.make("AgentMath-Synthetic-v0")
    try:
        for index in range(5):
            assert qa.unwrapped.task_at(index) == generate_qa_task(2 * index)
            assert math_env.unwrapped.task_at(index) == generate_math_task(2 * index)
    finally:
        qa.close()
        math_env.close()


def test_qa_difficulty_arguments_reach_the_generator() -> None:
    easy = gym.make("AgentQA-Synthetic-v0", min_hops=1, max_hops=1, num_distractors=0)
    hard = gym.make("AgentQA-Synthetic-v0", split="test", min_hops=4, max_hops=4, num_distractors=3)
    try:
        for index in range(10):
            task = easy.unwrapped.task_at(index)
            assert task.metadata["hops"] == 1
            assert len(task.documents) == 2  # the question's entity and the answer's, nothing else
            hard_task = hard.unwrapped.task_at(index)
            assert hard_task.metadata["hops"] == 4
            assert len(hard_task.documents) == 5 + 3
        _, info = easy.reset(options={"task_index": 0})
        assert [step["action"] for step in info["plan"]] == ["search", "final_answer"]
        assert _follow_plan(hard, 2)[0] == 1.0
    finally:
        easy.close()
        hard.close()


def test_math_difficulty_arguments_reach_the_generator() -> None:
    env = gym.make("AgentMath-Synthetic-v0", min_ops=1, max_ops=1)
    try:
        ops = {env.unwrapped.task_at(index).metadata["ops"] for index in range(20)}
        assert ops == {1}
        assert _follow_plan(env, 3)[0] == 1.0
    finally:
        env.close()


@pytest.mark.parametrize(
    ("env_id", "kwargs", "message"),
    [
        ("AgentQA-Synthetic-v0", {"min_hops": 0}, r"need 1 <= min_hops <= max_hops <= 4, got min_hops=0, max_hops=3"),
        ("AgentQA-Synthetic-v0", {"min_hops": 3, "max_hops": 2}, r"got min_hops=3, max_hops=2"),
        ("AgentQA-Synthetic-v0", {"max_hops": 9}, r"max_hops <= 4, got min_hops=2, max_hops=9"),
        ("AgentQA-Synthetic-v0", {"num_distractors": -1}, r"num_distractors must be >= 0, got -1"),
        ("AgentMath-Synthetic-v0", {"min_ops": 0}, r"need 1 <= min_ops <= max_ops <= 4, got min_ops=0, max_ops=3"),
        ("AgentMath-Synthetic-v0", {"min_ops": 4, "max_ops": 5}, r"got min_ops=4, max_ops=5"),
    ],
)
def test_bad_difficulty_is_rejected_at_construction(env_id: str, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        gym.make(env_id, **kwargs)


@pytest.mark.parametrize("kwargs", [{"min_hops": 1.5}, {"max_hops": "2"}, {"num_distractors": True}])
def test_non_integer_difficulty_is_a_type_error(kwargs: dict) -> None:
    with pytest.raises(TypeError, match="must be an int"):
        gym.make("AgentQA-Synthetic-v0", **kwargs)


@pytest.mark.parametrize("env_id", ["AgentQA-Synthetic-v0", "AgentMath-Synthetic-v0"])
def test_describe_task_gives_resets_task_info_without_starting_an_episode(env_id: str) -> None:
    env = gym.make(env_id)
    try:
        base = env.unwrapped
        task, described = base.describe_task(5)
        assert base.task is None  # no episode was started
        observation, info = env.reset(options={"task_index": 5})
        assert task.question in observation
        assert described == {key: info[key] for key in ("task_id", "task_index", "question", "plan")}
        with pytest.raises(ValueError, match=r"task_index'\] must be a non-negative int, got -1"):
            base.describe_task(-1)
    finally:
        env.close()
