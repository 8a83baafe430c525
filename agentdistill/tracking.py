"""Weights & Biases runs that work on a cluster node and on a laptop with no account.

Every tracked run (rollouts now, training later) starts here: files go under the run's own output
directory rather than ``$HOME`` (``WANDB_DIR``, ``WANDB_CACHE_DIR``, ``WANDB_DATA_DIR``,
``WANDB_CONFIG_DIR``, unless the user set them), and the run is offline unless W&B credentials exist
(``WANDB_API_KEY`` or a ``~/.netrc`` entry) or ``WANDB_MODE`` says otherwise. An offline run can be
uploaded later with ``wandb sync DIR``.
"""

from __future__ import annotations

import netrc
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

_DIRECTORY_VARIABLES = ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_CONFIG_DIR")


def has_wandb_credentials() -> bool:
    """Whether this user could log in to W&B without being asked."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def wandb_mode() -> str:
    """``WANDB_MODE`` if set, else online with credentials and offline without."""
    return os.environ.get("WANDB_MODE") or ("online" if has_wandb_credentials() else "offline")


def start_wandb_run(project: str, run_dir: str | os.PathLike[str], config: Mapping[str, Any], *, name: str | None = None) -> Any:
    """A ``wandb`` run whose files live in ``run_dir/wandb`` (see the module docstring)."""
    import wandb

    directory = Path(run_dir) / "wandb"
    directory.mkdir(parents=True, exist_ok=True)
    for variable in _DIRECTORY_VARIABLES:
        os.environ.setdefault(variable, str(directory))
    return wandb.init(project=project, dir=str(directory), config=dict(config), name=name, mode=wandb_mode())


@contextmanager
def training_wandb_run(
    project: str | None, out: Path, config: Mapping[str, Any], *, name: str, enabled: bool
) -> Iterator[Any]:
    """A training run's W&B run (files under ``out/wandb``; offline without credentials), or ``None`` when
    ``project`` is unset or this is not the main process. transformers' ``WandbCallback`` logs into it.

    The W&B directory variables that :func:`start_wandb_run` sets for the process are
    restored afterwards: a later run in the same process would otherwise keep its cache and settings in this
    run's directory. A run that raises is marked failed.
    """
    if not (enabled and project):
        yield None
        return
    saved = {variable: os.environ.get(variable) for variable in _DIRECTORY_VARIABLES}
    run = None
    try:
        run = start_wandb_run(project, out, config, name=name)
        yield run
    except BaseException:
        if run is not None:
            run.finish(exit_code=1)
            run = None
        raise
    finally:
        if run is not None:
            run.finish()
        for variable, value in saved.items():
            if value is None:
                os.environ.pop(variable, None)
            else:
                os.environ[variable] = value


DEFAULT_PROJECT = "agentdistill"
"""The W&B project of a training command run without one: every training run is tracked unless the user
opts out (``--no-wandb``, or W&B's own ``WANDB_MODE=disabled``)."""


def default_project(project: str | None) -> str | None:
    """``project`` when set; else :data:`DEFAULT_PROJECT`, or ``None`` when W&B is disabled for this process."""
    if project:
        return project
    return None if os.environ.get("WANDB_MODE", "").lower() == "disabled" else DEFAULT_PROJECT


def describe_tracking(project: str | None, out_dir: str | os.PathLike[str]) -> str:
    """One line for a run's plan: where a training run with ``project`` (``None``: the default) is tracked."""
    chosen = default_project(project)
    if chosen is None:
        return "W&B: off (WANDB_MODE=disabled, or --no-wandb)"
    return f"W&B project {chosen} ({wandb_mode()}; files under {Path(out_dir) / 'wandb'})"
