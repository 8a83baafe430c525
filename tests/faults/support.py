"""What the fault tests share: process-tree bookkeeping and the check that a trajectory file is whole.

Each fault test injects one real failure (a SIGKILL, a dead or slow server, a full disk) into real
components and then checks what a user would: the run went on or stopped with a clear reason, no
finished episode was lost or written twice, and nothing was left running.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import psutil


def descendants(pid: int) -> list[psutil.Process]:
    """Every live process below ``pid`` (children, grandchildren...)."""
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def gone_within(processes: Iterable[psutil.Process], within_s: float) -> list[psutil.Process]:
    """Those of ``processes`` still running (zombies count as gone) after waiting up to ``within_s``."""
    deadline = time.monotonic() + within_s
    remaining = list(processes)
    while remaining:
        remaining = [process for process in remaining if _running(process)]
        if not remaining or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    return remaining


def _running(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def whole_records(path: Path) -> list[dict[str, Any]]:
    """Every line of a trajectory file, each required to be complete (newline-terminated) valid JSON."""
    data = path.read_bytes()
    assert data.endswith(b"\n"), f"{path} ends with a partial line: {data[-80:]!r}"
    return [json.loads(line) for line in data.splitlines()]


def assert_one_record_per_task(path: Path, env_id: str, tasks: int) -> list[dict[str, Any]]:
    """``path`` holds exactly one complete record for each of tasks 0..tasks-1 of ``env_id``."""
    records = whole_records(path)
    indices = sorted(record["task_index"] for record in records)
    assert indices == list(range(tasks)), f"expected each of {tasks} tasks once, got {indices}"
    assert all(record["env_id"] == env_id for record in records)
    return records
