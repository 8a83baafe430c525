"""What every benchmark script shares: timing samples, the machine header and the aligned table.

The scripts import it as a sibling module (they run as ``python benchmarks/NAME.py``).
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Timing:
    """Wall-clock samples of one measurement, in milliseconds."""

    samples_ms: tuple[float, ...]

    @property
    def n(self) -> int:
        return len(self.samples_ms)

    @property
    def median_ms(self) -> float:
        return statistics.median(self.samples_ms)

    @property
    def p90_ms(self) -> float:
        if self.n < 2:
            return self.samples_ms[0]
        return statistics.quantiles(self.samples_ms, n=10, method="inclusive")[-1]


def elapsed_ms(call: Callable[[], object]) -> float:
    """Run ``call`` once and return its wall-clock time in milliseconds."""
    start = time.perf_counter_ns()
    call()
    return (time.perf_counter_ns() - start) / 1e6


def machine_line(details: str | None = None) -> str:
    """One line naming the machine and its load, so figures are read in context."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count() or 0
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    return (
        f"machine: {platform.system()} {platform.machine()}, {os.cpu_count()} CPUs ({usable} usable), "
        f"load average {load}; Python {platform.python_version()} " + (details or f"({sys.executable})")
    )


def table_lines(header: Sequence[str], rows: Sequence[Sequence[str]], right_aligned: Collection[int]) -> list[str]:
    """An aligned text table between rules: the report format of every benchmark."""
    cells = [tuple(header), *(tuple(row) for row in rows)]
    widths = [max(len(line[column]) for line in cells) for column in range(len(header))]

    def render(line: tuple[str, ...]) -> str:
        parts = [
            value.rjust(width) if column in right_aligned else value.ljust(width)
            for column, (value, width) in enumerate(zip(line, widths))
        ]
        return "  ".join(parts).rstrip()

    rule = "-" * len(render(cells[0]))
    return [rule, render(cells[0]), rule, *(render(line) for line in cells[1:]), rule]
