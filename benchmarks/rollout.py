"""How much the rollout loop gains by batching envs into one policy call, with a real (small) transformers model.

Every teacher collection, evaluation and RL run goes through :func:`~agentdistill.rollouts.loop.run_rollouts`,
which sends every env that waits for an action to the policy in one call. On a CPU a small model writes
many more tokens per second for a batch of conversations than for one, so a loop that runs N envs side by
side should finish episodes much faster than the simplest alternative, one episode at a time. This script
checks that, and that the loop itself (env steps, sandboxes, records) costs little next to the model.

Workload: ``AgentMath-Synthetic-v0`` (tasks are generated, the sandbox does little) with ``max_steps``
small, so every episode is a fixed number of model turns. The policy is an :class:`~agentdistill.policies.hf.HFPolicy`
over an untrained Qwen2 student built here (the ``SMALL`` preset, about 23M parameters with this
vocabulary; ``TINY`` with ``--quick``) whose tokenizer is trained on the env's own text: the system prompt, questions and scripted
expert actions, i.e. what a trajectory holds. Decoding is greedy with a fixed ``max_new_tokens`` and no
stop strings, so a turn writes ``max_new_tokens`` tokens whatever the random model says; only an
end-of-sequence token the model happens to pick can end a turn sooner, so the table reports the tokens
actually written (``tok/turn``).

Configurations, all on the same tasks:

* **sequential** - the baseline: one env made with ``gym.make``, and for each task ``reset``, then per step
  one ``policy.generate([request])`` and ``step``, one JSON line per episode.
* **run_rollouts, N envs** for N in 1, 8, 32 - the rollout loop over a synchronous vector env from
  :func:`~agentdistill.rollouts.loop.make_rollout_envs`.

Figures per configuration: episodes/s, generated tokens/s, the ratio of its episodes/s to the sequential
loop's (goal: 32 envs >= 6x), and the fraction of wall time spent outside ``policy.generate``
(1 - policy seconds / wall; goal <= 10 %). Every configuration runs ``--repeats`` times, in alternating
order (forward, then backward), so that drift in machine load falls on all alike; the table shows the
median of the runs and the range of episodes/s. Each configuration's envs are built and reset once, before
the timed runs, and serve all of them; that first reset (it starts the sandbox zygote the envs share) is
shown apart as "env start-up". Trajectories go to a temporary directory that is deleted
afterwards.

Below the table, ``policy.generate`` is timed alone on one first-turn prompt at batch 1 and batch 32 (a
whole turn, and the prompt's forward pass alone): the tokens/s gain of batch 32 over batch 1 is about the
most that 32 envs can gain over the sequential loop with this model on this machine, so it tells a loop
that wastes time from a model that batches poorly (on a CPU the prompt pass costs about the same per
token at any batch size; only decoding gains).

The script reports; it exits 0 whether or not the goals are met.

Usage::

    python benchmarks/rollout.py              # SMALL student, 32 episodes, 2 runs each (about 5 minutes on 2 idle CPUs)
    python benchmarks/rollout.py --quick      # TINY student, few episodes, one run: checks that it starts
    python benchmarks/rollout.py --episodes 64 --repeats 3 --max-new-tokens 64
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import benchlib  # the sibling benchmarks/benchlib.py (this file runs as a script)
import gymnasium as gym
import torch

import agentdistill  # noqa: F401 - registers the env ids
from agentdistill.distill.students import (
    SMALL,
    TINY,
    StudentConfig,
    build_student,
    count_parameters,
    train_tokenizer,
)
from agentdistill.envs.synthetic.math import generate_math_task
from agentdistill.policies.base import PolicyRequest, SamplingParams
from agentdistill.policies.expert import expert_action
from agentdistill.policies.hf import HFPolicy
from agentdistill.rollouts.loop import make_rollout_envs, run_rollouts

ENV_ID = "AgentMath-Synthetic-v0"
MAX_STEPS = 2
PROMPT_VARIANT = "short"
"""The system prompt a fine-tuned student is rolled out with (the env's ``"full"`` one is for teachers)."""
ENV_COUNTS = (1, 8, 32)

TOKENIZER_TASKS = 1000
VOCAB_SIZE = 8192
STUDENT_SEED = 0

SPEEDUP_GOAL = 6.0
SPEEDUP_GOAL_ENVS = 32
OUTSIDE_POLICY_GOAL = 0.10

DEFAULT_EPISODES = 32
QUICK_EPISODES = 4
DEFAULT_REPEATS = 2
QUICK_REPEATS = 1
DEFAULT_MAX_NEW_TOKENS = 48
WARM_UP_BATCH = 8
WARM_UP_TOKENS = 4

SEQUENTIAL = "sequential"


# --- the student ------------------------------------------------------------------------------------


def env_kwargs() -> dict[str, Any]:
    """The settings every env of every configuration is built with."""
    return {"max_steps": MAX_STEPS, "prompt_variant": PROMPT_VARIANT}


def system_prompt() -> str:
    env = gym.make(ENV_ID, disable_env_checker=True, **env_kwargs())
    try:
        _, info = env.reset(options={"task_index": 0})
        return str(info["system_prompt"])
    finally:
        env.close()


def tokenizer_corpus(prompt: str, tasks: int) -> list[str]:
    """The text of ``tasks`` expert trajectories: system prompt, question, then every expert action."""
    texts: list[str] = []
    for seed in range(tasks):
        task = generate_math_task(seed)
        texts += [prompt, task.question, *(expert_action(task.plan, step) for step in range(len(task.plan)))]
    return texts


@dataclass(frozen=True)
class Student:
    policy: HFPolicy
    preset: str
    parameters: int
    vocabulary: int


def build_policy(preset: str, max_batch_size: int) -> Student:
    config: StudentConfig = SMALL if preset == "SMALL" else TINY
    tokenizer = train_tokenizer(tokenizer_corpus(system_prompt(), TOKENIZER_TASKS), vocab_size=VOCAB_SIZE)
    model = build_student(tokenizer, config, seed=STUDENT_SEED)
    policy = HFPolicy(model, tokenizer=tokenizer, max_batch_size=max_batch_size, name=f"scratch-{preset}")
    return Student(policy, preset, count_parameters(model), len(tokenizer))


# --- measurement ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """What one configuration did once."""

    episodes: int
    turns: int
    completion_tokens: int
    wall_s: float
    policy_s: float

    @property
    def episodes_per_s(self) -> float:
        return self.episodes / self.wall_s

    @property
    def tokens_per_s(self) -> float:
        return self.completion_tokens / self.wall_s

    @property
    def tokens_per_turn(self) -> float:
        return self.completion_tokens / self.turns if self.turns else 0.0

    @property
    def outside_policy(self) -> float:
        return max(0.0, 1.0 - self.policy_s / self.wall_s)


@dataclass(frozen=True)
class Configuration:
    """A way of running episodes, with its envs already started.

    The envs are built and reset once (the first reset starts the sandbox zygote they share) before
    anything is timed, and then serve every round, as they
    would over a long run; ``startup_s`` is that first reset, reported on its own.
    """

    name: str
    num_envs: int | None
    env: Any
    startup_s: float


def configuration_name(num_envs: int | None) -> str:
    return SEQUENTIAL if num_envs is None else f"run_rollouts, {num_envs} env{'' if num_envs == 1 else 's'}"


def open_configuration(num_envs: int | None) -> Configuration:
    """The sequential loop's one env (``num_envs=None``) or a rollout vector env, reset once."""
    if num_envs is None:
        env: Any = gym.make(ENV_ID, disable_env_checker=True, **env_kwargs())
    else:
        env = make_rollout_envs(ENV_ID, num_envs, **env_kwargs())
    begun = time.perf_counter()
    env.reset(options={"task_index": 0})
    return Configuration(configuration_name(num_envs), num_envs, env, time.perf_counter() - begun)


@dataclass
class EpisodeTally:
    """Counters the sequential loop adds to as it goes."""

    turns: int = 0
    completion_tokens: int = 0
    policy_s: float = 0.0


def first_request(env: gym.Env[str, str], task_index: int) -> PolicyRequest:
    """The opening conversation of a task, as both loops build it (system prompt, then the task)."""
    observation, info = env.reset(options={"task_index": task_index})
    messages = ({"role": "system", "content": str(info["system_prompt"])}, {"role": "user", "content": observation})
    return PolicyRequest(messages=messages, context=info)


def sequential_episode(
    env: gym.Env[str, str], policy: HFPolicy, task_index: int, sampling: SamplingParams, tally: EpisodeTally
) -> dict[str, Any]:
    """One episode, one conversation per policy call; returns the record to write."""
    request = first_request(env, task_index)
    messages = list(request.messages)
    while True:
        begun = time.monotonic()
        [choices] = policy.generate([request], sampling)
        tally.policy_s += time.monotonic() - begun
        completion = choices[0]
        if completion.finish_reason == "error":
            raise RuntimeError(f"the policy failed in the sequential loop: {completion.error}")
        tally.turns += 1
        tally.completion_tokens += completion.completion_tokens
        observation, _, terminated, truncated, info = env.step(completion.text)
        messages += [{"role": "assistant", "content": str(info["action"])}, {"role": "user", "content": observation}]
        if terminated or truncated:
            return {"env_id": ENV_ID, "task_index": task_index, "messages": messages, "terminated": terminated}
        request = PolicyRequest(messages=tuple(messages), context=request.context)


def run_sequential(
    env: gym.Env[str, str], policy: HFPolicy, tasks: Sequence[int], sampling: SamplingParams, out: Path
) -> Run:
    tally = EpisodeTally()
    begun = time.perf_counter()
    with out.open("a", encoding="utf-8") as handle:
        for task_index in tasks:
            record = sequential_episode(env, policy, task_index, sampling, tally)
            handle.write(json.dumps(record) + "\n")
            handle.flush()
    wall = time.perf_counter() - begun
    return Run(len(tasks), tally.turns, tally.completion_tokens, wall, tally.policy_s)


def run_batched(
    envs: gym.vector.VectorEnv, policy: HFPolicy, tasks: Sequence[int], sampling: SamplingParams, out: Path
) -> Run:
    begun = time.perf_counter()
    summary = run_rollouts(
        envs, policy, env_id=ENV_ID, task_indices=tasks, out=str(out), sampling=sampling, progress=False
    )
    wall = time.perf_counter() - begun
    metrics = summary.metrics
    if summary.episodes != len(tasks) or metrics["failed_episodes"]:
        raise RuntimeError(f"run_rollouts with {envs.num_envs} envs did not run every task cleanly: {dict(metrics)}")
    turns = round(metrics["mean_steps"] * summary.episodes)
    return Run(summary.episodes, turns, int(metrics["completion_tokens"]), wall, metrics["policy_seconds"])


def measure_once(
    configuration: Configuration, policy: HFPolicy, tasks: Sequence[int], sampling: SamplingParams, out: Path
) -> Run:
    """One timed run of one configuration; ``out`` must be a new file (run_rollouts skips tasks it holds)."""
    if configuration.num_envs is None:
        return run_sequential(configuration.env, policy, tasks, sampling, out)
    return run_batched(configuration.env, policy, tasks, sampling, out)


def warm_up(policy: HFPolicy, request: PolicyRequest, sampling: SamplingParams) -> None:
    """Untimed: a fresh model's first calls are slow (lazy initialisation, allocator growth)."""
    policy.generate([request], sampling)
    policy.generate([request] * WARM_UP_BATCH, SamplingParams(max_new_tokens=WARM_UP_TOKENS, stop=()))


@dataclass(frozen=True)
class PolicyAlone:
    """``policy.generate`` on its own, ``batch`` copies of one first-turn prompt: a full turn, and the
    prompt's forward pass alone (``max_new_tokens=1``)."""

    batch: int
    turn_s: float
    prefill_s: float


def time_policy_alone(policy: HFPolicy, request: PolicyRequest, sampling: SamplingParams, batch: int) -> PolicyAlone:
    requests = [request] * batch
    prefill_only = SamplingParams(max_new_tokens=1, stop=())
    begun = time.perf_counter()
    policy.generate(requests, prefill_only)
    prefill = time.perf_counter() - begun
    begun = time.perf_counter()
    policy.generate(requests, sampling)
    return PolicyAlone(batch, time.perf_counter() - begun, prefill)


@dataclass(frozen=True)
class Measurements:
    runs: dict[str, list[Run]]
    startup_s: dict[str, float]
    prompt_tokens: int
    """Tokens of task 0's first-turn prompt (system prompt and task), for reading prefill against decode."""
    alone: tuple[PolicyAlone, PolicyAlone]
    """The policy by itself at batch 1 and at the largest env count: the most batching can gain here."""


def measure_all(policy: HFPolicy, episodes: int, repeats: int, sampling: SamplingParams) -> Measurements:
    """Every configuration ``repeats`` times, alternating the order from one round to the next."""
    tasks = list(range(episodes))
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="agentdistill-rollout-bench-") as scratch:
        configurations = [open_configuration(count) for count in (None, *ENV_COUNTS)]
        for configuration in configurations:
            stack.callback(configuration.env.close)
        request = first_request(configurations[0].env, 0)
        warm_up(policy, request, sampling)
        alone = (
            time_policy_alone(policy, request, sampling, 1),
            time_policy_alone(policy, request, sampling, max(ENV_COUNTS)),
        )
        runs: dict[str, list[Run]] = {configuration.name: [] for configuration in configurations}
        for round_index in range(repeats):
            order = configurations if round_index % 2 == 0 else list(reversed(configurations))
            for configuration in order:
                out = Path(scratch) / f"round{round_index}-{configuration.num_envs or 0}.jsonl"
                runs[configuration.name].append(measure_once(configuration, policy, tasks, sampling, out))
    startup = {configuration.name: configuration.startup_s for configuration in configurations}
    return Measurements(runs, startup, len(policy.prompt_ids(request)), alone)


