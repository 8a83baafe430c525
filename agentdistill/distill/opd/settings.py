"""What an on-policy distillation run is set to do and what it produced; no torch import, so a config is checked
quickly.

OPD runs on GRPO's machinery (the same envs, rollouts, trainer, evaluation and checkpoints), so its settings are
GRPO's with three more and other defaults: no KL to a reference model (the teacher is the anchor), sampling at
temperature 1 (the student's own distribution, which the reverse KL is measured on).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import ClassVar

from agentdistill.distill.grpo.settings import GRPOResult, GRPOSettings

RESULT_FILENAME = "opd_result.json"
SETTINGS_FILENAME = "opd_settings.yaml"
_TEACHER_PROMPT_VARIANTS = ("full", "short")


@dataclass(frozen=True)
class OPDSettings(GRPOSettings):
    """Hyperparameters of one OPD run: GRPO's (:class:`~agentdistill.distill.grpo.settings.GRPOSettings`), then
    the teacher's. ``configs/opd/opd_cpu_tiny.yaml`` holds the CPU settings for scratch students."""

    settings_name: ClassVar[str] = "OPD"

    beta: float = 0.0
    """KL coefficient to the starting model; 0 (no reference model), since the teacher's signal anchors."""
    teacher_prompt_variant: str = "full"
    """The system prompt the teacher reads: ``"full"`` (examples and rules, as an LLM teacher saw it when it
    collected trajectories) or ``"short"`` (a distilled teacher, trained with the students' short prompt)."""
    reward_weight: float = 0.0
    """Weight of the env's reward (GRPO's group-normalised advantage) added to the teacher's per-token signal;
    0: pure distillation."""
    teacher_batch_size: int = 8
    """Episodes the teacher scores in one forward pass (``hf:`` teachers)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.teacher_prompt_variant not in _TEACHER_PROMPT_VARIANTS:
            raise ValueError(
                f"teacher_prompt_variant must be one of {', '.join(_TEACHER_PROMPT_VARIANTS)}, "
                f"got {self.teacher_prompt_variant!r}"
            )
        if self.reward_weight < 0:
            raise ValueError(f"reward_weight must be >= 0, got {self.reward_weight!r}")
        if self.teacher_batch_size < 1:
            raise ValueError(f"teacher_batch_size must be positive, got {self.teacher_batch_size!r}")


@dataclass(frozen=True)
class OPDResult(GRPOResult):
    """What an OPD run produced (GRPO's figures, then the teacher's); written to ``out_dir/opd_result.json``."""

    teacher: str = ""
    reverse_kl: tuple[float, ...] = ()
    """The mean per-token reverse KL (student minus teacher log-probability on sampled tokens) of each logged
    step, in order: what OPD drives down."""

    @classmethod
    def from_json(cls, path: str | os.PathLike[str]) -> OPDResult:
        result = super().from_json(path)
        assert isinstance(result, OPDResult)
        return dataclasses.replace(result, reverse_kl=tuple(result.reverse_kl))
