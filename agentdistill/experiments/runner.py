"""``agentdistill run CONFIG``: load a config, apply ``--override``s, check it, print the plan, run it.

A config is one YAML mapping with ``kind:`` naming the experiment kind (:data:`~.registry.KIND_MODULES`)
and that kind's keys. Overrides are ``dotted.key=VALUE`` with a YAML value, applied to the parsed file
before any check, so an override is checked exactly like the file (``tasks.0.episodes=4``,
``settings.learning_rate=1e-4``, ``data_root=../shared/data``, ``sag=null``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

from agentdistill.experiments.fields import ConfigError, Location, build
from agentdistill.experiments.plan import Plan
from agentdistill.experiments.registry import ExperimentKind, experiment_kind


@dataclass(frozen=True)
class Experiment:
    """A loaded, checked config: its kind, its typed sections, and the file it came from."""

    kind: ExperimentKind
    config: Any
    where: Location

    def plan(self) -> Plan:
        """Check everything that needs no GPU, server or hub, and describe the run."""
        return self.kind.plan(self.config, self.where)

    def run(self, write: Callable[[str], None]) -> None:
        self.kind.run(self.config, self.where, write)


def load_experiment(path: str | os.PathLike[str], overrides: Iterable[str] = ()) -> Experiment:
    """Parse ``path``, apply ``overrides``, and build its kind's typed config (a :class:`ConfigError` names
    the file and key of any problem)."""
    import yaml

    where = Location(os.fspath(path))
    try:
        with open(path, encoding="utf-8") as handle:
            raw = yaml.safe_load(handle)
    except OSError as error:
        raise ConfigError(f"{where}: cannot read the config: {error}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{where}: not valid YAML: {error}") from None
    if not isinstance(raw, Mapping):
        raise where.error(f"expected a mapping with a 'kind' key, got {type(raw).__name__}")
    data = dict(raw)
    for text in overrides:
        apply_override(data, text, where)
    if "kind" not in data:
        raise where.error("missing key 'kind' (collect, sft, eval, cot, ...)")
    kind = experiment_kind(data.pop("kind"), where.child("kind"))
    return Experiment(kind=kind, config=build(kind.schema, data, where), where=where)


def apply_override(data: MutableMapping[str, Any], text: str, where: Location) -> None:
    """Set ``dotted.key=VALUE`` (VALUE parsed as YAML) in ``data``; list items are addressed by index."""
    import yaml

    key, separator, value_text = text.partition("=")
    if not separator or not key.strip():
        raise where.error(f"--override {text!r}: expected KEY=VALUE, e.g. tasks.0.episodes=4")
    try:
        value = yaml.safe_load(value_text)
    except yaml.YAMLError as error:
        raise where.error(f"--override {text!r}: the value is not valid YAML: {error}") from None
    parts = key.strip().split(".")
    node: Any = data
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise where.error(f"--override {text!r}: {'.'.join(parts[:depth]) or 'the top level'} is a list of "
                                  f"{len(node)} items; {part!r} is not an index of it")
            index = int(part)
            if last:
                node[index] = value
            else:
                node[index] = _container(node[index])
                node = node[index]
        elif isinstance(node, MutableMapping):
            if last:
                node[part] = value
            else:
                node[part] = _container(node.get(part))
                node = node[part]
        else:
            raise where.error(f"--override {text!r}: {'.'.join(parts[:depth])} holds {node!r}, not a mapping or a list")


def _container(value: Any) -> Any:
    """A mapping or list to descend into; a missing or null section becomes an empty mapping."""
    if value is None:
        return {}
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, list):
        return list(value)
    return value


_TRAINING_KINDS = frozenset({"sft", "cot", "rl"})
"""Kinds that write models and checkpoints, and so need the room for one."""


def check_output_directory(experiment: Experiment) -> None:
    """Refuse at once an ``out`` that cannot be written (read-only, a file, a full disk): a run that learns it
    after hours of rollouts or training has lost those hours. A dry run checks it too, writing nothing."""
    from agentdistill import preflight

    out = getattr(experiment.config, "out", None)
    if out is None:
        return
    room = preflight.MODEL_MIN_FREE_BYTES if experiment.kind.name in _TRAINING_KINDS else preflight.DEFAULT_MIN_FREE_BYTES
    try:
        preflight.check_output_path(out, kind="directory", min_free_bytes=room)
    except preflight.OutputPathError as error:
        raise experiment.where.child("out").error(str(error)) from None


def run_experiment(
    path: str | os.PathLike[str],
    *,
    dry_run: bool = False,
    overrides: Iterable[str] = (),
    write: Callable[[str], None] | None = None,
) -> Plan:
    """Load, check and plan ``path``; print the plan (to ``write``, default stdout); then run it unless
    ``dry_run``. Returns the plan."""
    write = write or sys.stdout.write
    experiment = load_experiment(path, overrides)
    check_output_directory(experiment)
    plan = experiment.plan()
    write(plan.render())
    if dry_run:
        write("\nDry run: the config is valid; nothing was run.\n")
        return plan
    write("\n")
    experiment.run(write)
    return plan
