"""``kind: sft``: a student fine-tuned on teacher trajectories (LoRA or full), in one process or several.

The trajectories go through the paper's conversion and filters
(:func:`agentdistill.distill.sft_data.trajectories_to_dataset`), then
:func:`agentdistill.distill.launch.run_sft` trains: the code behind ``agentdistill distill``. ``settings``
is a configs/distill YAML path, or a mapping of SFT settings inline, optionally on top of such a file
(``{base: configs/distill/sft_paper.yaml, lora: false}``); either way every key is checked by
:class:`~agentdistill.distill.sft.SFTSettings`.

:class:`TrainSection` (student, settings, processes) is shared with the ``cot`` kind's ``train`` section.

``protocol: paper`` (with ``prompts_dir``, the paper's prompt files) converts the trajectories as the paper's
code does: records of ``protocol="paper"`` runs and the paper's released rows, with the paper's system prompt
for students, call ids kept and the final-answer calls of episodes that ran out of steps added.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from agentdistill.distill.sft.settings import SFTSettings
from agentdistill.envs.paper import ProtocolName
from agentdistill.experiments.checks import check_file, check_model, count_records, settings_converter
from agentdistill.experiments.fields import CONVERT, Location
from agentdistill.experiments.plan import Plan
from agentdistill.experiments.protocol import check_protocol, describe_prompts_dir
from agentdistill.experiments.registry import ExperimentKind
from agentdistill.experiments.schema import check_positive
from agentdistill.tracking import describe_tracking


@dataclass(frozen=True, kw_only=True)
class TrainSection:
    """Who is trained and how: the student, its SFT settings, and the processes to train in."""

    student: str
    """A hub id (``Qwen/Qwen2.5-1.5B-Instruct``), a local model directory, or ``scratch:tiny`` / ``scratch:small``."""
    settings: SFTSettings = field(default_factory=SFTSettings, metadata={CONVERT: settings_converter(SFTSettings)})
    num_processes: int = 1
    accelerate_config: str | None = None
    """With ``num_processes > 1`` (default: ``configs/accelerate/ddp.yaml`` on GPUs, ``cpu_2proc.yaml`` on CPU)."""
    merge: bool = False
    """Also write ``OUT/merged``, the base with the LoRA adapter merged in (for serving without LoRA)."""

    def __post_init__(self) -> None:
        check_positive(num_processes=self.num_processes)


@dataclass(frozen=True, kw_only=True)
class SFTExperiment(TrainSection):
    """A student trained on ``trajectories`` into ``out`` (see the module docstring)."""

    out: str
    trajectories: tuple[str, ...]
    """Trajectory files of collect experiments (JSON Lines)."""
    prompt_variant: Literal["short", "full"] = "short"
    """The system prompt the student is trained with (``short``: the paper's, without examples)."""
    protocol: ProtocolName = "agentdistill"
    """``paper``: convert as the paper's code does (:mod:`agentdistill.distill.sft_data`); needs ``prompts_dir``."""
    prompts_dir: str | None = None
    """The paper's prompt files (``code_agent.yaml``, ``teacher_model.yaml``, ``judge_prompt.txt``,
    ``task_instruction.txt``), for ``protocol: paper``."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.trajectories:
            raise ValueError("trajectories is empty: list the trajectory files to train on")
        check_protocol(self.protocol, self.prompts_dir)


def plan_training(section: TrainSection, out: str, data: list[str], plan: Plan, where: Location) -> None:
    """Describe (and check) a training step: student, settings, data files, processes, output."""
    details = plan.step(f"SFT of {check_model(section.student, plan, what='student')} into {out}")
    settings = section.settings
    if settings.lora:
        details.append(f"LoRA r={settings.lora_r}, alpha={settings.lora_alpha}, dropout {settings.lora_dropout} "
                       f"on {settings.lora_target_modules}")
    else:
        details.append("full fine-tuning")
    effective = settings.per_device_batch_size * settings.gradient_accumulation_steps * section.num_processes
    length = f"{settings.max_steps} steps" if settings.max_steps > 0 else f"{settings.epochs:g} epochs"
    processes = f"{section.num_processes} process{'es' if section.num_processes > 1 else ''}"
    details.append(
        f"lr {settings.learning_rate:g} ({settings.lr_scheduler}, warmup {settings.warmup_ratio:g}), {length}, "
        f"effective batch {effective} ({settings.per_device_batch_size} x {settings.gradient_accumulation_steps} "
        f"accumulation x {processes}), max length {settings.max_length}, bf16 {settings.bf16}"
    )
    for path in data:
        if Path(path).is_file():
            details.append(f"data: {path} ({count_records(Path(path))} records)")
        else:
            details.append(f"data: {path} (not there yet)")
            plan.warn(f"{path} does not exist yet (an earlier experiment writes it)")
    if section.num_processes > 1:
        if section.accelerate_config is not None:
            config = check_file(section.accelerate_config, where.child("accelerate_config"), what="accelerate config")
        else:
            import torch

            from agentdistill.distill.launch import default_accelerate_config

            config = default_accelerate_config(cpu=not torch.cuda.is_available())
        details.append(f"{section.num_processes} processes through accelerate launch --config_file {config}")
        if "cpu" not in config.name:
            plan.need(f"{section.num_processes} GPUs on one machine for {config.name}")
    elif not section.student.startswith("scratch:"):
        plan.need("a CUDA GPU for training (bf16); a CPU works for the scratch students only in reasonable time")
    if list(Path(out).glob("checkpoint-*")):
        details.append(f"resumes from the last checkpoint in {out}")
    details.append(describe_tracking(settings.wandb_project, out))
    if section.merge or settings.merge_lora:
        details.append(f"merged model also written to {Path(out) / 'merged'}")


def train(section: TrainSection, dataset: Any, out: str, write: Callable[[str], None]) -> None:
    """Run the training step on ``dataset`` (rows with ``messages``)."""
    from agentdistill.distill.sft.launch import run_sft
    from agentdistill.tracking import default_project

    settings = section.settings.replace(wandb_project=default_project(section.settings.wandb_project))
    result = run_sft(
        dataset, section.student, out, settings=settings, num_processes=section.num_processes,
        accelerate_config=section.accelerate_config, merge=section.merge,
    )
    write(f"student written to {out}; load it with --policy hf:{out}\n{result}\n")


def plan(config: SFTExperiment, where: Location) -> Plan:
    result = Plan(f"sft: student from teacher trajectories ({where.file})")
    if config.protocol == "paper":
        assert config.prompts_dir is not None  # checked when the config was read
        prompts = describe_prompts_dir(config.prompts_dir, where.child("prompts_dir"))
        result.step(
            "Convert and filter trajectories as the paper's code does (protocol paper: correct, no parse error; "
            f"call ids kept; final-answer calls added); student system prompt: {config.prompt_variant}, from {prompts}"
        )
    else:
        result.step(
            f"Convert and filter trajectories with the paper's rules; student system prompt: {config.prompt_variant}"
        )
    plan_training(config, config.out, list(config.trajectories), result, where)
    return result


def run(config: SFTExperiment, where: Location, write: Callable[[str], None]) -> None:
    from agentdistill.distill.sft.trajectories import trajectories_to_dataset

    dataset, report = trajectories_to_dataset(
        list(config.trajectories), system_prompt_variant=config.prompt_variant, protocol=config.protocol,
        prompts_dir=config.prompts_dir,
    )
    write(report.table() + "\n")
    if len(dataset) == 0:
        raise RuntimeError(f"no episode of {', '.join(config.trajectories)} passed the filters: nothing to train on")
    train(config, dataset, config.out, write)


KIND = ExperimentKind(name="sft", schema=SFTExperiment, plan=plan, run=run)
