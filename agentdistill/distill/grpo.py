"""GRPO on the rollout loop: a student acts in an env, the env's score is the reward, TRL does the update.

TRL's ``GRPOTrainer`` owns the optimisation (group-relative advantages, clipping, KL to the reference, LoRA,
accelerate); agentdistill owns the acting. The bridge is TRL's ``rollout_func`` hook, implemented by
:class:`EnvRollouts`:

* The training dataset holds one prompt per task, ``"[task 17] <question>"``; TRL's sampler repeats each
  prompt G times (``group_size``) in a row before the hook sees them, so the hook finds the groups by
  reading the task index back.
* Each call runs every group through :func:`~agentdistill.rollouts.loop.run_rollouts` (G samples per task,
  many envs at once) with ``token_trace=True``: every turn is generated from the exact ids of the episode so
  far, and the episode comes back as the first prompt's ids plus one long completion (all turns) with
  ``env_mask`` 1 exactly on the tokens the model sampled. TRL multiplies its loss mask by ``env_mask``, so
  observations, the template's turn markers and anything else the env wrote never carry gradient, and the
  loss sees the sampled ids themselves, never a re-tokenised rendering.
* The reward is the env's score (``info["score"]``) minus ``invalid_action_penalty`` times the episode's
  fraction of invalid actions (parse errors or exceptions). Success rate, invalid-action rate and steps per
  episode are logged next to TRL's reward, KL and completion lengths (to W&B with ``wandb_project``).

What ``rollout_func`` cannot express, and how it is handled: a completion is one sequence per prompt, so a
multi-turn episode becomes one completion whose env tokens are masked (TRL's ``env_mask`` exists for this);
TRL counts a completion that does not end with an end-of-sequence token as "clipped", so an episode whose
last turn ended normally gets an end-of-sequence token appended as an env token (mask 0, never trained).
With ``rollout_backend: vllm`` TRL corrects for vLLM's probabilities at token level by default
(``importance_sampling``), and the share of sampled tokens that correction drops is logged
(:mod:`agentdistill.distill.importance`).

Start model: ``hf:DIR`` (a full model), or a LoRA student as ``agentdistill distill`` wrote it (``hf:DIR`` of an
adapter, or ``hf:BASE@ADAPTER``): with ``lora: true`` its adapter is trained further, otherwise it is merged into
its base and the whole model trained (:func:`load_start_model`).

Output directory, claimed for one run before anything is written (:func:`claim_rl_directory`; a rerun of the same
run resumes, any other is refused): ``out_dir`` is the trained student (a full model, or with ``lora: true`` an
adapter over the starting model; both load as ``hf:OUT``), ``out_dir/checkpoint-N`` (a rerun resumes from the last),
``out_dir/ref`` (a continued adapter as it started: TRL's KL reference), ``out_dir/start_merged`` (a merged
student as it started: the KL reference of full fine-tuning),
``out_dir/rollouts/`` (each generation's episodes, JSON Lines, with ``keep_rollouts``),
``out_dir/eval_before.jsonl`` / ``eval_after.jsonl`` (episodes on held-out tasks: greedy, or sampled as
``eval_temperature`` and ``eval_samples`` say; played by all processes, a slice each, :func:`evaluate_on_ranks`),
``out_dir/rl_result.json`` (their figures and the gain paired by
task, :class:`RewardGain`) and ``out_dir/wandb``.

Run one process with :func:`train_grpo`, several with :func:`launch_grpo` (``accelerate launch``)::

    python -m agentdistill.distill.grpo --env AgentMath-Synthetic-v0 --policy hf:students/tiny --out rl/tiny --config configs/rl/grpo_cpu_tiny.yaml
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import re
import shutil
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from agentdistill.errors import UserError
from agentdistill.rollouts.records import TrajectoryWriter, episode_key, latest_records, read_trajectories
from agentdistill.runs import RunDirectory, claim_run_directory
from agentdistill.settings import settings_from_mapping, settings_from_yaml, settings_to_dict

logger = logging.getLogger(__name__)

ROLLOUTS_DIRNAME = "rollouts"
RESULT_FILENAME = "rl_result.json"
SETTINGS_FILENAME = "grpo_settings.yaml"
RANKS_DIRNAME = "ranks"
EVAL_BEFORE_FILENAME = "eval_before.jsonl"
EVAL_AFTER_FILENAME = "eval_after.jsonl"
MERGED_START_DIRNAME = "start_merged"
"""Full fine-tuning from a LoRA student: the student with its adapter merged, the KL reference
(:func:`save_merged_start`)."""
GRPO_MODULE = "agentdistill.distill.grpo"
_TASK_PROMPT = re.compile(r"^\[task (\d+)\] ")
_ROLLOUT_BACKENDS = ("hf", "vllm")
IMPORTANCE_SAMPLING_MODES = ("token_mask", "token_truncate", "sequence_mask", "sequence_truncate")
"""TRL's ``vllm_importance_sampling_mode`` values: granularity (token or sequence) x what happens outside the
bounds (masked to zero, or clipped to the bound)."""


@dataclass(frozen=True)
class GRPOSettings:
    """Hyperparameters of one GRPO run. Read from YAML with :meth:`from_yaml` (unknown keys are errors).

    Defaults suit a 0.5B-7B student on GPUs (LoRA, small learning rate); ``configs/rl/grpo_cpu_tiny.yaml``
    holds the CPU settings for a scratch student.
    """

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
    (:mod:`agentdistill.distill.importance`)."""
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
            "train_tasks", "num_envs", "group_size", "prompts_per_step", "gradient_accumulation_steps", "max_steps",
            "learning_rate", "num_iterations", "max_new_tokens", "logging_steps", "save_steps", "lora_r", "lora_alpha",
            "eval_samples",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}")
        if self.group_size < 2:
            raise ValueError(f"group_size must be >= 2 (a group of one has no relative advantage), got {self.group_size}")
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
                f"importance_sampling must be one of {', '.join(IMPORTANCE_SAMPLING_MODES)}, got {self.importance_sampling!r}"
            )
        low, high = self.importance_sampling_clip_min, self.importance_sampling_clip_max
        if low is not None and high is not None and not 0 <= low < high:
            raise ValueError(f"need 0 <= importance_sampling_clip_min < importance_sampling_clip_max, got {low}, {high}")
        if self.rollout_backend not in _ROLLOUT_BACKENDS:
            raise ValueError(f"rollout_backend must be one of {_ROLLOUT_BACKENDS}, got {self.rollout_backend!r}")
        if isinstance(self.bf16, str) and self.bf16 != "auto":
            raise ValueError(f"bf16 must be true, false or 'auto', got {self.bf16!r}")

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any]) -> GRPOSettings:
        return settings_from_mapping(cls, mapping, what="GRPO")

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str]) -> GRPOSettings:
        return settings_from_yaml(cls, path, what="GRPO")

    def to_dict(self) -> dict[str, Any]:
        return settings_to_dict(self)

    def to_yaml(self, path: str | os.PathLike[str]) -> None:
        import yaml

        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", encoding="utf-8") as handle:
            yaml.safe_dump(self.to_dict(), handle, sort_keys=False)

    def replace(self, **changes: Any) -> GRPOSettings:
        return GRPOSettings.from_mapping({**self.to_dict(), **changes})

    def split_kwargs(self, split: str | None) -> dict[str, Any]:
        """The env's constructor arguments for ``split``."""
        return {**self.env_kwargs, **({"split": split} if split is not None else {})}


