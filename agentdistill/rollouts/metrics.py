"""Running metrics of a rollout: success rate, mean steps, invalid-action rate, tokens/s.

The invalid-action rate (steps whose action failed to parse or raised) is a headline metric of the
paper: SAG's purpose is to lower it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class RolloutMetrics:
    """Accumulates per-step and per-episode figures as the loop runs."""

    episodes: int = 0
    failed_episodes: int = 0
    score_sum: float = 0.0
    steps: int = 0
    invalid_steps: int = 0
    episode_steps: int = 0
    completion_tokens: int = 0
    policy_seconds: float = 0.0
    sag_steps: int = 0
    sag_valid_sum: int = 0

    def add_step(self, *, invalid: bool, sag_valid: int | None = None) -> None:
        self.steps += 1
        self.invalid_steps += int(invalid)
        if sag_valid is not None:
            self.sag_steps += 1
            self.sag_valid_sum += int(sag_valid)

    def add_episode(self, *, score: float, steps: int, failed: bool) -> None:
        self.episodes += 1
        self.score_sum += score
        self.episode_steps += steps
        self.failed_episodes += int(failed)

    def add_tokens(self, count: int) -> None:
        self.completion_tokens += count

    def add_policy_time(self, seconds: float) -> None:
        self.policy_seconds += seconds

    def summary(self, wall_seconds: float | None = None) -> dict[str, float]:
        """Rates over what was seen so far (0 where nothing was)."""
        result = {
            "episodes": float(self.episodes),
            "success_rate": self.score_sum / self.episodes if self.episodes else 0.0,
            "mean_steps": self.episode_steps / self.episodes if self.episodes else 0.0,
            "invalid_action_rate": self.invalid_steps / self.steps if self.steps else 0.0,
            "failed_episodes": float(self.failed_episodes),
            "completion_tokens": float(self.completion_tokens),
            "policy_seconds": self.policy_seconds,
        }
        if self.sag_steps:
            result["sag_mean_valid"] = self.sag_valid_sum / self.sag_steps
        if wall_seconds:
            result["tokens_per_s"] = self.completion_tokens / wall_seconds
            result["policy_time_fraction"] = self.policy_seconds / wall_seconds
        return result

    def postfix(self, wall_seconds: float) -> dict[str, str]:
        """The progress bar's live figures."""
        summary = self.summary(wall_seconds)
        return {
            "success": f"{summary['success_rate']:.0%}",
            "steps": f"{summary['mean_steps']:.1f}",
            "invalid": f"{summary['invalid_action_rate']:.0%}",
            "tok/s": f"{summary.get('tokens_per_s', 0.0):.0f}",
        }
