"""A soak run: many envs for many steps, then checks that nothing grew, slowed down or was left behind.

Users run rollouts for days; a per-episode leak of a few kilobytes, a sandbox process that is not
reaped or a temporary directory that is not removed only shows after thousands of episodes. This
script runs the scripted expert on both synthetic envs at once: ``--num-envs`` envs in all (64 by
default), half ``AgentQA-Synthetic-v0`` and half ``AgentMath-Synthetic-v0``, each half an async vector
env from :func:`~agentdistill.rollouts.loop.make_rollout_envs` driven by its own
:func:`~agentdistill.rollouts.loop.run_rollouts` in a thread, with the local sandbox, until
``--steps`` env steps are done in all (2,000 by default): both halves run side by side the whole time and
stop together at the first finished episodes past that budget. The synthetic QA env searches each task's
own small knowledge base (a BM25 index built per task), so there is no shared retriever to point the
envs at; retrieval servers are exercised by ``benchmarks/retrieval.py`` and the fault tests.

It reports:

* **start-up** - building the envs and their first reset (every env starts its own sandbox zygote);
* **memory** - RSS and PSS summed over this process and all its children, right after start-up and
  at the end of the run (before closing), with the peak, in all and by role (this process, the vector
  envs' worker processes, the sandbox zygotes and episode workers); RSS counts pages a forked worker
  shares with its zygote once per process, PSS splits them (it sums to what the machine really spends);
* **throughput** - env steps/s in ten equal time windows (steady if they agree);
* **after close** - processes below this one still alive or zombie, sandbox processes seen during the
  run that still exist anywhere (reparented orphans), and sandbox temporary directories left in
  ``$TMPDIR`` (a private one for this run, so other programs' files do not count).

Every recorded episode must be solved (the expert never fails), so a wrong observation shows up as
an error. Trajectories go to a temporary directory that is deleted afterwards. Exits 0 when nothing
leaked, 1 otherwise.

Usage::

    python benchmarks/soak.py                 # 64 envs, 2,000 steps
    python benchmarks/soak.py --quick         # 4 envs, 60 steps: checks that it runs
    python benchmarks/soak.py --num-envs 32 --steps 10000
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import benchlib  # the sibling benchmarks/benchlib.py (this file runs as a script)
import gymnasium as gym
import psutil

import agentdistill  # noqa: F401 - registers the env ids
from agentdistill.policies.expert import ExpertPolicy
from agentdistill.rollouts.loop import make_rollout_envs, run_rollouts
from agentdistill.rollouts.records import read_trajectories

ENV_IDS = ("AgentQA-Synthetic-v0", "AgentMath-Synthetic-v0")
DEFAULT_ENVS = 64
DEFAULT_STEPS = 2000
QUICK_ENVS = 4
QUICK_STEPS = 60
WINDOWS = 10
SAMPLE_S = 1.0
PSS_EVERY = 5
"""PSS needs every process's smaps read in full: one sample in this many."""
SANDBOX_DIR_PREFIX = "agentdistill-sandbox-"
GONE_WAIT_S = 15.0


# --- process bookkeeping ----------------------------------------------------------------------------


ROLES = ("this process", "env processes", "sandbox processes")


@dataclass(frozen=True)
class Usage:
    rss: int = 0
    pss: int | None = None
    processes: int = 0

    def plus(self, rss: int, pss: int | None) -> Usage:
        return Usage(self.rss + rss, None if pss is None else (self.pss or 0) + pss, self.processes + 1)


@dataclass(frozen=True)
class Memory:
    """Usage in all and by role."""

    total: Usage
    roles: dict[str, Usage]


def role_of(process: psutil.Process) -> str:
    if process.pid == os.getpid():
        return ROLES[0]
    return ROLES[2] if any("zygote.py" in part for part in process.cmdline()) else ROLES[1]