@dataclass(frozen=True)
class EvalFigures:
    """Episodes of one policy on held-out tasks (greedy, or sampled as ``eval_temperature`` says)."""

    episodes: int
    mean_reward: float
    success_rate: float
    invalid_action_rate: float
    mean_steps: float


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
    before: EvalFigures | None
    after: EvalFigures | None
    train_rewards: tuple[float, ...]
    """The mean reward of each logged step, in order."""
    world_size: int
    resumed_from: str | None
    wandb_dir: str | None
    runtime_seconds: float
    reward_gain: RewardGain | None = None
    """After minus before, paired by held-out task (``None`` without both evaluations)."""
    start: StartKind = "model"
    """How training started from ``start_model`` (:data:`StartKind`)."""

    def to_json(self, path: str | os.PathLike[str]) -> None:
        Path(path).write_text(json.dumps(dataclasses.asdict(self), indent=1) + "\n", encoding="utf-8")

    @classmethod
    def from_json(cls, path: str | os.PathLike[str]) -> GRPOResult:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        for key in ("before", "after"):
            data[key] = EvalFigures(**data[key]) if data[key] is not None else None
        gain = data.get("reward_gain")
        data["reward_gain"] = RewardGain(**gain) if gain is not None else None
        data["train_rewards"] = tuple(data["train_rewards"])
        return cls(**data)


# ------------------------------------------------------------------------------------------- the rollout hook


def task_prompt(task_index: int, question: str) -> str:
    """The dataset prompt of a task: its index (read back by :class:`EnvRollouts`) and its question (for logs)."""
    return f"[task {task_index}] {question}"


def task_groups(prompts: Sequence[Any]) -> tuple[list[int], int]:
    """The tasks of a batch and the group size, from TRL's prompts (each task's prompt repeated G times in a row).

    Raises:
        ValueError: a prompt that is not :func:`task_prompt`'s, or groups of unequal size.
    """
    indices: list[int] = []
    for prompt in prompts:
        match = _TASK_PROMPT.match(prompt if isinstance(prompt, str) else "")
        if match is None:
            raise ValueError(f"not a task prompt (expected '[task N] ...'): {str(prompt)[:80]!r}")
        indices.append(int(match.group(1)))
    tasks: list[int] = []
    counts: list[int] = []
    for index in indices:
        if tasks and tasks[-1] == index:
            counts[-1] += 1
        else:
            tasks.append(index)
            counts.append(1)
    if len(set(counts)) != 1:
        raise ValueError(f"expected every task repeated the same number of times in a row, got counts {counts}")
    return tasks, counts[0]


@dataclass(frozen=True)
class RewardGain:
    """The change of mean reward on held-out tasks, paired by task: is it beyond noise?

    Each task's reward is the mean over its episodes; ``mean`` is the average over tasks of after minus before
    and ``stderr`` its standard error (sample standard deviation of the differences over the root of ``tasks``).
    Pairing removes the spread of task difficulty, which dominates unpaired comparisons.
    """

    tasks: int
    mean: float
    stderr: float
    improved: int
    """Tasks whose reward rose."""
    worsened: int


def paired_reward_gain(
    before: Sequence[Mapping[str, Any]], after: Sequence[Mapping[str, Any]], invalid_action_penalty: float = 0.0
) -> RewardGain | None:
    """:class:`RewardGain` over the tasks both sets of episodes cover (``None`` for fewer than two)."""

    def per_task(records: Sequence[Mapping[str, Any]]) -> dict[int, float]:
        rewards: dict[int, list[float]] = {}
        for record in records:
            rewards.setdefault(int(record["task_index"]), []).append(episode_reward(record, invalid_action_penalty))
        return {task: sum(values) / len(values) for task, values in rewards.items()}

    first, second = per_task(before), per_task(after)
    differences = [second[task] - first[task] for task in sorted(first.keys() & second.keys())]
    count = len(differences)
    if count < 2:
        return None
    mean = sum(differences) / count
    variance = sum((difference - mean) ** 2 for difference in differences) / (count - 1)
    return RewardGain(
        tasks=count,
        mean=mean,
        stderr=math.sqrt(variance / count),
        improved=sum(difference > 0 for difference in differences),
        worsened=sum(difference < 0 for difference in differences),
    )


