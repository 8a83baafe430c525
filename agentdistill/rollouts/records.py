"""Trajectory files: one JSON object per finished episode, appended so that a crash loses nothing.

Every producer (teacher collection, evaluation, RL, the import of the paper's released trajectories)
writes this format and every trainer reads only it. A line is written in one ``write`` and flushed to
disk before the episode counts as done; a run killed mid-write leaves at most a partial last line,
which :class:`TrajectoryWriter` cuts off when the file is reopened, so resuming neither loses nor
duplicates an episode.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterator, Mapping

RECORD_VERSION = 1


def read_trajectories(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Every complete record of a trajectory file, in file order (a partial last line is skipped)."""
    with Path(path).open("rb") as handle:
        for line in handle:
            if not line.endswith(b"\n"):
                return
            if line.strip():
                yield json.loads(line)


def episode_key(record: Mapping[str, Any]) -> tuple[str, int, int]:
    """What identifies an episode in a file: env id, task index and sample number (a task can be run
    several times, e.g. the group of G episodes GRPO samples per task; records without ``sample`` are 0)."""
    return str(record.get("env_id")), int(record.get("task_index", -1)), int(record.get("sample", 0) or 0)


class TrajectoryWriter:
    """Appends records to ``path`` and knows which episodes it already holds (for resuming).

    Opening an existing file keeps its complete lines and cuts a partial last line left by a crash.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._done: set[tuple[str, int, int]] = set()
        self._repair_and_index()
        self._handle = self.path.open("ab")

    def _repair_and_index(self) -> None:
        if not self.path.exists():
            self.path.touch()
            return
        valid_end = 0
        with self.path.open("rb") as handle:
            for line in handle:
                if not line.endswith(b"\n"):
                    break
                try:
                    record = json.loads(line) if line.strip() else None
                except ValueError:
                    break
                valid_end += len(line)
                if record is not None:
                    self._done.add(episode_key(record))
        if valid_end != self.path.stat().st_size:
            with self.path.open("rb+") as handle:
                handle.truncate(valid_end)

    def is_done(self, env_id: str, task_index: int, sample: int = 0) -> bool:
        """Whether the file already holds sample ``sample`` of this task."""
        return (env_id, task_index, sample) in self._done

    def write(self, record: dict[str, Any]) -> None:
        """Append one episode and make it durable before returning."""
        # ASCII escapes keep the file valid UTF-8 even when a model wrote a lone surrogate
        line = (json.dumps({"version": RECORD_VERSION, **record}, ensure_ascii=True) + "\n").encode("ascii")
        self._handle.write(line)
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self._done.add(episode_key(record))

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> TrajectoryWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
