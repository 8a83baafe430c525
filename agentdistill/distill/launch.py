"""Run :func:`agentdistill.distill.sft.train_sft` in N processes with ``accelerate launch``.

Each process runs ``python -m agentdistill.distill.sft``; they form one process group (NCCL on GPUs, gloo on
CPU) and train data-parallel. The CPU case has a trap: ``accelerate launch --cpu --num_processes 2`` (and a
``distributed_type: MULTI_CPU`` config) goes through accelerate's single-process launcher, which starts ONE
process unless mpirun is set up, and training then runs undistributed without a word. What does start two CPU
processes is accelerate's torchrun launcher, selected by ``configs/accelerate/cpu_2proc.yaml``
(``distributed_type: MULTI_GPU`` with ``use_cpu: true``), with ``ACCELERATE_USE_CPU=true`` in the environment so
that each worker's ``TrainingArguments`` builds accelerate's MULTI_CPU state: a gloo group of world size N.

Every rank writes ``out_dir/ranks/rank-K.json`` with the world size it saw from inside training;
:func:`launch_sft` checks that N of them agree before returning, so the trap cannot pass silently.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentdistill.distill.sft import (
    RANKS_DIRNAME,
    RESULT_FILENAME,
    SFTResult,
    SFTSettings,
    as_conversations,
    load_conversations,
    train_sft,
)
from agentdistill.runs import RunDirectory, claim_run_directory

if TYPE_CHECKING:
    from datasets import Dataset

logger = logging.getLogger(__name__)

ACCELERATE_CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs" / "accelerate"
"""The repository's accelerate configs (present in a source checkout / editable install)."""

SFT_MODULE = "agentdistill.distill.sft"
SFT_DATA_FILENAME = "sft_data.jsonl"
"""Where :func:`run_sft` writes the training rows inside the output directory."""


def default_accelerate_config(*, cpu: bool) -> Path:
    """``cpu_2proc.yaml`` on CPU (any process count; ``--num_processes`` overrides), ``ddp.yaml`` on GPUs."""
    path = ACCELERATE_CONFIG_DIR / ("cpu_2proc.yaml" if cpu else "ddp.yaml")
    if not path.is_file():
        raise FileNotFoundError(f"no accelerate config at {path}; pass accelerate_config= explicitly")
    return path


def build_launch_command(
    dataset_path: str | os.PathLike[str],
    student: str,
    out_dir: str | os.PathLike[str],
    *,
    num_processes: int,
    accelerate_config: str | os.PathLike[str],
    config: str | os.PathLike[str] | None = None,
    merge: bool = False,
    main_process_port: int | None = None,
) -> list[str]:
    """The ``accelerate launch`` command line that runs the SFT entry point in ``num_processes`` processes."""
    arguments = ["--dataset", os.fspath(dataset_path), "--student", student, "--out", os.fspath(out_dir)]
    if config is not None:
        arguments += ["--config", os.fspath(config)]
    if merge:
        arguments.append("--merge")
    return accelerate_launch_command(
        SFT_MODULE,
        arguments,
        num_processes=num_processes,
        accelerate_config=accelerate_config,
        main_process_port=main_process_port,
    )


def accelerate_launch_command(
    module: str,
    arguments: Sequence[str],
    *,
    num_processes: int,
    accelerate_config: str | os.PathLike[str],
    main_process_port: int | None = None,
) -> list[str]:
    """``accelerate launch`` of ``python -m module arguments`` in ``num_processes`` processes on this machine."""
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        os.fspath(accelerate_config),
        "--num_processes",
        str(num_processes),
        "--num_machines",
        "1",
    ]
    if main_process_port is not None:
        command += ["--main_process_port", str(main_process_port)]
    return [*command, "-m", module, *arguments]


