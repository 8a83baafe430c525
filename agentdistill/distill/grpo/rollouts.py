"""The bridge to TRL: episodes of the rollout loop as ``rollout_func`` output, and the env's reward."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from agentdistill.distill.grpo.settings import ROLLOUTS_DIRNAME, GRPOSettings
from agentdistill.rollouts.figures import episode_invalid_rate, episode_reward, episode_score
from agentdistill.rollouts.records import read_trajectories

_TASK_PROMPT = re.compile(r"^\[task (\d+)\] ")


def task_prompt(task_index: int, question: str) -> str:
    """The dataset prompt of a task: its index (read back by :class:`EnvRollouts`) and its question (for logs)."""
    return f"[task {task_index}] {question}"


def task_groups(prompts: Sequence[Any]) -> tuple[list[int], int]:
    """The tasks of a batch and the group size, from TRL's prompts (each task's prompt repeated G times in a row).

    Raises:
        ValueError: a prompt that is not :func:`task_prompt`'s, or groups of unequal size.
    """
    indices: list[int] = []
    for prompt in prompts:
        match = _TASK_PROMPT.match(prompt if isinstance(prompt, str) else "")
        if match is None:
            raise ValueError(f"not a task prompt (expected '[task N] ...'): {str(prompt)[:80]!r}")
        indices.append(int(match.group(1)))
    tasks: list[int] = []
    counts: list[int] = []
    for index in indices:
        if tasks and tasks[-1] == index:
            counts[-1] += 1
        else:
            tasks.append(index)
            counts.append(1)
    if len(set(counts)) != 1:
        raise ValueError(f"expected every task repeated the same number of times in a row, got counts {counts}")
    return tasks, counts[0]


class EnvRollouts:
    """TRL's ``rollout_func``: plays each prompt's task in the env and returns the episodes as token ids.

    Args:
        env_id: the env to act in.
        settings: the run's settings (env arguments, sampling, reward shaping, parallel envs).
        out_dir: episodes go to ``out_dir/rollouts/rank-R/step-S-call-C.jsonl``.
    """

    def __init__(self, env_id: str, settings: GRPOSettings, out_dir: str | os.PathLike[str]) -> None:
        self.env_id = env_id
        self.settings = settings
        self.out_dir = Path(out_dir)
        self.calls = 0
        self._envs: Any = None
        self._policy: Any = None
        self._policy_model: Any = None

    def __call__(self, prompts: list[Any], trainer: Any) -> dict[str, Any]:
        return self.batch(self.play(prompts, trainer), eos_token_id=self.eos_token_id(trainer))

    def play(self, prompts: list[Any], trainer: Any) -> list[dict[str, Any]]:
        """The episodes of ``prompts`` (``group_size`` per task) played with the weights being trained, in prompt
        order."""
        from agentdistill.policies.base import SamplingParams
        from agentdistill.rollouts.loop import run_rollouts

        tasks, group_size = task_groups(prompts)
        policy, model = self._live_policy(trainer)
        rank = int(getattr(trainer.accelerator, "process_index", 0))
        path = (
            self.out_dir
            / ROLLOUTS_DIRNAME
            / f"rank-{rank}"
            / f"step-{trainer.state.global_step:06d}-call-{self.calls:04d}.jsonl"
        )
        self.calls += 1
        path.unlink(missing_ok=True)  # a file left by a crash was sampled by other weights: sample again
        sampling = SamplingParams(
            temperature=self.settings.temperature,
            top_p=self.settings.top_p,
            max_new_tokens=self.settings.max_new_tokens,
        )
        was_training = model.training
        model.eval()
        try:
            run_rollouts(
                self._vector_env(),
                policy,
                env_id=self.env_id,
                task_indices=tasks,
                samples_per_task=group_size,
                out=str(path),
                sampling=sampling,
                token_trace=True,
                progress=False,
            )
        finally:
            model.train(was_training)
        records = {(record["task_index"], record["sample"]): record for record in read_trajectories(path)}
        if not self.settings.keep_rollouts:
            path.unlink(missing_ok=True)
        return [records[(task, sample)] for task in tasks for sample in range(group_size)]

    @staticmethod
    def eos_token_id(trainer: Any) -> int:
        """The end-of-sequence id appended to an episode that ended normally (see :meth:`batch`)."""
        return _eos_id(trainer.processing_class)

    def batch(self, records: Sequence[Mapping[str, Any]], *, eos_token_id: int) -> dict[str, Any]:
        """The ``rollout_func`` output for ``records`` (in prompt order): ids, masks, logprobs, rewards."""
        output: dict[str, list[Any]] = {
            "prompt_ids": [],
            "completion_ids": [],
            "logprobs": [],
            "env_mask": [],
            "env_reward": [],
            "env_success": [],
            "env_invalid_rate": [],
            "env_steps": [],
        }
        for record in records:
            trace = record["token_trace"]
            completion, mask, logprobs = list(trace["completion_ids"]), list(trace["env_mask"]), list(trace["logprobs"])
            last = record["steps"][-1] if record.get("steps") else {}
            ended_normally = "policy_error" not in last and "length" not in last.get("finish_reason", ["stop"])
            if not completion or (ended_normally and completion[-1] != eos_token_id):
                completion.append(eos_token_id)  # see the module docstring: an env token, never trained
                mask.append(0)
                logprobs.append(0.0)
            output["prompt_ids"].append(list(trace["prompt_ids"]))
            output["completion_ids"].append(completion)
            output["env_mask"].append(mask)
            output["logprobs"].append(logprobs)
            output["env_reward"].append(episode_reward(record, self.settings.invalid_action_penalty))
            output["env_success"].append(episode_score(record))
            output["env_invalid_rate"].append(episode_invalid_rate(record))
            output["env_steps"].append(float(record.get("num_steps", 0)))
        return output

    def close(self) -> None:
        if self._envs is not None:
            self._envs.close()
            self._envs = None

    def _vector_env(self) -> Any:
        if self._envs is None:
            from agentdistill.rollouts.loop import make_rollout_envs

            self._envs = make_rollout_envs(
                self.env_id,
                self.settings.num_envs,
                **self.settings.executor_kwargs(),
                **self.settings.split_kwargs(self.settings.train_split),
            )
        return self._envs

    def _live_policy(self, trainer: Any) -> tuple[Any, Any]:
        """A policy generating with the weights being trained (built once; the weights change in place)."""
        model = trainer.accelerator.unwrap_model(trainer.model)
        if self._policy is not None and self._policy_model is model:
            return self._policy, model
        if self.settings.rollout_backend == "vllm":
            from agentdistill.policies.vllm import VLLMPolicy

            generation = getattr(trainer, "vllm_generation", None)
            llm = getattr(generation, "llm", None)
            if llm is None:
                raise RuntimeError(
                    "rollout_backend 'vllm' needs TRL's colocated vLLM engine (use_vllm, vllm_mode='colocate')"
                )
            self._policy = VLLMPolicy.from_engine(
                llm, tokenizer=trainer.processing_class, name=f"vllm:{self.env_id}-grpo"
            )
        else:
            from agentdistill.policies.hf import HFPolicy

            was_training = model.training
            self._policy = HFPolicy(
                model, tokenizer=trainer.processing_class, device=model.device, max_batch_size=64, name="hf:grpo-live"
            )
            model.train(was_training)
        self._policy_model = model
        return self._policy, model


def environment_reward(completions: list[Any], env_reward: list[float], **kwargs: Any) -> list[float]:
    """TRL reward function: the reward the env gave each episode
    (see :func:`~agentdistill.rollouts.figures.episode_reward`).

    Also logs the env's own figures for the batch through TRL's ``log_metric``.
    """
    log_metric = kwargs.get("log_metric")
    if log_metric is not None:
        for name in ("env_success", "env_invalid_rate", "env_steps"):
            values = [value for value in kwargs.get(name) or () if value is not None]  # None: no action taken
            if values:
                log_metric(f"env/{name.removeprefix('env_')}", float(sum(values) / len(values)))
    return [float(reward) for reward in env_reward]


def _eos_id(tokenizer: Any) -> int:
    token = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.pad_token_id
    if token is None:
        raise ValueError("the tokenizer has neither an eos nor a pad token")
    return int(token)


def task_dataset(env_id: str, settings: GRPOSettings) -> Any:
    """One row per training task: ``{"prompt": "[task i] <question>", "task_index": i}``."""
    import gymnasium as gym
    from datasets import Dataset

    env = gym.make(env_id, **settings.split_kwargs(settings.train_split))
    try:
        base = env.unwrapped
        total = getattr(base, "num_tasks", None)
        start = settings.train_task_offset
        stop = start + settings.train_tasks if total is None else min(start + settings.train_tasks, int(total))
        if stop <= start:
            raise ValueError(
                f"train_task_offset={start} is past the end of the {settings.train_split!r} split of {env_id} "
                f"({total} tasks)"
            )
        indices = list(range(start, stop))
        questions = [base.task_at(index).question for index in indices]
    finally:
        env.close()
    return Dataset.from_dict(
        {"prompt": [task_prompt(index, question) for index, question in zip(indices, questions)], "task_index": indices}
    )
