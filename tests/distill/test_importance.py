"""The share of sampled tokens GRPO's importance-sampling correction drops or clips, and the settings that
choose the correction. The correction itself only runs with vLLM rollouts (a GPU); the counting runs here on
real tensors, and the trainer's logging hook is driven with a stand-in for the trainer state it reads."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from agentdistill.distill.grpo.importance import AgentGRPOTrainer, affected_token_counts
from agentdistill.distill.grpo.settings import GRPOSettings
from agentdistill.distill.grpo.train import _grpo_config

SAMPLED = torch.tensor([[1, 1, 0, 1], [1, 1, 1, 0]])
"""Two episodes: episode 0 has an env token at position 2, episode 1 padding at position 3."""


def test_token_mask_counts_the_zeroed_sampled_tokens_only() -> None:
    ratio = torch.tensor([[1.0, 0.0, 0.0, 1.1], [0.0, 0.9, 1.0, 0.0]])  # zeros under env/pad tokens do not count
    affected, total = affected_token_counts(ratio, SAMPLED, "token_mask", clip_min=None, clip_max=3.0)
    assert (int(affected), int(total)) == (2, 6)


def test_a_masked_sequence_counts_with_every_sampled_token() -> None:
    ratio = torch.tensor([[0.0], [1.2]])
    affected, total = affected_token_counts(ratio, SAMPLED, "sequence_mask", clip_min=None, clip_max=3.0)
    assert (int(affected), int(total)) == (3, 6), "episode 0's three sampled tokens were all dropped"


def test_truncate_modes_count_ratios_at_either_bound() -> None:
    ratio = torch.tensor([[3.0, 1.0, 3.0, 0.5], [1.0, 2.9, 0.5, 1.0]])
    affected, _ = affected_token_counts(ratio, SAMPLED, "token_truncate", clip_min=0.5, clip_max=3.0)
    assert int(affected) == 3  # 3.0 and 0.5 of episode 0 (not the env token), 0.5 of episode 1
    affected, _ = affected_token_counts(ratio, SAMPLED, "token_truncate", clip_min=None, clip_max=3.0)
    assert int(affected) == 1
    with pytest.raises(ValueError, match="mode must be one of"):
        affected_token_counts(ratio, SAMPLED, "tokens", clip_min=None, clip_max=3.0)


def test_the_trainer_logs_the_share_over_sampled_tokens_of_all_processes() -> None:
    metrics: dict[str, defaultdict[str, list[float]]] = {"train": defaultdict(list), "eval": defaultdict(list)}
    state = SimpleNamespace(
        args=SimpleNamespace(
            vllm_importance_sampling_mode="token_mask", vllm_importance_sampling_clip_min=None,
            vllm_importance_sampling_clip_max=3.0,
        ),
        accelerator=SimpleNamespace(gather=lambda tensor: torch.cat([tensor, torch.tensor([[0.0, 2.0]])])),  # a 2nd rank
        model=SimpleNamespace(training=True),
        _metrics=metrics,
    )
    output = {"completion_mask": torch.ones(2, 4, dtype=torch.long), "tool_mask": SAMPLED}
    AgentGRPOTrainer._log_affected_share(state, torch.tensor([[0.0, 1.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]]), output)
    assert metrics["train"]["sampling/importance_sampling_masked_share"] == [pytest.approx(2 / 8)]
    state.args.vllm_importance_sampling_mode = "sequence_truncate"
    AgentGRPOTrainer._log_affected_share(state, torch.tensor([[3.0], [1.0]]), output)
    assert metrics["train"]["sampling/importance_sampling_clipped_share"] == [pytest.approx(3 / 8)]


def test_the_setting_reaches_trl_and_bad_values_are_named(tmp_path: Path) -> None:
    settings = GRPOSettings(lora=False, bf16=False)
    config = _grpo_config(settings, tmp_path)
    assert config.vllm_importance_sampling_mode == "token_mask" and config.vllm_importance_sampling_clip_max == 3.0
    config = _grpo_config(settings.replace(importance_sampling="sequence_truncate", importance_sampling_clip_min=0.5), tmp_path)
    assert (config.vllm_importance_sampling_mode, config.vllm_importance_sampling_clip_min) == ("sequence_truncate", 0.5)
    with pytest.raises(ValueError, match="importance_sampling must be one of token_mask, .*got 'token'"):
        settings.replace(importance_sampling="token")
    with pytest.raises(ValueError, match="importance_sampling_clip_min < importance_sampling_clip_max, got 3.0, 2.0"):
        settings.replace(importance_sampling_clip_min=3.0, importance_sampling_clip_max=2.0)
