"""How much of a batch the importance-sampling correction leaves out, for GRPO with vLLM rollouts.

When vLLM samples the episodes and the trainer scores them, the two disagree a little on every token's
log-probability. TRL corrects with importance-sampling ratios and, in its ``*_mask`` modes, drops what
disagrees more than ``[C_min, C_max]`` allows; in its ``*_truncate`` modes it clips those ratios instead. At
sequence level one ratio (the product over every sampled token) stands for a whole episode: a multi-turn
episode of thousands of sampled tokens drifts past the bounds far more easily than one token does, and is
then dropped whole. TRL logs the ratios' minimum, mean and maximum, not how much was dropped, so a run can
lose most of its signal silently. :class:`AgentGRPOTrainer` logs that share with TRL's other sampling
metrics: ``sampling/importance_sampling_masked_share`` (``*_mask`` modes) or
``sampling/importance_sampling_clipped_share`` (``*_truncate`` modes), over the sampled tokens of the batch
(the env's tokens are never counted), across all processes.
"""

from __future__ import annotations

from typing import Any

import torch
from trl import GRPOTrainer

from agentdistill.distill.grpo.settings import IMPORTANCE_SAMPLING_MODES


def affected_token_counts(
    ratio: torch.Tensor,
    sampled: torch.Tensor,
    mode: str,
    *,
    clip_min: float | None,
    clip_max: float | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(affected, total)`` sampled tokens of a batch: ``affected`` those whose ratio was masked (``*_mask``:
    set to zero) or clipped to a bound (``*_truncate``).

    Args:
        ratio: the ratios after TRL applied the mode: ``(batch, tokens)`` at token level, ``(batch, 1)`` at
            sequence level (an affected sequence counts with all its sampled tokens).
        sampled: 1 for a token the policy sampled, 0 for padding and env tokens, ``(batch, tokens)``.
        mode: one of :data:`IMPORTANCE_SAMPLING_MODES`.
        clip_min, clip_max: the bounds TRL used (``None``: unbounded on that side).
    """
    if mode not in IMPORTANCE_SAMPLING_MODES:
        raise ValueError(f"mode must be one of {', '.join(IMPORTANCE_SAMPLING_MODES)}, got {mode!r}")
    sampled = sampled.bool()
    if mode.endswith("_mask"):
        hit = ratio == 0
    else:
        hit = torch.zeros_like(ratio, dtype=torch.bool)
        if clip_max is not None:
            hit |= ratio >= clip_max
        if clip_min is not None:
            hit |= ratio <= clip_min
    hit = hit.expand_as(sampled) & sampled
    return hit.sum(), sampled.sum()


class AgentGRPOTrainer(GRPOTrainer):
    """TRL's ``GRPOTrainer`` that also logs the share of sampled tokens its importance sampling masked or
    clipped (see the module docstring); everything else is TRL's."""

    def _generate_and_score_completions(self, inputs: Any) -> dict[str, Any]:
        output = super()._generate_and_score_completions(inputs)
        ratio = output.get("importance_sampling_ratio")
        if ratio is not None:
            self._log_affected_share(ratio, output)
        return output

    def _log_affected_share(self, ratio: torch.Tensor, output: dict[str, Any]) -> None:
        sampled = output["completion_mask"]
        if "tool_mask" in output:
            sampled = sampled * output["tool_mask"]
        mode = self.args.vllm_importance_sampling_mode
        affected, total = affected_token_counts(
            ratio,
            sampled,
            mode,
            clip_min=self.args.vllm_importance_sampling_clip_min,
            clip_max=self.args.vllm_importance_sampling_clip_max,
        )
        counts = self.accelerator.gather(torch.stack([affected, total]).float().reshape(1, 2)).sum(dim=0)
        share = (counts[0] / counts[1]).item() if counts[1] > 0 else 0.0
        name = "masked" if mode.endswith("_mask") else "clipped"
        split = "train" if self.model.training else "eval"
        self._metrics[split][f"sampling/importance_sampling_{name}_share"].append(share)
