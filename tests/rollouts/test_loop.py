"""The rollout loop with real envs, real sandboxes and the scripted experts (no LLM needed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import gymnasium as gym
import pytest

import agentdistill  # noqa: F401 - registers the env ids
from agentdistill.envs.sag import encode_candidates
from agentdistill.policies.base import Completion, PolicyRequest, SamplingParams
from agentdistill.policies.expert import ExpertPolicy
from agentdistill.rollouts.loop import SAGSettings, make_rollout_envs, run_rollouts
from agentdistill.rollouts.records import read_trajectories
from tests.conftest import code_action


class CrashAfter:
    """Wraps a policy and raises KeyboardInterrupt (as a killed run would stop) after ``calls`` calls."""

    def __init__(self, policy: ExpertPolicy, calls: int) -> None:
        self.policy, self.calls, self.name = policy, calls, policy.name

    def generate(self, requests: Sequence[PolicyRequest], params: SamplingParams) -> list[list[Completion]]:
        self.calls -= 1
        if self.calls < 0:
            raise KeyboardInterrupt
        return self.policy.generate(requests, params)

    def close(self) -> None:
        pass


class FailsOnTask:
    """An expert whose backend fails for one task (a 500 from a server, say)."""

    def __init__(self, task_id: str) -> None:
        self.expert, self.task_id, self.name = ExpertPolicy(), task_id, "flaky"

    def generate(self, requests: Sequence[PolicyRequest], params: SamplingParams) -> list[list[Completion]]:
        answers = self.expert.generate(requests, params)
        return [
            [Completion.failed("HTTP 500 from the teacher")] if request.context["task_id"] == self.task_id else choices
            for request, choices in zip(requests, answers)
        ]

    def close(self) -> None:
        pass


def _rollout(env_id: str, out: Path, *, policy=None, episodes: int = 12, num_envs: int = 4, mode: str = "sync", **kwargs):
    envs = make_rollout_envs(env_id, num_envs, vectorization_mode=mode)
    try:
        return run_rollouts(
            envs, policy or ExpertPolicy(), env_id=env_id, task_indices=range(episodes), out=str(out), progress=False, **kwargs
        )
    finally:
        envs.close()


@pytest.mark.parametrize("env_id", ["AgentQA-Synthetic-v0", "AgentMath-Synthetic-v0"])
def test_expert_solves_every_task_and_every_episode_is_one_valid_line(env_id: str, tmp_path: Path) -> None:
    summary = _rollout(env_id, tmp_path / "t.jsonl", episodes=10, num_envs=3)
    records = list(read_trajectories(tmp_path / "t.jsonl"))
    assert summary.episodes == 10 and summary.metrics["success_rate"] == 1.0
    assert sorted(record["task_index"] for record in records) == list(range(10))
    for record in records:
        roles = [message["role"] for message in record["messages"]]
        assert roles[:2] == ["system", "user"] and roles[2:] == ["assistant", "user"] * record["num_steps"]
        assert record["score"] == 1.0 and record["answer"] == record["gold"] and record["terminated"]
        assert all(step["code"] and step["observation"].startswith("Observation:") for step in record["steps"])


def test_async_vector_env_gives_the_same_episodes_as_sync(tmp_path: Path) -> None:
    _rollout("AgentQA-Synthetic-v0", tmp_path / "sync.jsonl", mode="sync")
    _rollout("AgentQA-Synthetic-v0", tmp_path / "async.jsonl", mode="async")
    by_task = lambda path: {r["task_index"]: r["messages"] for r in read_trajectories(path)}  # noqa: E731
    assert by_task(tmp_path / "sync.jsonl") == by_task(tmp_path / "async.jsonl")


def test_a_killed_run_resumes_without_losing_or_duplicating_episodes(tmp_path: Path) -> None:
    out = tmp_path / "t.jsonl"
    with pytest.raises(KeyboardInterrupt):
        _rollout("AgentMath-Synthetic-v0", out, policy=CrashAfter(ExpertPolicy(), calls=5), episodes=20)
    first = list(read_trajectories(out))
    assert 0 < len(first) < 20
    with out.open("a") as handle:
        handle.write('{"version": 1, "env_id": "AgentMath-Synthetic-v0", "task_index": 19, "mess')  # killed mid-write
    summary = _rollout("AgentMath-Synthetic-v0", out, episodes=20)
    records = list(read_trajectories(out))
    assert summary.skipped == len(first)
    assert sorted(r["task_index"] for r in records) == list(range(20))
    assert all(json.loads(line) for line in out.read_text().splitlines())


def test_a_policy_failure_fails_its_episode_only(tmp_path: Path) -> None:
    summary = _rollout("AgentQA-Synthetic-v0", tmp_path / "t.jsonl", policy=FailsOnTask("synthetic-qa-4"), episodes=6)
    records = {r["task_id"]: r for r in read_trajectories(tmp_path / "t.jsonl")}
    assert len(records) == 6
    assert records["synthetic-qa-4"]["failed"] == "HTTP 500 from the teacher" and records["synthetic-qa-4"]["score"] == 0.0
    assert all(r["score"] == 1.0 for task_id, r in records.items() if task_id != "synthetic-qa-4")
    assert summary.metrics["failed_episodes"] == 1.0


def test_sag_lowers_the_invalid_action_rate_of_a_sloppy_policy(tmp_path: Path) -> None:
    sloppy = dict(episodes=16, sampling=SamplingParams(seed=3))
    greedy = _rollout("AgentMath-Synthetic-v0", tmp_path / "greedy.jsonl", policy=ExpertPolicy(error_rate=0.5), **sloppy)
    voted = _rollout(
        "AgentMath-Synthetic-v0", tmp_path / "sag.jsonl", policy=ExpertPolicy(error_rate=0.5), sag=SAGSettings(n=6), **sloppy
    )
    assert greedy.metrics["invalid_action_rate"] > 0.3
    assert voted.metrics["invalid_action_rate"] < greedy.metrics["invalid_action_rate"] / 3
    steps = [step for record in read_trajectories(tmp_path / "sag.jsonl") for step in record["steps"]]
    assert all(step["sag"]["candidates"] == 6 for step in steps)


def test_ftp_prefix_starts_the_first_turn_and_the_policy_continues_it(tmp_path: Path) -> None:
    prefix = "I should look up the first entity of the question before anything else."
    _rollout("AgentQA-Synthetic-v0", tmp_path / "t.jsonl", episodes=3, ftp_prefixes={"synthetic-qa-0": prefix})
    records = {r["task_id"]: r for r in read_trajectories(tmp_path / "t.jsonl")}
    first_turn = records["synthetic-qa-0"]["messages"][2]["content"]
    assert first_turn.startswith(f"Thought: {prefix}\n```py\nprint(web_search(")
    assert records["synthetic-qa-0"]["ftp_prefix"] == prefix and records["synthetic-qa-0"]["score"] == 1.0
    assert not records["synthetic-qa-2"]["messages"][2]["content"].startswith(f"Thought: {prefix}")


def test_sag_votes_on_normalised_answers_and_leaves_rejected_state_untouched() -> None:
    env = gym.make("AgentQA-Synthetic-v0")
    try:
        env.reset(options={"task_index": 0})
        env.step(code_action("x = 1"))
        candidates = [
            code_action("x += 100\nprint(x)"),  # runs, observation '101'
            code_action("x += 5\nprint(x + 95)"),  # same observation '101': the majority
            code_action("1/0"),  # raises: invalid
            "no code at all",  # does not parse: invalid
        ]
        observation, _, _, _, info = env.step(encode_candidates(candidates))
        assert info["sag"] == {"candidates": 4, "valid": 2, "winner": 0, "votes": 2, "vote": "answer"}
        assert "101" in observation and info["action"] == candidates[0]
        observation, *_ = env.step(code_action("print(x)"))
        assert "Execution logs:\n101" in observation, "the winner's state is adopted, without running it twice"
        _, reward, terminated, _, info = env.step(
            encode_candidates([code_action("final_answer('Paris')"), code_action("final_answer('the paris')"), code_action("final_answer('Rome')")])
        )
        assert terminated and info["answer"] == "Paris" and info["sag"]["votes"] == 2
    finally:
        env.close()


def test_no_valid_candidate_keeps_the_first_so_the_model_sees_its_error() -> None:
    env = gym.make("AgentMath-Synthetic-v0")
    try:
        env.reset(options={"task_index": 0})
        observation, *_, info = env.step(encode_candidates([code_action("1/0"), code_action("undefined_name")]))
        assert info["sag"]["valid"] == 0 and info["sag"]["winner"] == 0
        assert "ZeroDivisionError" in observation
    finally:
        env.close()
