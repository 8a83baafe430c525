"""The read-side figures count what the env reported, the same way wherever episodes are read.

Real episodes: the rollout loop with the scripted expert on AgentMath-Synthetic-v0 (a sloppy one that breaks
half of its code, a clean one, and a policy that fails before acting), read back from their files; and
hand-made records for the edges real runs rarely hit.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path

import pytest

from agentdistill.policies import make_policy
from agentdistill.policies.base import Completion, Policy, PolicyRequest, SamplingParams
from agentdistill.rollouts.evaluate import summarize_records
from agentdistill.rollouts.figures import (
    EpisodeFigures,
    PairedGain,
    actions_of,
    episode_invalid_rate,
    episode_reward,
    episode_score,
    figures_of,
    invalid_action_rate,
    is_invalid_step,
    mean_steps,
    paired_gain,
    success_rate,
)
from agentdistill.rollouts.loop import RolloutSummary, make_rollout_envs, run_rollouts
from agentdistill.rollouts.metrics import RolloutMetrics
from agentdistill.rollouts.records import EpisodeRecord, StepRecord, read_trajectories

ENV_ID = "AgentMath-Synthetic-v0"
TASKS = range(6)
SAMPLES = 2


class FailsBeforeActing:
    """A backend that answers every request with an error (a server that is down)."""

    name = "down"

    def generate(self, requests: Sequence[PolicyRequest], params: SamplingParams) -> list[list[Completion]]:
        return [[Completion.failed("HTTP 503 from the server")] for _ in requests]

    def close(self) -> None:
        pass


def _play(policy: Policy, out: Path) -> tuple[RolloutSummary, list[EpisodeRecord]]:
    envs = make_rollout_envs(ENV_ID, 3)
    try:
        summary = run_rollouts(
            envs, policy, env_id=ENV_ID, task_indices=TASKS, samples_per_task=SAMPLES, out=str(out), progress=False
        )
    finally:
        envs.close()
    return summary, list(read_trajectories(out))


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[RolloutSummary, list[EpisodeRecord]]]:
    directory = tmp_path_factory.mktemp("figures")
    return {
        "sloppy": _play(make_policy("expert:0.5"), directory / "sloppy.jsonl"),
        "clean": _play(make_policy("expert"), directory / "clean.jsonl"),
        "down": _play(FailsBeforeActing(), directory / "down.jsonl"),
    }


def _errors_shown(record: EpisodeRecord) -> int:
    """Actions whose observation shows the syntax error the sloppy expert writes."""
    return sum("Code parsing failed" in str(step.get("observation")) for step in actions_of(record))


def test_invalid_actions_are_the_ones_the_env_reported_as_failed(runs: dict) -> None:
    _, records = runs["sloppy"]
    invalid = sum(_errors_shown(record) for record in records)
    actions = sum(len(record["steps"]) for record in records)
    assert 0 < invalid < actions
    assert invalid_action_rate(records) == invalid / actions
    for record in records:
        assert sum(map(is_invalid_step, record["steps"])) == _errors_shown(record)
        assert episode_invalid_rate(record) == _errors_shown(record) / len(record["steps"])


def test_the_reward_is_the_score_less_the_penalty_for_the_episodes_invalid_share(runs: dict) -> None:
    _, records = runs["sloppy"]
    penalised = [record for record in records if _errors_shown(record)]
    assert penalised
    for record in penalised:
        share = _errors_shown(record) / len(record["steps"])
        assert episode_reward(record, 0.4) == pytest.approx(record["score"] - 0.4 * share)
        assert episode_reward(record, 0.0) == episode_score(record) == record["score"]
    _, clean = runs["clean"]
    assert all(episode_reward(record, 0.4) == 1.0 for record in clean)


def test_live_metrics_evaluation_and_figures_agree_on_the_same_episodes(runs: dict) -> None:
    summary, records = runs["sloppy"]
    figures = figures_of(records, invalid_action_penalty=0.25)
    assert figures == EpisodeFigures(
        episodes=len(TASKS) * SAMPLES,
        mean_reward=pytest.approx(statistics.mean(episode_reward(record, 0.25) for record in records)),
        success_rate=statistics.mean(record["score"] for record in records),
        invalid_action_rate=invalid_action_rate(records),
        mean_steps=statistics.mean(record["num_steps"] for record in records),
    )
    assert figures.mean_reward < figures.success_rate < 1.0
    assert summary.metrics["success_rate"] == figures.success_rate
    assert summary.metrics["mean_steps"] == figures.mean_steps
    assert summary.metrics["invalid_action_rate"] == figures.invalid_action_rate
    row = summarize_records(ENV_ID, records, metric="math")
    assert (row.accuracy, row.invalid_action_rate, row.mean_steps) == (
        figures.success_rate, figures.invalid_action_rate, figures.mean_steps,
    )


def test_an_episode_without_an_action_has_no_invalid_rate_and_pays_no_penalty(runs: dict) -> None:
    summary, down = runs["down"]
    assert all(record["failed"] and record["steps"] == [{"policy_error": "HTTP 503 from the server"}] for record in down)
    assert all(episode_invalid_rate(record) is None for record in down)
    assert all(episode_reward(record, 0.5) == 0.0 for record in down)
    assert invalid_action_rate(down) is None
    assert figures_of(down, 0.5) == EpisodeFigures(
        episodes=len(down), mean_reward=0.0, success_rate=0.0, invalid_action_rate=None, mean_steps=1.0
    )
    assert "invalid_action_rate" not in summary.metrics and summary.metrics["failed_episodes"] == len(down)
    live = RolloutMetrics()
    for record in down:
        live.add_episode(record)
    assert live.postfix(wall_seconds=1.0)["invalid"] == "-"
    row = summarize_records(ENV_ID, down, metric="math")
    assert row.invalid_action_rate is None and row.mean_steps == 1.0
    _, sloppy = runs["sloppy"]
    assert invalid_action_rate([*down, *sloppy]) == invalid_action_rate(sloppy)


def test_the_gain_pairs_tasks_after_averaging_their_samples(runs: dict) -> None:
    _, sloppy = runs["sloppy"]
    _, clean = runs["clean"]
    per_task = {task: statistics.mean(r["score"] for r in sloppy if r["task_index"] == task) for task in TASKS}
    differences = [1.0 - per_task[task] for task in TASKS]
    gain = paired_gain(sloppy, clean)
    assert gain == PairedGain(
        tasks=len(TASKS),
        mean=pytest.approx(statistics.mean(differences)),
        stderr=pytest.approx(statistics.stdev(differences) / len(TASKS) ** 0.5),
        improved=sum(difference > 0 for difference in differences),
        worsened=0,
    )
    assert gain is not None and gain.improved > 0
    rewards = paired_gain(sloppy, clean, value=lambda record: episode_reward(record, 1.0))
    assert rewards is not None and rewards.mean > gain.mean  # the clean expert also drops the penalty
    assert paired_gain(clean, sloppy) == PairedGain(
        tasks=gain.tasks, mean=pytest.approx(-gain.mean), stderr=pytest.approx(gain.stderr), improved=0,
        worsened=gain.improved,
    )


def _episode(env_id: str, task: int, score: float | None, *steps: StepRecord) -> EpisodeRecord:
    return {"env_id": env_id, "task_index": task, "messages": [], "score": score, "num_steps": len(steps),
            "steps": list(steps)}


def test_pairing_needs_two_shared_tasks_and_keeps_envs_apart() -> None:
    before = [_episode(ENV_ID, 0, 0.0, {}), _episode(ENV_ID, 1, 0.0, {})]
    after_elsewhere = [_episode("AgentQA-Synthetic-v0", 0, 1.0, {}), _episode("AgentQA-Synthetic-v0", 1, 1.0, {})]
    assert paired_gain(before, after_elsewhere) is None
    assert paired_gain(before, [_episode(ENV_ID, 0, 1.0, {})]) is None
    gain = paired_gain(before, [_episode(ENV_ID, 0, 1.0, {}), _episode(ENV_ID, 1, 1.0, {})])
    assert gain == PairedGain(tasks=2, mean=1.0, stderr=0.0, improved=2, worsened=0)


def test_steps_the_policy_failed_on_are_not_actions_and_any_execution_error_is_invalid() -> None:
    record = _episode(
        ENV_ID, 0, 1.0,
        {"parse_error": True, "execution_error": None},
        {"parse_error": False, "execution_error": ""},  # an exception with an empty message still raised
        {"parse_error": False, "execution_error": None},
        {"policy_error": "timed out"},
    )
    assert [is_invalid_step(step) for step in record["steps"]] == [True, True, False, False]
    assert episode_invalid_rate(record) == 2 / 3
    assert episode_reward(record, 0.3) == pytest.approx(1.0 - 0.3 * 2 / 3)
    assert mean_steps([record]) == 4.0


def test_chain_of_thought_answers_and_missing_scores() -> None:
    answer: EpisodeRecord = {"env_id": ENV_ID, "task_index": 0, "messages": [], "score": 1.0, "rag": False}
    imported = _episode(ENV_ID, 1, None, {"parse_error": False, "execution_error": None})
    assert episode_invalid_rate(answer) is None and invalid_action_rate([answer]) is None
    assert episode_score(imported) == 0.0 and success_rate([answer, imported]) == 0.5
    assert figures_of([]) == EpisodeFigures(
        episodes=0, mean_reward=0.0, success_rate=0.0, invalid_action_rate=None, mean_steps=0.0
    )
    row = summarize_records(ENV_ID, [answer], metric="math")
    assert row.invalid_action_rate is None and row.mean_steps is None and row.accuracy == 1.0
