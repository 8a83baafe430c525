"""How fast the code sandbox is, measured against the goals in our issue tracker.

An agent step is one model-written cell, so the sandbox sits on the inner loop of every rollout: a cell
that costs milliseconds of overhead costs hours over a training run. This script times three things
through the public :class:`~agentdistill.envs.tools.sandbox.LocalSandbox` API:

1. **Trivial cell, warm episode** - ``x = 1`` on a worker that is already running: the fixed cost of a
   step (pipe round trip, JSON framing, parse/compile, output capture). Goal: median <= 0.5 ms.
2. **Fresh episode** - ``reset()`` followed by the first trivial cell, i.e. the cost of new episode
   state (stopping the old worker, starting a new one). Goal: median <= 5 ms.
3. **CPU-heavy cell** - a 200,000-iteration pure-Python loop, through the sandbox and natively with
   ``exec`` in this process, sampled alternately so both see the same machine load. Goal: the sandbox
   takes at most 1.3x the native time (no interpretation overhead on real work).

Baselines, timed in the same run: ``python -c CODE`` (a fresh interpreter per call, the simplest way to
get a clean state each time) and, when it is installed, smolagents' ``LocalPythonExecutor`` (an AST
interpreter in this process). Every ratio in the table is baseline / ours, so above 1 means we are
faster. The script reports; it exits 0 whether or not the goals are met.

Usage::

    python benchmarks/sandbox.py              # full run (about 10 s; about 20 s with smolagents installed)
    python benchmarks/sandbox.py --quick      # smoke run with a few samples
    python benchmarks/sandbox.py --repeats 60
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import benchlib  # the sibling benchmarks/benchlib.py (this file runs as a script)

from agentdistill.envs.tools.sandbox import ExecutionResult, LocalSandbox, SandboxLimits

TRIVIAL_CELL = "x = 1"
HEAVY_CELL = "s = 0\nfor i in range(200_000):\n    s += i * i"
ALLOWED_IMPORTS = ("collections", "itertools", "json", "math", "re", "statistics")

TRIVIAL_GOAL_MS = 0.5
FRESH_GOAL_MS = 5.0
HEAVY_GOAL_RATIO = 1.3

TRIVIAL_SAMPLES_PER_REPEAT = 20
"""Trivial cells are cheap, so they get this many samples per ``--repeats`` (a steadier p90)."""
SMOLAGENTS_HEAVY_MAX_SAMPLES = 5
"""smolagents interprets the heavy loop in about two seconds a run, so its sample count is capped."""
DEFAULT_REPEATS = 30
QUICK_REPEATS = 3


# --- measurement ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """How many warm-up and timed calls each measurement gets."""

    repeats: int
    warmups: int

    @property
    def trivial_samples(self) -> int:
        return self.repeats * TRIVIAL_SAMPLES_PER_REPEAT

    @property
    def smolagents_heavy_samples(self) -> int:
        return min(self.repeats, SMOLAGENTS_HEAVY_MAX_SAMPLES)


@dataclass(frozen=True)
class OurTimings:
    """The sandbox's figures, and the native reference for the heavy cell."""

    isolation: str
    trivial: benchlib.Timing
    fresh: benchlib.Timing
    heavy: benchlib.Timing
    native: benchlib.Timing


def time_calls(call: Callable[[], object], samples: int, warmups: int) -> benchlib.Timing:
    """Call ``call`` ``warmups`` times untimed, then ``samples`` times timed."""
    for _ in range(warmups):
        call()
    return benchlib.Timing(tuple(benchlib.elapsed_ms(call) for _ in range(samples)))


def checked(result: ExecutionResult) -> ExecutionResult:
    """Fail the benchmark loudly if a cell did not run cleanly: a timing of an error means nothing."""
    if result.error is not None or result.timed_out or result.state_lost:
        raise RuntimeError(f"benchmark cell failed in the sandbox: {result.error}")
    return result


def new_sandbox() -> LocalSandbox:
    return LocalSandbox(tools={}, allowed_imports=ALLOWED_IMPORTS, limits=SandboxLimits())


def run_natively(code: str) -> None:
    """The reference for the heavy cell: plain ``exec`` in this process, module-level globals."""
    exec(code, {"__name__": "__main__"})  # noqa: S102 - our own constant benchmark code


def time_trivial_warm(sandbox: LocalSandbox, plan: Plan) -> benchlib.Timing:
    checked(sandbox.run(TRIVIAL_CELL))  # start the worker outside the timed region
    return time_calls(lambda: checked(sandbox.run(TRIVIAL_CELL)), plan.trivial_samples, plan.warmups * 10)


def time_fresh_episode(sandbox: LocalSandbox, plan: Plan) -> benchlib.Timing:
    def fresh_episode() -> None:
        sandbox.reset()
        checked(sandbox.run(TRIVIAL_CELL))

    return time_calls(fresh_episode, plan.repeats, plan.warmups)


