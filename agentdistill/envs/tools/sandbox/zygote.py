"""The sandbox's zygote: a warm process that forks one isolated worker per episode.

Started once per :class:`~agentdistill.envs.tools.sandbox.local.LocalSandbox` as a plain script
(``python -I zygote.py CONTROL_FD``), standard library only. It isolates itself (``isolation.py``),
imports the modules model code may use (numpy and sympy take most of a second to import; a fork
inherits them for free), then waits for requests on a datagram control socket:

- ``spawn`` (with two descriptors: the episode's frame socket and its descriptor socket): fork a worker
  that enters its own episode isolation and serves frames (``worker.py``); answer with its pid;
- ``status``: how a worker ended (for the observation: "killed by SIGSEGV" ...).

A fresh episode thus costs a fork and a few mounts, not an interpreter start. When the parent goes
away the control socket reads empty, the zygote exits, and every episode dies with it.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import resource
import shutil
import signal
import socket
import sys
import time
from types import ModuleType
from typing import Any

_MAX_CONTROL_MESSAGE = 1 << 20
_REMEMBERED_EXITS = 256
_STATUS_WAIT_S = 0.5


def _load_sibling(name: str) -> ModuleType:
    """Load a module from beside this file: the zygote runs as a script, outside the package."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"_agentdistill_sandbox_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _send(control: socket.socket, message: dict[str, Any]) -> None:
    control.send(json.dumps(message).encode("ascii"))


def _preload(modules: list[str]) -> list[str]:
    """Import what model code may import, so every forked episode starts with it; returns failures."""
    failed = []
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - a missing optional module only costs its import later
            failed.append(name)
    return failed


class Zygote:
    """Serves the control socket; remembers how recent workers ended."""

    def __init__(self, control: socket.socket, init: dict[str, Any], isolation: ModuleType, worker: ModuleType) -> None:
        self.control = control
        self.init = init
        self.isolation = isolation
        self.worker = worker
        self.level, self.detail = self._isolate()
        self.exits: dict[int, int] = {}
        self.workdirs: dict[int, str] = {}
        """The directory of each episode not yet reaped, removed here if the parent goes first (see :meth:`serve`)."""

    def _isolate(self) -> tuple[str, str | None]:
        if not self.init.get("isolate"):
            return self.isolation.PROCESS_ONLY, "isolation was not requested"
        try:
            level = self.isolation.isolate_zygote()
        except OSError as error:
            return self.isolation.PROCESS_ONLY, str(error)
        return level, None if level == self.isolation.NAMESPACES else "namespaces need root (euid 0)"

    def serve(self) -> None:
        """Answer the parent until its end of the control socket closes, then clean up after its episodes.

        The parent removes an episode's directory when it stops the episode. A parent killed outright (SIGKILL,
        or SIGTERM without a handler) never does: its zygote then reads EOF here and removes them instead, so no
        run that is killed leaves its directories in the temp dir.
        """
        try:
            self._serve()
        finally:
            self._abandon_episodes()

    def _serve(self) -> None:
        failed = _preload(list(self.init.get("preload", [])))
        _send(self.control, {"op": "ready", "pid": os.getpid(), "isolation": self.level, "detail": self.detail, "preload_failed": failed})
        while True:
            try:
                payload, descriptors, _, _ = socket.recv_fds(self.control, _MAX_CONTROL_MESSAGE, 2)
            except (ConnectionError, OSError):
                return
            if not payload:
                return
            self._reap()
            message = json.loads(payload)
            if message["op"] == "spawn":
                workdir = str(message["workdir"])
                pid = self._spawn(workdir, descriptors)
                self.workdirs[pid] = workdir
                _send(self.control, {"op": "spawned", "pid": pid})
            elif message["op"] == "status":
                _send(self.control, {"op": "status", **self._status(int(message["pid"]))})

    def _spawn(self, workdir: str, descriptors: list[int]) -> int:
        pid = os.fork()
        if pid == 0:
            self.control.close()
            code = 0
            try:
                # A user id per episode, not per zygote: the zygote serves every sandbox of a process, and
                # episodes of one user id would share its process limit and could write into each other's files.
                uid = self.isolation.SANDBOX_UID_BASE + os.getpid()
                self.isolation.enter_episode(
                    workdir, level=self.level, uid=uid, scratch_bytes=int(self.init["scratch_bytes"])
                )
                channel = self.worker.Channel(descriptors[0], descriptors[1])
                self.worker.start_episode(self.init, channel, self.level, self.detail)
            except BaseException as error:  # noqa: BLE001 - the episode must never return into the zygote
                code = 70
                try:
                    self.worker.write_frame(descriptors[0], {"op": "failed", "error": f"{type(error).__name__}: {error}"})
                except OSError:
                    pass
            os._exit(code)
        for fd in descriptors:
            os.close(fd)
        return pid

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self._forget(pid, status)

    def _forget(self, pid: int, status: int) -> None:
        """Record how ``pid`` ended; its directory is the parent's to remove from now on (it is alive: it asked)."""
        self.workdirs.pop(pid, None)
        self.exits[pid] = status
        while len(self.exits) > _REMEMBERED_EXITS:
            self.exits.pop(next(iter(self.exits)))

    def _status(self, pid: int) -> dict[str, Any]:
        """How worker ``pid`` ended, waiting briefly for it; ``alive`` if it has not (the parent then
        kills it): the zygote must never block on a worker."""
        status = self.exits.pop(pid, None)
        deadline = time.monotonic() + _STATUS_WAIT_S
        while status is None:
            try:
                reaped, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                return {"signal": None, "code": None, "alive": False}
            if reaped == 0:
                status = None
                if time.monotonic() > deadline:
                    return {"signal": None, "code": None, "alive": True}
                time.sleep(0.005)
        self.workdirs.pop(pid, None)
        if os.WIFSIGNALED(status):
            return {"signal": os.WTERMSIG(status), "code": None, "alive": False}
        return {"signal": None, "code": os.waitstatus_to_exitcode(status), "alive": False}

    def _abandon_episodes(self) -> None:
        """The parent is gone: kill the episodes it left (they would die with this process anyway) and remove
        their directories, which nobody else would."""
        for pid, workdir in list(self.workdirs.items()):
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            shutil.rmtree(workdir, ignore_errors=True)
        self.workdirs.clear()


def main(control_fd: int) -> None:
    control = socket.socket(fileno=control_fd)
    payload = control.recv(_MAX_CONTROL_MESSAGE)
    if not payload:
        return
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a crashing episode must not dump a core anywhere
    worker = _load_sibling("worker")
    signal.signal(signal.SIGALRM, worker.raise_step_timeout)
    Zygote(control, json.loads(payload), _load_sibling("isolation"), worker).serve()


if __name__ == "__main__":
    main(int(sys.argv[1]))