# --- report ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Figures:
    """The median of a configuration's runs (and the spread of episodes/s)."""

    name: str
    runs: int
    episodes: int
    turns: int
    tokens_per_turn: float
    wall_s: float
    episodes_per_s: float
    episodes_per_s_low: float
    episodes_per_s_high: float
    tokens_per_s: float
    outside_policy: float
    startup_s: float


def median_of(runs: Sequence[Run], value: Callable[[Run], float]) -> float:
    return statistics.median(value(run) for run in runs)


def figures(name: str, runs: Sequence[Run], startup_s: float) -> Figures:
    rates = [run.episodes_per_s for run in runs]
    return Figures(
        name=name,
        runs=len(runs),
        episodes=runs[0].episodes,
        turns=runs[0].turns,
        tokens_per_turn=median_of(runs, lambda run: run.tokens_per_turn),
        wall_s=median_of(runs, lambda run: run.wall_s),
        episodes_per_s=statistics.median(rates),
        episodes_per_s_low=min(rates),
        episodes_per_s_high=max(rates),
        tokens_per_s=median_of(runs, lambda run: run.tokens_per_s),
        outside_policy=median_of(runs, lambda run: run.outside_policy),
        startup_s=startup_s,
    )


def verdict(passed: bool | None) -> str:
    return "-" if passed is None else ("PASS" if passed else "MISS")


