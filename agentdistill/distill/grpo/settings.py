"""What a GRPO run is set to do and what it produced; no torch import, so a config is checked quickly."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from agentdistill.rollouts.figures import EpisodeFigures, PairedGain
from agentdistill.settings import StrictSettings

ROLLOUTS_DIRNAME = "rollouts"


RESULT_FILENAME = "rl_result.json"


SETTINGS_FILENAME = "grpo_settings.yaml"


EVAL_BEFORE_FILENAME = "eval_before.jsonl"


EVAL_AFTER_FILENAME = "eval_after.jsonl"


MERGED_START_DIRNAME = "start_merged"
"""Full fine-tuning from a LoRA student: the student with its adapter merged, the KL reference
(:func:`save_merged_start`)."""


_ROLLOUT_BACKENDS = ("hf", "vllm")



IMPORTANCE_SAMPLING_MODES = ("token_mask", "token_truncate", "sequence_mask", "sequence_truncate")
"""TRL's ``vllm_importance_sampling_mode`` values: granularity (token or sequence) x what happens outside the
bounds (masked to zero, or clipped to the bound)."""


@dataclass(frozen=True)
class GRPOSettings(StrictSettings):
    """Hyperparameters of one GRPO run. Read from YAML with :meth:`from_yaml` (unknown keys are errors).

    Defaults suit a 0.5B-7B student on GPUs (LoRA, small learning rate); ``configs/rl/grpo_cpu_tiny.yaml``
    holds the CPU settings for a scratch student.
    """

    settings_name: ClassVar[str] = "GRPO"

    env_kwargs: dict[str, Any] = field(default_factory=dict)
    """Constructor arguments of the env (``max_steps``, ``data_path``, ``prompt_variant``, ...)."""
    train_split: str | None = "train"
    """``split=`` for training envs (``None``: the env's default)."""
    train_tasks: int = 1000
    """Train on ``train_tasks`` tasks of the training split, from ``train_task_offset`` on."""
    train_task_offset: int = 0
    """First training task index. Set it past the tasks the student was distilled on (e.g. the quickstart's
    teacher episodes) so that RL rewards solving new tasks, not recalling memorised ones."""
    eval_split: str | None = "test"
    eval_tasks: int = 100
    """Held-out tasks scored before and after training (0: skip)."""
    eval_temperature: float = 0.0
    """``0``: score the greedy policy. ``> 0``: score the sampled policy at this temperature (and ``top_p``), the
    policy GRPO optimises when it equals ``temperature``. The before and after runs use the same seed."""
    eval_samples: int = 1
    """Episodes per held-out task (more than 1 needs ``eval_temperature > 0``); the task's reward is their mean."""
    num_envs: int = 8
    executor: str = "local"
    """Where the envs of the episodes run: ``"local"`` (this process's machine) or ``"ray"`` (Ray actors over the
    cluster at ``ray_address``, :class:`~agentdistill.rollouts.ray_envs.RayVectorEnv`); the student generates here
    either way."""
    ray_address: str | None = None
    """With ``executor: ray``: the cluster's head ``HOST:PORT`` (``None``: ``RAY_ADDRESS``, else a Ray of its own)."""
    group_size: int = 8
    """Episodes per task (G): the group whose mean reward is each episode's baseline."""
    prompts_per_step: int = 4
    """Tasks per optimizer step and process (each run ``group_size`` times)."""
    gradient_accumulation_steps: int = 1
    max_steps: int = 100
    learning_rate: float = 1e-6
    lr_scheduler: str = "constant"
    warmup_ratio: float = 0.0
    max_grad_norm: float = 1.0
    weight_decay: float = 0.0
    beta: float = 0.04
    """KL coefficient to the starting model (0 skips the reference model and the KL metric)."""
    epsilon: float = 0.2
    loss_type: str = "dapo"
    scale_rewards: str = "group"
    num_iterations: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 512
    """Per turn; the episode's length is bounded by the env's ``max_steps`` turns."""
    invalid_action_penalty: float = 0.0
    """Subtracted from the reward, times the episode's fraction of invalid actions."""
    lora: bool = True
    lora_r: int = 64
    lora_alpha: int = 128
    lora_dropout: float = 0.05
    lora_target_modules: str | tuple[str, ...] = "all-linear"
    rollout_backend: str = "hf"
    """``"hf"``: generate with the training model itself; ``"vllm"``: TRL's colocated vLLM engine (GPU)."""
    vllm_gpu_memory_utilization: float = 0.3
    importance_sampling: str = "token_mask"
    """How GRPO corrects for vLLM sampling with slightly other probabilities than the trainer computes
    (``rollout_backend: vllm`` only; one of :data:`IMPORTANCE_SAMPLING_MODES`). Token level by default: one
    ratio per sampled token, so a token far off is dropped alone, where a sequence-level ratio over an
    episode of thousands of tokens drops the whole episode. The share dropped is logged
    (:mod:`agentdistill.distill.grpo.importance`)."""
    importance_sampling_clip_max: float | None = 3.0
    """Ratios above this are masked (``*_mask``) or clipped (``*_truncate``); ``None``: no upper bound."""
    importance_sampling_clip_min: float | None = None
    """Ratios below this are masked or clipped; ``None``: no lower bound."""
    bf16: bool | str = "auto"
    gradient_checkpointing: bool = False
    seed: int = 0
    logging_steps: int = 1
    save_steps: int = 50
    save_total_limit: int | None = 2
    keep_rollouts: bool = True
    """Keep every generation's episodes under ``out_dir/rollouts`` (otherwise each file is deleted once read)."""
    wandb_project: str | None = None
    wandb_run_name: str | None = None

    def __post_init__(self) -> None:
        positive = (
            "train_tasks",
            "num_envs",
            "group_size",
            "prompts_per_step",
            "gradient_accumulation_steps",
            "max_steps",
            "learning_rate",
            "num_iterations",
            "max_new_tokens",
            "logging_steps",
            "save_steps",
            "lora_r",
            "lora_alpha",
            "eval_samples",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}")
        if self.group_size < 2:
            raise ValueError(
                f"group_size must be >= 2 (a group of one has no relative advantage), got {self.group_size}"
            )
        for name in ("eval_tasks", "train_task_offset", "beta", "invalid_action_penalty", "eval_temperature"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if self.eval_samples > 1 and self.eval_temperature == 0:
            raise ValueError(
                f"eval_samples={self.eval_samples} needs eval_temperature > 0 (greedy episodes of a task are all alike)"
            )
        if not 0 < self.top_p <= 1 or self.temperature <= 0:
            raise ValueError(f"need temperature > 0 and top_p in (0, 1], got {self.temperature}, {self.top_p}")
        if self.importance_sampling not in IMPORTANCE_SAMPLING_MODES:
            raise ValueError(
                f"importance_sampling must be one of {', '.join(IMPORTANCE_SAMPLING_MODES)}, "
                f"got {self.importance_sampling!r}"
            )
        low, high = self.importance_sampling_clip_min, self.importance_sampling_clip_max
        if low is not None and high is not None and not 0 <= low < high:
            raise ValueError(
                f"need 0 <= importance_sampling_clip_min < importance_sampling_clip_max, got {low}, {high}"
            )
        from agentdistill.rollouts.loop import check_executor  # no torch: a config still checks quickly

        check_executor(self.executor, self.ray_address)
        if self.rollout_backend not in _ROLLOUT_BACKENDS:
            raise ValueError(f"rollout_backend must be one of {_ROLLOUT_BACKENDS}, got {self.rollout_backend!r}")
        if isinstance(self.bf16, str) and self.bf16 != "auto":
            raise ValueError(f"bf16 must be true, false or 'auto', got {self.bf16!r}")

    def split_kwargs(self, split: str | None) -> dict[str, Any]:
        """The env's constructor arguments for ``split``."""
        return {**self.env_kwargs, **({"split": split} if split is not None else {})}

    def executor_kwargs(self) -> dict[str, Any]:
        """Where :func:`~agentdistill.rollouts.loop.make_rollout_envs` runs the envs."""
        return {"executor": self.executor, "ray_address": self.ray_address}


StartKind = Literal["model", "adapter continued", "adapter merged"]
"""How RL set up its start model: a plain model; a distilled LoRA student whose adapter is trained further (LoRA
settings); or one whose adapter is merged into its base, which is then fine-tuned whole (full fine-tuning)."""


@dataclass(frozen=True)
class GRPOResult:
    """What a run produced; also written to ``out_dir/rl_result.json`` by the main process."""

    out_dir: str
    start_model: str
    env_id: str
    global_step: int
    before: EpisodeFigures | None
    """Held-out figures before training (:func:`~agentdistill.rollouts.figures.figures_of`)."""
    after: EpisodeFigures | None
    train_rewards: tuple[float, ...]
    """The mean reward of each logged step, in order."""
    world_size: int
    resumed_from: str | None
    wandb_dir: str | None
    runtime_seconds: float
    reward_gain: PairedGain | None = None
    """After minus before, paired by held-out task (``None`` without both evaluations)."""
    start: StartKind = "model"
    """How training started from ``start_model`` (:data:`StartKind`)."""

    def to_json(self, path: str | os.PathLike[str]) -> None:
        Path(path).write_text(json.dumps(dataclasses.asdict(self), indent=1) + "\n", encoding="utf-8")

    @classmethod
    def from_json(cls, path: str | os.PathLike[str]) -> GRPOResult:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        for key in ("before", "after"):
            data[key] = EpisodeFigures(**data[key]) if data[key] is not None else None
        gain = data.get("reward_gain")
        data["reward_gain"] = PairedGain(**gain) if gain is not None else None
        data["train_rewards"] = tuple(data["train_rewards"])
        return cls(**data)


RESUMABLE_SETTINGS = frozenset(
    {"max_steps", "logging_steps", "save_steps", "save_total_limit", "keep_rollouts", "wandb_project", "wandb_run_name"}
)
"""Settings a rerun may change and still resume a run's directory. A larger step budget trains further from
the last checkpoint (the constant default schedule does not depend on it); how often metrics are logged and
checkpoints written, whether rollout files are kept and where W&B logs do not change what is trained. Everything
else (env arguments, sampling, the reward, the optimiser, the held-out evaluation) would make the resumed steps
another run's."""