def episode_reward(record: Mapping[str, Any], invalid_action_penalty: float) -> float:
    """The env's score, minus the penalty times the fraction of invalid actions (parse errors or exceptions)."""
    steps = [step for step in record.get("steps", ()) if "policy_error" not in step]
    invalid = sum(1 for step in steps if step.get("parse_error") or step.get("execution_error") is not None)
    fraction = invalid / len(steps) if steps else 1.0
    return float(record.get("score") or 0.0) - invalid_action_penalty * fraction


class EnvRollouts:
    """TRL's ``rollout_func``: plays each prompt's task in the env and returns the episodes as token ids.

    Args:
        env_id: the env to act in.
        settings: the run's settings (env arguments, sampling, reward shaping, parallel envs).
        out_dir: episodes go to ``out_dir/rollouts/rank-R/step-S-call-C.jsonl``.
    """

    def __init__(self, env_id: str, settings: GRPOSettings, out_dir: str | os.PathLike[str]) -> None:
        self.env_id = env_id
        self.settings = settings
        self.out_dir = Path(out_dir)
        self.calls = 0
        self._envs: Any = None
        self._policy: Any = None
        self._policy_model: Any = None

    def __call__(self, prompts: list[Any], trainer: Any) -> dict[str, Any]:
        from agentdistill.policies.base import SamplingParams
        from agentdistill.rollouts.loop import run_rollouts

        tasks, group_size = task_groups(prompts)
        policy, model = self._live_policy(trainer)
        rank = int(getattr(trainer.accelerator, "process_index", 0))
        path = self.out_dir / ROLLOUTS_DIRNAME / f"rank-{rank}" / f"step-{trainer.state.global_step:06d}-call-{self.calls:04d}.jsonl"
        self.calls += 1
        path.unlink(missing_ok=True)  # a file left by a crash was sampled by other weights: sample again
        sampling = SamplingParams(
            temperature=self.settings.temperature,
            top_p=self.settings.top_p,
            max_new_tokens=self.settings.max_new_tokens,
        )
        was_training = model.training
        model.eval()
        try:
            run_rollouts(
                self._vector_env(),
                policy,
                env_id=self.env_id,
                task_indices=tasks,
                samples_per_task=group_size,
                out=str(path),
                sampling=sampling,
                token_trace=True,
                progress=False,
            )
        finally:
            model.train(was_training)
        records = {(record["task_index"], record["sample"]): record for record in read_trajectories(path)}
        if not self.settings.keep_rollouts:
            path.unlink(missing_ok=True)
        ordered = [records[(task, sample)] for task in tasks for sample in range(group_size)]
        return self.batch(ordered, eos_token_id=_eos_id(trainer.processing_class))

    def batch(self, records: Sequence[Mapping[str, Any]], *, eos_token_id: int) -> dict[str, Any]:
        """The ``rollout_func`` output for ``records`` (in prompt order): ids, masks, logprobs, rewards."""
        output: dict[str, list[Any]] = {
            "prompt_ids": [], "completion_ids": [], "logprobs": [], "env_mask": [],
            "env_reward": [], "env_success": [], "env_invalid_rate": [], "env_steps": [],
        }
        for record in records:
            trace = record["token_trace"]
            completion, mask, logprobs = list(trace["completion_ids"]), list(trace["env_mask"]), list(trace["logprobs"])
            last = record["steps"][-1] if record.get("steps") else {}
            ended_normally = "policy_error" not in last and "length" not in last.get("finish_reason", ["stop"])
            if not completion or (ended_normally and completion[-1] != eos_token_id):
                completion.append(eos_token_id)  # see the module docstring: an env token, never trained
                mask.append(0)
                logprobs.append(0.0)
            steps = [step for step in record.get("steps", ()) if "policy_error" not in step]
            invalid = sum(1 for step in steps if step.get("parse_error") or step.get("execution_error") is not None)
            output["prompt_ids"].append(list(trace["prompt_ids"]))
            output["completion_ids"].append(completion)
            output["env_mask"].append(mask)
            output["logprobs"].append(logprobs)
            output["env_reward"].append(episode_reward(record, self.settings.invalid_action_penalty))
            output["env_success"].append(float(record.get("score") or 0.0))
            output["env_invalid_rate"].append(invalid / len(steps) if steps else 1.0)
            output["env_steps"].append(float(record.get("num_steps", 0)))
        return output

    def close(self) -> None:
        if self._envs is not None:
            self._envs.close()
            self._envs = None

    def _vector_env(self) -> Any:
        if self._envs is None:
            from agentdistill.rollouts.loop import make_rollout_envs

            self._envs = make_rollout_envs(
                self.env_id, self.settings.num_envs, **self.settings.split_kwargs(self.settings.train_split)
            )
        return self._envs

    def _live_policy(self, trainer: Any) -> tuple[Any, Any]:
        """A policy generating with the weights being trained (built once; the weights change in place)."""
        model = trainer.accelerator.unwrap_model(trainer.model)
        if self._policy is not None and self._policy_model is model:
            return self._policy, model
        if self.settings.rollout_backend == "vllm":
            from agentdistill.policies.vllm import VLLMPolicy

            generation = getattr(trainer, "vllm_generation", None)
            llm = getattr(generation, "llm", None)
            if llm is None:
                raise RuntimeError("rollout_backend 'vllm' needs TRL's colocated vLLM engine (use_vllm, vllm_mode='colocate')")
            self._policy = VLLMPolicy.from_engine(llm, tokenizer=trainer.processing_class, name=f"vllm:{self.env_id}-grpo")
        else:
            from agentdistill.policies.hf import HFPolicy

            was_training = model.training
            self._policy = HFPolicy(
                model, tokenizer=trainer.processing_class, device=model.device, max_batch_size=64, name="hf:grpo-live"
            )
            model.train(was_training)
        self._policy_model = model
        return self._policy, model


