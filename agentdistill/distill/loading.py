"""Loading students: the one way a trained student, a hub model or a scratch student becomes a model and tokenizer.

:func:`load_student` is what every command that runs or trains a student goes through (the ``hf:`` policy, GRPO's
start model, SFT's hub or local student): a full model directory or hub id, a LoRA adapter directory as
``agentdistill distill`` wrote it (loaded on the base it was trained on, found even after the run directory
moved), or a base with an explicit adapter. Failed loads are explained in one sentence
(:func:`~agentdistill.policies.model_source.explaining_model_load`). :func:`resolve_student` adds the
``scratch:`` students SFT builds for a run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import types
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from agentdistill.distill.sft.settings import SFTSettings
from agentdistill.distill.students import SMALL, TINY, StudentConfig, build_student, save_student, train_tokenizer
from agentdistill.errors import UserError

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


_BASE_FINGERPRINT = "agentdistill_student.json"


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
    student = load_student(spec, dtype=dtype)
    if not student.tokenizer.chat_template:
        raise ValueError(f"{spec}: the tokenizer has no chat template; SFT on conversations needs one")
    if student.adapter is not None:
        logger.info(
            "merging the LoRA adapter of %s into its base %s: SFT starts from the merged model", spec, student.base
        )
        return student.model.merge_and_unload(), student.tokenizer
    return student.model, student.tokenizer


@dataclass
class LoadedStudent:
    """A loaded student: its model (a ``PeftModel`` when an adapter is kept), tokenizer, base and adapter."""

    model: Any
    tokenizer: Any
    base: str
    """The base model loaded: the source itself, or the base an adapter was trained on."""
    adapter: str | None


def is_adapter_directory(source: str | os.PathLike[str]) -> bool:
    """Whether ``source`` is a PEFT adapter directory (what a LoRA SFT run writes) rather than a model."""
    return (Path(source) / "adapter_config.json").is_file()


def load_student(
    source: str,
    *,
    adapter: str | None = None,
    dtype: torch.dtype | str | None = None,
    trainable: bool = False,
) -> LoadedStudent:
    """Load ``source`` (a model directory, a hub id, or a LoRA adapter directory) and ``adapter`` on top.

    An adapter directory given as ``source`` is loaded on its base (:func:`adapter_base`), with the adapter's
    tokenizer when it saved one. ``trainable`` leaves the adapter's weights trainable (to train it further).
    """
    from transformers import AutoModelForCausalLM

    from agentdistill.policies.model_source import explaining_model_load

    base, adapter = student_sources(source, adapter)
    tokenizer = load_tokenizer(base, adapter=adapter)
    options: dict[str, Any] = {"dtype": dtype} if dtype is not None else {}
    with explaining_model_load(base):
        model = AutoModelForCausalLM.from_pretrained(base, **options)
    if adapter is not None:
        model = attach_adapter(model, adapter, trainable=trainable)
    return LoadedStudent(model=model, tokenizer=tokenizer, base=base, adapter=adapter)


def student_sources(source: str, adapter: str | None = None) -> tuple[str, str | None]:
    """``(base, adapter)`` of a student: an adapter directory given as ``source`` stands on its base."""
    if adapter is None and is_adapter_directory(source):
        return adapter_base(source), source
    return source, adapter


def load_tokenizer(source: str, *, adapter: str | None = None) -> Any:
    """The tokenizer of the student :func:`load_student` loads: the adapter's own when it saved one, else the
    base's (loading only the tokenizer: cheap enough to check a pair of models before either loads)."""
    from transformers import AutoTokenizer

    from agentdistill.policies.model_source import explaining_model_load

    base, adapter = student_sources(source, adapter)
    tokenizer_source = adapter if adapter and (Path(adapter) / "tokenizer_config.json").is_file() else base
    with explaining_model_load(tokenizer_source, what="tokenizer"):
        return AutoTokenizer.from_pretrained(tokenizer_source)


def attach_adapter(model: Any, adapter: str, *, trainable: bool = False) -> Any:
    """``model`` with the PEFT adapter of the directory ``adapter`` on top (a ``PeftModel``)."""
    try:
        from peft import PeftModel
    except ImportError as error:
        raise ImportError(f"loading the adapter {adapter!r} needs peft: `pip install peft`") from error
    from agentdistill.policies.model_source import explaining_model_load

    with explaining_model_load(adapter, what="adapter"):
        return PeftModel.from_pretrained(model, adapter, is_trainable=trainable)


def adapter_base(adapter_dir: str) -> str:
    """The base model an adapter directory was trained on: the scratch student its SFT run saved inside it
    (:func:`saved_scratch_base`, found even after the directory moved), else the base its
    ``adapter_config.json`` names."""
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


def _student_texts(conversations: Dataset) -> list[str]:
    return [message["content"] for messages in conversations["messages"] for message in messages]


def load_or_build_scratch_base(
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
