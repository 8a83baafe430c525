"""Which run an output belongs to, so that a rerun resumes its own work and never mixes in another's.

A run's *identity* is a JSON mapping of everything that decides what it writes (the env and its
arguments, the policy, sampling, the training data's fingerprint, the settings). Outputs carry it: each
trajectory record, and each run directory in its manifest file :data:`MANIFEST_FILENAME`. A rerun with
the same identity resumes; one with another identity is refused with the keys that differ, so two runs
never share a file without the user asking.

:func:`claim_run_directory` is what ``eval``, ``distill`` and ``rl`` call before writing anything: it
creates the directory and its manifest, or checks an existing one, and locks the directory for the
run's lifetime (:mod:`agentdistill.locking`).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentdistill.errors import OutputConflictError
from agentdistill.locking import lock_exclusively

MANIFEST_FILENAME = "agentdistill-run.json"
"""The file in every run directory that names the command and identity of the run that owns it."""

_SHOWN_DIFFERENCES = 6
_SHOWN_FILES = 4


def canonical(value: Any) -> Any:
    """``value`` as plain JSON data (tuples become lists, paths and other objects their ``str``), the form
    identities are recorded and compared in."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def identity_differences(recorded: Mapping[str, Any], wanted: Mapping[str, Any], *, ignore: Collection[str] = ()) -> list[str]:
    """One line per dotted key whose value differs between a recorded identity and this run's
    (``"policy: 'hf:a' before, 'hf:b' now"``); keys listed in ``ignore`` (top level) may differ."""
    before = canonical({k: v for k, v in recorded.items() if k not in ignore})
    now = canonical({k: v for k, v in wanted.items() if k not in ignore})
    lines: list[str] = []
    _compare(before, now, "", lines)
    return lines


def _compare(old: Any, new: Any, key: str, lines: list[str]) -> None:
    """Descend while both sides are mappings; report the first level where they differ otherwise."""
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        for name in sorted(set(old) | set(new)):
            _compare(old.get(name, _MISSING), new.get(name, _MISSING), f"{key}.{name}" if key else str(name), lines)
    elif old != new:
        lines.append(f"{key or '(value)'}: {_shown(old)} before, {_shown(new)} now")


def describe_differences(lines: Iterable[str]) -> str:
    """The first few difference lines joined into one sentence part (``"a: 1 before, 2 now; ..."``)."""
    lines = list(lines)
    text = "; ".join(lines[:_SHOWN_DIFFERENCES])
    if len(lines) > _SHOWN_DIFFERENCES:
        text += f"; and {len(lines) - _SHOWN_DIFFERENCES} more"
    return text


@dataclass
class RunDirectory:
    """A directory claimed by this run: ``resumed`` tells whether it held this run's earlier work.

    The directory stays locked against other runs until :meth:`release` (or the end of a ``with`` block,
    or this process's exit).
    """

    path: Path
    command: str
    identity: dict[str, Any]
    resumed: bool
    _fd: int | None = field(default=None, repr=False)

    def release(self) -> None:
        """Unlock the directory (idempotent)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def __enter__(self) -> RunDirectory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def claim_run_directory(
    out: str | os.PathLike[str],
    *,
    command: str,
    identity: Mapping[str, Any],
    may_change: Collection[str] = (),
) -> RunDirectory:
    """Make ``out`` the directory of this ``command`` run with ``identity``, or confirm it already is.

    - Missing or empty: created, and the manifest written (``resumed=False``).
    - Holding the manifest of the same command and identity: resumed (``resumed=True``). Top-level keys
      in ``may_change`` may differ (e.g. a step budget raised to train further); the manifest then
      records the new values.
    - Anything else raises :class:`~agentdistill.errors.OutputConflictError` before a byte is written:
      another command's or another identity's directory (the differing keys are named), or a directory
      of files no agentdistill run claimed.
    - Being written by a live run: :class:`~agentdistill.locking.OutputLockedError` naming its process.
    """
    directory = Path(out)
    if directory.exists() and not directory.is_dir():
        raise OutputConflictError(directory, "exists and is not a directory; give a directory path")
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory, os.O_RDONLY)
    try:
        lock_exclusively(fd, directory, "this output directory")
        wanted = canonical(dict(identity))
        resumed = _check_manifest(directory, command, wanted, may_change)
        _write_manifest(directory, command, wanted)
    except BaseException:
        os.close(fd)
        raise
    return RunDirectory(path=directory, command=command, identity=wanted, resumed=resumed, _fd=fd)


def read_manifest(directory: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The manifest of a run directory, or ``None`` when it has none."""
    path = Path(directory) / MANIFEST_FILENAME
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise OutputConflictError(path, f"is not a readable run manifest ({error}); move it away to reuse the directory") from None
    if not isinstance(data, Mapping) or not isinstance(data.get("identity"), Mapping):
        raise OutputConflictError(path, "is not a run manifest written by agentdistill")
    return dict(data)


def _check_manifest(directory: Path, command: str, wanted: dict[str, Any], may_change: Collection[str]) -> bool:
    manifest = read_manifest(directory)
    if manifest is None:
        others = sorted(entry.name for entry in directory.iterdir())
        if others:
            shown = ", ".join(others[:_SHOWN_FILES]) + (f" and {len(others) - _SHOWN_FILES} more" if len(others) > _SHOWN_FILES else "")
            raise OutputConflictError(
                directory,
                f"already holds files that no agentdistill run wrote here ({shown}); "
                "give a new or empty directory so that nothing in it is overwritten",
            )
        return False
    if manifest.get("command") != command:
        raise OutputConflictError(
            directory,
            f"holds an `agentdistill {manifest.get('command')}` run, not `agentdistill {command}`; give another directory",
        )
    differences = identity_differences(manifest["identity"], wanted, ignore=may_change)
    if differences:
        raise OutputConflictError(
            directory,
            f"holds another `agentdistill {command}` run ({describe_differences(differences)}); "
            f"rerun with the same settings to resume it, or give another directory (see {MANIFEST_FILENAME})",
        )
    return True


def _write_manifest(directory: Path, command: str, identity: dict[str, Any]) -> None:
    """Write the manifest atomically (a crash leaves the old one or the new one, never half of one)."""
    from agentdistill import __version__

    data = {"command": command, "identity": identity, "agentdistill": __version__, "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    handle = tempfile.NamedTemporaryFile("w", dir=directory, prefix=".manifest-", suffix=".tmp", delete=False, encoding="utf-8")
    try:
        with handle:
            json.dump(data, handle, indent=1, sort_keys=True)
            handle.write("\n")
        os.replace(handle.name, directory / MANIFEST_FILENAME)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise


class _Missing:
    def __repr__(self) -> str:
        return "(absent)"


_MISSING = _Missing()


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