def environment_reward(completions: list[Any], env_reward: list[float], **kwargs: Any) -> list[float]:
    """TRL reward function: the reward the env gave each episode (see :func:`episode_reward`).

    Also logs the env's own figures for the batch through TRL's ``log_metric``.
    """
    log_metric = kwargs.get("log_metric")
    if log_metric is not None:
        for name in ("env_success", "env_invalid_rate", "env_steps"):
            values = kwargs.get(name)
            if values:
                log_metric(f"env/{name.removeprefix('env_')}", float(sum(values) / len(values)))
    return [float(reward) for reward in env_reward]


def _eos_id(tokenizer: Any) -> int:
    token = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.pad_token_id
    if token is None:
        raise ValueError("the tokenizer has neither an eos nor a pad token")
    return int(token)


# ------------------------------------------------------------------------------------------------ training


def task_dataset(env_id: str, settings: GRPOSettings) -> Any:
    """One row per training task: ``{"prompt": "[task i] <question>", "task_index": i}``."""
    import gymnasium as gym
    from datasets import Dataset

    env = gym.make(env_id, **settings.split_kwargs(settings.train_split))
    try:
        base = env.unwrapped
        total = getattr(base, "num_tasks", None)
        start = settings.train_task_offset
        stop = start + settings.train_tasks if total is None else min(start + settings.train_tasks, int(total))
        if stop <= start:
            raise ValueError(
                f"train_task_offset={start} is past the end of the {settings.train_split!r} split of {env_id} "
                f"({total} tasks)"
            )
        indices = list(range(start, stop))
        questions = [base.task_at(index).question for index in indices]
    finally:
        env.close()
    return Dataset.from_dict(
        {"prompt": [task_prompt(index, question) for index, question in zip(indices, questions)], "task_index": indices}
    )


def evaluate_student(
    policy: Any,
    env_id: str,
    settings: GRPOSettings,
    out: str | os.PathLike[str],
    *,
    progress: bool = True,
    task_indices: Sequence[int] | None = None,
) -> EvalFigures:
    """``eval_samples`` episodes of ``policy`` on each of the first ``eval_tasks`` tasks of the held-out split
    (or on ``task_indices`` of them): greedy, or sampled at ``eval_temperature`` with a fixed seed."""
    from agentdistill.policies.base import SamplingParams
    from agentdistill.rollouts.loop import make_rollout_envs, run_rollouts

    sampling = SamplingParams(max_new_tokens=settings.max_new_tokens)
    if settings.eval_temperature > 0:
        sampling = SamplingParams(
            max_new_tokens=settings.max_new_tokens, temperature=settings.eval_temperature, top_p=settings.top_p,
            seed=settings.seed,
        )
    envs = make_rollout_envs(env_id, settings.num_envs, **settings.split_kwargs(settings.eval_split))
    try:
        run_rollouts(
            envs, policy, env_id=env_id, out=str(out),
            task_indices=range(settings.eval_tasks) if task_indices is None else task_indices,
            sampling=sampling, samples_per_task=settings.eval_samples, progress=progress,
        )
    finally:
        envs.close()
    return figures_of(_eval_records(out, settings), settings.invalid_action_penalty)


def _eval_records(path: str | os.PathLike[str], settings: GRPOSettings) -> list[dict[str, Any]]:
    """The evaluation episodes of ``path`` that ``settings`` asks for (a reused file may hold more)."""
    return [
        record
        for record in latest_records(path)
        if record["task_index"] < settings.eval_tasks and int(record.get("sample", 0)) < settings.eval_samples
    ]


def figures_of(records: Sequence[Mapping[str, Any]], invalid_action_penalty: float = 0.0) -> EvalFigures:
    """Mean reward, success, invalid-action rate and steps over ``records``."""
    steps = [step for record in records for step in record.get("steps", ()) if "policy_error" not in step]
    invalid = sum(1 for step in steps if step.get("parse_error") or step.get("execution_error") is not None)
    count = max(len(records), 1)
    return EvalFigures(
        episodes=len(records),
        mean_reward=sum(episode_reward(record, invalid_action_penalty) for record in records) / count,
        success_rate=sum(float(record.get("score") or 0.0) for record in records) / count,
        invalid_action_rate=invalid / len(steps) if steps else 0.0,
        mean_steps=sum(int(record.get("num_steps", 0)) for record in records) / count,
    )


@dataclass
class StartModel:
    """What RL starts from: the model to train, its tokenizer, where it came from and how it was set up."""

    model: Any
    tokenizer: Any
    source: str
    start: StartKind


