"""A GRPO run in N data-parallel processes (``accelerate launch``), its output directory claimed once."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from agentdistill.distill.grpo.settings import GRPOResult, GRPOSettings
from agentdistill.distill.grpo.train import GRPO, EnvAlgorithm, claim_env_directory
from agentdistill.distill.launch import LaunchOptions, launch_training

GRPO_MODULE = "agentdistill.distill.grpo"


def launch_grpo(
    env_id: str,
    policy_spec: str,
    out_dir: str | os.PathLike[str],
    *,
    settings: GRPOSettings | None = None,
    options: LaunchOptions | None = None,
) -> GRPOResult:
    """Train in ``options.num_processes`` data-parallel processes (default: two; ``accelerate launch``) and return
    the main one's result.

    Each process plays its own slice of the prompts in its own envs; TRL gathers the rewards so that groups are
    normalised across processes. Same launcher as SFT (:func:`agentdistill.distill.launch.launch_training`: on
    CPU, the torchrun launcher with ``cpu_2proc.yaml``), with the same check that every rank trained in one group.
    The output directory is claimed here, once for all ranks (:func:`launch_in_env`).
    """
    options = options or LaunchOptions()
    arguments = ["--env", env_id, "--policy", policy_spec]
    return launch_in_env(
        GRPO_MODULE, arguments, env_id, policy_spec, out_dir, settings or GRPOSettings(), GRPO, options
    )


def launch_in_env(
    module: str,
    arguments: Sequence[str],
    env_id: str,
    policy_spec: str,
    out_dir: str | os.PathLike[str],
    settings: GRPOSettings,
    algorithm: EnvAlgorithm,
    options: LaunchOptions,
) -> GRPOResult:
    """Claim ``out_dir`` for ``algorithm``'s run (once, for all ranks), then run ``python -m module arguments`` with
    ``--out``, ``--config`` (the settings, written to a scratch file) and ``--no-progress`` in every process, and
    return the main process's result."""
    out = Path(out_dir).resolve()
    with claim_env_directory(out, env_id, policy_spec, settings, algorithm):
        with tempfile.TemporaryDirectory(prefix=f"agentdistill-{algorithm.name}-launch-") as scratch:
            config_path = Path(scratch) / algorithm.settings_filename
            settings.to_yaml(config_path)
            full = [*arguments, "--out", str(out), "--config", str(config_path), "--no-progress"]
            result = launch_training(module, full, out, result_filename=algorithm.result_filename, options=options)
        return algorithm.result_class.from_json(result)
