"""The default sandbox: a separate Python process per episode, on this machine.

Each worker runs in its own session (process group) with a private temporary working directory, a
scrubbed environment (no API keys from the parent) and rlimits on memory, CPU time, file size and
processes. Where the platform allows (root on Linux), it also isolates itself in namespaces under a
user id of its own (see ``isolation.py``): no network, no writes outside its directory, no view of
other processes. Where it cannot, it says so loudly (a :class:`SandboxIsolationWarning` and the level in
:attr:`LocalSandbox.isolation`), never silently. A step that overruns its timeout is stopped by an alarm
inside the worker; a worker that still does not answer is killed with its whole process group and
replaced. Tools stay in this process and are called through the pipe, so the retriever is never loaded
(or trusted) inside the sandbox.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Collection, Literal, Mapping

from agentdistill.envs.tools.sandbox import worker as worker_module
from agentdistill.envs.tools.sandbox.base import ExecutionResult, SandboxLimits, ToolCall, ToolFunction
from agentdistill.envs.tools.sandbox.worker import ProtocolError, read_frame, write_frame

_PASSED_ENVIRONMENT = ("PATH", "LANG", "LC_ALL", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
"""Variables the worker may see: locale, search path and CPU-correctness settings, never secrets."""

_STARTUP_TIMEOUT_S = 30.0

IsolationMode = Literal["auto", "namespaces", "process"]


class SandboxIsolationWarning(UserWarning):
    """The sandbox runs with weaker isolation than asked for (e.g. no namespaces without root)."""


class SandboxIsolationError(RuntimeError):
    """``isolation="namespaces"`` was required but the platform cannot provide it."""


@dataclass
class _Worker:
    process: subprocess.Popen[bytes]
    to_worker: int
    from_worker: int
    workdir: Path
    isolation: str


def _stop_worker(worker: _Worker) -> None:
    """Kill the worker's process group, reap it, close the pipes and remove its directory."""
    try:
        os.killpg(worker.process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        worker.process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass
    for fd in (worker.to_worker, worker.from_worker):
        try:
            os.close(fd)
        except OSError:
            pass
    shutil.rmtree(worker.workdir, ignore_errors=True)


class _WorkerSlot:
    """Holds the current worker, and stops it when the slot is cleared or garbage-collected."""

    def __init__(self) -> None:
        self.worker: _Worker | None = None
        self._finalizer: weakref.finalize | None = None

    def set(self, worker: _Worker) -> None:
        self.clear()
        self.worker = worker
        self._finalizer = weakref.finalize(self, _stop_worker, worker)

    def clear(self) -> None:
        if self._finalizer is not None:
            self._finalizer()
        self.worker = None
        self._finalizer = None


class LocalSandbox:
    """Runs cells in a local worker process; see the module docstring for what is contained.

    Args:
        tools: functions model code may call by name; they run in this process.
        allowed_imports: top-level modules model code may import (``None``: any).
        limits: resource limits and timeouts.
        isolation: ``"auto"`` (namespaces where possible, else a warning and plain processes),
            ``"namespaces"`` (refuse to run without them) or ``"process"`` (never try).
        python: the interpreter that runs the worker (defaults to this one, so the same packages).
    """

    def __init__(
        self,
        *,
        tools: Mapping[str, ToolFunction] | None = None,
        allowed_imports: Collection[str] | None = None,
        limits: SandboxLimits | None = None,
        isolation: IsolationMode = "auto",
        python: str = sys.executable,
    ) -> None:
        if isolation not in ("auto", "namespaces", "process"):
            raise ValueError(f"isolation must be 'auto', 'namespaces' or 'process', got {isolation!r}")
        self.isolation_mode: IsolationMode = isolation
        self._warned = False
        self._tools = dict(tools or {})
        self._allowed_imports = None if allowed_imports is None else sorted(allowed_imports)
        self.limits = limits or SandboxLimits()
        self._python = python
        self._slot = _WorkerSlot()

    def run(self, code: str) -> ExecutionResult:
        """Run ``code`` in the episode's worker, starting one if needed."""
        started = time.monotonic()
        worker = self._slot.worker or self._start_worker()
        deadline = started + self.limits.step_timeout_s + self.limits.kill_grace_s
        tool_calls: list[ToolCall] = []
        try:
            write_frame(worker.to_worker, {"op": "exec", "code": code, "timeout_s": self.limits.step_timeout_s})
            while True:
                message = read_frame(worker.from_worker, deadline)
                if message["op"] == "result":
                    return self._result_from(message, tool_calls, time.monotonic() - started)
                if message["op"] == "tool_call":
                    self._answer_tool_call(worker, message, tool_calls)
        except (ProtocolError, OSError) as failure:
            return self._recover(worker, failure, tool_calls, time.monotonic() - started)

    def reset(self) -> None:
        """Replace the worker with a fresh process and directory, ready for the next :meth:`run`."""
        self._slot.clear()
        self._start_worker()

    @property
    def isolation(self) -> str:
        """The isolation in force: ``"namespaces"`` or ``"process"`` (before a worker starts: the mode
        asked for)."""
        return self._slot.worker.isolation if self._slot.worker else self.isolation_mode

    def close(self) -> None:
        """Stop the worker and remove its directory."""
        self._slot.clear()

    @property
    def worker_pid(self) -> int | None:
        """The pid of the live worker, if any (for tests and diagnostics)."""
        return self._slot.worker.process.pid if self._slot.worker else None

    @property
    def workdir(self) -> Path | None:
        """The live worker's private working directory, if any."""
        return self._slot.worker.workdir if self._slot.worker else None

    def _start_worker(self) -> _Worker:
        workdir = Path(tempfile.mkdtemp(prefix="agentdistill-sandbox-"))
        parent_to_child_r, parent_to_child_w = os.pipe()
        child_to_parent_r, child_to_parent_w = os.pipe()
        try:
            process = subprocess.Popen(  # noqa: S603 - fixed argv: our interpreter and our worker script
                [self._python, "-I", worker_module.__file__, str(parent_to_child_r), str(child_to_parent_w)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                cwd=workdir,
                env=self._worker_environment(workdir),
                start_new_session=True,
                pass_fds=(parent_to_child_r, child_to_parent_w),
            )
        finally:
            os.close(parent_to_child_r)
            os.close(child_to_parent_w)
        worker = _Worker(process, parent_to_child_w, child_to_parent_r, workdir, isolation="starting")
        self._slot.set(worker)
        write_frame(
            worker.to_worker,
            {
                "op": "init",
                "tools": sorted(self._tools),
                "allowed_imports": self._allowed_imports,
                "limits": self.limits.as_worker_limits(),
                "output_limit": self.limits.output_chars,
                "isolate": self.isolation_mode != "process",
                "scratch_bytes": self.limits.scratch_bytes,
            },
        )
        ready = read_frame(worker.from_worker, time.monotonic() + _STARTUP_TIMEOUT_S)
        if ready["op"] != "ready":
            raise ProtocolError(f"worker sent {ready['op']!r} instead of 'ready' at start-up")
        worker.isolation = str(ready.get("isolation", "process"))
        self._check_isolation(worker, ready.get("detail"))
        return worker

    def _check_isolation(self, worker: _Worker, detail: object) -> None:
        """Refuse or warn when the worker is less isolated than asked; never degrade silently."""
        if worker.isolation == "namespaces" or self.isolation_mode == "process":
            return
        message = (
            f"the code sandbox runs without namespace isolation ({detail}): model code can reach the "
            "network and write wherever this user can. Run as root on Linux, or in a container or VM."
        )
        if self.isolation_mode == "namespaces":
            self._slot.clear()
            raise SandboxIsolationError(message)
        if not self._warned:
            self._warned = True
            warnings.warn(message, SandboxIsolationWarning, stacklevel=4)

    def _worker_environment(self, workdir: Path) -> dict[str, str]:
        environment = {name: os.environ[name] for name in _PASSED_ENVIRONMENT if name in os.environ}
        environment.update(
            HOME=str(workdir),
            TMPDIR=str(workdir),
            PYTHONDONTWRITEBYTECODE="1",
            OMP_NUM_THREADS="1",
            OPENBLAS_NUM_THREADS="1",
            MKL_NUM_THREADS="1",
        )
        return environment

    def _answer_tool_call(self, worker: _Worker, message: dict[str, Any], tool_calls: list[ToolCall]) -> None:
        name = str(message.get("name"))
        args = message.get("args") if isinstance(message.get("args"), list) else []
        kwargs = message.get("kwargs") if isinstance(message.get("kwargs"), dict) else {}
        reply: dict[str, Any] = {"op": "tool_result", "id": message.get("id"), "value": None, "error": None}
        tool = self._tools.get(name)
        if tool is None:
            reply["error"] = f"unknown tool {name!r}"
        else:
            try:
                reply["value"] = tool(*args, **kwargs)
            except Exception as error:  # noqa: BLE001 - a tool failure becomes an exception in model code
                reply["error"] = f"{name} failed: {type(error).__name__}: {error}"
        tool_calls.append(ToolCall(name=name, args=tuple(args), kwargs=dict(kwargs), error=reply["error"]))
        write_frame(worker.to_worker, reply)

    @staticmethod
    def _result_from(message: dict[str, Any], tool_calls: list[ToolCall], duration_s: float) -> ExecutionResult:
        def text_or_none(key: str) -> str | None:
            value = message.get(key)
            return None if value is None else str(value)

        return ExecutionResult(
            logs=str(message.get("logs", "")),
            value=text_or_none("value"),
            error=text_or_none("error"),
            final_answer=text_or_none("final_answer"),
            timed_out=bool(message.get("timed_out", False)),
            tool_calls=tuple(tool_calls),
            duration_s=duration_s,
        )

    def _recover(
        self, worker: _Worker, failure: Exception, tool_calls: list[ToolCall], duration_s: float
    ) -> ExecutionResult:
        """The worker hung, died or spoke nonsense: kill it and report the step as failed."""
        self._slot.clear()
        code = worker.process.returncode
        timed_out = "timed out" in str(failure)
        if timed_out:
            reason = f"Code execution timed out after {self.limits.step_timeout_s:g} seconds and was killed."
        elif code is not None and code < 0:
            reason = f"The Python process running the code was killed by signal {signal.Signals(-code).name}."
        else:
            reason = f"The Python process running the code stopped unexpectedly ({failure})."
        return ExecutionResult(
            logs="",
            error=reason + " Its state was reset: variables from earlier steps are gone.",
            timed_out=timed_out,
            state_lost=True,
            tool_calls=tuple(tool_calls),
            duration_s=duration_s,
        )