def load_start_model(spec: str, settings: GRPOSettings) -> StartModel:
    """The model RL starts from, for ``hf:DIR``, ``hf:HUB_ID`` or ``hf:BASE@ADAPTER``.

    A distilled student is taken as ``agentdistill distill`` wrote it. A LoRA adapter (a directory with
    ``adapter_config.json``, or ``@ADAPTER``) is loaded on its base model; with LoRA settings that adapter is
    trained further (RL keeps what SFT learnt in it; rank, alpha, dropout and target modules are the adapter's own),
    with full fine-tuning it is merged into the base, which is then trained whole. Either way the model
    returned computes what the distilled student computes, so the held-out evaluation before training
    scores the student as distilled.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from agentdistill.policies import parse_policy_spec
    from agentdistill.policies.model_source import explaining_model_load

    parsed = parse_policy_spec(spec)
    if parsed.kind != "hf":
        raise UserError(f"RL trains a transformers model: expected --policy hf:DIR (or hf:HUB_ID), got {spec!r}")
    cuda = torch.cuda.is_available() and not _forced_cpu()
    dtype = torch.bfloat16 if cuda and _use_bf16(settings) else torch.float32
    adapter = parsed.adapter or (parsed.model if (Path(parsed.model) / "adapter_config.json").is_file() else None)
    base = parsed.model if parsed.adapter else (_adapter_base(adapter) if adapter else parsed.model)
    tokenizer_source = adapter if adapter and (Path(adapter) / "tokenizer_config.json").is_file() else base
    with explaining_model_load(tokenizer_source, what="tokenizer"):
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_source)
    with explaining_model_load(base):
        model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype)
    if adapter is None:
        return StartModel(model, tokenizer, parsed.model, "model")
    return _with_adapter(model, tokenizer, base, adapter, settings)


def _with_adapter(model: Any, tokenizer: Any, base: str, adapter: str, settings: GRPOSettings) -> StartModel:
    """``model`` (the base) with the LoRA adapter of ``adapter`` continued or merged (:func:`load_start_model`)."""
    from peft import PeftModel

    from agentdistill.policies.model_source import explaining_model_load

    with explaining_model_load(adapter, what="adapter"):
        model = PeftModel.from_pretrained(model, adapter, is_trainable=settings.lora)
    source = f"{base} + adapter {adapter}"
    if settings.lora:
        # the saved adapter names the base it was loaded on, not one a moved run directory left behind
        model.peft_config["default"].base_model_name_or_path = base
        logger.info("continuing the LoRA adapter of %s (its own shape: the lora_* settings are unused)", source)
        return StartModel(model, tokenizer, source, "adapter continued")
    logger.info("merging the LoRA adapter of %s into its base for full fine-tuning", source)
    merged = model.merge_and_unload()
    merged.requires_grad_(True)  # PEFT froze the base weights when it wrapped them; full fine-tuning trains them all
    return StartModel(merged, tokenizer, source, "adapter merged")


def _adapter_base(adapter_dir: str) -> str:
    """The base model an adapter directory was trained on: the scratch student its SFT run saved inside it
    (:func:`agentdistill.distill.sft.saved_scratch_base`, found even after the directory moved), else the
    base its ``adapter_config.json`` names."""
    from agentdistill.distill.sft import saved_scratch_base

    scratch_base = saved_scratch_base(adapter_dir)
    if scratch_base is not None:
        return str(scratch_base.resolve())
    path = Path(adapter_dir) / "adapter_config.json"
    try:
        base = json.loads(path.read_text(encoding="utf-8")).get("base_model_name_or_path")
    except (OSError, ValueError) as error:
        raise UserError(
            f"{path} is not a readable PEFT adapter config ({error}); give a student directory `distill` wrote"
        ) from None
    if not base:
        raise UserError(f"{path} names no base model (base_model_name_or_path); give it as hf:BASE@{adapter_dir}")
    return str(base)


def save_merged_start(start: StartModel, directory: Path, config: Any) -> None:
    """Write a merged start model to ``directory`` and make it the model TRL loads as the KL reference.

    TRL builds the reference of full fine-tuning by loading the policy's ``config.name_or_path`` from disk.
    After a merge that is still the base's path, so the KL penalty would pull RL towards the base without the
    adapter instead of the student it started from. The main process writes the merged weights once
    (a resumed run finds them; a half-written copy is never taken for a whole one), the other processes wait.
    """
    with config.main_process_first(local=False, desc="saving the merged start model"):
        if config.process_index == 0 and not directory.is_dir():
            partial = directory.with_name(f".{directory.name}.partial")
            shutil.rmtree(partial, ignore_errors=True)
            start.model.save_pretrained(str(partial))
            start.tokenizer.save_pretrained(str(partial))
            partial.rename(directory)
    start.model.config.name_or_path = str(directory)


RESUMABLE_SETTINGS = frozenset(
    {"max_steps", "logging_steps", "save_steps", "save_total_limit", "keep_rollouts", "wandb_project", "wandb_run_name"}
)
"""Settings a rerun may change and still resume a run's directory. A larger step budget trains further from
the last checkpoint (the constant default schedule does not depend on it); how often metrics are logged and
checkpoints written, whether rollout files are kept and where W&B logs do not change what is trained. Everything
else (env arguments, sampling, the reward, the optimiser, the held-out evaluation) would make the resumed steps
another run's."""


def claim_rl_directory(
    out_dir: str | os.PathLike[str], env_id: str, policy_spec: str, settings: GRPOSettings
) -> RunDirectory:
    """Make ``out_dir`` this GRPO run's directory or resume it; another run's directory (other env, start
    policy or settings), or one holding other files, is refused before anything is written
    (:func:`agentdistill.runs.claim_run_directory`). Called once, by the process that launches training:
    the ranks of a launch share one claim."""
    identity = {"env_id": env_id, "policy": policy_spec, **settings.to_dict()}
    return claim_run_directory(out_dir, command="rl", identity=identity, may_change=RESUMABLE_SETTINGS)


def train_grpo(
    env_id: str,
    policy_spec: str,
    out_dir: str | os.PathLike[str],
    settings: GRPOSettings | None = None,
    *,
    progress: bool = True,
    claim_directory: bool = True,
) -> GRPOResult:
    """Train ``policy_spec`` (``hf:DIR``) with GRPO in ``env_id`` and save it to ``out_dir`` (module docstring).

    Resumes from the last ``out_dir/checkpoint-N`` of the same run; another run's directory is refused
    (:func:`claim_rl_directory`). Under ``accelerate launch`` every process calls this with
    ``claim_directory=False`` (the launcher holds the claim); every process plays its slice of the held-out
    evaluation (:func:`evaluate_on_ranks`), the main one writes the model, the result and the W&B run.
    """
    settings = settings or GRPOSettings()
    claim = claim_rl_directory(out_dir, env_id, policy_spec, settings) if claim_directory else None
    try:
        return _train_grpo(env_id, policy_spec, out_dir, settings, progress=progress)
    finally:
        if claim is not None:
            claim.release()


