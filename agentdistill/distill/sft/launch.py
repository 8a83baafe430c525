"""An SFT run in this process or in N (``accelerate launch``), with its output directory claimed first."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentdistill.distill.launch import LaunchOptions, launch_training
from agentdistill.distill.sft.conversations import as_conversations, load_conversations
from agentdistill.distill.sft.settings import RESULT_FILENAME, SETTINGS_FILENAME, SFTResult, SFTSettings
from agentdistill.distill.sft.train import train_sft
from agentdistill.runs import RunDirectory, claim_run_directory

if TYPE_CHECKING:
    from datasets import Dataset


SFT_MODULE = "agentdistill.distill.sft"


SFT_DATA_FILENAME = "sft_data.jsonl"
"""Where :func:`run_sft` writes the training rows inside the output directory."""


def launch_sft(
    dataset: Dataset | Iterable[Mapping[str, Any]] | str | os.PathLike[str],
    student: str,
    out_dir: str | os.PathLike[str],
    *,
    settings: SFTSettings | None = None,
    config: str | os.PathLike[str] | None = None,
    merge: bool = False,
    options: LaunchOptions | None = None,
) -> SFTResult:
    """Train in ``options.num_processes`` processes and return the main process's :class:`SFTResult`.

    Args:
        dataset: conversations (a ``Dataset`` or rows with ``messages``, written to a temporary directory for
            the workers), or the path of a ``save_to_disk`` directory / JSONL file.
        settings / config: the SFT settings, as an object or a YAML path (not both; neither: the paper's).
        options: how the processes start (:class:`~agentdistill.distill.launch.LaunchOptions`; default: two).

    Raises:
        RuntimeError: the launch failed, or fewer than ``num_processes`` ranks trained in one group.
        OutputConflictError: ``out_dir`` holds another run (:func:`claim_sft_directory`).
    """
    if settings is not None and config is not None:
        raise ValueError("pass settings or config, not both")
    resolved = (
        settings if settings is not None else (SFTSettings.from_yaml(config) if config is not None else SFTSettings())
    )
    from_file = isinstance(dataset, (str, os.PathLike))
    rows = load_conversations(dataset) if from_file else as_conversations(dataset)
    options = options or LaunchOptions()
    with claim_sft_directory(out_dir, conversations_digest(rows), student, resolved, merge=merge):
        return _launch_sft(
            dataset if from_file else rows, student, out_dir, settings=resolved, merge=merge, options=options
        )


def _launch_sft(
    dataset: Dataset | Iterable[Mapping[str, Any]] | str | os.PathLike[str],
    student: str,
    out_dir: str | os.PathLike[str],
    *,
    settings: SFTSettings,
    merge: bool,
    options: LaunchOptions,
) -> SFTResult:
    """:func:`launch_sft` once the output directory is claimed (by the caller: the ranks must not claim it)."""
    out = Path(out_dir).resolve()
    with tempfile.TemporaryDirectory(prefix="agentdistill-sft-launch-") as scratch:
        if isinstance(dataset, (str, os.PathLike)):
            dataset_path = Path(dataset).resolve()
        else:
            dataset_path = Path(scratch) / "dataset"
            as_conversations(dataset).save_to_disk(str(dataset_path))
        config = Path(scratch) / SETTINGS_FILENAME
        settings.to_yaml(config)
        arguments = ["--dataset", str(dataset_path), "--student", student, "--out", str(out), "--config", str(config)]
        if merge:
            arguments.append("--merge")
        result = launch_training(SFT_MODULE, arguments, out, result_filename=RESULT_FILENAME, options=options)
    return SFTResult.from_json(result)


def run_sft(
    dataset: Dataset,
    student: str,
    out_dir: str | os.PathLike[str],
    *,
    settings: SFTSettings | None = None,
    num_processes: int = 1,
    accelerate_config: str | os.PathLike[str] | None = None,
    merge: bool = False,
) -> SFTResult:
    """Train ``student`` on ``dataset`` in this process, or in ``num_processes`` through :func:`launch_sft`.

    What ``agentdistill distill`` and the ``sft`` / ``cot`` experiments run once they have their rows. The
    output directory is claimed first (:func:`claim_sft_directory`): a rerun of the same run resumes from its
    last checkpoint, anything else is refused before a file is written. Then the rows go to
    ``out_dir/sft_data.jsonl``: the record of what was trained on, and the file the launched workers read.
    """
    if len(dataset) == 0:
        raise ValueError("the dataset is empty: nothing to train on")
    settings = settings or SFTSettings()
    conversations = as_conversations(dataset)
    with claim_sft_directory(out_dir, conversations_digest(conversations), student, settings, merge=merge):
        out = Path(out_dir)
        data_path = out / SFT_DATA_FILENAME
        dataset.to_json(str(data_path))  # with the provenance columns (task, env, score) the conversations lack
        if num_processes > 1:
            options = LaunchOptions(num_processes=num_processes, accelerate_config=accelerate_config)
            return _launch_sft(data_path, student, out, settings=settings, merge=merge, options=options)
        return train_sft(conversations, student, out, settings, merge=merge)


RESUMABLE_SETTINGS = frozenset(
    {
        "max_steps",
        "epochs",
        "logging_steps",
        "save_strategy",
        "save_steps",
        "save_total_limit",
        "wandb_project",
        "wandb_run_name",
        "wandb_samples",
    }
)
"""SFT settings a rerun may change and still resume its directory. Raising ``max_steps`` or ``epochs`` trains
further from the last checkpoint: the optimizer and scheduler state carry over, and the schedule stretches to
the new length (how a user extends a run that stopped too early). When metrics are logged, when checkpoints are
written and how many are kept, and where W&B logs do not change what is trained. Everything else (data,
student, learning rate, batch shape, LoRA shape, sequence length, masking inputs) would resume weights that
another configuration produced, so it is part of the run's identity."""


def conversations_digest(conversations: Dataset) -> str:
    """A SHA-256 of the training rows as they will be trained (order included), independent of file paths."""
    digest = hashlib.sha256()
    for messages in conversations["messages"]:
        digest.update(json.dumps(messages, sort_keys=True, ensure_ascii=True).encode("ascii"))
        digest.update(b"\n")
    return digest.hexdigest()


def claim_sft_directory(
    out_dir: str | os.PathLike[str], data_digest: str, student: str, settings: SFTSettings, *, merge: bool
) -> RunDirectory:
    """Make ``out_dir`` this SFT run's directory, or resume it (:func:`agentdistill.runs.claim_run_directory`).

    The identity is the training data's digest, the student and the settings: another dataset, student or
    setting would otherwise resume a checkpoint it did not make (and, for a model from the hub, train zero
    steps and overwrite the other run's results). Called once, by the process that launches training: under
    ``accelerate launch`` every rank runs :func:`~agentdistill.distill.sft.train.train_sft`, and ranks fighting over
    the directory's lock would refuse each other. The caller releases the claim when training ends.
    """
    identity = {"data_sha256": data_digest, "student": student, "merge": merge, **settings.to_dict()}
    return claim_run_directory(out_dir, command="distill", identity=identity, may_change=RESUMABLE_SETTINGS)
