"""The figures read from finished episodes: success, invalid actions, steps, reward, and the paired gain.

Evaluation tables, the rollout loop's live metrics, ``show``, RL's reward and its held-out figures all count
from trajectory records, and all of them count here, so the same episodes give the same figures wherever
they are read.

What counts as an action. A step is an action when the env ran it: a step on which the policy failed
(``policy_error``) never reached the env. An action is invalid when it could not be parsed as code or its
code raised (:func:`is_invalid_step`): the paper's headline failure, which SAG exists to lower.

The no-action rule. An invalid-action rate is a share of actions, so where there is no action there is no
rate: an episode whose policy failed before acting, a chain-of-thought answer, or a set of such episodes has
the rate ``None`` (shown as "-"), and such episodes add nothing to a rate over several episodes. Reading them
as 0 would praise a policy that never acted; reading them as 1 would blame it for actions it never took.
The reward follows the same rule: an episode without an action did nothing invalid, so it pays no penalty,
and its score (0 for a failed episode) is its reward.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from agentdistill.rollouts.records import EpisodeRecord, StepRecord

# --- one step, one episode ----------------------------------------------------------------------------------


def is_action(step: StepRecord) -> bool:
    """Whether the env ran this step (a step the policy failed on holds only its ``policy_error``)."""
    return "policy_error" not in step


def is_invalid_step(step: StepRecord) -> bool:
    """Whether this step is an invalid action: its text could not be parsed as code, or its code raised."""
    return is_action(step) and (bool(step.get("parse_error")) or step.get("execution_error") is not None)


def actions_of(record: EpisodeRecord) -> list[StepRecord]:
    """The steps of an episode that the env ran."""
    return [step for step in record.get("steps") or () if is_action(step)]


def is_agent_episode(record: EpisodeRecord) -> bool:
    """Whether a record is an agent's episode (it lists its steps, maybe none) rather than a chain-of-thought
    answer, which has no steps to count."""
    return "steps" in record


def episode_score(record: EpisodeRecord) -> float:
    """The grader's score of an episode (0 for a failed episode, and for an imported one that carries none)."""
    return float(record.get("score") or 0.0)


def episode_invalid_rate(record: EpisodeRecord) -> float | None:
    """The share of an episode's actions that were invalid; ``None`` when it took no action (the no-action rule
    of this module's docstring)."""
    return count_actions([record]).invalid_rate


def episode_reward(record: EpisodeRecord, invalid_action_penalty: float) -> float:
    """The score minus ``invalid_action_penalty`` times the episode's invalid-action rate: RL's reward, which
    makes a policy that answers with fewer broken actions score higher (no penalty without an action)."""
    rate = episode_invalid_rate(record)
    return episode_score(record) - invalid_action_penalty * (0.0 if rate is None else rate)


# --- many episodes ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ActionCount:
    """Actions and invalid actions of some episodes: kept as counts, not as a rate, so that a running total
    (the loop's live metrics) can add episodes one at a time and still divide as a whole file would."""

    actions: int = 0
    invalid: int = 0

    @property
    def invalid_rate(self) -> float | None:
        """Invalid actions over actions; ``None`` without an action (the no-action rule)."""
        return self.invalid / self.actions if self.actions else None

    def __add__(self, other: ActionCount) -> ActionCount:
        return ActionCount(actions=self.actions + other.actions, invalid=self.invalid + other.invalid)


def count_actions(records: Iterable[EpisodeRecord]) -> ActionCount:
    """The actions of ``records`` and how many of them were invalid."""
    actions = [step for record in records for step in actions_of(record)]
    return ActionCount(actions=len(actions), invalid=sum(is_invalid_step(step) for step in actions))


def invalid_action_rate(records: Iterable[EpisodeRecord]) -> float | None:
    """Invalid actions over actions, all episodes pooled (a long episode weighs by its actions); ``None``
    when no episode took an action."""
    return count_actions(records).invalid_rate