def _train_grpo(
    env_id: str, policy_spec: str, out_dir: str | os.PathLike[str], settings: GRPOSettings, *, progress: bool
) -> GRPOResult:
    from agentdistill.distill.importance import AgentGRPOTrainer
    from agentdistill.distill.sft import RankRecorder, last_complete_checkpoint, training_wandb_run

    started = time.perf_counter()
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    start = load_start_model(policy_spec, settings)
    model, tokenizer = start.model, start.tokenizer
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    config = _grpo_config(settings, out)
    is_main = config.process_index == 0
    dataset = task_dataset(env_id, settings)
    needed = settings.prompts_per_step * config.world_size * config.steps_per_generation
    if len(dataset) < needed:
        raise ValueError(
            f"{len(dataset)} training task(s) cannot fill one generation batch of {needed} tasks "
            f"(prompts_per_step x processes x steps_per_generation); raise train_tasks or lower prompts_per_step"
        )
    if start.start == "adapter merged" and settings.beta:
        save_merged_start(start, out / MERGED_START_DIRNAME, config)
    if not config.deepspeed:
        # the held-out evaluation before training runs on the training device (a GPU), not where the weights were
        # loaded (the CPU); under DeepSpeed the trainer places the weights itself
        model.to(config.device)
    resume_from = last_complete_checkpoint(out)
    before = None
    if settings.eval_tasks and resume_from is None:
        before = evaluate_on_ranks(model, tokenizer, env_id, settings, out / EVAL_BEFORE_FILENAME, progress=progress)
    if is_main:
        settings.to_yaml(out / SETTINGS_FILENAME)

    rollouts = EnvRollouts(env_id, settings, out)
    recorder = RankRecorder()
    with _quiet_experimental_warning():
        trainer = AgentGRPOTrainer(
            model=model,
            reward_funcs=[environment_reward],
            args=config,
            train_dataset=dataset,
            processing_class=tokenizer,
            peft_config=_new_adapter_config(settings, start),
            rollout_func=rollouts,
            callbacks=[recorder],
        )
    wandb_config = {"grpo": settings.to_dict(), "env_id": env_id, "policy": policy_spec, "start": start.start}
    name = settings.wandb_run_name or out.name
    with training_wandb_run(settings.wandb_project, out, wandb_config, name=name, enabled=is_main) as wandb_run:
        try:
            trainer.train(resume_from_checkpoint=resume_from)
        finally:
            rollouts.close()
        trainer.save_model(str(out))
        if is_main:
            tokenizer.save_pretrained(str(out))
        trainer.accelerator.wait_for_everyone()
        after, gain = None, None
        if settings.eval_tasks and _sharded_weights(trainer):
            logger.warning(
                "the held-out evaluation after training is skipped: the trained weights are sharded over the "
                "processes (ZeRO-3 or FSDP); evaluate the saved model with `agentdistill eval --policy hf:%s`", out
            )
        elif settings.eval_tasks:
            trained = trainer.accelerator.unwrap_model(trainer.model)
            after = evaluate_on_ranks(trained, tokenizer, env_id, settings, out / EVAL_AFTER_FILENAME, progress=progress)
            if is_main:
                before, gain = _before_and_gain(out, settings, before)
        history = trainer.state.log_history
        result = GRPOResult(
            out_dir=str(out),
            start_model=start.source,
            start=start.start,
            env_id=env_id,
            global_step=int(trainer.state.global_step),
            before=before,
            after=after,
            train_rewards=tuple(float(entry["reward"]) for entry in history if "reward" in entry),
            world_size=int(recorder.seen.get("world_size", config.world_size)),
            resumed_from=resume_from,
            wandb_dir=str(out / "wandb") if wandb_run is not None else None,
            runtime_seconds=time.perf_counter() - started,
            reward_gain=gain,
        )
        if wandb_run is not None:
            _summarize_in_wandb(wandb_run, result)
    if is_main:
        result.to_json(out / RESULT_FILENAME)
    recorder.write(out / RANKS_DIRNAME, wrote_output=config.should_save)
    trainer.accelerator.wait_for_everyone()
    return result


def _new_adapter_config(settings: GRPOSettings, start: StartModel) -> Any:
    """The LoRA adapter RL puts on a plain start model, or ``None``: full fine-tuning, or a distilled adapter
    trained as it is (TRL then keeps a frozen copy of it, ``out_dir/ref``, as the KL reference)."""
    from peft import LoraConfig

    if not settings.lora or start.start != "model":
        return None
    return LoraConfig(
        r=settings.lora_r, lora_alpha=settings.lora_alpha, lora_dropout=settings.lora_dropout,
        target_modules=_target_modules(settings.lora_target_modules), task_type="CAUSAL_LM",
    )


def _before_and_gain(
    out: Path, settings: GRPOSettings, before: EvalFigures | None
) -> tuple[EvalFigures | None, RewardGain | None]:
    """The figures before training (read back from ``eval_before.jsonl`` when a resumed run did not compute
    them) and the paired gain to ``eval_after.jsonl``."""
    before_path = out / EVAL_BEFORE_FILENAME
    if not before_path.is_file():
        return before, None
    before_records = _eval_records(before_path, settings)
    if before is None:
        before = figures_of(before_records, settings.invalid_action_penalty)
    gain = paired_reward_gain(
        before_records, _eval_records(out / EVAL_AFTER_FILENAME, settings), settings.invalid_action_penalty
    )
    return before, gain


def _summarize_in_wandb(run: Any, result: GRPOResult) -> None:
    """The held-out figures and the gain, as W&B summary values."""
    for name, figures in (("before", result.before), ("after", result.after)):
        if figures is not None:
            for key, value in dataclasses.asdict(figures).items():
                run.summary[f"eval_{name}/{key}"] = value
    if result.reward_gain is not None:
        for key, value in dataclasses.asdict(result.reward_gain).items():
            run.summary[f"eval_gain/{key}"] = value


