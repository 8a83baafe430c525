"""Supervised fine-tuning of a student on teacher trajectories, with the loss on the assistant turns only.

The student learns to *act*: only the tokens the agent itself wrote (its thoughts and code, each closed by the
end-of-turn token) are trained. System prompt, task and observations are context, never targets: a small model
that spends capacity predicting tool outputs learns to hallucinate them.

How the assistant-only loss is obtained (see :func:`assistant_token_mask`, which training uses too):

* templates with ``{% generation %}`` markers (the scratch students of :mod:`~agentdistill.distill.students`)
  go through TRL's own ``assistant_only_loss=True``: TRL renders each conversation with
  ``return_assistant_tokens_mask=True`` and masks everything outside the markers. Our ChatML template puts
  each assistant message's content *and* its ``<|im_end|>`` inside the markers, so the student learns to stop.
* templates without markers (Qwen2.5 from the hub, most others) are masked here, before TRL sees the data:
  each assistant turn's character span is found by rendering the conversation up to that turn with and without
  the turn (``add_generation_prompt=True`` gives where the turn starts), the span is cut after the turn's
  end-of-turn token (layout whitespace after it is not a target), and the tokens overlapping the span get
  mask 1 (offsets of the fast tokenizer). The dataset goes to TRL pre-tokenized as ``input_ids`` +
  ``assistant_masks``, which TRL turns into labels, then truncates like any other. This needs a template that
  renders earlier turns the same whatever follows (ChatML, Llama 3, Qwen2.5 do); for one that does not
  (Qwen3's, which drops old reasoning) set ``chat_template_path`` to a template with generation markers, e.g.
  TRL's ``trl/chat_templates/qwen3_training.jinja``. TRL's automatic swap to its training templates is not
  used for Qwen2.5, because its template puts the newlines around the turn into the loss as well.

Output directory (``out_dir``), which :class:`~agentdistill.policies.hf.HFPolicy` loads directly:

* full fine-tuning: ``out_dir`` is the model (``config.json``, weights, generation config, tokenizer).
* LoRA: ``out_dir`` is the adapter (``adapter_config.json`` whose ``base_model_name_or_path`` records the base,
  ``adapter_model.safetensors``) plus the tokenizer. ``HFPolicy(out_dir)`` works (transformers loads the
  recorded base and attaches the adapter), and so does ``HFPolicy(base, adapter=out_dir)``. With
  ``merge=True`` (or ``merge_lora: true``) ``out_dir/merged`` also holds the merged full model.
* ``out_dir/base``: for ``scratch:*`` students, the initial model and tokenizer. It is built once (by the main
  process) and reused by every other process and by resumed runs, so all of them share one tokenizer; LoRA
  adapters of scratch students record this directory (an absolute path) as their base.
* ``out_dir/agentdistill-run.json``: the run's identity (training rows' digest, student, settings), written by
  :func:`~agentdistill.distill.launch.run_sft` and ``launch_sft`` before anything else. They refuse a directory
  of another run or of other files; :func:`train_sft` itself, which every rank of a launch runs, does not check.
* ``out_dir/checkpoint-N``: trainer checkpoints; a rerun with the same ``out_dir`` resumes from the last one.
* ``out_dir/sft_settings.yaml``, ``out_dir/sft_result.json``: what ran and what came out.
* ``out_dir/ranks/rank-K.json``: per process, the world size and backend it saw and the steps it ran.
* ``out_dir/wandb``: the W&B run (offline without credentials; see :mod:`agentdistill.tracking`).

Run one process with :func:`train_sft`, several with :func:`agentdistill.distill.launch.launch_sft`, which runs
this module's entry point in each::

    python -m agentdistill.distill.sft --dataset DIR --student scratch:tiny --out OUT --config configs/distill/sft_cpu_tiny.yaml
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import os
import time
import types
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from transformers import TrainerCallback

from agentdistill.distill.students import SMALL, TINY, StudentConfig, build_student, save_student, train_tokenizer
from agentdistill.settings import settings_from_mapping, settings_from_yaml, settings_to_dict

if TYPE_CHECKING:
    from datasets import Dataset
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

SCRATCH_PREFIX = "scratch:"
SCRATCH_PRESETS: Mapping[str, tuple[StudentConfig, int]] = types.MappingProxyType(
    {"tiny": (TINY, 2048), "small": (SMALL, 8192)}
)
"""``scratch:NAME`` students: their shape and default tokenizer vocabulary size."""

BASE_DIRNAME = "base"
MERGED_DIRNAME = "merged"
RANKS_DIRNAME = "ranks"
SETTINGS_FILENAME = "sft_settings.yaml"
RESULT_FILENAME = "sft_result.json"
_BASE_FINGERPRINT = "agentdistill_student.json"
_WANDB_DIRECTORY_VARIABLES = ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_CONFIG_DIR")
_SAVE_STRATEGIES = ("no", "steps", "epoch")
_LM_HEADS = ("fused", "full")


@dataclass(frozen=True)
class SFTSettings:
    """Hyperparameters of one SFT run; the defaults are the paper's (LoRA r=64, effective batch 8, 2 epochs).

    Read from YAML with :meth:`from_yaml`: a misspelt key is an error naming it, never a silently ignored
    default. Settings the paper does not state (scheduler, warmup, checkpointing) are ordinary choices.
    """

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
    logits (:mod:`agentdistill.distill.full_logits`), faster for a small vocabulary such as a scratch student's
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

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any]) -> SFTSettings:
        """Settings from a mapping of field names; unknown keys and ill-typed values raise ``ValueError``."""
        return settings_from_mapping(cls, mapping, what="SFT")

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str]) -> SFTSettings:
        """Settings from a flat YAML mapping (an empty file gives the defaults)."""
        return settings_from_yaml(cls, path, what="SFT")

    def to_dict(self) -> dict[str, Any]:
        """Plain values (tuples as lists), as YAML and W&B want them."""
        return settings_to_dict(self)

    def to_yaml(self, path: str | os.PathLike[str]) -> None:
        import yaml

        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", encoding="utf-8") as handle:
            yaml.safe_dump(self.to_dict(), handle, sort_keys=False)

    def replace(self, **changes: Any) -> SFTSettings:
        """A copy with ``changes`` (checked like :meth:`from_mapping`)."""
        return SFTSettings.from_mapping({**self.to_dict(), **changes})

    def use_bf16(self) -> bool:
        if self.bf16 == "auto":
            return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
        return bool(self.bf16)


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


# --------------------------------------------------------------------------------------------------- students


def resolve_student(
    spec: str,
    train_texts: Iterable[str] = (),
    *,
    seed: int = 0,
    vocab_size: int | None = None,
    dtype: str | torch.dtype = "auto",
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The model and tokenizer a run starts from.

    ``scratch:tiny`` / ``scratch:small`` build a random Qwen2 student over a tokenizer trained on
    ``train_texts``; anything else is a hub id or local directory loaded with ``AutoModelForCausalLM`` /
    ``AutoTokenizer`` (``train_texts`` unused).
    """
    if spec.startswith(SCRATCH_PREFIX):
        preset = spec[len(SCRATCH_PREFIX) :]
        if preset not in SCRATCH_PRESETS:
            raise ValueError(
                f"unknown scratch student {spec!r}; choose one of {[SCRATCH_PREFIX + p for p in SCRATCH_PRESETS]}"
            )
        config, default_vocab = SCRATCH_PRESETS[preset]
        texts = list(train_texts)
        if not texts:
            raise ValueError(f"{spec} needs training texts to train its tokenizer")
        tokenizer = train_tokenizer(texts, vocab_size=vocab_size or default_vocab)
        return build_student(tokenizer, config, seed=seed), tokenizer
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(spec)
    if not tokenizer.chat_template:
        raise ValueError(f"{spec}: the tokenizer has no chat template; SFT on conversations needs one")
    model = AutoModelForCausalLM.from_pretrained(spec, dtype=dtype)
    return model, tokenizer


