"""Every benchmark in one run, reported in one table: each figure next to its baseline and the ratio.

The four benchmark scripts each measure one claim of the repository against the simplest alternative:

* ``sandbox.py`` - the code sandbox against ``python -c`` per call (and smolagents' executor when installed);
* ``retrieval.py`` - batched and shared retrieval against one query at a time;
* ``rollout.py`` - the batched rollout loop against a sequential one-episode-at-a-time loop;
* ``sft.py`` - packed (padding-free) SFT against padded batches, with the loss checked unchanged.

This script runs their measurements (their own functions, at their own default or ``--quick`` sizes)
and prints a single table: benchmark, measurement, our figure, the baseline and its figure, the ratio
(how many times better ours is: above 1 means ours wins), the goal and whether it was met. It adds
one figure of its own: the peak memory of a 32-env rollout (the scripted expert on
``AgentMath-Synthetic-v0``, whose sandboxes preload numpy and sympy), summed over the rollout process
and all its children (envs, sandbox zygotes, workers), as RSS and as PSS (RSS counts the pages that
forked workers share with their zygote once per process; PSS splits them, so it sums to real use),
next to a 1-env rollout. A benchmark that fails is reported in the table and the others still run; the
exit status is then 1. Each script run alone prints its own, more detailed report.

Usage::

    python benchmarks/run_all.py              # everything at full size (about 15 minutes on 2 idle CPUs)
    python benchmarks/run_all.py --quick      # everything at smoke size: checks that it all runs
    python benchmarks/run_all.py --only sandbox,memory --quick
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import benchlib  # the sibling benchmarks/benchlib.py (this file runs as a script)
import psutil

BENCHMARKS = ("sandbox", "retrieval", "rollout", "sft", "memory")
MEMORY_ENV_ID = "AgentMath-Synthetic-v0"
MEMORY_ENVS = 32
QUICK_MEMORY_ENVS = 4
"""Starting 32 sandboxes takes a while; the smoke run measures a 4-env rollout (and says so)."""
MEMORY_SAMPLE_S = 0.05
PSS_SAMPLE_S = 1.0
"""PSS needs each process's smaps read in full, so it is sampled less often than RSS."""


@dataclass(frozen=True)
class Line:
    """One row of the combined table."""

    benchmark: str
    measurement: str
    ours: str
    baseline: str = "-"
    baseline_figure: str = ""
    ratio: str = ""
    """How many times better ours is than the baseline (above 1: ours is better)."""
    goal: str = "-"
    result: str = "-"


def verdict(passed: bool | None) -> str:
    return "-" if passed is None else ("PASS" if passed else "MISS")


# --- each benchmark, through its own functions ---------------------------------------------------------


# Each runner imports its benchmark module itself: rollout.py and sft.py load torch, transformers and TRL,
# which a run of the other benchmarks (or of --only memory) does not need to wait for.


def sandbox_lines(quick: bool) -> list[Line]:
    import sandbox as sandbox_bench

    plan = sandbox_bench.Plan(
        repeats=sandbox_bench.QUICK_REPEATS if quick else sandbox_bench.DEFAULT_REPEATS, warmups=1 if quick else 3
    )
    results = sandbox_bench.measure(plan)
    lines = []
    for row in sandbox_bench.build_rows(results):
        ours = sandbox_bench.format_ms(row.ours_ms) + (f" ({row.ours_note})" if row.ours_note else "")
        for index, baseline in enumerate(row.baselines or (None,)):
            first = index == 0
            lines.append(
                Line(
                    "sandbox",
                    row.measurement if first else "",
                    ours if first else "",
                    baseline.name if baseline else "-",
                    sandbox_bench.format_ms(baseline.figure_ms) if baseline else "",
                    sandbox_bench.format_ratio(baseline.figure_ms / row.ours_ms) if baseline else "",
                    row.goal if first else "",
                    verdict(row.passed) if first else "",
                )
            )
    return lines


def retrieval_lines(quick: bool) -> list[Line]:
    import retrieval as retrieval_bench

    retrieval_bench.configure_environment()
    plan = retrieval_bench.QUICK_PLAN if quick else retrieval_bench.DEFAULT_PLAN
    workload = retrieval_bench.load_workload(retrieval_bench.DEFAULT_DATA, plan.questions)
    build = retrieval_bench.build_retrievers(workload.documents, retrieval_bench.default_encoder_path(), "cpu")
    results = retrieval_bench.measure(workload, build, plan)
    lines = []
    for row in retrieval_bench.build_rows(results):
        base = row.baseline
        lines.append(
            Line(
                "retrieval",
                row.measurement,
                row.figure.text() + (f" ({row.note})" if row.note else ""),
                base.name if base else "-",
                base.figure.text() if base else "",
                retrieval_bench.format_gain(retrieval_bench.gain(row.figure, base.figure)) if base else "",
                row.goal,
                verdict(row.passed),
            )
        )
    return lines


