"""Loading the task split an env serves: a local file, or the task's Hugging Face dataset."""

from __future__ import annotations

import dataclasses
import os
from typing import Literal

from agentdistill.envs.data import hub_source_for, load_hub_tasks, load_tasks
from agentdistill.envs.tasks import Task


def load_split(
    task_name: str,
    kind: Literal["qa", "math"],
    data_path: str | os.PathLike[str] | None,
    split: str | None,
    max_tasks: int | None,
) -> list[Task]:
    """Tasks from ``data_path`` if given, else from the hub dataset of ``task_name`` (``split`` overrides
    its default split); at most ``max_tasks`` of them. An empty result is an error, not an empty env."""
    if max_tasks is not None and (isinstance(max_tasks, bool) or not isinstance(max_tasks, int) or max_tasks < 1):
        raise ValueError(f"max_tasks must be a positive int or None, got {max_tasks!r}")
    if data_path is not None:
        tasks = load_tasks(data_path, kind=kind)
    else:
        source = hub_source_for(task_name)
        if split is not None:
            source = dataclasses.replace(source, split=split)
        tasks = load_hub_tasks(source, limit=max_tasks)
    tasks = tasks[:max_tasks] if max_tasks is not None else tasks
    if not tasks:
        where = data_path if data_path is not None else f"the hub dataset of {task_name}"
        raise ValueError(f"{task_name}: {where} holds no tasks")
    return tasks