def table_row(row: Figures, baseline: Figures) -> tuple[str, ...]:
    speedup = row.episodes_per_s / baseline.episodes_per_s
    token_gain = row.tokens_per_s / baseline.tokens_per_s
    goal_applies = row.name == configuration_name(SPEEDUP_GOAL_ENVS)
    return (
        row.name,
        str(row.episodes),
        str(row.turns),
        f"{row.tokens_per_turn:.1f}",
        f"{row.wall_s:.1f} s",
        f"{row.episodes_per_s:.2f}",
        f"{row.episodes_per_s_low:.2f}-{row.episodes_per_s_high:.2f}",
        f"{row.tokens_per_s:,.0f}",
        f"{speedup:.2f}x",
        f"{token_gain:.2f}x",
        f">= {SPEEDUP_GOAL:g}x" if goal_applies else "-",
        verdict(speedup >= SPEEDUP_GOAL if goal_applies else None),
        f"{row.outside_policy:.1%}",
        f"<= {OUTSIDE_POLICY_GOAL:.0%}",
        verdict(row.outside_policy <= OUTSIDE_POLICY_GOAL),
        f"{row.startup_s:.2f} s",
    )


TABLE_HEADER = (
    "configuration",
    "episodes",
    "turns",
    "tok/turn",
    "wall",
    "episodes/s",
    "ep/s range",
    "tokens/s",
    "ep/s vs seq",
    "tok/s vs seq",
    "goal",
    "result",
    "outside policy",
    "goal",
    "result",
    "env start-up",
)
LEFT_ALIGNED = {0, 10, 11, 13, 14}


