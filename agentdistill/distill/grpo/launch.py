"""A GRPO run in N data-parallel processes (``accelerate launch``), its output directory claimed once.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

from agentdistill.distill.grpo.settings import (
    RESULT_FILENAME,
    SETTINGS_FILENAME,
    GRPOResult,
    GRPOSettings,
)
from agentdistill.distill.grpo.train import claim_rl_directory
from agentdistill.distill.launch import LaunchOptions, launch_training

logger = logging.getLogger(__name__)


GRPO_MODULE = "agentdistill.distill.grpo"


def launch_grpo(
    env_id: str,
    policy_spec: str,
    out_dir: str | os.PathLike[str],
    *,
    settings: GRPOSettings | None = None,
    num_processes: int = 2,
    accelerate_config: str | os.PathLike[str] | None = None,
    cpu: bool | None = None,
    main_process_port: int | None = None,
    env: Mapping[str, str] | None = None,
    log_path: str | os.PathLike[str] | None = None,
    timeout: float | None = None,
) -> GRPOResult:
    """Train in ``num_processes`` data-parallel processes (``accelerate launch``) and return the main one's result.

    Each process plays its own slice of the prompts in its own envs; TRL gathers the rewards so that groups are
    normalised across processes. Same launcher as SFT (:func:`agentdistill.distill.launch.launch_training`: on
    CPU, the torchrun launcher with ``cpu_2proc.yaml``), with the same check that every rank trained in one group.
    The output directory is claimed here, once for all ranks (:func:`claim_rl_directory`).
    """
    options = LaunchOptions(
        num_processes=num_processes, accelerate_config=accelerate_config, cpu=cpu,
        main_process_port=main_process_port, env=env, log_path=log_path, timeout=timeout,
    )
    if num_processes < 1:
        raise ValueError(f"num_processes must be >= 1, got {num_processes}")
    out = Path(out_dir).resolve()
    settings = settings or GRPOSettings()
    with claim_rl_directory(out, env_id, policy_spec, settings):
        return _launch(env_id, policy_spec, out, settings, options)


def _launch(env_id: str, policy_spec: str, out: Path, settings: GRPOSettings, options: LaunchOptions) -> GRPOResult:
    """:func:`launch_grpo` once the output directory is claimed (by the caller: the ranks must not claim it)."""
    with tempfile.TemporaryDirectory(prefix="agentdistill-grpo-launch-") as scratch:
        config_path = Path(scratch) / SETTINGS_FILENAME
        settings.to_yaml(config_path)
        arguments = ["--env", env_id, "--policy", policy_spec, "--out", str(out), "--config", str(config_path), "--no-progress"]
        result = launch_training(GRPO_MODULE, arguments, out, result_filename=RESULT_FILENAME, options=options)
    return GRPOResult.from_json(result)
