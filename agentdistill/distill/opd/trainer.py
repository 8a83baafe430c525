"""On-policy distillation as a GRPO trainer whose advantages come from the teacher, token by token.

The student samples; for every token it sampled, the teacher's log-probability minus the student's is that
token's advantage (the negative of the per-token reverse KL, ``log p_student - log p_teacher``). With TRL's
policy-gradient loss this minimises the reverse KL from the student to the teacher on the student's own
episodes: dense, per-token signal where RL has one number per episode. The student's log-probabilities are the
ones it sampled with (the rollout's, under the weights that sampled; on-policy, that is the trainer's too).

``reward_weight > 0`` adds the env's reward as GRPO computes it (group-normalised, the same for every token of an
episode). Env tokens never count: TRL's loss multiplies by the env mask, and so do the metrics logged here,
``opd/teacher_logprob`` and ``opd/reverse_kl`` (means over the sampled tokens of the batch, all processes).
"""

from __future__ import annotations

from typing import Any

import torch

from agentdistill.distill.grpo.importance import AgentGRPOTrainer
from agentdistill.distill.opd.rollouts import OPDRollouts, pad_scores


def per_token_advantages(
    teacher: torch.Tensor,
    student: torch.Tensor,
    sampled: torch.Tensor,
    env_advantages: torch.Tensor,
    reward_weight: float,
) -> torch.Tensor:
    """``(teacher - student)`` log-probability on sampled tokens, plus ``reward_weight`` times each episode's
    env advantage; 0 on every other position. Shapes: ``(batch, tokens)``, and ``(batch,)`` for the env's."""
    mask = sampled.to(teacher.dtype)
    advantages = (teacher - student) * mask
    if reward_weight:
        advantages = advantages + reward_weight * env_advantages.to(teacher.dtype)[:, None] * mask
    return advantages


class OPDTrainer(AgentGRPOTrainer):
    """TRL's GRPO trainer with the teacher's per-token advantages (see the module docstring); the rollout hook
    must be an :class:`~agentdistill.distill.opd.rollouts.OPDRollouts`."""

    def _generate_and_score_completions(self, inputs: Any) -> dict[str, Any]:
        output = super()._generate_and_score_completions(inputs)
        rollouts = self.rollout_func
        if not isinstance(rollouts, OPDRollouts):
            raise TypeError(f"OPDTrainer needs OPDRollouts as rollout_func, got {type(rollouts).__name__}")
        completion_ids = output["completion_ids"]
        width = completion_ids.shape[1]
        teacher = torch.tensor(
            pad_scores(rollouts.take_teacher_logprobs(), width), dtype=torch.float32, device=completion_ids.device
        )
        student = output["sampling_per_token_logps"].float()
        sampled = output["completion_mask"] * output.get("tool_mask", torch.ones_like(output["completion_mask"]))
        output["advantages"] = per_token_advantages(
            teacher, student, sampled, output["advantages"], rollouts.settings.reward_weight
        )
        self._log_teacher_figures(teacher, student, sampled)
        return output

    def _log_teacher_figures(self, teacher: torch.Tensor, student: torch.Tensor, sampled: torch.Tensor) -> None:
        mask = sampled.float()
        sums = torch.stack([(teacher * mask).sum(), ((student - teacher) * mask).sum(), mask.sum()])
        totals = self.accelerator.gather(sums.reshape(1, 3)).sum(dim=0)
        if totals[2] > 0:
            split = "train" if self.model.training else "eval"
            self._metrics[split]["opd/teacher_logprob"].append((totals[0] / totals[2]).item())
            self._metrics[split]["opd/reverse_kl"].append((totals[1] / totals[2]).item())
