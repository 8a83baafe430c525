"""The model GRPO starts from: a full student, or a LoRA student continued or merged."""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from agentdistill.distill.grpo.settings import GRPOSettings, StartKind
from agentdistill.distill.training import bf16_wanted, training_on_cuda
from agentdistill.errors import UserError

logger = logging.getLogger(__name__)


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
    from agentdistill.distill.loading import load_student
    from agentdistill.policies import parse_policy_spec

    parsed = parse_policy_spec(spec)
    if parsed.kind != "hf":
        raise UserError(f"RL trains a transformers model: expected --policy hf:DIR (or hf:HUB_ID), got {spec!r}")
    dtype = torch.bfloat16 if training_on_cuda() and bf16_wanted(settings.bf16) else torch.float32
    student = load_student(parsed.model, adapter=parsed.adapter, dtype=dtype, trainable=settings.lora)
    if student.adapter is None:
        return StartModel(student.model, student.tokenizer, parsed.model, "model")
    source = f"{student.base} + adapter {student.adapter}"
    model = student.model
    if settings.lora:
        # the saved adapter names the base it was loaded on, not one a moved run directory left behind
        model.peft_config["default"].base_model_name_or_path = student.base
        logger.info("continuing the LoRA adapter of %s (its own shape: the lora_* settings are unused)", source)
        return StartModel(model, student.tokenizer, source, "adapter continued")
    logger.info("merging the LoRA adapter of %s into its base for full fine-tuning", source)
    merged = model.merge_and_unload()
    merged.requires_grad_(True)  # PEFT froze the base weights when it wrapped them; full fine-tuning trains them all
    return StartModel(merged, student.tokenizer, source, "adapter merged")


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
