"""``kind: opd``: on-policy distillation of a student in an env, scored token by token by a teacher.

What ``agentdistill opd`` runs (:func:`agentdistill.distill.opd.train.train_opd`, or
:func:`~agentdistill.distill.opd.launch.launch_opd` for several processes). ``settings`` is a configs/opd YAML
path, or a mapping of OPD settings inline, optionally on top of such a file (``{base: configs/opd/...yaml,
max_steps: 10}``); every key is checked by :class:`~agentdistill.distill.opd.settings.OPDSettings`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from agentdistill.distill.opd.settings import OPDSettings
from agentdistill.experiments.checks import check_model, env_entry, settings_converter
from agentdistill.experiments.fields import CONVERT, Location
from agentdistill.experiments.plan import Plan
from agentdistill.experiments.registry import ExperimentKind
from agentdistill.experiments.rl import EnvRun, plan_env_run
from agentdistill.experiments.schema import check_positive

_TEACHER_KINDS = ("hf:", "vllm:", "openai:")


@dataclass(frozen=True, kw_only=True)
class OPDExperiment:
    """The student (``hf:DIR``) distilled from ``teacher`` on its own episodes in ``env``, into ``out``."""

    env: str
    student: str
    """``hf:DIR``: a full model directory, a LoRA student as ``distill`` wrote it, or a hub id."""
    teacher: str
    """``hf:DIR``, ``vllm:MODEL`` or ``openai:URL#MODEL``, sharing the student's tokenizer."""
    out: str
    settings: OPDSettings = field(default_factory=OPDSettings, metadata={CONVERT: settings_converter(OPDSettings)})
    num_processes: int = 1
    accelerate_config: str | None = None
    """With ``num_processes > 1`` (default: ``configs/accelerate/ddp.yaml`` on GPUs, ``cpu_2proc.yaml`` on CPU)."""

    def __post_init__(self) -> None:
        check_positive(num_processes=self.num_processes)
        if not self.student.startswith("hf:"):
            raise ValueError(f"student must be hf:DIR (the model OPD trains), got {self.student!r}")
        if not self.teacher.startswith(_TEACHER_KINDS):
            raise ValueError(f"teacher must be hf:DIR, vllm:MODEL or openai:URL#MODEL, got {self.teacher!r}")


def plan(config: OPDExperiment, where: Location) -> Plan:
    env_entry(config.env, where.child("env"))
    settings = config.settings
    result = Plan(f"opd: on-policy distillation of a student in {config.env} ({where.file})")
    result.step(f"Start from {check_model(config.student.removeprefix('hf:').split('@')[0], result, what='student')}")
    if config.teacher.startswith("hf:"):
        result.step(
            f"Scored by {check_model(config.teacher.removeprefix('hf:').split('@')[0], result, what='teacher')}"
        )
    else:
        result.step(f"Scored by the teacher {config.teacher}")
        result.need(f"the teacher {config.teacher} up, with log-probabilities of prompt tokens")
    details = result.step(f"OPD into {config.out}")
    details.append(
        f"{settings.max_steps} steps x {settings.prompts_per_step} tasks x {settings.group_size} episodes per process, "
        f"{settings.num_envs} envs ({settings.env_kwargs or 'default env arguments'})"
    )
    details.append(
        f"advantage: teacher minus student log-probability per sampled token (teacher reads the "
        f"{settings.teacher_prompt_variant} system prompt)"
        + (f" + {settings.reward_weight:g} x the env's reward" if settings.reward_weight else "")
        + f"; lr {settings.learning_rate:g}, T={settings.temperature:g}, "
        + (f"LoRA r={settings.lora_r}" if settings.lora else "full fine-tuning")
    )
    details.append(f"held-out check on {settings.eval_tasks} tasks before and after")
    if config.teacher.startswith("vllm:"):
        result.need("vLLM on a CUDA GPU for the teacher")
    run = EnvRun(config.env, config.out, config.num_processes, config.accelerate_config)
    plan_env_run(result, details, config.student, run, settings, where)
    return result


def run(config: OPDExperiment, where: Location, write: Callable[[str], None]) -> None:
    from agentdistill.distill.launch import LaunchOptions
    from agentdistill.distill.opd.launch import launch_opd
    from agentdistill.distill.opd.train import train_opd
    from agentdistill.tracking import default_project

    settings = config.settings.replace(wandb_project=default_project(config.settings.wandb_project))
    if config.num_processes > 1:
        options = LaunchOptions(num_processes=config.num_processes, accelerate_config=config.accelerate_config)
        result = launch_opd(config.env, config.student, config.teacher, config.out, settings=settings, options=options)
    else:
        result = train_opd(config.env, config.student, config.teacher, config.out, settings)
    write(f"student written to {config.out}; load it with --policy hf:{config.out}\n{result}\n")


KIND = ExperimentKind(name="opd", schema=OPDExperiment, plan=plan, run=run)
