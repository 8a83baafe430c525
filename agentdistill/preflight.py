"""Checks that an output path can be written, made before a long run starts rather than after it.

A rollout, an evaluation, an index build or a training run that learns after hours that its output
directory is read-only or its disk is full has wasted those hours (a training run may also die with a
half-written checkpoint). The commands that write output call :func:`check_output_path` first, so
these faults surface at once, as one sentence that names the path and the problem. What cannot be
known in advance (the disk filling up mid-run) is survived by the writers themselves: a trajectory
file is appended and fsynced per episode, so a run that dies of a full disk resumes without loss.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Literal

OutputKind = Literal["file", "directory"]

DEFAULT_MIN_FREE_BYTES = 64 * 1024**2
"""Free space asked of a file system that receives trajectories or results: far more than a few
episodes need, far less than any disk in use has, so only a (nearly) full disk is refused."""

MODEL_MIN_FREE_BYTES = 1024**3
"""Free space asked where a model and its checkpoints are written (``distill``, ``index build``): a
tiny student's checkpoint is megabytes, a 1.5B one gigabytes; this refuses only a disk that could not
hold even a small one."""


class OutputPathError(OSError):
    """An output path that cannot be written: names the path and the problem in one sentence."""

    def __init__(self, path: str | os.PathLike[str], problem: str) -> None:
        self.path = os.fspath(path)
        self.problem = problem
        super().__init__(f"cannot write {self.path}: {problem}")

    def __reduce__(self) -> tuple[object, ...]:
        # OSError's own pickling would pass the message as (errno, strerror); keep ours.
        return (type(self), (self.path, self.problem))


def check_output_path(
    path: str | os.PathLike[str], *, kind: OutputKind, min_free_bytes: int = DEFAULT_MIN_FREE_BYTES
) -> Path:
    """Raise :class:`OutputPathError` unless ``path`` can be written as a ``kind`` with room to spare.

    The path need not exist yet (writers create missing parent directories): the check runs on the
    nearest directory that exists, which must be a directory, writable (tried for real, with an
    anonymous temporary file, since permission bits say nothing for root or for a read-only mount)
    and on a file system with at least ``min_free_bytes`` free. An existing file must be a file (or
    a directory, for ``kind="directory"``) and open for appending. Returns ``path`` as a :class:`Path`.
    """
    if kind not in ("file", "directory"):
        raise ValueError(f"kind must be 'file' or 'directory', got {kind!r}")
    if isinstance(min_free_bytes, bool) or not isinstance(min_free_bytes, int) or min_free_bytes < 0:
        raise ValueError(f"min_free_bytes must be a non-negative int, got {min_free_bytes!r}")
    target = Path(path).expanduser()
    if target.exists():
        if kind == "file" and target.is_dir():
            raise OutputPathError(target, "it is a directory; a file path is expected here")
        if kind == "directory" and not target.is_dir():
            raise OutputPathError(target, "it exists and is not a directory")
    anchor = _nearest_existing(target if kind == "directory" else target.parent)
    if not anchor.is_dir():
        raise OutputPathError(target, f"{anchor} is not a directory")
    try:
        with tempfile.TemporaryFile(dir=anchor):
            pass
        if kind == "file" and target.is_file():
            with target.open("ab"):
                pass
    except OSError as error:
        where = target if kind == "file" and target.is_file() else anchor
        raise OutputPathError(target, f"{where} is not writable ({error.strerror or error})") from error
    free = shutil.disk_usage(anchor).free
    if free < min_free_bytes:
        raise OutputPathError(
            target,
            f"only {_size(free)} free on the file system of {anchor}, at least {_size(min_free_bytes)} needed "
            "(free some space or choose another location)",
        )
    return target


def _nearest_existing(path: Path) -> Path:
    """``path`` or its closest ancestor that exists (the current directory for a relative path)."""
    current = path if path.is_absolute() else Path.cwd() / path
    while not current.exists() and current != current.parent:
        current = current.parent
    return current


def _size(count: int) -> str:
    """A byte count for people: ``512 B``, ``64.0 KiB``, ``1.0 GiB``."""
    if count < 1024:
        return f"{count} B"
    value = count / 1024
    for unit in ("KiB", "MiB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"