def _student_texts(conversations: Dataset) -> list[str]:
    return [message["content"] for messages in conversations["messages"] for message in messages]


def _load_or_build_scratch_base(
    spec: str, conversations: Dataset, base_dir: Path, settings: SFTSettings, *, may_build: bool, resuming: bool
) -> None:
    """Make sure ``base_dir`` holds the scratch student for this spec and data (build it when allowed).

    The fingerprint (spec, vocabulary bound, seed, a hash of the texts) keeps a rerun on other data from
    silently reusing an old tokenizer, and a resumed run from restarting on a new one.
    """
    texts = _student_texts(conversations)
    digest = hashlib.sha256("\x00".join(texts).encode("utf-8")).hexdigest()
    fingerprint = {
        "spec": spec,
        "vocab_size": settings.scratch_vocab_size,
        "seed": settings.seed,
        "texts_sha256": digest,
    }
    marker = base_dir / _BASE_FINGERPRINT
    if marker.is_file() and json.loads(marker.read_text(encoding="utf-8")) == fingerprint:
        return
    if not may_build:
        raise RuntimeError(f"{base_dir} does not hold the student the main process should have built")
    if resuming:
        raise ValueError(
            f"{base_dir.parent} has checkpoints of another student or dataset; resume needs the same ones "
            "(or use a fresh output directory)"
        )
    model, tokenizer = resolve_student(spec, texts, seed=settings.seed, vocab_size=settings.scratch_vocab_size)
    save_student(model, tokenizer, base_dir)
    marker.write_text(json.dumps(fingerprint) + "\n", encoding="utf-8")
    logger.info("built %s (%d parameters, vocabulary %d) in %s", spec, model.num_parameters(), len(tokenizer), base_dir)


