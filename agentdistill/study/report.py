"""A study's results: ``results.json`` (every row, and the mean and spread per method x student x env),
``results.md`` (the table) and ``results.png`` (methods as bars, students side by side, error bars over seeds)."""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from agentdistill.study.cells import Row
from agentdistill.study.settings import METHODS

RESULTS_JSON = "results.json"
RESULTS_MD = "results.md"
RESULTS_PNG = "results.png"


def summarize(rows: Sequence[Row]) -> list[dict[str, Any]]:
    """Mean and standard deviation (over seeds) of success per method x student x env, in method order."""
    groups: dict[tuple[str, str, str], list[Row]] = {}
    for row in rows:
        groups.setdefault((row.method, row.student, row.env), []).append(row)
    summary = []
    for (method, student, env), members in sorted(groups.items(), key=lambda item: METHODS.index(item[0][0])):
        successes = [row.success_rate for row in members]
        invalid = [row.invalid_action_rate for row in members if row.invalid_action_rate is not None]
        summary.append(
            {
                "method": method,
                "student": student,
                "env": env,
                "seeds": len(members),
                "success_mean": statistics.fmean(successes),
                "success_std": statistics.stdev(successes) if len(successes) > 1 else 0.0,
                "invalid_action_rate_mean": statistics.fmean(invalid) if invalid else None,
            }
        )
    return summary


def write_results(out: Path, rows: Sequence[Row], meta: dict[str, Any]) -> dict[str, Any]:
    """Write ``results.json``, ``results.md`` and ``results.png`` under ``out``; returns the JSON written."""
    summary = summarize(rows)
    results = {**meta, "rows": [asdict(row) for row in rows], "summary": summary}
    (out / RESULTS_JSON).write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    (out / RESULTS_MD).write_text(format_table(summary), encoding="utf-8")
    plot(summary, out / RESULTS_PNG)
    return results


def format_table(summary: Sequence[dict[str, Any]]) -> str:
    """Markdown: one row per method x student, held-out success per env as mean ± standard deviation over seeds."""
    envs = sorted({entry["env"] for entry in summary})
    cells: dict[tuple[str, str], dict[str, str]] = {}
    for entry in summary:
        spread = f" ± {100 * entry['success_std']:.1f}" if entry["seeds"] > 1 else ""
        cells.setdefault((entry["method"], entry["student"]), {})[entry["env"]] = (
            f"{100 * entry['success_mean']:.1f}%{spread}"
        )
    header = "| method | student | " + " | ".join(envs) + " |\n|---|---|" + "---:|" * len(envs) + "\n"
    lines = [
        f"| {method} | {student} | " + " | ".join(values.get(env, "-") for env in envs) + " |"
        for (method, student), values in cells.items()
    ]
    return header + "\n".join(lines) + "\n"


def plot(summary: Sequence[dict[str, Any]], path: Path) -> Path:
    """Grouped bars: one panel per env, methods along the axis, one bar per student, error bars over seeds."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    envs = sorted({entry["env"] for entry in summary})
    methods = [method for method in METHODS if any(entry["method"] == method for entry in summary)]
    students = list(dict.fromkeys(entry["student"] for entry in summary))
    figure = Figure(figsize=(5 * len(envs), 4))
    FigureCanvasAgg(figure)
    width = 0.8 / max(len(students), 1)
    for panel, env in enumerate(envs):
        axes = figure.add_subplot(1, len(envs), panel + 1)
        for offset, student in enumerate(students):
            entries = {
                entry["method"]: entry for entry in summary if entry["env"] == env and entry["student"] == student
            }
            xs = [index + offset * width for index, method in enumerate(methods) if method in entries]
            means = [100 * entries[method]["success_mean"] for method in methods if method in entries]
            spreads = [100 * entries[method]["success_std"] for method in methods if method in entries]
            axes.bar(xs, means, width, yerr=spreads, capsize=3, label=student)
        axes.set_xticks(
            [index + width * (len(students) - 1) / 2 for index in range(len(methods))], methods, rotation=30
        )
        axes.set_title(env)
        axes.set_ylabel("held-out success (%)")
        axes.set_ylim(0, 100)
        axes.legend(title="student")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return path
