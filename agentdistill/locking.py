"""One writer at a time: advisory locks on output files and directories, and who holds them.

Two runs appending to one trajectory file, or training into one directory, would interleave their
records or checkpoints without either noticing. Each writer takes an exclusive ``flock`` on what it
writes for as long as it writes; a second one fails at once and is told which process holds the lock
(read from ``/proc/locks`` on Linux), so the user can wait for it or pick another path.

``flock`` locks belong to an open file description, so they are released when the holder closes the
file or dies (a killed run never leaves a stale lock behind), and two handles opened in one process
exclude each other as two processes do.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from agentdistill.errors import OutputConflictError


class OutputLockedError(OutputConflictError):
    """The output is being written by another run right now."""


def lock_exclusively(fd: int, path: str | os.PathLike[str], what: str) -> None:
    """Take an exclusive lock on the open file (or directory) ``fd``, or raise :class:`OutputLockedError`
    naming the process that holds it. ``what`` says what the path is, e.g. ``"this trajectory file"``."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = lock_holder(path)
        by = f" by process {holder}" if holder else ""
        raise OutputLockedError(
            path, f"{what} is being written{by} right now; wait for that run to end, or choose another output"
        ) from None


def lock_holder(path: str | os.PathLike[str]) -> str | None:
    """``"PID (command line)"`` of a process holding an ``flock`` on ``path``, when ``/proc/locks`` says."""
    try:
        inode = os.stat(path).st_ino
        lines = Path("/proc/locks").read_text(encoding="ascii", errors="replace").splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        # "1: FLOCK  ADVISORY  WRITE 4242 fd:01:1234567 0 EOF"; waiting requests carry a "->" field.
        if len(fields) < 6 or "->" in fields or fields[1] != "FLOCK":
            continue
        pid, device_inode = fields[4], fields[5]
        if device_inode.rsplit(":", 1)[-1] == str(inode) and pid.isdigit():
            command = "this process" if int(pid) == os.getpid() else _command_line(int(pid))
            return f"{pid} ({command})"
    return None


def _command_line(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "command unknown"
    words = [word.decode(errors="replace") for word in raw.split(b"\0") if word]
    text = " ".join(words)
    return text if len(text) <= 160 else text[:157] + "..."
