"""Running metrics of a rollout: success rate, mean steps, invalid-action rate, tokens/s.

The invalid-action rate (actions that failed to parse or raised) is a headline metric of the paper: SAG's
purpose is to lower it. Every figure is counted from the records the loop writes, by
:mod:`agentdistill.rollouts.figures`, so what the progress bar and W&B show is what an evaluation reads back
from the file (the same no-action rule included: no rate before the first action).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from agentdistill.rollouts.figures import ActionCount, actions_of, count_actions, episode_score
from agentdistill.rollouts.records import EpisodeRecord


@dataclass
class RolloutMetrics:
    """Accumulates the figures of finished episodes, and the policy's tokens and time, as the loop runs."""

    episodes: int = 0
    failed_episodes: int = 0
    score_sum: float = 0.0
    episode_steps: int = 0
    actions: ActionCount = field(default_factory=ActionCount)
    completion_tokens: int = 0
    policy_seconds: float = 0.0
    sag_steps: int = 0
    sag_valid_sum: int = 0

    def add_episode(self, record: EpisodeRecord) -> None:
        """Count a finished episode, as the loop writes it."""
        self.episodes += 1
        self.failed_episodes += int(bool(record.get("failed")))
        self.score_sum += episode_score(record)
        self.episode_steps += int(record.get("num_steps", 0))
        self.actions += count_actions([record])
        for valid in _sag_valid_candidates(record):
            self.sag_steps += 1
            self.sag_valid_sum += valid

    def add_tokens(self, count: int) -> None:
        self.completion_tokens += count

    def add_policy_time(self, seconds: float) -> None:
        self.policy_seconds += seconds

    def summary(self, wall_seconds: float | None = None) -> dict[str, float]:
        """Rates over the episodes finished so far (0 where there were none); the invalid-action rate only once
        an action was taken."""
        result = {
            "episodes": float(self.episodes),
            "success_rate": self.score_sum / self.episodes if self.episodes else 0.0,
            "mean_steps": self.episode_steps / self.episodes if self.episodes else 0.0,
            "failed_episodes": float(self.failed_episodes),
            "completion_tokens": float(self.completion_tokens),
            "policy_seconds": self.policy_seconds,
        }
        if self.actions.invalid_rate is not None:
            result["invalid_action_rate"] = self.actions.invalid_rate
        if self.sag_steps:
            result["sag_mean_valid"] = self.sag_valid_sum / self.sag_steps
        if wall_seconds:
            result["tokens_per_s"] = self.completion_tokens / wall_seconds
            result["policy_time_fraction"] = self.policy_seconds / wall_seconds
        return result

    def postfix(self, wall_seconds: float) -> dict[str, str]:
        """The progress bar's live figures ("-" for an invalid-action rate before any action)."""
        summary = self.summary(wall_seconds)
        invalid = summary.get("invalid_action_rate")
        return {
            "success": f"{summary['success_rate']:.0%}",
            "steps": f"{summary['mean_steps']:.1f}",
            "invalid": "-" if invalid is None else f"{invalid:.0%}",
            "tok/s": f"{summary.get('tokens_per_s', 0.0):.0f}",
        }


def _sag_valid_candidates(record: EpisodeRecord) -> list[int]:
    """For each action SAG chose, how many of its candidates ran without an error."""
    votes = (action.get("sag") or {} for action in actions_of(record))
    return [int(vote["valid"]) for vote in votes if vote.get("valid") is not None]