def evaluate_on_ranks(
    model: Any, tokenizer: Any, env_id: str, settings: GRPOSettings, path: Path, *, progress: bool
) -> EvalFigures | None:
    """The held-out evaluation of ``model`` into ``path``, shared by every process of the run.

    With one process it plays every task itself. With several, each plays its slice of the tasks
    ``path`` does not hold yet (accelerate's ``split_between_processes``) into ``path``'s shard file
    ``NAME.rank-R.jsonl`` on its own device, so no process waits idle in a collective while another evaluates;
    the main process then merges the shards into ``path`` and removes them. A run killed midway resumes: every
    shard and the merged file keep their finished episodes. Returns the figures on the main process,
    ``None`` on the others.
    """
    from accelerate import PartialState

    state = PartialState()
    if state.num_processes == 1:
        return _evaluate_model(model, tokenizer, env_id, settings, path, progress=progress)
    todo = [task for task in range(settings.eval_tasks) if task not in _evaluated_tasks(path, settings)]
    with state.split_between_processes(todo) as mine:
        logger.info(
            "rank %d evaluates %d of the %d held-out tasks not yet in %s: %s",
            state.process_index, len(mine), len(todo), path.name, _task_ranges(mine),
        )
        if mine:
            shard = _shard_path(path, state.process_index)
            _evaluate_model(
                model, tokenizer, env_id, settings, shard, progress=progress and state.is_main_process, task_indices=mine
            )
    state.wait_for_everyone()
    figures = None
    if state.is_main_process:
        merge_eval_shards(path)
        figures = figures_of(_eval_records(path, settings), settings.invalid_action_penalty)
    state.wait_for_everyone()
    return figures


def _evaluated_tasks(path: Path, settings: GRPOSettings) -> set[int]:
    """Held-out tasks ``path`` holds every sample of (a policy-failed episode does not count)."""
    if not path.is_file():
        return set()
    samples = Counter(record["task_index"] for record in _eval_records(path, settings) if not record.get("failed"))
    return {task for task, count in samples.items() if count >= settings.eval_samples}


def _shard_path(path: Path, rank: int) -> Path:
    return path.with_name(f"{path.stem}.rank-{rank}{path.suffix}")


def merge_eval_shards(path: Path) -> int:
    """Append the episodes of ``path``'s shard files (:func:`evaluate_on_ranks`) that ``path`` lacks, then
    remove the shards; returns how many episodes were added. Shards of an earlier launch with another number of
    processes are merged too."""
    shards = sorted(path.parent.glob(f"{path.stem}.rank-*{path.suffix}"))
    added = 0
    with TrajectoryWriter(path) as writer:
        for shard in shards:
            for record in latest_records(shard):
                if not writer.is_done(*episode_key(record)):
                    writer.write(record)
                    added += 1
    for shard in shards:
        shard.unlink()
    return added


def _task_ranges(tasks: Sequence[int]) -> str:
    return f"{tasks[0]}-{tasks[-1]}" if tasks else "none"


def _sharded_weights(trainer: Any) -> bool:
    """Whether the trained weights are split over the processes (DeepSpeed ZeRO-3, FSDP): generating then
    needs every process in every forward pass, which an evaluation of a slice of tasks per process cannot give."""
    if getattr(trainer, "is_fsdp_enabled", False):
        return True
    plugin = getattr(trainer.accelerator.state, "deepspeed_plugin", None)
    return bool(getattr(trainer, "is_deepspeed_enabled", False) and plugin is not None and plugin.zero_stage == 3)


def _evaluate_model(
    model: Any,
    tokenizer: Any,
    env_id: str,
    settings: GRPOSettings,
    out: Path,
    *,
    progress: bool,
    task_indices: Sequence[int] | None = None,
) -> EvalFigures:
    from agentdistill.policies.hf import HFPolicy

    was_training = model.training
    policy = HFPolicy(model, tokenizer=tokenizer, device=model.device, max_batch_size=64, name="hf:grpo-eval")
    try:
        return evaluate_student(policy, env_id, settings, out, progress=progress, task_indices=task_indices)
    finally:
        model.train(was_training)


def _grpo_config(settings: GRPOSettings, out: Path) -> Any:
    """TRL's ``GRPOConfig`` for ``settings``; creating it also joins the process group under a launcher."""
    from trl import GRPOConfig

    from agentdistill.distill.sft import checkpointing_arguments

    cuda = torch.cuda.is_available() and not _forced_cpu()
    use_vllm = settings.rollout_backend == "vllm"
    return GRPOConfig(
        output_dir=str(out),
        learning_rate=settings.learning_rate,
        lr_scheduler_type=settings.lr_scheduler,
        warmup_steps=settings.warmup_ratio,
        max_grad_norm=settings.max_grad_norm,
        weight_decay=settings.weight_decay,
        max_steps=settings.max_steps,
        per_device_train_batch_size=settings.prompts_per_step * settings.group_size,
        gradient_accumulation_steps=settings.gradient_accumulation_steps,
        num_generations=settings.group_size,
        num_iterations=settings.num_iterations,
        beta=settings.beta,
        epsilon=settings.epsilon,
        loss_type=settings.loss_type,
        scale_rewards=settings.scale_rewards,
        temperature=settings.temperature,
        top_p=settings.top_p,
        max_completion_length=settings.max_new_tokens,
        use_vllm=use_vllm,
        vllm_mode="colocate",
        vllm_gpu_memory_utilization=settings.vllm_gpu_memory_utilization,
        vllm_importance_sampling_mode=settings.importance_sampling,
        vllm_importance_sampling_clip_max=settings.importance_sampling_clip_max,
        vllm_importance_sampling_clip_min=settings.importance_sampling_clip_min,
        bf16=cuda and _use_bf16(settings),
        **checkpointing_arguments(GRPOConfig, settings.gradient_checkpointing),
        use_cpu=not cuda,
        ddp_find_unused_parameters=False,
        dataloader_pin_memory=cuda,
        seed=settings.seed,
        logging_steps=settings.logging_steps,
        save_strategy="steps",
        save_steps=settings.save_steps,
        save_total_limit=settings.save_total_limit,
        report_to=["wandb"] if settings.wandb_project else "none",
        run_name=settings.wandb_run_name or out.name,
        remove_unused_columns=False,
        log_completions=False,
    )


