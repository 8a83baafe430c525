"""The one rollout loop: N envs, one batched policy call per round, one JSON line per finished episode.

Teacher data collection, evaluation and RL all run through :func:`run_rollouts`. Each round, every env
that waits for an action is sent to the policy in ONE call; envs finish and start their next task
independently. Tasks are assigned explicitly (``reset(options={"task_index": i})`` on one env at a
time), so a run is reproducible and a restarted run skips exactly the tasks its output file holds.

The vector env must not reset envs by itself (``autoreset_mode=DISABLED``): :func:`make_rollout_envs`
builds one that way. When fewer tasks remain than envs, the spare envs idle on a no-op action that is
never recorded.

With SAG, the policy samples N candidates per env and the env runs them all from the same state and
keeps the majority one (:mod:`agentdistill.envs.sag`); with FTP, a task's first turn starts with
``Thought: <prefix>`` and the policy continues it.

For RL, ``samples_per_task=G`` runs each task G times (a GRPO group; records carry ``sample``), and
``token_trace=True`` generates every turn from the ids of the turns before it and records them
(:mod:`agentdistill.rollouts.tokens`), so training sees exactly what the model sampled.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable, Iterable, Mapping, Protocol, Sequence, cast

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode
from tqdm.auto import tqdm

from agentdistill.envs.codeact import END_CODE
from agentdistill.envs.paper.codeact import PAPER_STOP
from agentdistill.envs.sag import VOTES, encode_candidates
from agentdistill.envs.tools.sandbox import SharedLocalSandboxes
from agentdistill.policies.base import Completion, Policy, PolicyRequest, SamplingParams
from agentdistill.rollouts.figures import is_action
from agentdistill.rollouts.ftp import prefix_for
from agentdistill.rollouts.metrics import RolloutMetrics
from agentdistill.rollouts.records import EpisodeRecord, StepRecord, TrajectoryWriter, run_identity
from agentdistill.rollouts.tokens import ObservationTokenizer, TokenTrace

IDLE_ACTION = f"Thought: idle.\n```py\npass\n```{END_CODE}"
"""What a spare env is stepped with while other envs finish their tasks (never recorded)."""

_STEP_INFO_KEYS = (
    "thought", "code", "parse_error", "execution_error", "timed_out", "state_lost", "tool_calls", "sag",
    "execution_seconds",
)


@dataclass(frozen=True)
class SAGSettings:
    """Self-consistent action generation: ``n`` candidates per step (the paper: 8, T=0.4, top-p 0.8)."""

    n: int = 8
    temperature: float = 0.4
    top_p: float = 0.8
    vote: str = "answer"
    """``"answer"`` (the normalised final answer, else the observation) or ``"logs"`` (the printed output
    only, as the paper's agent votes; see :data:`agentdistill.envs.sag.VOTES`)."""

    def __post_init__(self) -> None:
        if self.vote not in VOTES:
            raise ValueError(f"SAG vote must be one of {', '.join(VOTES)}, got {self.vote!r}")

    def as_record(self) -> dict[str, Any]:
        """The settings as records and run identities hold them; the default vote is left out, so files written
        before votes could be chosen still resume."""
        recorded = asdict(self)
        if self.vote == "answer":
            del recorded["vote"]
        return recorded

    def sampling(self, base: SamplingParams) -> SamplingParams:
        return SamplingParams(
            temperature=self.temperature,
            top_p=self.top_p,
            max_new_tokens=base.max_new_tokens,
            stop=base.stop,
            n=self.n,
            seed=base.seed,
        )


EXECUTORS = ("local", "ray")
"""Where :func:`make_rollout_envs` runs the envs: this machine (``vectorization_mode`` says how), or Ray actors."""


def make_rollout_envs(
    env_id: str,
    num_envs: int,
    *,
    vectorization_mode: str = "sync",
    executor: str = "local",
    ray_address: str | None = None,
    **env_kwargs: Any,
) -> gym.vector.VectorEnv:
    """A vector env as :func:`run_rollouts` needs it: no automatic resets. Envs stepped in this process share
    their sandbox zygotes (:class:`~agentdistill.envs.tools.sandbox.SharedLocalSandboxes`) unless ``sandbox`` is
    given: one interpreter with the allowed modules imported serves them all, each episode in a worker of its own.

    ``executor="ray"`` runs the envs as Ray actors over the cluster at ``ray_address`` instead
    (:class:`~agentdistill.rollouts.ray_envs.RayVectorEnv`: the same records, and a lost actor's episodes are
    replayed on another); ``vectorization_mode`` is then not read beyond its default."""
    if num_envs < 1:
        raise ValueError(f"num_envs must be a positive int, got {num_envs!r}")
    check_executor(executor, ray_address, vectorization_mode)
    if executor == "ray":
        from agentdistill.rollouts.ray_envs import RayVectorEnv

        return RayVectorEnv(env_id, num_envs, env_kwargs=env_kwargs, ray_address=ray_address)
    if vectorization_mode == "sync" and "sandbox" not in env_kwargs:
        env_kwargs = {**env_kwargs, "sandbox": SharedLocalSandboxes()}
    return gym.make_vec(
        env_id,
        num_envs=num_envs,
        vectorization_mode=vectorization_mode,
        vector_kwargs={"autoreset_mode": AutoresetMode.DISABLED},
        **env_kwargs,
    )


def check_executor(executor: str, ray_address: str | None = None, vectorization_mode: str = "sync") -> None:
    """Refuse an executor setting that cannot be honoured, in one line naming the value and the fix."""
    if executor not in EXECUTORS:
        raise ValueError(f"executor must be one of {', '.join(EXECUTORS)}, got {executor!r}")
    if executor == "local" and ray_address is not None:
        raise ValueError(f"ray_address {ray_address!r} is read only by the ray executor: set executor to 'ray'")
    if executor == "ray" and vectorization_mode != "sync":
        raise ValueError(
            f"vectorization_mode {vectorization_mode!r} is for the local executor (the ray executor runs envs in Ray "
            "actors): leave it at 'sync'"
        )


def describe_executor(executor: str, vectorization_mode: str = "sync", ray_address: str | None = None) -> str:
    """Where the envs run, as a plan says it: ``sync``, ``async`` or ``Ray actors at ADDRESS``."""
    if executor != "ray":
        return vectorization_mode
    return f"Ray actors at {ray_address}" if ray_address else "Ray actors (RAY_ADDRESS, else a local Ray)"


class TokenPolicy(Protocol):
    """A policy that can generate from token ids (``PolicyRequest.prompt_token_ids``): what ``token_trace``
    needs (:class:`~agentdistill.policies.hf.HFPolicy` is one)."""

    tokenizer: Any

    def prompt_ids(self, request: PolicyRequest) -> list[int]:
        """The ids the policy would generate ``request`` from."""
        ...


@dataclass
class _Episode:
    task_index: int
    sample: int
    context: dict[str, Any]
    messages: list[dict[str, str]]
    ftp_prefix: str | None
    trace: TokenTrace | None = None
    final_request: Mapping[str, str] | None = None
    """Set when the env (paper protocol) asks for its extra answer call after the last action step."""
    final_answer_call: dict[str, Any] | None = None
    last_sampled: tuple[int, ...] = ()
    started: float = field(default_factory=time.monotonic)
    steps: list[StepRecord] = field(default_factory=list)
    policy_seconds: float = 0.0
    env_seconds: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def request(self) -> PolicyRequest:
        if self.final_request is not None:
            return PolicyRequest(messages=tuple(self.final_answer_messages()), context=self.context)
        messages = list(self.messages)
        if self.ftp_prefix is not None and not self.steps:
            messages.append({"role": "assistant", "content": f"Thought: {self.ftp_prefix}"})
        prompt_ids = self.trace.next_prompt() if self.trace is not None else None
        return PolicyRequest(messages=tuple(messages), context=self.context, prompt_token_ids=prompt_ids)

    def final_answer_messages(self) -> list[dict[str, str]]:
        """The paper's extra answer call: its own system turn, the episode without its system prompt, and the
        request appended to the last user turn (consecutive user turns merge, with no separator)."""
        assert self.final_request is not None
        messages = [{"role": "system", "content": self.final_request["system"]}, *map(dict, self.messages[1:])]
        messages[-1] = {**messages[-1], "content": messages[-1]["content"] + self.final_request["append_to_last_user"]}
        return messages


@dataclass(frozen=True)
class RolloutSummary:
    """What a run produced (``metrics`` covers the episodes of this run, not earlier ones resumed)."""

    episodes: int
    skipped: int
    metrics: Mapping[str, float]
    without_prefix: int = 0
    """Tasks not run because the paper's protocol runs only tasks with a first-thought prefix."""


def run_rollouts(
    envs: gym.vector.VectorEnv,
    policy: Policy,
    *,
    env_id: str,
    task_indices: Iterable[int],
    out: str,
    sampling: SamplingParams | None = None,
    sag: SAGSettings | None = None,
    ftp_prefixes: Mapping[str, str] | None = None,
    record_token_ids: bool = False,
    samples_per_task: int = 1,
    token_trace: bool = False,
    progress: bool = True,
    log: Callable[[dict[str, float]], None] | None = None,
    env_args: Mapping[str, Any] | None = None,
    append: bool = False,
) -> RolloutSummary:
    """Run ``policy`` on every task of ``task_indices`` not yet in ``out``, appending one line each.

    Args:
        envs: from :func:`make_rollout_envs` (no automatic resets).
        policy: any :class:`~agentdistill.policies.base.Policy`.
        env_id: recorded in every line and used to recognise finished tasks when resuming.
        task_indices: which tasks of the env's split to run, in order.
        out: the trajectory file (JSON Lines); existing episodes of this run are kept and skipped, and a
            file of another run (other env, env arguments, policy, sampling, SAG or prefixes) is refused
            before any episode runs (:class:`~agentdistill.rollouts.records.TrajectoryWriter`).
        sampling: sampling settings (greedy by default).
        sag: sample several candidates per step and let the env keep the majority.
        ftp_prefixes: first-thought prefixes by task id (tasks without one start normally).
        record_token_ids: keep each step's sampled token ids and logprobs.
        samples_per_task: episodes per task (``sample`` 0..G-1 in the records; resuming skips each one
            already written).
        token_trace: generate each turn from the exact ids of the episode so far and record them as
            ``record["token_trace"]`` (prompt ids, completion ids, env mask, logprobs; see
            :mod:`agentdistill.rollouts.tokens`). Needs a policy with a tokenizer (transformers, vLLM)
            and no SAG (the env, not the model, picks SAG's action).
        progress: show a progress bar with live metrics.
        log: called with the running metrics after every finished episode (e.g. ``wandb_run.log``).
        env_args: the constructor arguments ``envs`` were built with, recorded in the run's identity so
            that a resume with other arguments (another split, other data) is refused.
        append: add to a file that holds another run's episodes instead of refusing it.
    """
    if envs.metadata.get("autoreset_mode") != AutoresetMode.DISABLED:
        raise ValueError("run_rollouts needs a vector env with autoreset_mode=DISABLED; build it with make_rollout_envs")
    if samples_per_task < 1:
        raise ValueError(f"samples_per_task must be a positive int, got {samples_per_task!r}")
    observation_tokens = _observation_tokenizer(policy, sag) if token_trace else None
    protocol = str(envs.get_attr("protocol")[0])
    sampling = sampling or SamplingParams()
    if protocol == "paper":
        sampling = replace(sampling, stop=PAPER_STOP)  # the paper's agent stops at these, whatever was passed
    step_sampling = sag.sampling(sampling) if sag else sampling
    episodes = [(index, sample) for index in task_indices for sample in range(samples_per_task)]
    identity = run_identity(
        env_id=env_id,
        env_args=env_args,
        policy=policy.name,
        sampling=asdict(step_sampling),
        sag=sag.as_record() if sag else None,
        ftp_prefixes=ftp_prefixes,
        protocol=protocol,
    )
    with TrajectoryWriter(out, identity=identity, append=append) as writer:
        todo = [(index, sample) for index, sample in episodes if not writer.is_done(env_id, index, sample)]
        loop = _Loop(envs, policy, writer, env_id, step_sampling, sag, ftp_prefixes or {}, record_token_ids, log)
        loop.observation_tokens = observation_tokens
        bar = tqdm(total=len(todo), disable=not progress, desc=f"rollout {env_id}", unit="episode")
        try:
            loop.run(todo, bar)
        finally:
            bar.close()
    return RolloutSummary(
        episodes=loop.metrics.episodes, skipped=len(episodes) - len(todo), metrics=loop.metrics.summary(),
        without_prefix=loop.without_prefix,
    )


def _observation_tokenizer(policy: Policy, sag: SAGSettings | None) -> ObservationTokenizer:
    """What ``token_trace`` needs from the policy, checked before any episode starts."""
    if sag is not None:
        raise ValueError("token_trace cannot be combined with SAG: the env, not the model, chooses SAG's action")
    tokenizer = getattr(policy, "tokenizer", None)
    if tokenizer is None or not callable(getattr(policy, "prompt_ids", None)):
        raise ValueError(
            f"token_trace needs a policy that generates from token ids (transformers or vLLM); "
            f"{policy.name!r} has no tokenizer/prompt_ids"
        )
    return ObservationTokenizer(tokenizer)


class _Loop:
    """The state of one :func:`run_rollouts` call: which env runs which episode."""

    def __init__(
        self,
        envs: gym.vector.VectorEnv,
        policy: Policy,
        writer: TrajectoryWriter,
        env_id: str,
        sampling: SamplingParams,
        sag: SAGSettings | None,
        ftp_prefixes: Mapping[str, str],
        record_token_ids: bool,
        log: Callable[[dict[str, float]], None] | None,
    ) -> None:
        self.envs = envs
        self.policy = policy
        self.writer = writer
        self.env_id = env_id
        self.sampling = sampling
        self.sag = sag
        self.ftp_prefixes = ftp_prefixes
        self.record_token_ids = record_token_ids
        self.log = log
        self.observation_tokens: ObservationTokenizer | None = None
        self.slots: list[_Episode | None] = [None] * envs.num_envs
        self.metrics = RolloutMetrics()
        self.started = time.monotonic()
        self.without_prefix = 0
        self.bar: tqdm | None = None
        """Tasks skipped because the paper's protocol runs only tasks that have a first-thought prefix."""

    def run(self, todo: Sequence[tuple[int, int]], bar: tqdm) -> None:
        self.bar = bar
        pending = list(reversed(todo))
        for slot in range(self.envs.num_envs):
            self._start_next(slot, pending)
        while any(episode is not None for episode in self.slots):
            active = [slot for slot, episode in enumerate(self.slots) if episode is not None]
            completions = self._ask_policy(active)
            actions = [IDLE_ACTION] * self.envs.num_envs
            for slot, choices in zip(active, completions):
                actions[slot] = self._action(slot, choices)
            begun = time.monotonic()
            observations, rewards, terminated, truncated, infos = self.envs.step(tuple(actions))
            env_seconds = time.monotonic() - begun
            for slot in range(self.envs.num_envs):
                episode = self.slots[slot]
                ended = bool(terminated[slot] or truncated[slot])
                if episode is None:
                    if ended:
                        self._reset(slot, 0)  # keep a spare env steppable
                    continue
                episode.env_seconds += env_seconds / max(len(active), 1)
                info = _info_at(infos, slot)
                failed = not is_action(episode.steps[-1])
                if not failed:
                    self._record_step(episode, info, observations[slot])
                    if episode.trace is not None and not ended and self.observation_tokens is not None:
                        episode.trace.add_env(self.observation_tokens.ids(episode.last_sampled, observations[slot]))
                if ended or failed:
                    self._finish(episode, info, bool(terminated[slot]) and not failed, bool(truncated[slot]))
                    bar.update(1)
                    wall = time.monotonic() - self.started
                    bar.set_postfix(self.metrics.postfix(wall), refresh=False)
                    if self.log is not None:
                        self.log(self.metrics.summary(wall))
                    self._start_next(slot, pending)

    # --- policy -----------------------------------------------------------------------------------

    def _ask_policy(self, active: list[int]) -> list[list[Completion]]:
        """Every waiting episode's completions: action steps in one call, the paper's extra answer calls (their
        own sampling: one sample, no stop strings) in another."""
        episodes = [episode for episode in (self.slots[slot] for slot in active) if episode is not None]
        completions: list[list[Completion]] = [[] for _ in episodes]
        begun = time.monotonic()
        for final, sampling in ((False, self.sampling), (True, replace(self.sampling, n=1, stop=()))):
            chosen = [index for index, episode in enumerate(episodes) if (episode.final_request is not None) == final]
            for index, answer in zip(chosen, self._generate([episodes[index].request() for index in chosen], sampling)):
                completions[index] = answer
        elapsed = time.monotonic() - begun
        self.metrics.add_policy_time(elapsed)
        for episode in episodes:
            episode.policy_seconds += elapsed / max(len(episodes), 1)
        return completions

    def _generate(self, requests: list[PolicyRequest], sampling: SamplingParams) -> list[list[Completion]]:
        if not requests:
            return []
        try:
            return self.policy.generate(requests, sampling)
        except Exception as error:  # noqa: BLE001 - a failed batch fails its episodes, never the run
            return [[Completion.failed(f"{type(error).__name__}: {error}")] for _ in requests]

    def _action(self, slot: int, choices: list[Completion]) -> str:
        episode = self.slots[slot]
        assert episode is not None
        usable = [choice for choice in choices if choice.finish_reason != "error"]
        if not usable:
            reason = choices[0].error if choices else "the policy returned no completion"
            episode.steps.append({"policy_error": reason})
            return IDLE_ACTION
        if episode.final_request is not None:
            return self._final_answer_action(episode, usable[0])
        prefix = f"Thought: {episode.ftp_prefix}" if episode.ftp_prefix is not None and not episode.steps else ""
        texts = [prefix + choice.text for choice in usable]
        first = usable[0]
        episode.prompt_tokens += first.prompt_tokens
        episode.completion_tokens += sum(choice.completion_tokens for choice in usable)
        self.metrics.add_tokens(sum(choice.completion_tokens for choice in usable))
        step: StepRecord = {
            "prompt_tokens": first.prompt_tokens,
            "completion_tokens": [choice.completion_tokens for choice in usable],
            "finish_reason": [choice.finish_reason for choice in usable],
        }
        if episode.trace is not None:
            if first.token_ids is None:
                episode.steps.append({"policy_error": f"{self.policy.name} returned no token ids for token_trace"})
                return IDLE_ACTION
            episode.last_sampled = tuple(first.token_ids)
            episode.trace.add_sampled(first.token_ids, first.logprobs)
        if self.record_token_ids:
            step["token_ids"] = [list(choice.token_ids or ()) for choice in usable]
            step["logprobs"] = [list(choice.logprobs or ()) for choice in usable]
            step["prompt_token_ids"] = list(first.prompt_token_ids or ())
        episode.steps.append(step)
        return encode_candidates(texts, vote=self.sag.vote) if self.sag else texts[0]

    def _final_answer_action(self, episode: _Episode, completion: Completion) -> str:
        """The paper's extra answer call: its reply is the action (graded as the answer), recorded apart from the
        steps (the paper's log keeps it out of the episode's messages too)."""
        episode.prompt_tokens += completion.prompt_tokens
        episode.completion_tokens += completion.completion_tokens
        self.metrics.add_tokens(completion.completion_tokens)
        episode.final_answer_call = {
            "messages": episode.final_answer_messages(),
            "answer": completion.text,
            "prompt_tokens": completion.prompt_tokens,
            "completion_tokens": completion.completion_tokens,
            "finish_reason": completion.finish_reason,
        }
        return completion.text

    # --- env --------------------------------------------------------------------------------------

    def _start_next(self, slot: int, pending: list[tuple[int, int]]) -> None:
        while pending:
            task_index, sample = pending.pop()
            observation, info = self._reset(slot, task_index)
            ftp = prefix_for(self.ftp_prefixes, task_id=str(info.get("task_id")), question=str(info.get("question", "")))
            if ftp is None and self.ftp_prefixes and info.get("protocol") == "paper":
                self.without_prefix += 1  # the paper runs only the tasks its prefix file holds
                if self.bar is not None:
                    self.bar.update(1)
                continue
            self._open(slot, task_index, sample, observation, info, ftp)
            return
        self.slots[slot] = None
        self._reset(slot, 0)

    def _open(
        self, slot: int, task_index: int, sample: int, observation: str, info: dict[str, Any], ftp: str | None
    ) -> None:
        episode = _Episode(
            task_index=task_index,
            sample=sample,
            context=info,
            messages=[
                {"role": "system", "content": str(info["system_prompt"])},
                {"role": "user", "content": observation},
            ],
            ftp_prefix=ftp,
        )
        if self.observation_tokens is not None:
            episode.trace = TokenTrace(prompt_ids=list(self.policy.prompt_ids(episode.request())))  # type: ignore[attr-defined]
        self.slots[slot] = episode

    def _reset(self, slot: int, task_index: int) -> tuple[str, dict[str, Any]]:
        mask = np.zeros(self.envs.num_envs, dtype=np.bool_)
        mask[slot] = True
        observations, infos = self.envs.reset(options={"reset_mask": mask, "task_index": task_index})
        return str(observations[slot]), _info_at(infos, slot)

    def _record_step(self, episode: _Episode, info: dict[str, Any], observation: str) -> None:
        """Complete the step :meth:`_action` opened with what the env did."""
        if info.get("final_answer_call"):
            return  # recorded as the episode's final_answer_call, not as a step
        if "final_answer_request" in info:
            episode.final_request = info["final_answer_request"]
        step = episode.steps[-1]
        step.update(_env_step(info))
        step["observation"] = observation
        episode.messages.append({"role": "assistant", "content": str(info.get("action", ""))})
        episode.messages.append({"role": "user", "content": observation})

    def _finish(self, episode: _Episode, info: dict[str, Any], terminated: bool, truncated: bool) -> None:
        failure = next((step["policy_error"] for step in episode.steps if "policy_error" in step), None)
        score = float(info.get("score", 0.0) or 0.0) if failure is None else 0.0
        if failure is not None:
            info = {}  # the env went on with a placeholder action: nothing it reports belongs to the episode
        record: EpisodeRecord = {
            "env_id": self.env_id,
            "task_index": episode.task_index,
            "sample": episode.sample,
            "task_id": episode.context.get("task_id"),
            "question": episode.context.get("question"),
            "policy": self.policy.name,
            "sampling": asdict(self.sampling),
            "sag": self.sag.as_record() if self.sag else None,
            "ftp_prefix": episode.ftp_prefix,
            "messages": episode.messages,
            "steps": episode.steps,
            "answer": info.get("answer"),
            "gold": info.get("gold"),
            "score": score,
            "metrics": info.get("metrics"),
            "terminated": terminated,
            "truncated": truncated,
            "num_steps": len(episode.steps),
            "failed": failure,
            "final_answer_call": episode.final_answer_call,
            "isolation": episode.context.get("isolation"),
            "tokens": {"prompt": episode.prompt_tokens, "completion": episode.completion_tokens},
            "timing": {
                "seconds": time.monotonic() - episode.started,
                "policy_seconds": episode.policy_seconds,
                "env_seconds": episode.env_seconds,
            },
        }
        if episode.trace is not None:
            record["token_trace"] = episode.trace.to_dict()
        self.writer.write(record)
        self.metrics.add_episode(record)


def _env_step(info: Mapping[str, Any]) -> StepRecord:
    """What a step record keeps of the env's info: the parsed action, its errors, tool calls and SAG's vote."""
    return cast(StepRecord, {key: info[key] for key in _STEP_INFO_KEYS if key in info})


def _info_at(infos: Mapping[str, Any], slot: int) -> dict[str, Any]:
    """The info dict of one sub-env out of a vector env's batched infos (numpy values made plain)."""
    info: dict[str, Any] = {}
    for key, values in infos.items():
        if key.startswith("_"):
            continue
        mask = infos.get(f"_{key}")
        if mask is not None and not mask[slot]:
            continue
        if isinstance(values, Mapping):  # a dict-valued info is batched key by key
            nested = _info_at(values, slot)
            if nested:
                info[key] = nested
            continue
        value = values[slot]
        info[key] = value.item() if isinstance(value, np.generic) else value
    return info
