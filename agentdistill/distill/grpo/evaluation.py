"""The held-out evaluation before and after GRPO, shared by the processes of a run, and its figures."""

from __future__ import annotations

import functools
import logging
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agentdistill.distill.grpo.settings import EVAL_AFTER_FILENAME, EVAL_BEFORE_FILENAME, GRPOSettings
from agentdistill.rollouts.figures import EpisodeFigures, PairedGain, episode_reward, figures_of, paired_gain
from agentdistill.rollouts.records import TrajectoryWriter, episode_key, latest_records

logger = logging.getLogger(__name__)


def evaluate_student(
    policy: Any,
    env_id: str,
    settings: GRPOSettings,
    out: str | os.PathLike[str],
    *,
    progress: bool = True,
    task_indices: Sequence[int] | None = None,
) -> EpisodeFigures:
    """``eval_samples`` episodes of ``policy`` on each of the first ``eval_tasks`` tasks of the held-out split
    (or on ``task_indices`` of them): greedy, or sampled at ``eval_temperature`` with a fixed seed."""
    from agentdistill.policies.base import SamplingParams
    from agentdistill.rollouts.loop import make_rollout_envs, run_rollouts

    sampling = SamplingParams(max_new_tokens=settings.max_new_tokens)
    if settings.eval_temperature > 0:
        sampling = SamplingParams(
            max_new_tokens=settings.max_new_tokens,
            temperature=settings.eval_temperature,
            top_p=settings.top_p,
            seed=settings.seed,
        )
    envs = make_rollout_envs(
        env_id, settings.num_envs, **settings.executor_kwargs(), **settings.split_kwargs(settings.eval_split)
    )
    try:
        run_rollouts(
            envs,
            policy,
            env_id=env_id,
            out=str(out),
            task_indices=range(settings.eval_tasks) if task_indices is None else task_indices,
            sampling=sampling,
            samples_per_task=settings.eval_samples,
            progress=progress,
        )
    finally:
        envs.close()
    return figures_of(_eval_records(out, settings), settings.invalid_action_penalty)


def _eval_records(path: str | os.PathLike[str], settings: GRPOSettings) -> list[dict[str, Any]]:
    """The evaluation episodes of ``path`` that ``settings`` asks for (a reused file may hold more)."""
    return [
        record
        for record in latest_records(path)
        if record["task_index"] < settings.eval_tasks and int(record.get("sample", 0)) < settings.eval_samples
    ]


def evaluate_on_ranks(
    model: Any, tokenizer: Any, env_id: str, settings: GRPOSettings, path: Path, *, progress: bool
) -> EpisodeFigures | None:
    """The held-out evaluation of ``model`` into ``path``, shared by every process of the run.

    With one process it plays every task itself. With several, each plays its slice of the tasks
    ``path`` does not hold yet (accelerate's ``split_between_processes``) into ``path``'s shard file
    ``NAME.rank-R.jsonl`` on its own device, so no process waits idle in a collective while another evaluates;
    the main process then merges the shards into ``path`` and removes them. A run killed midway resumes: every
    shard and the merged file keep their finished episodes. Returns the figures on the main process,
    ``None`` on the others.
    """
    from accelerate import PartialState

    state = PartialState()
    if state.num_processes == 1:
        return _evaluate_model(model, tokenizer, env_id, settings, path, progress=progress)
    todo = [task for task in range(settings.eval_tasks) if task not in _evaluated_tasks(path, settings)]
    with state.split_between_processes(todo) as mine:
        logger.info(
            "rank %d evaluates %d of the %d held-out tasks not yet in %s: %s",
            state.process_index,
            len(mine),
            len(todo),
            path.name,
            _task_ranges(mine),
        )
        if mine:
            shard = _shard_path(path, state.process_index)
            _evaluate_model(
                model,
                tokenizer,
                env_id,
                settings,
                shard,
                progress=progress and state.is_main_process,
                task_indices=mine,
            )
    state.wait_for_everyone()
    figures = None
    if state.is_main_process:
        merge_eval_shards(path)
        figures = figures_of(_eval_records(path, settings), settings.invalid_action_penalty)
    state.wait_for_everyone()
    return figures


def _evaluated_tasks(path: Path, settings: GRPOSettings) -> set[int]:
    """Held-out tasks ``path`` holds every sample of (a policy-failed episode does not count)."""
    if not path.is_file():
        return set()
    samples = Counter(record["task_index"] for record in _eval_records(path, settings) if not record.get("failed"))
    return {task for task, count in samples.items() if count >= settings.eval_samples}


def _shard_path(path: Path, rank: int) -> Path:
    return path.with_name(f"{path.stem}.rank-{rank}{path.suffix}")


def merge_eval_shards(path: Path) -> int:
    """Append the episodes of ``path``'s shard files (:func:`evaluate_on_ranks`) that ``path`` lacks, then
    remove the shards; returns how many episodes were added. Shards of an earlier launch with another number of
    processes are merged too."""
    shards = sorted(path.parent.glob(f"{path.stem}.rank-*{path.suffix}"))
    added = 0
    with TrajectoryWriter(path) as writer:
        for shard in shards:
            for record in latest_records(shard):
                if not writer.is_done(*episode_key(record)):
                    writer.write(record)
                    added += 1
    for shard in shards:
        shard.unlink()
    return added


def _task_ranges(tasks: Sequence[int]) -> str:
    return f"{tasks[0]}-{tasks[-1]}" if tasks else "none"


def sharded_weights(trainer: Any) -> bool:
    """Whether the trained weights are split over the processes (DeepSpeed ZeRO-3, FSDP): generating then
    needs every process in every forward pass, which an evaluation of a slice of tasks per process cannot give."""
    if getattr(trainer, "is_fsdp_enabled", False):
        return True
    plugin = getattr(trainer.accelerator.state, "deepspeed_plugin", None)
    return bool(getattr(trainer, "is_deepspeed_enabled", False) and plugin is not None and plugin.zero_stage == 3)


def _evaluate_model(
    model: Any,
    tokenizer: Any,
    env_id: str,
    settings: GRPOSettings,
    out: Path,
    *,
    progress: bool,
    task_indices: Sequence[int] | None = None,
) -> EpisodeFigures:
    from agentdistill.policies.hf import HFPolicy

    was_training = model.training
    policy = HFPolicy(model, tokenizer=tokenizer, device=model.device, max_batch_size=64, name="hf:grpo-eval")
    try:
        return evaluate_student(policy, env_id, settings, out, progress=progress, task_indices=task_indices)
    finally:
        model.train(was_training)


def before_and_gain(
    out: Path, settings: GRPOSettings, before: EpisodeFigures | None
) -> tuple[EpisodeFigures | None, PairedGain | None]:
    """The figures before training (read back from ``eval_before.jsonl`` when a resumed run did not compute
    them) and the paired gain to ``eval_after.jsonl``."""
    before_path = out / EVAL_BEFORE_FILENAME
    if not before_path.is_file():
        return before, None
    before_records = _eval_records(before_path, settings)
    if before is None:
        before = figures_of(before_records, settings.invalid_action_penalty)
    reward = functools.partial(episode_reward, invalid_action_penalty=settings.invalid_action_penalty)
    gain = paired_gain(before_records, _eval_records(out / EVAL_AFTER_FILENAME, settings), value=reward)
    return before, gain
