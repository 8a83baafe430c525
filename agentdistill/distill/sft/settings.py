"""What an SFT run is set to do and what it produced; no torch import, so a config is checked quickly."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from agentdistill.settings import StrictSettings

MERGED_DIRNAME = "merged"


SETTINGS_FILENAME = "sft_settings.yaml"


RESULT_FILENAME = "sft_result.json"


_SAVE_STRATEGIES = ("no", "steps", "epoch")


_LM_HEADS = ("fused", "full")


@dataclass(frozen=True)
class SFTSettings(StrictSettings):
    """Hyperparameters of one SFT run; the defaults are the paper's (LoRA r=64, effective batch 8, 2 epochs).

    Read from YAML with :meth:`from_yaml`: a misspelt key is an error naming it, never a silently ignored
    default. Settings the paper does not state (scheduler, warmup, checkpointing) are ordinary choices.
    """

    settings_name: ClassVar[str] = "SFT"

    learning_rate: float = 2e-4
    epochs: float = 2.0
    max_steps: int = -1
    """Stop after this many optimizer steps (``-1``: run ``epochs``)."""
    per_device_batch_size: int = 1
    gradient_accumulation_steps: int = 8
    max_length: int | None = 10240
    """Tokens per conversation; longer ones are cut at the end (a conversation left without any assistant
    token is dropped)."""
    lora: bool = True
    lora_r: int = 64
    lora_alpha: int = 128
    lora_dropout: float = 0.05
    lora_target_modules: str | tuple[str, ...] = "all-linear"
    merge_lora: bool = False
    """Also write ``out_dir/merged``, the base with the adapter merged in (LoRA only)."""
    warmup_ratio: float = 0.0
    lr_scheduler: str = "linear"
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    seed: int = 42
    logging_steps: int = 10
    save_strategy: str = "epoch"
    save_steps: int = 500
    save_total_limit: int | None = 2
    packing: bool = False
    lm_head: str = "fused"
    """How the loss reaches the vocabulary: ``"fused"`` is TRL's tiled LM head, which never materialises the
    logits (the memory-lean choice for a real vocabulary); ``"full"`` is one ordinary forward over the full
    logits (:mod:`agentdistill.distill.sft.full_logits`), faster for a small vocabulary such as a scratch student's
    (without packing)."""
    bf16: bool | str = "auto"
    """``"auto"``: bf16 mixed precision on a GPU that supports it, fp32 otherwise (always fp32 on CPU)."""
    gradient_checkpointing: bool = True
    model_dtype: str = "auto"
    """dtype to load a hub/local student in (``"auto"``: as saved); scratch students are float32."""
    chat_template_path: str | None = None
    """A Jinja file replacing the student's chat template (e.g. one with ``{% generation %}`` markers)."""
    scratch_vocab_size: int | None = None
    """Tokenizer vocabulary bound for ``scratch:*`` students (default: the preset's)."""
    wandb_project: str | None = None
    """Track the run in this W&B project (``None``: no tracking)."""
    wandb_run_name: str | None = None
    wandb_samples: int = 4
    """How many training conversations go into the W&B samples table."""

    def __post_init__(self) -> None:
        positive = ("learning_rate", "per_device_batch_size", "gradient_accumulation_steps", "lora_r", "lora_alpha")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}")
        if self.epochs <= 0 and self.max_steps <= 0:
            raise ValueError("set epochs > 0 or max_steps > 0")
        if self.max_length is not None and self.max_length <= 0:
            raise ValueError(f"max_length must be positive or null, got {self.max_length!r}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio!r}")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError(f"lora_dropout must be in [0, 1), got {self.lora_dropout!r}")
        if self.save_strategy not in _SAVE_STRATEGIES:
            raise ValueError(f"save_strategy must be one of {_SAVE_STRATEGIES}, got {self.save_strategy!r}")
        if self.lm_head not in _LM_HEADS:
            raise ValueError(f"lm_head must be one of {_LM_HEADS}, got {self.lm_head!r}")
        if self.lm_head == "full" and self.packing:
            raise ValueError("lm_head='full' does not support packing=true (use lm_head='fused')")
        if isinstance(self.bf16, str) and self.bf16 != "auto":
            raise ValueError(f"bf16 must be true, false or 'auto', got {self.bf16!r}")
        if self.logging_steps <= 0 or self.save_steps <= 0:
            raise ValueError("logging_steps and save_steps must be positive")
        if self.wandb_samples < 0:
            raise ValueError(f"wandb_samples must be >= 0, got {self.wandb_samples!r}")


@dataclass(frozen=True)
class SFTResult:
    """What a run produced; also written to ``out_dir/sft_result.json`` by the main process."""

    out_dir: str
    model_dir: str
    """The directory to give :class:`~agentdistill.policies.hf.HFPolicy` (the model, or the adapter)."""
    adapter_dir: str | None
    base_model: str
    """The student the run started from: a hub id, a local directory, or ``out_dir/base`` for scratch students."""
    merged_dir: str | None
    global_step: int
    epoch: float
    train_loss: float | None
    losses: tuple[float, ...]
    """Every logged training loss, in order."""
    tokens_per_second: float | None
    """Input tokens (all ranks, padding excluded) per second of training."""
    num_examples: int
    world_size: int
    resumed_from: str | None
    wandb_dir: str | None
    runtime_seconds: float

    def to_json(self, path: str | os.PathLike[str]) -> None:
        Path(path).write_text(json.dumps(dataclasses.asdict(self), indent=1) + "\n", encoding="utf-8")

    @classmethod
    def from_json(cls, path: str | os.PathLike[str]) -> SFTResult:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        data["losses"] = tuple(data["losses"])
        return cls(**data)