def launch_environment(*, num_processes: int, cpu: bool, overrides: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment plus what the workers need (CPU mode, one BLAS thread share per process)."""
    environment = dict(os.environ)
    if cpu:
        environment["ACCELERATE_USE_CPU"] = "true"
    # accelerate needs psutil to choose a CPU thread count when OMP_NUM_THREADS is unset; split the cores evenly.
    environment.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // max(1, num_processes))))
    environment.update(overrides or {})
    return environment


def launch_sft(
    dataset: Dataset | Iterable[Mapping[str, Any]] | str | os.PathLike[str],
    student: str,
    out_dir: str | os.PathLike[str],
    *,
    settings: SFTSettings | None = None,
    config: str | os.PathLike[str] | None = None,
    num_processes: int = 2,
    accelerate_config: str | os.PathLike[str] | None = None,
    cpu: bool | None = None,
    merge: bool = False,
    main_process_port: int | None = None,
    env: Mapping[str, str] | None = None,
    log_path: str | os.PathLike[str] | None = None,
    timeout: float | None = None,
) -> SFTResult:
    """Train in ``num_processes`` processes and return the main process's :class:`SFTResult`.

    Args:
        dataset: conversations (a ``Dataset`` or rows with ``messages``, written to a temporary directory for
            the workers), or the path of a ``save_to_disk`` directory / JSONL file.
        settings / config: the SFT settings, as an object or a YAML path (not both; neither: the paper's).
        accelerate_config: an accelerate config file (default: :func:`default_accelerate_config`).
        cpu: train on CPU (default: when no GPU is visible).
        main_process_port: rendezvous port (default: the config's; the shipped configs pick a free one).
        env: extra environment variables for the workers.
        log_path: where the workers' stdout and stderr go (default: this process's).

    Raises:
        RuntimeError: the launch failed, or fewer than ``num_processes`` ranks trained in one group.
        OutputConflictError: ``out_dir`` holds another run (:func:`claim_sft_directory`).
    """
    if settings is not None and config is not None:
        raise ValueError("pass settings or config, not both")
    resolved = settings if settings is not None else (SFTSettings.from_yaml(config) if config is not None else SFTSettings())
    from_file = isinstance(dataset, (str, os.PathLike))
    rows = load_conversations(dataset) if from_file else as_conversations(dataset)
    with claim_sft_directory(out_dir, conversations_digest(rows), student, resolved, merge=merge):
        return _launch_sft(
            dataset if from_file else rows, student, out_dir, settings=resolved, num_processes=num_processes,
            accelerate_config=accelerate_config, cpu=cpu, merge=merge, main_process_port=main_process_port, env=env,
            log_path=log_path, timeout=timeout,
        )


def _launch_sft(
    dataset: Dataset | Iterable[Mapping[str, Any]] | str | os.PathLike[str],
    student: str,
    out_dir: str | os.PathLike[str],
    *,
    settings: SFTSettings,
    num_processes: int,
    accelerate_config: str | os.PathLike[str] | None,
    cpu: bool | None,
    merge: bool,
    main_process_port: int | None,
    env: Mapping[str, str] | None,
    log_path: str | os.PathLike[str] | None,
    timeout: float | None,
) -> SFTResult:
    """:func:`launch_sft` once the output directory is claimed (by the caller: the ranks must not claim it)."""
    import torch

    if num_processes < 1:
        raise ValueError(f"num_processes must be >= 1, got {num_processes}")
    cpu = (not torch.cuda.is_available()) if cpu is None else cpu
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    ranks_dir = out / RANKS_DIRNAME
    for stale in ranks_dir.glob("rank-*.json"):
        stale.unlink()
    (out / RESULT_FILENAME).unlink(missing_ok=True)

    with tempfile.TemporaryDirectory(prefix="agentdistill-sft-launch-") as scratch:
        if isinstance(dataset, (str, os.PathLike)):
            dataset_path = Path(dataset).resolve()
        else:
            dataset_path = Path(scratch) / "dataset"
            as_conversations(dataset).save_to_disk(str(dataset_path))
        config = Path(scratch) / "sft_settings.yaml"
        settings.to_yaml(config)
        command = build_launch_command(
            dataset_path,
            student,
            out,
            num_processes=num_processes,
            accelerate_config=accelerate_config or default_accelerate_config(cpu=cpu),
            config=config,
            merge=merge,
            main_process_port=main_process_port,
        )
        environment = launch_environment(num_processes=num_processes, cpu=cpu, overrides=env)
        logger.info("launching %d SFT processes: %s", num_processes, " ".join(command))
        run_launch(command, environment, log_path=log_path, timeout=timeout)

    check_ranks(ranks_dir, num_processes)
    return SFTResult.from_json(out / RESULT_FILENAME)


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
            return _launch_sft(
                data_path, student, out, settings=settings, num_processes=num_processes,
                accelerate_config=accelerate_config, cpu=None, merge=merge, main_process_port=None, env=None,
                log_path=None, timeout=None,
            )
        return train_sft(conversations, student, out, settings, merge=merge)


RESUMABLE_SETTINGS = frozenset(
    {
        "max_steps", "epochs", "logging_steps", "save_strategy", "save_steps", "save_total_limit",
        "wandb_project", "wandb_run_name", "wandb_samples",
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
    ``accelerate launch`` every rank runs :func:`~agentdistill.distill.sft.train_sft`, and ranks fighting over
    the directory's lock would refuse each other. The caller releases the claim when training ends.
    """
    identity = {"data_sha256": data_digest, "student": student, "merge": merge, **settings.to_dict()}
    return claim_run_directory(out_dir, command="distill", identity=identity, may_change=RESUMABLE_SETTINGS)


def run_launch(command: Sequence[str], environment: Mapping[str, str], *, log_path: Any, timeout: float | None) -> None:
    """Run a launch command to its end; a failure raises with the tail of its log."""
    if log_path is None:
        completed = subprocess.run(command, env=dict(environment), timeout=timeout, check=False)
        if completed.returncode != 0:
            raise RuntimeError(f"launch failed with exit code {completed.returncode}: {' '.join(command)}")
        return
    log = Path(log_path)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as handle:
        completed = subprocess.run(
            command, env=dict(environment), stdout=handle, stderr=subprocess.STDOUT, timeout=timeout, check=False
        )
    if completed.returncode != 0:
        tail = log.read_text(encoding="utf-8", errors="replace")[-4000:]
        raise RuntimeError(f"launch failed with exit code {completed.returncode} (log: {log}):\n{tail}")


def check_ranks(ranks_dir: Path, num_processes: int) -> None:
    """Every rank must have trained, in one group of ``num_processes``."""
    records = [json.loads(path.read_text(encoding="utf-8")) for path in sorted(ranks_dir.glob("rank-*.json"))]
    ranks = sorted(record["rank"] for record in records)
    sizes = {record["world_size"] for record in records}
    if ranks != list(range(num_processes)) or sizes != {num_processes}:
        raise RuntimeError(
            f"asked for {num_processes} processes, but training ran on ranks {ranks} with world sizes "
            f"{sorted(sizes)} (see {ranks_dir})"
        )