def saved_scratch_base(run_dir: str | os.PathLike[str]) -> Path | None:
    """The scratch student an SFT run built in ``run_dir/base`` (``None`` for runs of hub or local students).

    A LoRA adapter of a scratch student records that directory by its absolute path, which no longer exists
    once the run directory is moved or copied; the run's own ``base`` is the adapter's base wherever it lies.
    """
    base_dir = Path(run_dir) / BASE_DIRNAME
    return base_dir if (base_dir / _BASE_FINGERPRINT).is_file() else None


# ---------------------------------------------------------------------------------------------------- masking


def has_generation_markers(chat_template: str | None) -> bool:
    """Whether a template marks assistant output with ``{% generation %}`` (TRL's own check)."""
    if not chat_template:
        return False
    from trl.chat_template_utils import has_generation_markers as trl_check

    return bool(trl_check(chat_template))


def assistant_token_mask(tokenizer: PreTrainedTokenizerBase, messages: Sequence[Mapping[str, Any]]) -> list[int]:
    """1 for every token of ``apply_chat_template(messages, tokenize=True)`` that SFT trains on, else 0.

    Those are the assistant turns' contents and the end-of-turn token closing each (see the module docstring
    for how templates with and without generation markers are handled).
    """
    return _tokenize_with_mask(tokenizer, messages)[1]


def _tokenize_with_mask(
    tokenizer: PreTrainedTokenizerBase, messages: Sequence[Mapping[str, Any]]
) -> tuple[list[int], list[int]]:
    conversation = [dict(message) for message in messages]
    if has_generation_markers(tokenizer.chat_template):
        output = tokenizer.apply_chat_template(
            conversation, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
        )
        return list(output["input_ids"]), [int(bit) for bit in output["assistant_masks"]]
    text, spans = _assistant_spans(tokenizer, conversation)
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    mask = [
        int(any(start < span_end and end > span_start for span_start, span_end in spans))
        for start, end in encoded["offset_mapping"]
    ]
    return list(encoded["input_ids"]), mask