def success_rate(records: Iterable[EpisodeRecord]) -> float:
    """The mean score (0 for no episodes): the share of tasks solved where scores are 0 or 1 (exact match,
    math), the mean partial credit where they are not (token F1)."""
    return _mean([episode_score(record) for record in records])


def mean_steps(records: Iterable[EpisodeRecord]) -> float:
    """Steps per episode, counting the step a policy failed on (0 for no episodes)."""
    return _mean([int(record.get("num_steps", 0)) for record in records])


def mean_reward(records: Iterable[EpisodeRecord], invalid_action_penalty: float = 0.0) -> float:
    """The mean of :func:`episode_reward` (0 for no episodes)."""
    return _mean([episode_reward(record, invalid_action_penalty) for record in records])


@dataclass(frozen=True)
class EpisodeFigures:
    """The figures of a set of episodes, e.g. one policy on held-out tasks."""

    episodes: int
    mean_reward: float
    success_rate: float
    invalid_action_rate: float | None
    """``None`` when no episode took an action."""
    mean_steps: float


def figures_of(records: Iterable[EpisodeRecord], invalid_action_penalty: float = 0.0) -> EpisodeFigures:
    """Episodes, mean reward, success rate, invalid-action rate and mean steps of ``records``."""
    records = list(records)
    return EpisodeFigures(
        episodes=len(records),
        mean_reward=mean_reward(records, invalid_action_penalty),
        success_rate=success_rate(records),
        invalid_action_rate=invalid_action_rate(records),
        mean_steps=mean_steps(records),
    )


# --- before and after ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PairedGain:
    """The change of a per-episode value (a reward, a score) from one set of episodes to another on the same
    tasks, paired by task: is it beyond noise?

    Each task's value is the mean over its episodes; ``mean`` is the average over tasks of after minus before,
    and ``stderr`` its standard error (the sample standard deviation of the differences over the root of
    ``tasks``). Pairing removes the spread of task difficulty, which dominates unpaired comparisons.
    """

    tasks: int
    mean: float
    stderr: float
    improved: int
    """Tasks whose value rose."""
    worsened: int
    """Tasks whose value fell."""


_TaskKey = tuple[str, int]
"""A task: its env id and its index there."""


def paired_gain(
    before: Iterable[EpisodeRecord],
    after: Iterable[EpisodeRecord],
    value: Callable[[EpisodeRecord], float] = episode_score,
) -> PairedGain | None:
    """:class:`PairedGain` of ``value`` over the tasks both sets of episodes cover; ``None`` for fewer than two
    (a standard error needs two differences)."""
    first, second = _mean_per_task(before, value), _mean_per_task(after, value)
    differences = [second[task] - first[task] for task in sorted(first.keys() & second.keys())]
    count = len(differences)
    if count < 2:
        return None
    mean = sum(differences) / count
    variance = sum((difference - mean) ** 2 for difference in differences) / (count - 1)
    return PairedGain(
        tasks=count,
        mean=mean,
        stderr=math.sqrt(variance / count),
        improved=sum(difference > 0 for difference in differences),
        worsened=sum(difference < 0 for difference in differences),
    )


def _mean_per_task(records: Iterable[EpisodeRecord], value: Callable[[EpisodeRecord], float]) -> dict[_TaskKey, float]:
    """Each task's mean ``value`` over its episodes (several samples of a task count as one task)."""
    values: dict[_TaskKey, list[float]] = {}
    for record in records:
        values.setdefault((str(record.get("env_id")), int(record["task_index"])), []).append(value(record))
    return {task: sum(task_values) / len(task_values) for task, task_values in values.items()}


# --- arithmetic ---------------------------------------------------------------------------------------------


def _mean(values: Sequence[float]) -> float:
    """The mean; 0 for no values, so that no episodes read as nothing achieved rather than as an error."""
    return sum(values) / len(values) if values else 0.0