def time_heavy_against_native(sandbox: LocalSandbox, plan: Plan) -> tuple[benchlib.Timing, benchlib.Timing]:
    """Sandbox and native samples of the heavy cell, alternating which goes first, so drift in machine
    load (other jobs, frequency scaling) falls on both alike."""
    checked(sandbox.run(TRIVIAL_CELL))
    for _ in range(plan.warmups):
        checked(sandbox.run(HEAVY_CELL))
        run_natively(HEAVY_CELL)
    ours: list[float] = []
    native: list[float] = []
    for index in range(plan.repeats):
        pair = [(ours, lambda: checked(sandbox.run(HEAVY_CELL))), (native, lambda: run_natively(HEAVY_CELL))]
        for samples, call in pair if index % 2 == 0 else reversed(pair):
            samples.append(benchlib.elapsed_ms(call))
    return benchlib.Timing(tuple(ours)), benchlib.Timing(tuple(native))


def run_python_c(code: str) -> None:
    subprocess.run(  # our interpreter and our constant code
        [sys.executable, "-c", code],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        check=True,
    )


# --- smolagents baseline (optional) -----------------------------------------------------------------


def smolagents_executor_class() -> type | None:
    """smolagents' ``LocalPythonExecutor`` class, or ``None`` when smolagents is not installed."""
    try:
        from smolagents.local_python_executor import LocalPythonExecutor
    except ImportError:
        return None
    executor_class: type = LocalPythonExecutor
    return executor_class


def new_smolagents_executor(executor_class: type) -> Any:
    """An executor set up the way a smolagents ``CodeAgent`` does it: imports, then ``send_tools``."""
    executor = executor_class(additional_authorized_imports=list(ALLOWED_IMPORTS))
    executor.send_tools({})  # installs the base Python tools (print, range, ...); required before use
    return executor


@dataclass(frozen=True)
class SmolagentsTimings:
    trivial: benchlib.Timing
    fresh: benchlib.Timing
    heavy: benchlib.Timing


def time_smolagents(executor_class: type, plan: Plan) -> SmolagentsTimings:
    executor = new_smolagents_executor(executor_class)
    trivial = time_calls(lambda: executor(TRIVIAL_CELL), plan.trivial_samples, plan.warmups * 10)
    fresh = time_calls(lambda: new_smolagents_executor(executor_class)(TRIVIAL_CELL), plan.repeats, plan.warmups)
    heavy = time_calls(lambda: executor(HEAVY_CELL), plan.smolagents_heavy_samples, min(plan.warmups, 1))
    return SmolagentsTimings(trivial=trivial, fresh=fresh, heavy=heavy)


# --- report ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Baseline:
    name: str
    n: int
    figure_ms: float


@dataclass(frozen=True)
class Row:
    measurement: str
    n: int
    ours_ms: float
    goal: str
    passed: bool | None
    ours_note: str = ""
    baselines: tuple[Baseline, ...] = field(default_factory=tuple)


def format_ms(value: float) -> str:
    if value < 1:
        return f"{value:.3f} ms"
    if value < 100:
        return f"{value:.2f} ms"
    return f"{value:,.0f} ms"


def format_ratio(value: float) -> str:
    return f"{value:.3f}x" if value < 0.1 else f"{value:,.2f}x"


def format_verdict(passed: bool | None) -> str:
    return "-" if passed is None else ("PASS" if passed else "MISS")


def table_lines(rows: Sequence[Row]) -> list[str]:
    header = ("measurement", "n", "ours", "goal", "result", "baseline", "n", "baseline fig.", "base/ours")
    cells: list[tuple[str, ...]] = [header]
    for row in rows:
        ours = format_ms(row.ours_ms) + (f" ({row.ours_note})" if row.ours_note else "")
        lead = (row.measurement, str(row.n), ours, row.goal, format_verdict(row.passed))
        if not row.baselines:
            cells.append((*lead, "-", "", "", ""))
        for index, baseline in enumerate(row.baselines):
            prefix = lead if index == 0 else ("",) * len(lead)
            ratio = format_ratio(baseline.figure_ms / row.ours_ms)
            cells.append((*prefix, baseline.name, str(baseline.n), format_ms(baseline.figure_ms), ratio))
    return benchlib.table_lines(header, cells[1:], right_aligned={1, 2, 6, 7, 8})


@dataclass(frozen=True)
class Results:
    ours: OurTimings
    python_c_trivial: benchlib.Timing
    python_c_heavy: benchlib.Timing
    smolagents: SmolagentsTimings | None