def _assistant_spans(
    tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, Any]]
) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character span of each assistant turn (content + end-of-turn token)."""

    def render(part: list[dict[str, Any]], prompt: bool) -> str:
        return tokenizer.apply_chat_template(part, tokenize=False, add_generation_prompt=prompt)

    text = render(messages, False)
    spans: list[tuple[int, int]] = []
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        try:
            before = render(messages[:index], True)
        except Exception:  # some templates cannot render an empty conversation
            if index:
                raise
            before = ""
        through = render(messages[: index + 1], False)
        if not (through.startswith(before) and text.startswith(through)):
            raise ValueError(
                "the chat template renders earlier turns differently depending on what follows, so assistant "
                f"turns cannot be located (turn {index}); set chat_template_path to a template with "
                "{% generation %} markers"
            )
        turn = through[len(before) :]
        spans.append((len(before), len(before) + len(turn.rstrip())))
    return text, spans


def _pretokenize(conversations: Dataset, tokenizer: PreTrainedTokenizerBase) -> Dataset:
    def encode(row: dict[str, Any]) -> dict[str, list[int]]:
        input_ids, mask = _tokenize_with_mask(tokenizer, row["messages"])
        return {"input_ids": input_ids, "assistant_masks": mask}

    return conversations.map(encode, remove_columns=conversations.column_names, desc="Masking assistant turns")


# ------------------------------------------------------------------------------------------------------ data


def as_conversations(dataset: Dataset | Iterable[Mapping[str, Any]]) -> Dataset:
    """A ``Dataset`` with only a ``messages`` column of ``{role, content}`` dicts, checked for SFT.

    Every row must hold at least one assistant message (there would be nothing to learn from it otherwise).
    Extra columns and message keys are dropped so that TRL tokenizes exactly what the chat template renders.
    """
    from datasets import Dataset

    if isinstance(dataset, Dataset):
        if "messages" not in dataset.column_names:
            raise ValueError(f"the dataset has no 'messages' column (columns: {dataset.column_names})")
        rows: Iterable[Any] = dataset["messages"]
    else:
        rows = (row["messages"] for row in dataset)
    cleaned = []
    for index, messages in enumerate(rows):
        turns = [{"role": str(message["role"]), "content": str(message.get("content") or "")} for message in messages]
        if not any(turn["role"] == "assistant" for turn in turns):
            raise ValueError(f"row {index} has no assistant message to learn from")
        cleaned.append({"messages": turns})
    if not cleaned:
        raise ValueError("the dataset is empty")
    return Dataset.from_list(cleaned)


def load_conversations(path: str | os.PathLike[str]) -> Dataset:
    """Conversations from a ``save_to_disk`` directory (its ``train`` split for a ``DatasetDict``) or a JSONL file.

    Both are read into memory, so nothing (no ``datasets`` cache file) is written next to the data or in ``$HOME``.
    """
    from datasets import DatasetDict, load_from_disk

    source = Path(path)
    if source.is_dir():
        loaded = load_from_disk(str(source), keep_in_memory=True)
        if isinstance(loaded, DatasetDict):
            if "train" not in loaded:
                raise ValueError(f"{source} holds splits {list(loaded)}, none named 'train'")
            loaded = loaded["train"]
        return as_conversations(loaded)
    with open(source, encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    return as_conversations(rows)


# ---------------------------------------------------------------------------------------------------- training


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
            _load_or_build_scratch_base(
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
        masking, train_dataset = "offsets", _pretokenize(conversations, tokenizer)
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
        from agentdistill.distill.full_logits import FullLogitsSFTTrainer

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


def train_sft(
    dataset: Dataset | Iterable[Mapping[str, Any]],
    student_spec: str,
    out_dir: str | os.PathLike[str],
    settings: SFTSettings | None = None,
    *,
    merge: bool | None = None,
) -> SFTResult:
    """Fine-tune ``student_spec`` on ``dataset``'s conversations and save it to ``out_dir`` (see the module docstring).

    Resumes from the last ``out_dir/checkpoint-N`` when there is one. Under ``accelerate launch`` / ``torchrun``
    every process calls this; only the main one writes the model, the result and the W&B run.

    Args:
        dataset: rows with a ``messages`` list (system, user, assistant, user, ..., assistant).
        student_spec: ``scratch:tiny``, ``scratch:small``, a hub id or a local model directory.
        merge: also write ``out_dir/merged`` for a LoRA run (default: ``settings.merge_lora``).
    """
    settings = settings or SFTSettings()
    merge = settings.merge_lora if merge is None else merge
    started = time.perf_counter()
    recorder = RankRecorder()
    prepared = prepare_sft(dataset, student_spec, out_dir, settings, callbacks=[recorder])
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


def _sft_config(settings: SFTSettings, out: Path) -> Any:
    """TRL's ``SFTConfig`` for ``settings``; creating it also joins the process group under a launcher."""
    from trl import SFTConfig

    forced_cpu = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")  # set by CPU launches
    cuda = torch.cuda.is_available() and not forced_cpu
    bf16 = settings.use_bf16() and (cuda or settings.bf16 is True)
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
        bf16=bf16,
        fp16=False,
        **checkpointing_arguments(SFTConfig, settings.gradient_checkpointing),
        use_cpu=not cuda,  # on CPU, ranks started by torchrun then form a gloo group (accelerate's MULTI_CPU)
        ddp_find_unused_parameters=False,  # every trainable parameter of a causal LM gets a gradient
        dataloader_pin_memory=cuda,
        report_to=["wandb"] if settings.wandb_project else "none",
        run_name=settings.wandb_run_name or out.name,
        include_num_input_tokens_seen="non_padding",  # logs input tokens and tokens/s
        assistant_only_loss=False,  # set by prepare_sft once the chat template is known
    )


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