def _use_bf16(settings: GRPOSettings) -> bool:
    if settings.bf16 == "auto":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    return bool(settings.bf16)


def _forced_cpu() -> bool:
    return os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")  # set by CPU launches


def _target_modules(value: str | tuple[str, ...]) -> str | list[str]:
    return value if isinstance(value, str) else list(value)


class _quiet_experimental_warning:
    """TRL warns that ``rollout_func`` is experimental on every trainer; said once in our docs instead."""

    def __enter__(self) -> None:
        self.saved = os.environ.get("TRL_EXPERIMENTAL_SILENCE")
        os.environ["TRL_EXPERIMENTAL_SILENCE"] = "1"

    def __exit__(self, *exc: object) -> None:
        if self.saved is None:
            os.environ.pop("TRL_EXPERIMENTAL_SILENCE", None)
        else:
            os.environ["TRL_EXPERIMENTAL_SILENCE"] = self.saved


def launch_grpo(
    env_id: str,
    policy_spec: str,
    out_dir: str | os.PathLike[str],
    *,
    settings: GRPOSettings | None = None,
    num_processes: int = 2,
    accelerate_config: str | os.PathLike[str] | None = None,
    cpu: bool | None = None,
    main_process_port: int | None = None,
    env: Mapping[str, str] | None = None,
    log_path: str | os.PathLike[str] | None = None,
    timeout: float | None = None,
) -> GRPOResult:
    """Train in ``num_processes`` data-parallel processes (``accelerate launch``) and return the main one's result.

    Each process plays its own slice of the prompts in its own envs; TRL gathers the rewards so that groups are
    normalised across processes. Same launcher rules as :func:`agentdistill.distill.launch.launch_sft` (on CPU,
    the torchrun launcher with ``cpu_2proc.yaml``), and the same check that every rank trained in one group.
    The output directory is claimed here, once for all ranks (:func:`claim_rl_directory`).
    """
    if num_processes < 1:
        raise ValueError(f"num_processes must be >= 1, got {num_processes}")
    cpu = (not torch.cuda.is_available()) if cpu is None else cpu
    out = Path(out_dir).resolve()
    settings = settings or GRPOSettings()
    with claim_rl_directory(out, env_id, policy_spec, settings):
        return _launch(
            env_id, policy_spec, out, settings, num_processes=num_processes, accelerate_config=accelerate_config,
            cpu=cpu, main_process_port=main_process_port, env=env, log_path=log_path, timeout=timeout,
        )


def _launch(
    env_id: str,
    policy_spec: str,
    out: Path,
    settings: GRPOSettings,
    *,
    num_processes: int,
    accelerate_config: str | os.PathLike[str] | None,
    cpu: bool,
    main_process_port: int | None,
    env: Mapping[str, str] | None,
    log_path: str | os.PathLike[str] | None,
    timeout: float | None,
) -> GRPOResult:
    import tempfile

    from agentdistill.distill.launch import (
        accelerate_launch_command,
        check_ranks,
        default_accelerate_config,
        launch_environment,
        run_launch,
    )

    for stale in (out / RANKS_DIRNAME).glob("rank-*.json"):
        stale.unlink()
    (out / RESULT_FILENAME).unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="agentdistill-grpo-launch-") as scratch:
        config_path = Path(scratch) / SETTINGS_FILENAME
        settings.to_yaml(config_path)
        command = accelerate_launch_command(
            GRPO_MODULE,
            ["--env", env_id, "--policy", policy_spec, "--out", str(out), "--config", str(config_path), "--no-progress"],
            num_processes=num_processes,
            accelerate_config=accelerate_config or default_accelerate_config(cpu=cpu),
            main_process_port=main_process_port,
        )
        logger.info("launching %d GRPO processes: %s", num_processes, " ".join(command))
        run_launch(command, launch_environment(num_processes=num_processes, cpu=cpu, overrides=env), log_path=log_path, timeout=timeout)
    check_ranks(out / RANKS_DIRNAME, num_processes)
    return GRPOResult.from_json(out / RESULT_FILENAME)


# ---------------------------------------------------------------------------------------------- entry point


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"python -m {GRPO_MODULE}",
        description="GRPO on the rollout loop (run in every process by agentdistill.distill.grpo.launch_grpo).",
    )
    parser.add_argument("--env", required=True, help="env id, e.g. AgentMath-Synthetic-v0")
    parser.add_argument("--policy", required=True, help="hf:DIR, the student to train")
    parser.add_argument("--out", required=True, help="output directory (resumed when it holds checkpoints)")
    parser.add_argument("--config", default=None, help="YAML of GRPO settings (default: GRPOSettings())")
    parser.add_argument("--steps", type=int, default=None, help="override max_steps")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def settings_for(config: str | os.PathLike[str] | None, steps: int | None) -> GRPOSettings:
    """The settings a command line asks for: the YAML (or the defaults), then ``--steps``."""
    settings = GRPOSettings.from_yaml(config) if config else GRPOSettings()
    return settings.replace(max_steps=steps) if steps is not None else settings


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # launched by launch_grpo, which holds the output directory's claim for all ranks
    result = train_grpo(
        args.env, args.policy, args.out, settings_for(args.config, args.steps), progress=not args.no_progress,
        claim_directory=False,
    )
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(dataclasses.asdict(result), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
