"""What a study runs: the envs' difficulty, the students, the seeds, the methods and each method's budget.

No torch import, so a study's config is checked in a moment. :meth:`StudySettings.quick` is the CI smoke size;
``configs/study/study.yaml`` is the measured study, with the reasons for its env settings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from agentdistill.settings import StrictSettings

METHODS = ("cot", "cot_rag", "agent", "agent_sag", "agent_grpo", "agent_opd")
"""Every method a study can compare: chain-of-thought distillation without tools (``cot``) and with the question's
retrieved documents up front (``cot_rag``), agent distillation (``agent``), the agent student with SAG
(``agent_sag``), after GRPO (``agent_grpo``) and after on-policy distillation from the largest agent student
(``agent_opd``)."""

QA_ENV_ID = "AgentQA-Synthetic-v0"
MATH_ENV_ID = "AgentMath-Synthetic-v0"
ENV_IDS = (QA_ENV_ID, MATH_ENV_ID)


def _students() -> dict[str, dict[str, int]]:
    return {
        "0.5M": {"hidden_size": 128, "num_layers": 2, "num_heads": 4, "num_kv_heads": 2, "intermediate_size": 384},
        "3M": {"hidden_size": 256, "num_layers": 4, "num_heads": 4, "num_kv_heads": 2, "intermediate_size": 768},
    }


@dataclass(frozen=True)
class StudySettings(StrictSettings):
    """Every knob of a study; read from YAML with :meth:`from_yaml` (unknown keys are errors)."""

    settings_name: ClassVar[str] = "study"

    qa_difficulty: dict[str, int] = field(default_factory=lambda: {"min_hops": 2, "max_hops": 2})
    """``AgentQA-Synthetic-v0`` arguments: every task's facts are generated for it and never seen in training, so
    only a student that searches can know them."""
    math_difficulty: dict[str, int] = field(default_factory=lambda: {"min_ops": 2, "max_ops": 2})
    """``AgentMath-Synthetic-v0`` arguments: arithmetic on multi-digit numbers, which a small model cannot do in its
    head but can write as code."""
    methods: tuple[str, ...] = METHODS
    students: dict[str, dict[str, int]] = field(default_factory=_students)
    """Name -> shape (:class:`~agentdistill.distill.students.StudentConfig` fields), smallest first; all share one
    tokenizer, so the largest agent student can teach the others (``agent_opd``)."""
    seeds: tuple[int, ...] = (0, 1)
    teacher_episodes: int = 600
    """Training tasks the scripted expert solves per env, as an agent and by chain of thought."""
    eval_tasks: int = 100
    """Held-out tasks (the ``test`` split) per env, the same for every method."""
    vocab_size: int = 1024
    max_new_tokens: int = 96
    num_envs: int = 16
    sft_warmup_steps: int = 800
    """SFT stage 1, on the conversations without their system prompt (0: no stage 1); as the quickstart's, whose
    docstring (:func:`agentdistill.quickstart.distill_student`) says why: copying forms about three times sooner per
    CPU-second there."""
    sft_warmup_batch_size: int = 32
    sft_warmup_learning_rate: float = 3e-3
    sft_steps: int = 100
    """SFT stage 2, on the conversations exactly as the student sees them (system prompt included)."""
    sft_batch_size: int = 16
    sft_learning_rate: float = 1e-3
    sag_n: int = 8
    sag_temperature: float = 0.4
    sag_top_p: float = 0.8
    grpo_steps: int = 20
    opd_steps: int = 20
    rl_learning_rate: float = 2e-5
    rl_group_size: int = 4
    """Episodes per task in a GRPO or OPD step."""
    rl_prompts_per_step: int = 4
    """Tasks per GRPO or OPD step."""
    wandb_project: str | None = "agentdistill-study"

    def __post_init__(self) -> None:
        unknown = [method for method in self.methods if method not in METHODS]
        if unknown or not self.methods:
            raise ValueError(f"methods must be among {', '.join(METHODS)}, got {list(self.methods)}")
        if not self.students or not self.seeds:
            raise ValueError("a study needs at least one student and one seed")
        for name in (
            "teacher_episodes",
            "eval_tasks",
            "vocab_size",
            "max_new_tokens",
            "num_envs",
            "sft_steps",
            "sft_batch_size",
            "sft_warmup_batch_size",
            "sag_n",
            "grpo_steps",
            "opd_steps",
            "rl_prompts_per_step",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}")
        if self.sft_warmup_steps < 0:
            raise ValueError(f"sft_warmup_steps must be 0 (no warm-up stage) or more, got {self.sft_warmup_steps}")
        if self.rl_group_size < 2:
            raise ValueError(
                f"rl_group_size must be at least 2 (GRPO's baseline is the group's mean), got {self.rl_group_size}"
            )
        if "agent_sag" in self.methods and self.sag_n < 2:
            raise ValueError(f"sag_n must be at least 2 (SAG votes among candidates), got {self.sag_n}")

    @classmethod
    def quick(cls) -> StudySettings:
        """A plumbing check for CI: every method runs end to end on a few tasks in a few minutes; nothing is learnt."""
        tiny = {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "num_kv_heads": 1, "intermediate_size": 64}
        wider = {**tiny, "hidden_size": 48, "intermediate_size": 96}
        return cls(
            qa_difficulty={"min_hops": 1, "max_hops": 1},
            math_difficulty={"min_ops": 1, "max_ops": 1},
            students={"tiny": tiny, "wider": wider},
            seeds=(0,),
            teacher_episodes=6,
            eval_tasks=3,
            vocab_size=400,
            max_new_tokens=24,
            num_envs=3,
            sft_warmup_steps=2,
            sft_warmup_batch_size=4,
            sft_steps=2,
            sft_batch_size=4,
            sag_n=2,
            grpo_steps=1,
            opd_steps=1,
            rl_group_size=2,
            rl_prompts_per_step=2,
            wandb_project=None,
        )

    def student_names(self) -> list[str]:
        """Student names in the order given (smallest first by convention)."""
        return list(self.students)

    def difficulty(self, env_id: str) -> dict[str, Any]:
        return dict(self.qa_difficulty if env_id == QA_ENV_ID else self.math_difficulty)