def rollout_lines(quick: bool) -> list[Line]:
    import rollout as rollout_bench
    import torch

    from agentdistill.policies.base import SamplingParams

    torch.set_num_threads(rollout_bench.usable_cpus())
    episodes = rollout_bench.QUICK_EPISODES if quick else rollout_bench.DEFAULT_EPISODES
    repeats = rollout_bench.QUICK_REPEATS if quick else rollout_bench.DEFAULT_REPEATS
    sampling = SamplingParams(max_new_tokens=rollout_bench.DEFAULT_MAX_NEW_TOKENS, stop=())
    student = rollout_bench.build_policy("TINY" if quick else "SMALL", max_batch_size=max(rollout_bench.ENV_COUNTS))
    try:
        measured = rollout_bench.measure_all(student.policy, episodes, repeats, sampling)
    finally:
        student.policy.close()
    rows = [rollout_bench.figures(name, runs, measured.startup_s[name]) for name, runs in measured.runs.items()]
    sequential = next(row for row in rows if row.name == rollout_bench.SEQUENTIAL)
    goal_row = rollout_bench.configuration_name(rollout_bench.SPEEDUP_GOAL_ENVS)
    lines = []
    for row in rows:
        if row is sequential:
            continue
        speedup = row.episodes_per_s / sequential.episodes_per_s
        has_goal = row.name == goal_row
        lines.append(
            Line(
                "rollout",
                f"{row.name}: episodes/s ({student.preset} student)",
                f"{row.episodes_per_s:.2f} ep/s",
                "sequential loop",
                f"{sequential.episodes_per_s:.2f} ep/s",
                f"{speedup:.2f}x",
                f">= {rollout_bench.SPEEDUP_GOAL:g}x" if has_goal else "-",
                verdict(speedup >= rollout_bench.SPEEDUP_GOAL if has_goal else None),
            )
        )
        lines.append(
            Line(
                "rollout",
                f"{row.name}: time outside policy.generate",
                f"{row.outside_policy:.1%}",
                goal=f"<= {rollout_bench.OUTSIDE_POLICY_GOAL:.0%}",
                result=verdict(row.outside_policy <= rollout_bench.OUTSIDE_POLICY_GOAL),
            )
        )
    return lines


def sft_lines(quick: bool) -> list[Line]:
    import sft as sft_bench

    steps = sft_bench.QUICK_STEPS if quick else sft_bench.DEFAULT_STEPS
    plan = sft_bench.Plan(
        tasks_per_env=sft_bench.QUICK_TASKS if quick else sft_bench.DEFAULT_TASKS,
        steps=steps,
        warmup_steps=min(sft_bench.QUICK_WARMUP_STEPS if quick else sft_bench.DEFAULT_WARMUP_STEPS, steps - 1),
        student="tiny",
    )
    sft_bench.silence_libraries()
    results = sft_bench.measure(plan)
    lines = []
    for row in sft_bench.build_rows(results):
        if row.passed is None:
            continue  # context rows (steps, padding, time per step, losses after training): in sft.py's own report
        baseline = "padded batches" if row.padded else "-"
        lines.append(
            Line("sft", row.measurement, f"packed {row.packed}", baseline, row.padded, row.ratio, row.goal, verdict(row.passed))
        )
    return lines


# --- memory of a many-env rollout --------------------------------------------------------------------------


@dataclass(frozen=True)
class MemoryPeak:
    envs: int
    rss_bytes: int
    pss_bytes: int
    processes: int
    seconds: float


def tree_memory(root: psutil.Process, with_pss: bool) -> tuple[int, int, int]:
    """(RSS sum, PSS sum or 0, process count) of ``root`` and every process below it."""
    rss = pss = count = 0
    for process in [root, *root.children(recursive=True)]:
        try:
            if with_pss:
                info = process.memory_full_info()
                pss += info.pss
            else:
                info = process.memory_info()
            rss += info.rss
            count += 1
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return rss, pss, count


def rollout_peak_memory(envs: int, episodes: int) -> MemoryPeak:
    """Peak memory of ``agentdistill rollout`` with ``envs`` envs, sampled while it runs."""
    with tempfile.TemporaryDirectory(prefix="agentdistill-memory-bench-") as scratch:
        command = [
            sys.executable, "-m", "agentdistill.cli", "rollout", "--env", MEMORY_ENV_ID, "--policy", "expert",
            "--episodes", str(episodes), "--num-envs", str(envs), "--out", str(Path(scratch) / "t.jsonl"),
            "--no-progress",
        ]
        begun = time.monotonic()
        process = psutil.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        peak_rss = peak_pss = peak_count = 0
        next_pss = begun
        while process.poll() is None:
            with_pss = time.monotonic() >= next_pss
            rss, pss, count = tree_memory(process, with_pss)
            peak_rss, peak_pss, peak_count = max(peak_rss, rss), max(peak_pss, pss), max(peak_count, count)
            if with_pss:
                next_pss = time.monotonic() + PSS_SAMPLE_S
            time.sleep(MEMORY_SAMPLE_S)
        stderr = process.stderr.read().decode(errors="replace") if process.stderr else ""
        if process.returncode != 0:
            raise RuntimeError(f"the {envs}-env rollout failed ({process.returncode}): {stderr[-2000:]}")
    return MemoryPeak(envs, peak_rss, peak_pss, peak_count, time.monotonic() - begun)


