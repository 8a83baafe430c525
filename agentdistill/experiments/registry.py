"""The experiment kinds a config's ``kind:`` can name, and where each is implemented.

Each kind lives in one module that defines its schema (a frozen dataclass, checked key by key by
:func:`agentdistill.experiments.fields.build`), a ``plan`` function (checks and describes, touching no GPU,
server or hub) and a ``run`` function, and exposes them as ``KIND = ExperimentKind(...)``. Modules are
imported only when their kind is used, so checking an eval config does not import torch.

Adding a kind (e.g. ``rl`` on top of :mod:`agentdistill.distill.grpo`) takes a module such as
``agentdistill/experiments/rl.py``::

    @dataclass(frozen=True, kw_only=True)
    class RLExperiment:
        out: str
        policy: str
        settings: GRPOSettings = field(default_factory=GRPOSettings)
        ...

    def plan(config: RLExperiment, where: Location) -> Plan: ...
    def run(config: RLExperiment, where: Location, write: Callable[[str], None]) -> None: ...

    KIND = ExperimentKind(name="rl", schema=RLExperiment, plan=plan, run=run)

and one line in :data:`KIND_MODULES`: ``"rl": "agentdistill.experiments.rl"``. Every YAML under
``configs/paper/`` is loaded and dry-run by the tests, so a new kind's configs are covered at once.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from agentdistill.experiments.fields import Location
from agentdistill.experiments.plan import Plan

KIND_MODULES = MappingProxyType(
    {
        "collect": "agentdistill.experiments.collect",
        "sft": "agentdistill.experiments.sft",
        "eval": "agentdistill.experiments.evaluation",
        "cot": "agentdistill.experiments.cot",
        "rl": "agentdistill.experiments.rl",
        "opd": "agentdistill.experiments.opd",
    }
)
"""Kind name -> the module defining its ``KIND``."""


@dataclass(frozen=True)
class ExperimentKind:
    """One kind of experiment: its config schema and the functions that plan and run it."""

    name: str
    schema: type
    plan: Callable[[Any, Location], Plan]
    run: Callable[[Any, Location, Callable[[str], None]], None]


def experiment_kind(name: str, where: Location) -> ExperimentKind:
    """The kind ``name``; an unknown one is an error listing the known kinds."""
    module_name = KIND_MODULES.get(name) if isinstance(name, str) else None
    if module_name is None:
        raise where.error(f"unknown kind {name!r}; known kinds: {', '.join(KIND_MODULES)}")
    kind = importlib.import_module(module_name).KIND
    if not isinstance(kind, ExperimentKind) or kind.name != name:
        raise TypeError(f"{module_name}.KIND must be ExperimentKind(name={name!r}, ...)")
    return kind