def table_lines(rows: Sequence[Figures]) -> list[str]:
    baseline = next(row for row in rows if row.name == SEQUENTIAL)
    cells = [TABLE_HEADER, *(table_row(row, baseline) for row in rows)]
    right_aligned = set(range(len(TABLE_HEADER))) - set(LEFT_ALIGNED)
    return benchlib.table_lines(TABLE_HEADER, cells[1:], right_aligned=right_aligned)


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class Report:
    student: Student
    sampling: SamplingParams
    repeats: int
    prompt_tokens: int
    alone: tuple[PolicyAlone, PolicyAlone]
    rows: tuple[Figures, ...]
    load_before: str


def policy_alone_line(alone: tuple[PolicyAlone, PolicyAlone]) -> str:
    single, batched = alone
    gain = batched.batch * single.turn_s / batched.turn_s
    decode_gain = batched.batch * (single.turn_s - single.prefill_s) / max(batched.turn_s - batched.prefill_s, 1e-9)
    return (
        f"policy.generate alone, one first-turn prompt: batch {single.batch} {single.turn_s:.2f} s a turn "
        f"(prompt pass {single.prefill_s:.2f} s), batch {batched.batch} {batched.turn_s:.2f} s "
        f"(prompt pass {batched.prefill_s:.2f} s): {gain:.2f}x the tokens/s of batch {single.batch} "
        f"({decode_gain:.1f}x for the decoding after the prompt pass), "
        f"about the most {batched.batch} envs can gain over the sequential loop with this model here."
    )