def memory_lines(quick: bool) -> list[Line]:
    envs = QUICK_MEMORY_ENVS if quick else MEMORY_ENVS
    single = rollout_peak_memory(1, 4)
    many = rollout_peak_memory(envs, 2 * envs)
    mib = 1024**2

    def per_extra_env(many_bytes: int, single_bytes: int) -> str:
        return f"+{(many_bytes - single_bytes) / (envs - 1) / mib:,.0f} MiB per env after the first"

    return [
        Line(
            "memory",
            f"{envs}-env rollout: peak RSS, all its {many.processes} processes",
            f"{many.rss_bytes / mib:,.0f} MiB ({per_extra_env(many.rss_bytes, single.rss_bytes)})",
            "1-env rollout",
            f"{single.rss_bytes / mib:,.0f} MiB",
        ),
        Line(
            "memory",
            f"{envs}-env rollout: peak PSS (shared pages split)",
            f"{many.pss_bytes / mib:,.0f} MiB ({per_extra_env(many.pss_bytes, single.pss_bytes)})",
            "1-env rollout",
            f"{single.pss_bytes / mib:,.0f} MiB",
        ),
    ]


# --- report and main --------------------------------------------------------------------------------------

RUNNERS: dict[str, Callable[[bool], list[Line]]] = {
    "sandbox": sandbox_lines,
    "retrieval": retrieval_lines,
    "rollout": rollout_lines,
    "sft": sft_lines,
    "memory": memory_lines,
}

HEADER = ("benchmark", "measurement", "ours", "baseline", "baseline fig.", "ratio", "goal", "result")


def table_lines(lines: Sequence[Line]) -> list[str]:
    rows = [
        (line.benchmark, line.measurement, line.ours, line.baseline, line.baseline_figure, line.ratio, line.goal, line.result)
        for line in lines
    ]
    return benchlib.table_lines(HEADER, rows, right_aligned={2, 4, 5})


def print_report(lines: Sequence[Line], seconds: dict[str, float], quick: bool, load_before: str) -> None:
    print(load_before)
    print(f"load average at the end: {', '.join(f'{value:.2f}' for value in os.getloadavg())}")
    size = "smoke size (--quick): figures say little" if quick else "full size"
    timings = ", ".join(f"{name} {value:.0f} s" for name, value in seconds.items())
    print(f"benchmarks at {size}; wall time: {timings}")
    for text in table_lines(lines):
        print(text)
    print("ratio: how many times better ours is than the baseline (baseline time / ours, or ours / baseline for")
    print("rates); above 1 means ours wins.")
    print(
        "memory: `agentdistill rollout --policy expert` on "
        f"{MEMORY_ENV_ID} (sandboxes preload numpy and sympy), sync vector env; RSS and PSS summed over the "
        f"rollout process and all its children, sampled every {MEMORY_SAMPLE_S * 1e3:g} ms (PSS every {PSS_SAMPLE_S:g} s)."
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Run the sandbox, retrieval, rollout and SFT benchmarks and a many-env memory measurement; "
        "print one table of figures against their baselines. Exits 1 if a benchmark breaks (not for a missed goal)."
    )
    parser.add_argument("--quick", action="store_true", help="every benchmark at smoke size, to check that all run")
    parser.add_argument(
        "--only",
        default=",".join(BENCHMARKS),
        metavar="NAMES",
        help=f"comma-separated subset of {','.join(BENCHMARKS)} (default: all)",
    )
    args = parser.parse_args(argv)
    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(chosen) - set(BENCHMARKS))
    if unknown or not chosen:
        parser.error(f"--only takes names from {', '.join(BENCHMARKS)}; got {args.only!r}")
    args.only = [name for name in BENCHMARKS if name in chosen]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    load_before = benchlib.machine_line()
    lines: list[Line] = []
    seconds: dict[str, float] = {}
    failed = False
    for name in args.only:
        begun = time.monotonic()
        try:
            lines += RUNNERS[name](args.quick)
        except Exception as error:  # noqa: BLE001 - one broken benchmark must not hide the others' figures
            failed = True
            traceback.print_exc()
            lines.append(Line(name, f"FAILED: {type(error).__name__}: {error}"[:160], "-", result="ERROR"))
        seconds[name] = time.monotonic() - begun
    print_report(lines, seconds, args.quick, load_before)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