def tree_memory(with_pss: bool) -> Memory:
    """RSS (and PSS) summed over this process and every process below it, in all and by role."""
    total = Usage(pss=0 if with_pss else None)
    roles = {role: Usage(pss=0 if with_pss else None) for role in ROLES}
    for process in [psutil.Process(), *psutil.Process().children(recursive=True)]:
        try:
            info = process.memory_full_info() if with_pss else process.memory_info()
            role = role_of(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        pss = getattr(info, "pss", 0) if with_pss else None
        total = total.plus(info.rss, pss)
        roles[role] = roles[role].plus(info.rss, pss)
    return Memory(total, roles)


def identity(process: psutil.Process) -> tuple[int, float] | None:
    """(pid, start time): survives pid reuse, unlike the pid alone."""
    try:
        return process.pid, process.create_time()
    except psutil.NoSuchProcess:
        return None


def status_of(process: psutil.Process) -> str | None:
    """The process's status, or ``None`` once it is gone (a child may exit while we look)."""
    try:
        return str(process.status())
    except psutil.NoSuchProcess:
        return None


def still_alive(identities: set[tuple[int, float]]) -> list[psutil.Process]:
    alive = []
    for pid, created in identities:
        try:
            process = psutil.Process(pid)
            if process.create_time() == created and process.status() != psutil.STATUS_ZOMBIE:
                alive.append(process)
        except psutil.NoSuchProcess:
            continue
    return alive


# --- the run ------------------------------------------------------------------------------------------


class BudgetSpent(Exception):
    """Raised from a rollout's log callback to end it: the soak has taken its steps."""


@dataclass
class Progress:
    """Env steps finished so far, over every thread."""

    budget: int
    steps: int = 0
    episodes: int = 0
    marks: list[tuple[float, int]] = field(default_factory=list)
    """(time.monotonic(), steps so far) at every finished episode."""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def logger(self) -> Callable[[dict[str, float]], None]:
        """A ``run_rollouts`` log callback adding its run's new steps (it reports running totals); it
        ends that run (raising :class:`BudgetSpent`) once every thread together has taken the budget."""
        seen = {"steps": 0, "episodes": 0}

        def log(metrics: dict[str, float]) -> None:
            episodes = int(metrics["episodes"])
            steps = round(metrics["mean_steps"] * episodes)
            with self.lock:
                self.steps += steps - seen["steps"]
                self.episodes += episodes - seen["episodes"]
                self.marks.append((time.monotonic(), self.steps))
                spent = self.steps >= self.budget
            seen.update(steps=steps, episodes=episodes)
            if spent:
                raise BudgetSpent


        return log


@dataclass(frozen=True)
class Sample:
    seconds: float
    steps: int
    memory: Memory


class Sampler(threading.Thread):
    """Every SAMPLE_S: time, steps done and memory; also remembers every sandbox process it saw."""

    def __init__(self, progress: Progress, started: float) -> None:
        super().__init__(name="soak-sampler", daemon=True)
        self.progress, self.started = progress, started
        self.samples: list[Sample] = []
        self.seen: set[tuple[int, float]] = set()
        self.stop = threading.Event()

    def run(self) -> None:
        index = 0
        while not self.stop.wait(SAMPLE_S):
            self.take(with_pss=index % PSS_EVERY == 0)
            index += 1

    def take(self, with_pss: bool) -> Sample:
        for process in psutil.Process().children(recursive=True):
            found = identity(process)
            if found is not None:
                self.seen.add(found)
        with self.progress.lock:
            steps = self.progress.steps
        sample = Sample(time.monotonic() - self.started, steps, tree_memory(with_pss))
        self.samples.append(sample)
        return sample


def tasks_for_steps(env_id: str, steps: int) -> int:
    """How many tasks the expert needs to take ``steps`` steps (an episode takes its plan's length)."""
    env = gym.make(env_id, disable_env_checker=True)
    try:
        total = count = 0
        while total < steps:
            _, info = env.reset(options={"task_index": count})
            total += len(info["plan"])
            count += 1
        return count
    finally:
        env.close()


@dataclass
class Half:
    """One env id's vector env and its rollout thread."""

    env_id: str
    num_envs: int
    tasks: int
    envs: Any = None
    startup_s: float = 0.0
    error: BaseException | None = None
    episodes: int = 0


def run_half(half: Half, out_dir: Path, progress: Progress) -> None:
    out = out_dir / f"{half.env_id}.jsonl"
    try:
        try:
            run_rollouts(
                half.envs, ExpertPolicy(), env_id=half.env_id, task_indices=range(half.tasks), out=str(out),
                progress=False, log=progress.logger(),
            )
        except BudgetSpent:
            pass
        records = list(read_trajectories(out))
        half.episodes = len(records)
        unsolved = [record["task_index"] for record in records if record["score"] != 1.0 or record["failed"]]
        if unsolved:
            raise RuntimeError(f"{half.env_id}: the expert did not solve tasks {unsolved[:10]}")
    except BaseException as error:  # noqa: BLE001 - reported by the main thread
        half.error = error


@dataclass(frozen=True)
class Leaks:
    children: list[str]
    zombies: list[str]
    orphans: list[str]
    temp_dirs: list[str]
    seen_processes: int

    @property
    def any(self) -> bool:
        return bool(self.children or self.zombies or self.orphans or self.temp_dirs)


def describe(process: psutil.Process) -> str:
    try:
        return f"{process.pid} {' '.join(process.cmdline())[:80]} ({process.status()})"
    except psutil.NoSuchProcess:
        return f"{process.pid} (gone)"


def count_leaks(seen: set[tuple[int, float]], scratch: Path) -> Leaks:
    """What outlived ``close``, after giving killed processes GONE_WAIT_S to be torn down."""
    deadline = time.monotonic() + GONE_WAIT_S
    while True:
        children = psutil.Process().children(recursive=True)
        alive = [process for process in children if status_of(process) not in (None, psutil.STATUS_ZOMBIE)]
        orphans = still_alive(seen)
        if (not alive and not orphans) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    zombies = [process for process in psutil.Process().children(recursive=True)
               if status_of(process) == psutil.STATUS_ZOMBIE]
    temp_dirs = sorted(entry.name for entry in scratch.iterdir() if entry.name.startswith(SANDBOX_DIR_PREFIX))
    return Leaks(
        children=[describe(process) for process in alive],
        zombies=[describe(process) for process in zombies],
        orphans=[describe(process) for process in orphans],
        temp_dirs=temp_dirs,
        seen_processes=len(seen),
    )


@dataclass(frozen=True)
class Result:
    halves: list[Half]
    start: Sample
    end: Sample
    samples: list[Sample]
    marks: list[tuple[float, int]]
    """(seconds since the start, steps so far) at every finished episode."""
    steps: int
    episodes: int
    run_s: float
    leaks: Leaks


def soak(num_envs: int, steps: int, scratch: Path) -> Result:
    counts = [num_envs // len(ENV_IDS) + (1 if index < num_envs % len(ENV_IDS) else 0) for index in range(len(ENV_IDS))]
    # Enough tasks for either half to take the whole budget alone: the budget, not the task list, ends the run.
    halves = [Half(env_id, count, tasks_for_steps(env_id, steps)) for env_id, count in zip(ENV_IDS, counts) if count]
    progress = Progress(budget=steps)
    with tempfile.TemporaryDirectory(prefix="soak-out-", dir=scratch) as out:
        try:
            for half in halves:
                begun = time.monotonic()
                half.envs = make_rollout_envs(half.env_id, half.num_envs, vectorization_mode="async")
                half.envs.reset(options={"task_index": 0})  # every env starts its sandbox zygote here
                half.startup_s = time.monotonic() - begun
            started = time.monotonic()
            sampler = Sampler(progress, started)
            start = sampler.take(with_pss=True)
            threads = [threading.Thread(target=run_half, args=(half, Path(out), progress), name=half.env_id) for half in halves]
            sampler.start()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            sampler.stop.set()
            sampler.join()
            run_s = time.monotonic() - started
            end = sampler.take(with_pss=True)
        finally:
            for half in halves:
                if half.envs is not None:
                    half.envs.close()
    for half in halves:
        if half.error is not None:
            raise RuntimeError(f"the {half.env_id} rollout failed") from half.error
    leaks = count_leaks(sampler.seen, scratch)
    episodes = sum(half.episodes for half in halves)
    marks = [(moment - started, done) for moment, done in progress.marks]
    return Result(halves, start, end, sampler.samples, marks, progress.steps, episodes, run_s, leaks)


# --- report -------------------------------------------------------------------------------------------


def mib(value: int | None) -> str:
    return "-" if value is None else f"{value / 1024**2:,.0f}"


def window_rates(marks: Sequence[tuple[float, int]], run_s: float, total_steps: int) -> list[tuple[float, float, float]]:
    """(from s, to s, steps/s) over WINDOWS equal time windows, from the step count at each finished episode."""
    points = sorted([(0.0, 0), *marks, (run_s, total_steps)])

    def steps_at(moment: float) -> float:
        for (t0, s0), (t1, s1) in zip(points, points[1:]):
            if t0 <= moment <= t1:
                return s0 + (s1 - s0) * ((moment - t0) / (t1 - t0) if t1 > t0 else 1.0)
        return float(points[-1][1])

    width = run_s / WINDOWS
    return [
        (index * width, (index + 1) * width, (steps_at((index + 1) * width) - steps_at(index * width)) / width)
        for index in range(WINDOWS)
    ]


MEMORY_HEADER = (
    "memory (MiB)", "RSS start", "mid", "end", "end-start", "PSS start", "mid", "end", "end-start", "processes"
)


def memory_rows(result: Result) -> list[tuple[str, ...]]:
    """RSS and PSS after start-up, half-way and at the end (a leak grows in both halves; pages of forked
    processes turning private, or a warming cache, level off), in all and by role, and the peak in all."""
    middle = min(
        (sample for sample in result.samples if sample.memory.total.pss is not None),
        key=lambda sample: abs(sample.seconds - result.run_s / 2),
        default=result.end,
    )

    def row(name: str, start: Usage, mid: Usage, end: Usage) -> tuple[str, ...]:
        pss_change = None if start.pss is None or end.pss is None else end.pss - start.pss
        return (
            name, mib(start.rss), mib(mid.rss), mib(end.rss), mib(end.rss - start.rss),
            mib(start.pss), mib(mid.pss), mib(end.pss), mib(pss_change), f"{start.processes} -> {end.processes}",
        )

    start, mid, end = result.start.memory, middle.memory, result.end.memory
    rows = [row("all", start.total, mid.total, end.total)]
    rows += [row(role, start.roles[role], mid.roles[role], end.roles[role]) for role in ROLES]
    everything = [*result.samples, result.start, result.end]
    peak_rss = max(sample.memory.total.rss for sample in everything)
    peak_pss = max(sample.memory.total.pss or 0 for sample in everything)
    rows.append(("peak, all", "", "", mib(peak_rss), "", "", "", mib(peak_pss), "", ""))
    return rows


def print_report(result: Result, num_envs: int, load_before: str) -> None:
    print(load_before)
    print(f"load average at the end: {', '.join(f'{value:.2f}' for value in os.getloadavg())}")
    for half in result.halves:
        print(
            f"{half.env_id}: {half.num_envs} envs (async), {half.episodes} episodes; start-up (make + first reset, "
            f"one sandbox zygote per env) {half.startup_s:.1f} s = {half.startup_s / half.num_envs:.2f} s/env"
        )
    print(
        f"run: {result.steps:,} env steps, {result.episodes:,} episodes in {result.run_s:.1f} s = "
        f"{result.steps / result.run_s:,.1f} steps/s, {num_envs} envs"
    )
    for line in benchlib.table_lines(MEMORY_HEADER, memory_rows(result), set(range(1, len(MEMORY_HEADER)))):
        print(line)
    rates = window_rates(result.marks, result.run_s, result.steps)
    values = [rate for _, _, rate in rates]
    steady = values[1:]  # steps count when their episode ends: the first window, before any ended, reads low
    spread = statistics.pstdev(steady) / statistics.mean(steady) if statistics.mean(steady) else 0.0
    rows = [(f"{start:6.1f}-{stop:6.1f} s", f"{rate:,.1f}") for start, stop, rate in rates]
    for line in benchlib.table_lines(("time window", "steps/s"), rows, {1}):
        print(line)
    first, last = statistics.mean(steady[: len(steady) // 2]), statistics.mean(steady[len(steady) // 2 :])
    print(
        f"throughput after the first window (steps count when their episode ends, so it reads low): "
        f"{min(steady):,.1f}-{max(steady):,.1f} steps/s, coefficient of variation {spread:.0%}; later half / "
        f"earlier half {last / first if first else float('nan'):.2f}x"
    )
    leaks = result.leaks
    print(
        f"after close: {len(leaks.children)} live child processes, {len(leaks.zombies)} zombies, "
        f"{len(leaks.orphans)} of the {leaks.seen_processes} processes seen during the run still running elsewhere, "
        f"{len(leaks.temp_dirs)} sandbox temp dirs left in $TMPDIR"
    )
    for kind, items in (("child", leaks.children), ("zombie", leaks.zombies), ("orphan", leaks.orphans),
                        ("temp dir", leaks.temp_dirs)):
        for item in items[:10]:
            print(f"  leaked {kind}: {item}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Run the expert on both synthetic envs with many async envs for many steps; report memory, "
        "throughput over time, and processes or temp dirs left after close. Exits 1 if anything leaked."
    )
    parser.add_argument("--num-envs", type=int, default=None, help=f"envs in all, split between {', '.join(ENV_IDS)} "
                        f"(default {DEFAULT_ENVS}, {QUICK_ENVS} with --quick)")
    parser.add_argument("--steps", type=int, default=None, help=f"env steps in all (default {DEFAULT_STEPS}, "
                        f"{QUICK_STEPS} with --quick)")
    parser.add_argument("--quick", action="store_true", help="a few envs and steps, to check that the script runs")
    args = parser.parse_args(argv)
    for name in ("num_envs", "steps"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    num_envs = args.num_envs or (QUICK_ENVS if args.quick else DEFAULT_ENVS)
    steps = args.steps or (QUICK_STEPS if args.quick else DEFAULT_STEPS)
    load_before = benchlib.machine_line()
    with tempfile.TemporaryDirectory(prefix="agentdistill-soak-") as scratch:
        # A private $TMPDIR for every process of the run, so that leaked sandbox directories can be counted.
        os.environ["TMPDIR"] = scratch
        tempfile.tempdir = None
        result = soak(num_envs, steps, Path(scratch))
        print_report(result, num_envs, load_before)
    return 1 if result.leaks.any else 0


if __name__ == "__main__":
    sys.exit(main())
