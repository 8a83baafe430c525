"""What every training run does, whatever its algorithm: find the checkpoint to resume from, record
which process group each rank trained in, choose the device and precision, switch activation checkpointing
on through whichever keyword the installed transformers knows, and set the training arguments that follow from
the machine (the W&B run itself is :func:`agentdistill.tracking.training_wandb_run`).
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback


def last_complete_checkpoint(out: Path) -> str | None:
    """The newest ``checkpoint-N`` whose ``trainer_state.json`` (the Trainer writes it last) is readable: a run
    killed while saving resumes from the checkpoint before, instead of crashing on the incomplete one."""
    complete = []
    for directory in out.glob("checkpoint-*"):
        suffix = directory.name.removeprefix("checkpoint-")
        if not (suffix.isdigit() and directory.is_dir()):
            continue
        try:
            json.loads((directory / "trainer_state.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        complete.append((int(suffix), directory))
    return str(max(complete)[1]) if complete else None


def checkpointing_arguments(config_class: type, enabled: bool) -> dict[str, Any]:
    """The training-arguments keywords that switch activation checkpointing on or off for ``config_class``.

    transformers 5.23 renamed ``gradient_checkpointing`` to ``activation_checkpointing`` and keeps the old name
    as a deprecated alias (which TRL's configs default to ``True``, so it must be cleared); earlier versions,
    such as the one vLLM's newest releases pin, know only the old name and refuse the new one.
    """
    names = {entry.name for entry in dataclasses.fields(config_class)}
    if "activation_checkpointing" in names:
        return {"activation_checkpointing": enabled, "gradient_checkpointing": None}
    return {"gradient_checkpointing": enabled}


class RankRecorder(TrainerCallback):
    """Notes, inside training, the world size and rank this process saw and how many steps it ran.

    Each process writes its record to ``out_dir/ranks/rank-K.json``: the evidence that a launch really ran
    N processes in one process group (a launcher that silently starts one process leaves a single file).
    """

    def __init__(self) -> None:
        self.seen: dict[str, Any] = {}
        self.steps = 0

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        self.seen = {
            "rank": torch.distributed.get_rank() if distributed else 0,
            "world_size": torch.distributed.get_world_size() if distributed else 1,
            "backend": torch.distributed.get_backend() if distributed else None,
            "process_index": args.process_index,
            "local_process_index": args.local_process_index,
            "device": str(args.device),
            "pid": os.getpid(),
        }

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.steps += 1

    def write(self, directory: Path, *, wrote_output: bool) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        record = {**self.seen, "steps": self.steps, "wrote_output": wrote_output}
        path = directory / f"rank-{record.get('rank', 0)}.json"
        path.write_text(json.dumps(record) + "\n", encoding="utf-8")


def training_on_cuda() -> bool:
    """Whether this process trains on a GPU: CUDA is there and the launcher did not ask for the CPU
    (``ACCELERATE_USE_CPU``, which CPU launches set for every worker)."""
    forced_cpu = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
    return torch.cuda.is_available() and not forced_cpu


def bf16_wanted(setting: bool | str) -> bool:
    """A ``bf16`` setting read: ``"auto"`` means bf16 where the GPU supports it, ``True``/``False`` as said."""
    if setting == "auto":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    return bool(setting)


def platform_arguments(
    config_class: type, *, bf16: bool | str, gradient_checkpointing: bool, wandb_project: str | None, run_name: str
) -> dict[str, Any]:
    """The training-arguments keywords every algorithm sets the same way for the machine it runs on.

    Precision: ``bf16: "auto"`` is bf16 on a GPU that supports it; ``true`` is honoured on the CPU too.
    Device: the CPU when no GPU is used (ranks started by torchrun then form a gloo group, accelerate's
    MULTI_CPU), pinned memory only with CUDA, and no search for unused parameters (every trainable parameter of
    a causal LM gets a gradient). Tracking: W&B when a project is set (the run itself is
    :func:`agentdistill.tracking.training_wandb_run`'s).
    """
    cuda = training_on_cuda()
    return {
        "bf16": bf16_wanted(bf16) and (cuda or bf16 is True),
        "fp16": False,
        **checkpointing_arguments(config_class, gradient_checkpointing),
        "use_cpu": not cuda,
        "ddp_find_unused_parameters": False,
        "dataloader_pin_memory": cuda,
        "report_to": ["wandb"] if wandb_project else "none",
        "run_name": run_name,
    }
