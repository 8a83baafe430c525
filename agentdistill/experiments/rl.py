"""``kind: rl``: GRPO of a distilled student in an env, with the env's score as reward.

What ``agentdistill rl`` runs (:func:`agentdistill.distill.grpo.train_grpo`, or
:func:`~agentdistill.distill.grpo.launch_grpo` for several processes). ``settings`` is a configs/rl YAML path,
or a mapping of GRPO settings inline, optionally on top of such a file (``{base: configs/rl/...yaml,
max_steps: 10}``); either way every key is checked by :class:`~agentdistill.distill.grpo.GRPOSettings`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from agentdistill.distill.grpo.settings import GRPOSettings
from agentdistill.experiments.checks import check_file, check_model, env_entry, from_hub, settings_converter
from agentdistill.experiments.fields import CONVERT, Location
from agentdistill.experiments.plan import Plan
from agentdistill.experiments.registry import ExperimentKind
from agentdistill.experiments.schema import check_positive
from agentdistill.tracking import describe_tracking


@dataclass(frozen=True, kw_only=True)
class RLExperiment:
    """The student ``policy`` (``hf:DIR``) trained with GRPO in ``env`` into ``out``."""

    env: str
    policy: str
    """``hf:DIR``: a full model directory or hub id (a LoRA SFT run's ``merged/`` directory)."""
    out: str
    settings: GRPOSettings = field(default_factory=GRPOSettings, metadata={CONVERT: settings_converter(GRPOSettings)})
    num_processes: int = 1
    accelerate_config: str | None = None
    """With ``num_processes > 1`` (default: ``configs/accelerate/ddp.yaml`` on GPUs, ``cpu_2proc.yaml`` on CPU)."""

    def __post_init__(self) -> None:
        check_positive(num_processes=self.num_processes)
        if not self.policy.startswith("hf:") or "@" in self.policy:
            raise ValueError(f"policy must be hf:DIR (the model GRPO trains), got {self.policy!r}")


def plan(config: RLExperiment, where: Location) -> Plan:
    env_entry(config.env, where.child("env"))
    settings = config.settings
    result = Plan(f"rl: GRPO of a student in {config.env} ({where.file})")
    result.step(f"Start from {check_model(config.policy.removeprefix('hf:'), result, what='student')}")
    details = result.step(f"GRPO into {config.out}")
    details.append(
        f"{settings.max_steps} steps x {settings.prompts_per_step} tasks x group of {settings.group_size} episodes "
        f"per process, {settings.num_envs} envs ({settings.env_kwargs or 'default env arguments'})"
    )
    details.append(
        f"lr {settings.learning_rate:g}, beta {settings.beta:g}, epsilon {settings.epsilon:g}, loss {settings.loss_type}, "
        f"T={settings.temperature:g}, {settings.max_new_tokens} tokens per turn, invalid-action penalty "
        f"{settings.invalid_action_penalty:g}, " + (f"LoRA r={settings.lora_r}" if settings.lora else "full fine-tuning")
    )
    details.append(f"rollouts: {settings.rollout_backend}; held-out check on {settings.eval_tasks} tasks before and after")
    run = EnvRun(config.env, config.out, config.num_processes, config.accelerate_config)
    plan_env_run(result, details, config.policy, run, settings, where)
    return result


@dataclass(frozen=True)
class EnvRun:
    """Where and how a run that trains in an env (``rl``, ``opd``) runs."""

    env: str
    out: str
    num_processes: int
    accelerate_config: str | None


def plan_env_run(
    result: Plan, details: list[str], student: str, run: EnvRun, settings: GRPOSettings, where: Location
) -> None:
    """What every run that trains a student in an env needs and does, added to its plan: the env's data, the
    GPU a rollout backend or a hub-sized student needs, the processes, a resume, W&B."""
    if from_hub(run.env, settings.env_kwargs):
        result.need(f"the tasks of {run.env} from the Hugging Face hub (or data_path in env_kwargs)")
    if settings.rollout_backend == "vllm":
        result.need("vLLM on a CUDA GPU (TRL's colocated engine generates the rollouts)")
    elif not Path(student.removeprefix("hf:").split("@")[0]).is_dir():
        result.need("a CUDA GPU for a hub-sized student (CPU is practical for scratch students only)")
    if run.num_processes > 1:
        if run.accelerate_config is not None:
            check_file(run.accelerate_config, where.child("accelerate_config"), what="accelerate config")
        details.append(f"{run.num_processes} processes through accelerate")
    if list(Path(run.out).glob("checkpoint-*")):
        details.append(f"resumes from the last checkpoint in {run.out}")
    details.append(describe_tracking(settings.wandb_project, run.out))


def run(config: RLExperiment, where: Location, write: Callable[[str], None]) -> None:
    from agentdistill.distill.grpo.launch import launch_grpo
    from agentdistill.distill.grpo.train import train_grpo
    from agentdistill.distill.launch import LaunchOptions
    from agentdistill.tracking import default_project

    settings = config.settings.replace(wandb_project=default_project(config.settings.wandb_project))
    if config.num_processes > 1:
        options = LaunchOptions(num_processes=config.num_processes, accelerate_config=config.accelerate_config)
        result = launch_grpo(config.env, config.policy, config.out, settings=settings, options=options)
    else:
        result = train_grpo(config.env, config.policy, config.out, settings)
    write(f"student written to {config.out}; load it with --policy hf:{config.out}\n{result}\n")


KIND = ExperimentKind(name="rl", schema=RLExperiment, plan=plan, run=run)