# ----------------------------------------------------------------------------------------------------- W&B


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


@contextmanager
def training_wandb_run(
    project: str | None, out: Path, config: Mapping[str, Any], *, name: str, enabled: bool
) -> Iterator[Any]:
    """A training run's W&B run (files under ``out/wandb``; offline without credentials), or ``None`` when
    ``project`` is unset or this is not the main process. transformers' ``WandbCallback`` logs into it.

    The W&B directory variables that :func:`agentdistill.tracking.start_wandb_run` sets for the process are
    restored afterwards: a later run in the same process would otherwise keep its cache and settings in this
    run's directory. A run that raises is marked failed.
    """
    if not (enabled and project):
        yield None
        return
    from agentdistill.tracking import start_wandb_run

    saved = {variable: os.environ.get(variable) for variable in _WANDB_DIRECTORY_VARIABLES}
    run = None
    try:
        run = start_wandb_run(project, out, config, name=name)
        yield run
    except BaseException:
        if run is not None:
            run.finish(exit_code=1)
            run = None
        raise
    finally:
        if run is not None:
            run.finish()
        for variable, value in saved.items():
            if value is None:
                os.environ.pop(variable, None)
            else:
                os.environ[variable] = value


def _log_samples(run: Any, prepared: PreparedSFT, count: int) -> None:
    """A table of the first ``count`` training conversations: what the model reads and what it is trained on."""
    if count <= 0:
        return
    import wandb

    tokenizer = prepared.tokenizer
    table = wandb.Table(columns=["index", "messages", "tokens", "trained_tokens", "conversation", "trained_text"])
    for index in range(min(count, len(prepared.conversations))):
        messages = prepared.conversations[index]["messages"]
        input_ids, mask = _tokenize_with_mask(tokenizer, messages)
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


# ---------------------------------------------------------------------------------------------- entry point


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m agentdistill.distill.sft",
        description="Fine-tune a student on conversations (run in every process by agentdistill.distill.launch).",
    )
    parser.add_argument(
        "--dataset", required=True, help="a datasets.save_to_disk directory or a JSONL file of {messages}"
    )
    parser.add_argument("--student", required=True, help="scratch:tiny, scratch:small, a hub id or a local model dir")
    parser.add_argument("--out", required=True, help="output directory (resumed when it holds checkpoints)")
    parser.add_argument("--config", default=None, help="YAML of SFT settings (default: the paper's)")
    parser.add_argument("--merge", action="store_true", help="also write OUT/merged for a LoRA run")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = SFTSettings.from_yaml(args.config) if args.config else SFTSettings()
    result = train_sft(load_conversations(args.dataset), args.student, args.out, settings, merge=args.merge or None)
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(dataclasses.asdict(result), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
