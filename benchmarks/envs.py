"""Lean envs: what each extra env of a rollout costs in memory, and how long many envs take to start.

Builds ``N`` ``AgentMath-Synthetic-v0`` envs as the rollout loop does (:func:`agentdistill.rollouts.loop.
make_rollout_envs`, one process), resets every one (which starts the sandbox zygotes and one episode worker per
env) and measures the start-up time and the PSS of this process and everything below it (PSS splits the pages a
forked worker shares with its zygote, so it sums to what the machine really spends). Two ways, side by side:

* ``shared``: the loop's default, one zygote for all the envs of the process (``SharedLocalSandboxes``);
* ``own``: every env its own zygote (``sandbox="local"``, what every env did before).

The cost of an extra env is ``(PSS(N) - PSS(1)) / (N - 1)``. Goals: at most 10 MiB per extra math env, 64 envs
started in at most 2 s.

Usage::

    python benchmarks/envs.py              # N = 64
    python benchmarks/envs.py --quick      # N = 4: checks that it runs
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

import psutil

import agentdistill  # noqa: F401 - registers the env ids
from agentdistill.rollouts.loop import make_rollout_envs

ENV_ID = "AgentMath-Synthetic-v0"
MIB = 1 << 20
GOAL_EXTRA_ENV_MIB = 10.0
GOAL_START_64_S = 2.0


@dataclass(frozen=True)
class Measurement:
    mode: str
    envs: int
    start_s: float
    pss_mib: float
    processes: int


def tree_pss() -> tuple[float, int]:
    """PSS in MiB summed over this process and its descendants, and how many processes that is."""
    total, count = 0, 0
    for process in [psutil.Process(), *psutil.Process().children(recursive=True)]:
        try:
            total += process.memory_full_info().pss
            count += 1
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return total / MIB, count


def measure(mode: str, count: int) -> Measurement:
    """Start ``count`` envs (and their first episodes), measure, close them."""
    options = {} if mode == "shared" else {"sandbox": "local"}
    started = time.perf_counter()
    envs = make_rollout_envs(ENV_ID, count, **options)
    try:
        envs.reset(seed=0)
        start_s = time.perf_counter() - started
        pss, processes = tree_pss()
    finally:
        envs.close()
    return Measurement(mode, count, start_s, pss, processes)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--envs", type=int, default=64)
    parser.add_argument("--quick", action="store_true", help="4 envs: checks that it runs")
    args = parser.parse_args(argv)
    count = 4 if args.quick else args.envs
    rows = []
    for mode in ("shared", "own"):
        one, many = measure(mode, 1), measure(mode, count)
        extra = (many.pss_mib - one.pss_mib) / (count - 1)
        rows.append((mode, many, extra))
    print(f"{count} x {ENV_ID} in one process, first reset included")
    print(f"{'sandboxes':<10} {'start-up':>10} {'PSS':>10} {'per extra env':>14} {'processes':>10}")
    for mode, many, extra in rows:
        print(f"{mode:<10} {many.start_s:>9.2f}s {many.pss_mib:>8.0f}MiB {extra:>11.1f}MiB {many.processes:>10}")
    shared, own = rows[0], rows[1]
    print(f"memory per extra env: {own[2] / max(shared[2], 1e-9):.1f}x less shared; start-up "
          f"{own[1].start_s / shared[1].start_s:.1f}x faster")
    if not args.quick:
        print(f"goals: <= {GOAL_EXTRA_ENV_MIB:g} MiB per extra env: {'met' if shared[2] <= GOAL_EXTRA_ENV_MIB else 'NOT met'}; "
              f"{count} envs <= {GOAL_START_64_S:g} s: {'met' if shared[1].start_s <= GOAL_START_64_S else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