def build_rows(results: Results) -> list[Row]:
    python_c = "python -c (new interpreter)"
    smol = "smolagents LocalPythonExecutor"
    smol_trivial_median: tuple[Baseline, ...] = ()
    smol_trivial_p90: tuple[Baseline, ...] = ()
    smol_fresh: tuple[Baseline, ...] = ()
    smol_heavy: tuple[Baseline, ...] = ()
    if results.smolagents is not None:
        smolagents = results.smolagents
        smol_trivial_median = (Baseline(smol, smolagents.trivial.n, smolagents.trivial.median_ms),)
        smol_trivial_p90 = (Baseline(smol, smolagents.trivial.n, smolagents.trivial.p90_ms),)
        smol_fresh = (Baseline(smol + " (new executor)", smolagents.fresh.n, smolagents.fresh.median_ms),)
        smol_heavy = (Baseline(smol, smolagents.heavy.n, smolagents.heavy.median_ms),)
    ours = results.ours
    python_c_trivial = results.python_c_trivial
    heavy_ratio = ours.heavy.median_ms / ours.native.median_ms
    return [
        Row(
            "trivial cell, warm: median",
            ours.trivial.n,
            ours.trivial.median_ms,
            f"<= {TRIVIAL_GOAL_MS:g} ms",
            ours.trivial.median_ms <= TRIVIAL_GOAL_MS,
            baselines=(Baseline(python_c, python_c_trivial.n, python_c_trivial.median_ms), *smol_trivial_median),
        ),
        Row(
            "trivial cell, warm: p90",
            ours.trivial.n,
            ours.trivial.p90_ms,
            "-",
            None,
            baselines=(Baseline(python_c, python_c_trivial.n, python_c_trivial.p90_ms), *smol_trivial_p90),
        ),
        Row(
            "fresh episode: reset() to 1st result",
            ours.fresh.n,
            ours.fresh.median_ms,
            f"<= {FRESH_GOAL_MS:g} ms",
            ours.fresh.median_ms <= FRESH_GOAL_MS,
            baselines=(Baseline(python_c, python_c_trivial.n, python_c_trivial.median_ms), *smol_fresh),
        ),
        Row(
            "CPU-heavy cell (200k loop): median",
            ours.heavy.n,
            ours.heavy.median_ms,
            f"<= {HEAVY_GOAL_RATIO:g}x native",
            heavy_ratio <= HEAVY_GOAL_RATIO,
            ours_note=f"{heavy_ratio:.2f}x native",
            baselines=(
                Baseline("native exec, this process", ours.native.n, ours.native.median_ms),
                Baseline(python_c, results.python_c_heavy.n, results.python_c_heavy.median_ms),
                *smol_heavy,
            ),
        ),
    ]


def print_report(results: Results) -> None:
    print(benchlib.machine_line())
    print(f"sandbox: LocalSandbox, isolation {results.ours.isolation!r}; trivial cell {TRIVIAL_CELL!r}; heavy cell:")
    print("    " + HEAVY_CELL.replace("\n", "\n    "))
    for line in table_lines(build_rows(results)):
        print(line)
    print("n: timed samples (after warm-ups). base/ours: baseline / ours, above 1 means ours is faster.")
    print("python -c: one new interpreter per call, so its trivial figure stands for both warm and fresh state.")
    if results.smolagents is None:
        print("smolagents LocalPythonExecutor: skipped (not installed); `pip install smolagents` to compare.")


# --- main -------------------------------------------------------------------------------------------------


def measure_ours(plan: Plan) -> OurTimings:
    sandbox = new_sandbox()
    try:
        trivial = time_trivial_warm(sandbox, plan)
        fresh = time_fresh_episode(sandbox, plan)
        heavy, native = time_heavy_against_native(sandbox, plan)
        return OurTimings(str(sandbox.isolation), trivial, fresh, heavy, native)
    finally:
        sandbox.close()


def measure(plan: Plan) -> Results:
    ours = measure_ours(plan)
    python_c_trivial = time_calls(lambda: run_python_c(TRIVIAL_CELL), plan.repeats, plan.warmups)
    python_c_heavy = time_calls(lambda: run_python_c(HEAVY_CELL), plan.repeats, plan.warmups)
    executor_class = smolagents_executor_class()
    smolagents = None if executor_class is None else time_smolagents(executor_class, plan)
    return Results(ours, python_c_trivial, python_c_heavy, smolagents)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(
            "Time the LocalSandbox (warm trivial cell, fresh episode, CPU-heavy cell) against its goals "
            "and against `python -c` and smolagents' LocalPythonExecutor (if installed). Prints one "
            "table; always exits 0 unless the benchmark itself breaks."
        )
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        metavar="N",
        help=(
            f"timed samples per measurement (default {DEFAULT_REPEATS}, or {QUICK_REPEATS} with --quick); "
            f"trivial cells take {TRIVIAL_SAMPLES_PER_REPEAT}*N, smolagents' heavy loop at most "
            f"{SMOLAGENTS_HEAVY_MAX_SAMPLES}"
        ),
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: few samples and warm-ups, to check the script starts"
    )
    args = parser.parse_args(argv)
    if args.repeats is not None and args.repeats < 1:
        parser.error("--repeats must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    repeats = args.repeats or (QUICK_REPEATS if args.quick else DEFAULT_REPEATS)
    plan = Plan(repeats=repeats, warmups=1 if args.quick else 3)
    print_report(measure(plan))
    return 0


if __name__ == "__main__":
    sys.exit(main())
