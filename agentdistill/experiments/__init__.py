"""Experiments as YAML configs: ``agentdistill run configs/paper/<name>.yaml [--dry-run] [--override k=v]``.

One config is one experiment of the paper. Its ``kind`` picks the code that runs it, always the library
code the other commands run too:

- ``collect``: teacher trajectories on training tasks, with or without first-thought prefixes
  (:mod:`.collect`; ``agentdistill rollout`` / ``ftp build``);
- ``sft``: a student fine-tuned on them, LoRA or full, one process or accelerate (:mod:`.sft`;
  ``agentdistill distill``);
- ``eval``: a policy on the benchmarks, with or without SAG (:mod:`.evaluation`; ``agentdistill eval``);
- ``cot``: the CoT and CoT + RAG distillation baselines (:mod:`.cot`; ``agentdistill eval --cot``).

Configs are checked key by key against typed dataclasses (:mod:`.fields`): an unknown or misspelt key,
a wrong type or a bad value is an error naming the file and the key. A dry run checks everything that
needs no GPU, model server or hub and prints the plan (:mod:`.plan`). :mod:`.registry` says how to add a
kind.
"""

from __future__ import annotations

from agentdistill.experiments.fields import ConfigError
from agentdistill.experiments.plan import Plan
from agentdistill.experiments.registry import KIND_MODULES, ExperimentKind
from agentdistill.experiments.runner import Experiment, apply_override, load_experiment, run_experiment

__all__ = [
    "KIND_MODULES",
    "ConfigError",
    "Experiment",
    "ExperimentKind",
    "Plan",
    "apply_override",
    "load_experiment",
    "run_experiment",
]
