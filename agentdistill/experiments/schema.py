"""Sections shared by several experiment kinds: which tasks to run, and how to sample.

The kinds themselves (``collect``, ``sft``, ``eval``, ``cot``) are declared in their own modules next to
the code that runs them; their sections are built from YAML by :func:`agentdistill.experiments.fields.build`.
Library dataclasses serve as sections directly where they exist (``sampling`` is a
:class:`~agentdistill.policies.base.SamplingParams`, ``sag`` a
:class:`~agentdistill.rollouts.loop.SAGSettings`), so a config accepts exactly their fields.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from agentdistill.rollouts.loop import SAGSettings

SUITES = ("paper", "factual", "math")
"""Named benchmark lists of :mod:`agentdistill.rollouts.evaluate` (all eight, the four QA, the four math)."""


@dataclass(frozen=True, kw_only=True)
class TaskEntry:
    """One run over a range of one env's tasks, written to its own trajectory file ``<name>.jsonl``.

    Where the tasks come from: with the experiment's ``data_root`` set, ``data`` names files relative to it
    (env arguments such as ``data_path`` or ``corpus``); without it, the env loads its Hugging Face dataset
    (``env_args: {split: train}`` picks the split; ``split`` is ignored for local files). The paper's
    training lists are slices of the hub splits, so ``hub_start`` says where an entry's tasks begin when
    they come from the hub, so that two entries over the same hub split do not repeat tasks.
    """

    env: str
    """A registered env id, e.g. ``AgentQA-HotpotQA-v0``."""
    name: str | None = None
    """Output file stem (default: the env id); distinct per entry."""
    episodes: int | None = None
    """At most this many tasks from ``start`` on (fewer if the split ends first; ``None``: all the rest;
    required for the synthetic envs)."""
    start: int = 0
    hub_start: int | None = None
    """First task when the tasks come from the hub (default: ``start``)."""
    data: Mapping[str, str] = field(default_factory=dict)
    """Env arguments naming files relative to ``data_root``; used only when ``data_root`` is set."""
    env_args: Mapping[str, Any] = field(default_factory=dict)
    """Further env constructor arguments (``max_steps``, ``split``, ``reward`` ...), always used."""

    def __post_init__(self) -> None:
        if self.episodes is not None and self.episodes < 1:
            raise ValueError(f"episodes must be a positive integer or null, got {self.episodes!r}")
        for key, value in (("start", self.start), ("hub_start", self.hub_start)):
            if value is not None and value < 0:
                raise ValueError(f"{key} must be >= 0, got {value!r}")

    @property
    def label(self) -> str:
        """The entry's name, used for its output files."""
        return self.name or self.env


def check_task_entries(entries: tuple[TaskEntry, ...]) -> None:
    """At least one entry, and distinct output names (two entries writing one file would mix their tasks)."""
    if not entries:
        raise ValueError("tasks is empty: list at least one {env: ...} entry")
    labels = [entry.label for entry in entries]
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        raise ValueError(
            f"task entries share the output name(s) {', '.join(repeated)}; give each entry a distinct name"
        )


def check_sag(sag: SAGSettings | None) -> None:
    """SAG needs at least two candidates to vote between; its sampling settings must be valid."""
    if sag is None:
        return
    if sag.n < 2:
        raise ValueError(f"sag.n must be >= 2 candidates (set sag: null to turn SAG off), got {sag.n!r}")
    if sag.temperature < 0 or not 0 < sag.top_p <= 1:
        raise ValueError(f"sag needs temperature >= 0 and top_p in (0, 1], got {sag.temperature!r}, {sag.top_p!r}")


def check_positive(**values: int | None) -> None:
    """Each named value, when set, must be a positive integer."""
    for name, value in values.items():
        if value is not None and value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


def check_benchmarks(suite: str | None, tasks: tuple[str, ...]) -> None:
    """An evaluation names either a suite or explicit env ids."""
    if suite is None and not tasks:
        raise ValueError(f"name the benchmarks: suite ({', '.join(SUITES)}) or tasks (a list of env ids)")
    if suite is not None and tasks:
        raise ValueError("give suite or tasks, not both")
