"""Run a training entry point in N processes with ``accelerate launch``.

Each process runs ``python -m MODULE`` (``agentdistill.distill.sft``, ``agentdistill.distill.grpo``); they form
one process group (NCCL on GPUs, gloo on CPU) and train data-parallel. The CPU case has a trap:
``accelerate launch --cpu --num_processes 2`` (and a ``distributed_type: MULTI_CPU`` config) goes through
accelerate's single-process launcher, which starts ONE process unless mpirun is set up, and training then runs
undistributed without a word. What does start two CPU
processes is accelerate's torchrun launcher, selected by ``configs/accelerate/cpu_2proc.yaml``
(``distributed_type: MULTI_GPU`` with ``use_cpu: true``), with ``ACCELERATE_USE_CPU=true`` in the environment so
that each worker's ``TrainingArguments`` builds accelerate's MULTI_CPU state: a gloo group of world size N.

Every rank writes ``out_dir/ranks/rank-K.json`` with the world size it saw from inside training;
:func:`launch_training` checks that N of them agree before returning, so the trap cannot pass silently.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

RANKS_DIRNAME = "ranks"
"""Where each rank of a training run writes what it saw (:class:`~agentdistill.distill.training.RankRecorder`)."""

ACCELERATE_CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs" / "accelerate"
"""The repository's accelerate configs (present in a source checkout / editable install)."""


def default_accelerate_config(*, cpu: bool) -> Path:
    """``cpu_2proc.yaml`` on CPU (any process count; ``--num_processes`` overrides), ``ddp.yaml`` on GPUs."""
    path = ACCELERATE_CONFIG_DIR / ("cpu_2proc.yaml" if cpu else "ddp.yaml")
    if not path.is_file():
        raise FileNotFoundError(f"no accelerate config at {path}; pass accelerate_config= explicitly")
    return path


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


@dataclass(frozen=True)
class LaunchOptions:
    """How the processes of a training run are started.

    Attributes:
        num_processes: processes (one per GPU; on CPU, gloo processes).
        accelerate_config: an accelerate config file (default: :func:`default_accelerate_config`).
        cpu: train on CPU (default: when no GPU is visible).
        main_process_port: rendezvous port (default: the config's; the shipped configs pick a free one).
        env: extra environment variables for the workers.
        log_path: where the workers' stdout and stderr go (default: this process's).
        timeout: seconds before the launch is killed (default: none).
    """

    num_processes: int = 2
    accelerate_config: str | os.PathLike[str] | None = None
    cpu: bool | None = None
    main_process_port: int | None = None
    env: Mapping[str, str] | None = None
    log_path: str | os.PathLike[str] | None = None
    timeout: float | None = None


def launch_training(
    module: str, arguments: Sequence[str], out: Path, *, result_filename: str, options: LaunchOptions
) -> Path:
    """Run ``python -m module arguments`` in ``options.num_processes`` processes and return the path of the
    result file the main process wrote into ``out``.

    Rank records and the result of an earlier launch are removed first, so that what is checked afterwards is
    this launch's: every rank must have trained, in one group of ``num_processes`` (:func:`check_ranks`).

    Raises:
        RuntimeError: the launch failed, or fewer than ``num_processes`` ranks trained in one group.
    """
    import torch

    if options.num_processes < 1:
        raise ValueError(f"num_processes must be >= 1, got {options.num_processes}")
    cpu = (not torch.cuda.is_available()) if options.cpu is None else options.cpu
    out.mkdir(parents=True, exist_ok=True)
    ranks_dir = out / RANKS_DIRNAME
    for stale in ranks_dir.glob("rank-*.json"):
        stale.unlink()
    (out / result_filename).unlink(missing_ok=True)
    command = accelerate_launch_command(
        module,
        arguments,
        num_processes=options.num_processes,
        accelerate_config=options.accelerate_config or default_accelerate_config(cpu=cpu),
        main_process_port=options.main_process_port,
    )
    logger.info("launching %d processes: %s", options.num_processes, " ".join(command))
    environment = launch_environment(num_processes=options.num_processes, cpu=cpu, overrides=options.env)
    run_launch(command, environment, log_path=options.log_path, timeout=options.timeout)
    check_ranks(ranks_dir, options.num_processes)
    return out / result_filename
