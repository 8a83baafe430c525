"""Teacher trajectory collection: one env id, a range of its tasks, one resumable trajectory file.

What ``agentdistill rollout`` and the ``collect`` experiments (``agentdistill run``) both do: build the
vector env, pick the task indices, run :func:`~agentdistill.rollouts.loop.run_rollouts`, optionally log
to W&B, and close what was opened here (the policy belongs to the caller, so one teacher serves many envs).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from agentdistill.policies.base import Policy, SamplingParams
from agentdistill.rollouts.loop import RolloutSummary, SAGSettings, make_rollout_envs, run_rollouts


def task_range(
    num_tasks: int | None, *, start: int, episodes: int | None, env_id: str, clip: bool = False
) -> range:
    """Task indices ``start .. start + episodes - 1`` of an env holding ``num_tasks`` (``None``: unlimited).

    ``episodes=None`` means every task from ``start`` on. Asking for tasks past the end of the split is an
    error here, before any episode runs, rather than a failed ``reset`` halfway through a run; with
    ``clip=True`` ``episodes`` is an upper bound, and a split that holds fewer tasks gives fewer (a list of 1,000
    questions loses the records without a gold answer).
    """
    if isinstance(start, bool) or not isinstance(start, int) or start < 0:
        raise ValueError(f"start must be a non-negative int, got {start!r}")
    if episodes is not None and (isinstance(episodes, bool) or not isinstance(episodes, int) or episodes < 1):
        raise ValueError(f"episodes must be a positive int or None, got {episodes!r}")
    if num_tasks is None:
        if episodes is None:
            raise ValueError(f"{env_id} generates unlimited tasks: say how many episodes to run")
        return range(start, start + episodes)
    stop = num_tasks if episodes is None else start + episodes
    if clip:
        stop = min(stop, num_tasks)
    if start >= num_tasks or stop > num_tasks:
        raise ValueError(
            f"{env_id} holds {num_tasks} tasks (indices 0..{num_tasks - 1}), "
            f"but tasks {start}..{stop - 1} were asked for"
        )
    return range(start, stop)


def collect_trajectories(
    policy: Policy,
    env_id: str,
    *,
    out: str | os.PathLike[str],
    start: int = 0,
    episodes: int | None = None,
    clip: bool = False,
    num_envs: int = 8,
    vectorization_mode: str = "sync",
    executor: str = "local",
    ray_address: str | None = None,
    env_kwargs: Mapping[str, Any] | None = None,
    sampling: SamplingParams | None = None,
    sag: SAGSettings | None = None,
    ftp_prefixes: Mapping[str, str] | None = None,
    wandb_project: str | None = None,
    wandb_config: Mapping[str, Any] | None = None,
    progress: bool = True,
    append: bool = False,
) -> RolloutSummary:
    """Run ``policy`` on tasks ``start .. start + episodes - 1`` of ``env_id`` into the trajectory file ``out``
    (with ``clip``, fewer when the split ends earlier; see :func:`task_range`).

    A rerun with the same ``out`` and settings skips the episodes already there; a file of another run is
    refused, unless ``append`` adds this run's episodes to it. ``wandb_project`` logs the running
    metrics to W&B (offline without credentials; files next to ``out``), with ``wandb_config`` as the run's
    config. ``executor="ray"`` runs the envs as Ray actors over the cluster at ``ray_address``
    (:mod:`agentdistill.rollouts.ray_envs`), with the same records. The policy is left open.
    """
    import agentdistill  # noqa: F401 - registers the env ids

    envs = make_rollout_envs(
        env_id,
        num_envs,
        vectorization_mode=vectorization_mode,
        executor=executor,
        ray_address=ray_address,
        **dict(env_kwargs or {}),
    )
    run = None
    try:
        indices = task_range(envs.get_attr("num_tasks")[0], start=start, episodes=episodes, env_id=env_id, clip=clip)
        if wandb_project:
            from agentdistill.tracking import start_wandb_run

            run = start_wandb_run(wandb_project, Path(out).parent, dict(wandb_config or {}))
        return run_rollouts(
            envs,
            policy,
            env_id=env_id,
            task_indices=indices,
            out=os.fspath(out),
            sampling=sampling,
            sag=sag,
            ftp_prefixes=ftp_prefixes,
            progress=progress,
            log=run.log if run is not None else None,
            env_args=env_kwargs or {},
            append=append,
        )
    finally:
        envs.close()
        if run is not None:
            run.finish()
