"""One SFT process: the student, the masking and TRL's ``SFTTrainer``, trained, saved and reported."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from agentdistill.distill.launch import RANKS_DIRNAME
from agentdistill.distill.loading import BASE_DIRNAME, SCRATCH_PREFIX, load_or_build_scratch_base, resolve_student
from agentdistill.distill.sft.conversations import as_conversations
from agentdistill.distill.sft.masking import has_generation_markers, pretokenize, tokenize_with_mask
from agentdistill.distill.sft.settings import MERGED_DIRNAME, RESULT_FILENAME, SETTINGS_FILENAME, SFTResult, SFTSettings
from agentdistill.distill.training import RankRecorder, last_complete_checkpoint, platform_arguments
from agentdistill.tracking import training_wandb_run

if TYPE_CHECKING:
    from datasets import Dataset
    from transformers import PreTrainedTokenizerBase

logger = logging.getLogger(__name__)


@dataclass
class PreparedSFT:
    """A ready trainer and what was decided to build it (returned by :func:`prepare_sft`)."""

    trainer: Any
    tokenizer: PreTrainedTokenizerBase
    base_model: str
    masking: str
    """``"template"`` (TRL's ``assistant_only_loss`` with generation markers) or ``"offsets"`` (masked here)."""
    conversations: Dataset
    resume_from: str | None
    out_dir: Path


def prepare_sft(
    dataset: Dataset | Iterable[Mapping[str, Any]],
    student_spec: str,
    out_dir: str | os.PathLike[str],
    settings: SFTSettings | None = None,
    *,
    callbacks: Sequence[Any] = (),
) -> PreparedSFT:
    """Everything up to ``trainer.train()``: student, masking, TRL ``SFTTrainer``. Used by :func:`train_sft`."""
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTTrainer

    settings = settings or SFTSettings()
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    conversations = as_conversations(dataset)
    args = _sft_config(settings, out)
    resume_from = last_complete_checkpoint(out)

    # Every process loads the student at the same time, outside any barrier: under DeepSpeed ZeRO-3 loading is
    # itself collective (each process takes its partition), so a load staggered by main_process_first would
    # leave the main process waiting for processes that wait for it. Only building a scratch student, which
    # the main process does alone, waits for the main process first.
    if student_spec.startswith(SCRATCH_PREFIX):
        base_dir = out / BASE_DIRNAME
        with args.main_process_first(local=False, desc="building the scratch student"):
            load_or_build_scratch_base(
                student_spec,
                conversations,
                base_dir,
                settings,
                may_build=args.process_index == 0,
                resuming=resume_from is not None,
            )
        base_model = str(base_dir)
        # Reloaded from disk even on the process that built it: every rank then holds the same tokenizer
        # and the model's name_or_path (which a LoRA adapter records as its base) is the saved directory.
        model = AutoModelForCausalLM.from_pretrained(base_model, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(base_model)
    else:
        base_model = student_spec
        model, tokenizer = resolve_student(student_spec, dtype=settings.model_dtype)
    if settings.chat_template_path:
        tokenizer.chat_template = Path(settings.chat_template_path).read_text(encoding="utf-8")

    if has_generation_markers(tokenizer.chat_template):
        masking, train_dataset = "template", conversations
        args.assistant_only_loss = True
    else:
        masking, train_dataset = "offsets", pretokenize(conversations, tokenizer)
        args.assistant_only_loss = False  # TRL builds the labels from our assistant_masks column
    logger.info("assistant-only loss via %s masking; %d conversations", masking, len(conversations))

    peft_config = None
    if settings.lora:
        targets = settings.lora_target_modules
        peft_config = LoraConfig(
            r=settings.lora_r,
            lora_alpha=settings.lora_alpha,
            lora_dropout=settings.lora_dropout,
            target_modules=targets if isinstance(targets, str) else list(targets),
            bias="none",
            task_type="CAUSAL_LM",
        )
    trainer_class = SFTTrainer
    if settings.lm_head == "full":
        from agentdistill.distill.sft.full_logits import FullLogitsSFTTrainer

        trainer_class = FullLogitsSFTTrainer
    trainer = trainer_class(
        model=model,
        args=args,
        train_dataset=train_dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=list(callbacks),
    )
    return PreparedSFT(
        trainer=trainer,
        tokenizer=tokenizer,
        base_model=base_model,
        masking=masking,
        conversations=conversations,
        resume_from=resume_from,
        out_dir=out,
    )


def train_sft(
    dataset: Dataset | Iterable[Mapping[str, Any]],
    student_spec: str,
    out_dir: str | os.PathLike[str],
    settings: SFTSettings | None = None,
    *,
    merge: bool | None = None,
    callbacks: Sequence[Any] = (),
) -> SFTResult:
    """Fine-tune ``student_spec`` on ``dataset``'s conversations and save it to ``out_dir`` (see the module docstring).

    Resumes from the last ``out_dir/checkpoint-N`` when there is one. Under ``accelerate launch`` / ``torchrun``
    every process calls this; only the main one writes the model, the result and the W&B run.

    Args:
        dataset: rows with a ``messages`` list (system, user, assistant, user, ..., assistant).
        student_spec: ``scratch:tiny``, ``scratch:small``, a hub id or a local model directory.
        merge: also write ``out_dir/merged`` for a LoRA run (default: ``settings.merge_lora``).
        callbacks: extra ``transformers.TrainerCallback`` objects, e.g. one that stops training at a wall-time
            budget (a benchmark comparing methods at equal time).
    """
    settings = settings or SFTSettings()
    merge = settings.merge_lora if merge is None else merge
    started = time.perf_counter()
    recorder = RankRecorder()
    prepared = prepare_sft(dataset, student_spec, out_dir, settings, callbacks=[recorder, *callbacks])
    trainer, out = prepared.trainer, prepared.out_dir
    is_main = trainer.args.process_index == 0
    if is_main:
        settings.to_yaml(out / SETTINGS_FILENAME)

    with _wandb_run(settings, out, student_spec, prepared, enabled=is_main) as run:
        if run is not None:
            _log_samples(run, prepared, settings.wandb_samples)
        if prepared.resume_from:
            logger.info("resuming from %s", prepared.resume_from)
        trainer.train(resume_from_checkpoint=prepared.resume_from)
        trainer.save_model(str(out))
        trainer.accelerator.wait_for_everyone()

        merged_dir = None
        if merge and settings.lora:
            merged_dir = str(out / MERGED_DIRNAME)
            if is_main:
                scratch = student_spec.startswith(SCRATCH_PREFIX)
                _merge_adapter(
                    prepared.base_model, out, Path(merged_dir), torch.float32 if scratch else settings.model_dtype
                )
        elif merge:
            logger.warning("merge asked for a full fine-tuning run; out_dir already holds the full model")

        result = _result(prepared, settings, recorder, merged_dir, started, wandb_dir=(out / "wandb") if run else None)
        if run is not None:
            run.summary["train/tokens_per_second"] = result.tokens_per_second
            run.summary["train/examples"] = result.num_examples
    if is_main:
        result.to_json(out / RESULT_FILENAME)
    recorder.write(out / RANKS_DIRNAME, wrote_output=trainer.args.should_save)
    trainer.accelerator.wait_for_everyone()
    return result


def _sft_config(settings: SFTSettings, out: Path) -> Any:
    """TRL's ``SFTConfig`` for ``settings``; creating it also joins the process group under a launcher."""
    from trl import SFTConfig

    return SFTConfig(
        output_dir=str(out),
        learning_rate=settings.learning_rate,
        num_train_epochs=settings.epochs,
        max_steps=settings.max_steps,
        per_device_train_batch_size=settings.per_device_batch_size,
        gradient_accumulation_steps=settings.gradient_accumulation_steps,
        max_length=settings.max_length,
        lr_scheduler_type=settings.lr_scheduler,
        warmup_steps=settings.warmup_ratio,  # transformers 5: a float below 1 is a ratio of the total steps
        weight_decay=settings.weight_decay,
        max_grad_norm=settings.max_grad_norm,
        seed=settings.seed,
        logging_steps=settings.logging_steps,
        save_strategy=settings.save_strategy,
        save_steps=settings.save_steps,
        save_total_limit=settings.save_total_limit,
        packing=settings.packing,
        **platform_arguments(
            SFTConfig,
            bf16=settings.bf16,
            gradient_checkpointing=settings.gradient_checkpointing,
            wandb_project=settings.wandb_project,
            run_name=settings.wandb_run_name or out.name,
        ),
        include_num_input_tokens_seen="non_padding",  # logs input tokens and tokens/s
        assistant_only_loss=False,  # set by prepare_sft once the chat template is known
    )


def _result(
    prepared: PreparedSFT,
    settings: SFTSettings,
    recorder: RankRecorder,
    merged_dir: str | None,
    started: float,
    *,
    wandb_dir: Path | None,
) -> SFTResult:
    state = prepared.trainer.state
    history = state.log_history
    losses = tuple(float(entry["loss"]) for entry in history if "loss" in entry)
    summary = next((entry for entry in reversed(history) if "train_loss" in entry), {})
    speeds = [entry["train_tokens_per_second"] for entry in history if "train_tokens_per_second" in entry]
    out = prepared.out_dir
    return SFTResult(
        out_dir=str(out),
        model_dir=str(out),
        adapter_dir=str(out) if settings.lora else None,
        base_model=prepared.base_model,
        merged_dir=merged_dir,
        global_step=int(state.global_step),
        epoch=float(state.epoch or 0.0),
        train_loss=float(summary["train_loss"]) if "train_loss" in summary else None,
        losses=losses,
        tokens_per_second=float(speeds[-1]) if speeds else None,
        num_examples=len(prepared.conversations),
        world_size=int(recorder.seen.get("world_size", prepared.trainer.args.world_size)),
        resumed_from=prepared.resume_from,
        wandb_dir=str(wandb_dir) if wandb_dir is not None else None,
        runtime_seconds=time.perf_counter() - started,
    )


def _merge_adapter(base_model: str, adapter_dir: Path, merged_dir: Path, dtype: str | torch.dtype) -> None:
    """Write base + adapter as one model, reloaded from disk so it works whatever sharding trained it."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = AutoModelForCausalLM.from_pretrained(base_model, dtype=dtype)
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    merged.save_pretrained(str(merged_dir))
    AutoTokenizer.from_pretrained(str(adapter_dir)).save_pretrained(str(merged_dir))
    logger.info("merged the adapter into %s", merged_dir)


@contextmanager
def _wandb_run(
    settings: SFTSettings, out: Path, student_spec: str, prepared: PreparedSFT, *, enabled: bool
) -> Iterator[Any]:
    """The main process's W&B run of an SFT run (see :func:`training_wandb_run`), or ``None``."""
    config = {
        "sft": settings.to_dict(),
        "student": student_spec,
        "base_model": prepared.base_model,
        "masking": prepared.masking,
        "num_examples": len(prepared.conversations),
        "world_size": prepared.trainer.args.world_size,
    }
    name = settings.wandb_run_name or out.name
    with training_wandb_run(settings.wandb_project, out, config, name=name, enabled=enabled) as run:
        yield run


def _log_samples(run: Any, prepared: PreparedSFT, count: int) -> None:
    """A table of the first ``count`` training conversations: what the model reads and what it is trained on."""
    if count <= 0:
        return
    import wandb

    tokenizer = prepared.tokenizer
    table = wandb.Table(columns=["index", "messages", "tokens", "trained_tokens", "conversation", "trained_text"])
    for index in range(min(count, len(prepared.conversations))):
        messages = prepared.conversations[index]["messages"]
        input_ids, mask = tokenize_with_mask(tokenizer, messages)
        trained = [token for token, bit in zip(input_ids, mask) if bit]
        table.add_data(
            index,
            len(messages),
            len(input_ids),
            len(trained),
            tokenizer.decode(input_ids),
            tokenizer.decode(trained),
        )
    run.log({"train/sample_conversations": table})