def print_report(report: Report) -> None:
    student = report.student
    print(report.load_before)
    print(f"load average after the runs: {', '.join(f'{value:.2f}' for value in os.getloadavg())}")
    print(
        f"policy: untrained Qwen2 student, {student.preset} preset, {student.parameters / 1e6:.1f}M parameters, "
        f"vocabulary {student.vocabulary}, HFPolicy on CPU (max_batch_size {student.policy.max_batch_size}); "
        f"greedy, max_new_tokens {report.sampling.max_new_tokens}, no stop strings; "
        f"first-turn prompt {report.prompt_tokens} tokens"
    )
    print(
        f"env: {ENV_ID}, max_steps {MAX_STEPS}, prompt_variant {PROMPT_VARIANT!r}; sync vector env for run_rollouts; "
        f"each configuration run {report.repeats}x in alternating order, figures are medians; "
        f"torch threads {torch.get_num_threads()} (the usable CPUs)"
    )
    for line in table_lines(report.rows):
        print(line)
    print(
        "tok/turn: generated tokens per model turn (below max_new_tokens only where the model wrote an "
        "end-of-sequence token). vs seq: this configuration / the sequential loop."
    )
    print("outside policy: 1 - (seconds inside policy.generate) / wall: env steps, resets, sandboxes, records.")
    print(policy_alone_line(report.alone))
    print(
        "env start-up: the envs' first reset (their sandboxes start the zygote they share), done once "
        "before the timed runs and not counted in them."
    )
    if report.rows[0].episodes < max(ENV_COUNTS):
        print(
            f"note: {report.rows[0].episodes} episodes < {max(ENV_COUNTS)} envs: spare envs idle (and are stepped "
            "and reset) in the larger configurations, so their figures say little."
        )


# --- main -------------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(
            "Time the rollout loop with 1, 8 and 32 envs against a one-episode-at-a-time loop, with a "
            "locally built ~25M-parameter transformers student on CPU. Prints one table; always exits 0 "
            "unless the benchmark itself breaks."
        )
    )
    parser.add_argument(
        "--episodes",
        type=int,
        default=None,
        metavar="N",
        help=f"episodes per run (default {DEFAULT_EPISODES}, or {QUICK_EPISODES} with --quick)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        metavar="N",
        help=f"runs per configuration (default {DEFAULT_REPEATS}, or {QUICK_REPEATS} with --quick)",
    )
    parser.add_argument(
        "--max-new-tokens",
        type=int,
        default=DEFAULT_MAX_NEW_TOKENS,
        metavar="N",
        help=f"tokens generated per turn (default {DEFAULT_MAX_NEW_TOKENS})",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: TINY student, few episodes, one run, to check the script starts",
    )
    args = parser.parse_args(argv)
    for option in ("episodes", "repeats", "max_new_tokens"):
        value = getattr(args, option)
        if value is not None and value < 1:
            parser.error(f"--{option.replace('_', '-')} must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(usable_cpus())
    load_before = benchlib.machine_line(f"({sys.executable}); torch {torch.__version__}")
    episodes = args.episodes or (QUICK_EPISODES if args.quick else DEFAULT_EPISODES)
    repeats = args.repeats or (QUICK_REPEATS if args.quick else DEFAULT_REPEATS)
    sampling = SamplingParams(max_new_tokens=args.max_new_tokens, stop=())
    student = build_policy("TINY" if args.quick else "SMALL", max_batch_size=max(ENV_COUNTS))
    try:
        measured = measure_all(student.policy, episodes, repeats, sampling)
    finally:
        student.policy.close()
    rows = tuple(figures(name, runs, measured.startup_s[name]) for name, runs in measured.runs.items())
    print_report(Report(student, sampling, repeats, measured.prompt_tokens, measured.alone, rows, load_before))
    return 0


if __name__ == "__main__":
    sys.exit(main())
