"""A sandbox backend on an E2B cloud sandbox: model code runs in a remote microVM, not on this machine.

Why use it: the VM is the isolation boundary (its own kernel, filesystem and network stack), which the
local worker process cannot offer. What it costs: a network round trip per step, a VM start (seconds)
on the first step of every episode, and E2B billing for every second a VM is up.

How the local semantics carry over. Each episode gets one VM whose Jupyter (IPython) kernel keeps the
variables between steps. A set-up cell, run once per VM before any model code, defines
``final_answer`` (it raises :data:`FINAL_ANSWER_ERROR`, a ``BaseException`` so ``except Exception`` in
model code lets it through; its message is the answer) and, if ``allowed_imports`` is given, wraps
``builtins.__import__`` so that imports written in cell code are checked while libraries and the
template's start-up scripts import freely. Like the local backend's allow-list this is a policy that
keeps agents on the intended tools, not a boundary: ``importlib``, ``%pip`` or ``!shell`` get around it,
and the VM is what contains them.

What differs from ``sandbox="local"``:

- Tools that live in this process (the retriever) cannot be called from the VM; see :class:`E2BSandbox`.
- ``value`` is IPython's display text of the last expression (its pretty printer, which wraps long
  containers over several lines), not always ``repr``; IPython syntax (``%magic``, ``!cmd``) works.
- ``logs`` holds all of stdout, then all of stderr (the SDK keeps them apart, so their interleaving is
  lost); the ``output_chars`` bound is applied here, after the whole output has crossed the network.
- A step timeout cannot stop the kernel from here and keep its state, so the VM is killed and the step
  reports ``state_lost=True`` (the local backend keeps the state for Python-level loops).
- Of :class:`SandboxLimits` only ``step_timeout_s`` and ``output_chars`` apply; the per-process limits
  (memory, CPU time, file size, processes, scratch space) do not: the template's VM size bounds memory,
  CPU and disk, and ``sandbox_timeout_s`` bounds how long a VM may live at all.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
import weakref
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, Protocol

from agentdistill.envs.tools.sandbox.base import ExecutionResult, SandboxLimits, ToolFunction
from agentdistill.envs.tools.sandbox.worker import BoundedCapture

API_KEY_VARIABLE = "E2B_API_KEY"
"""The environment variable the key is read from when ``api_key`` is not given (as the SDK does)."""

FINAL_ANSWER_ERROR = "AgentDistillFinalAnswer"
"""Name of the exception ``final_answer`` raises inside the kernel; its message is the answer."""

DEFAULT_SANDBOX_TIMEOUT_S = 900
"""How long E2B keeps a VM alive after creation before killing it: a backstop against forgotten VMs
(billing) that must outlast the longest episode, since it is not extended step by step."""

SETUP_TIMEOUT_S = 60.0
"""Time allowed for the set-up cell; generous because it runs right after the VM boots."""

_KERNEL_LOST_ERRORS = frozenset({"ContextRestarting", "UnexpectedEndOfExecution"})
"""Error names the E2B code-interpreter server reports when the kernel restarted or the execution's
stream broke: the kernel's variables, ``final_answer`` included, can no longer be trusted."""

_SYNTAX_ERRORS = frozenset({"SyntaxError", "IndentationError", "TabError"})

_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_CELL_FRAME = re.compile(
    r"Cell\s+In\s*\[(?P<cell>\d+)\],\s*line\s+(?P<line>\d+)"  # IPython >= 8
    r"|Input\s+In\s*\[(?P<old_cell>\d+)\],\s*in\s+<cell line:\s*(?P<old_line>\d+)>"  # IPython 7.3x
)
_SYNTAX_LOCATION = re.compile(r"^(?P<message>.*) \((?P<file>[^()]*), line (?P<line>\d+)\)$", re.DOTALL)

_SETUP_CELL = '''
def _agentdistill_setup(allowed):
    import builtins
    import os
    import sys

    class AgentDistillFinalAnswer(BaseException):
        """Raised by final_answer; a BaseException so that `except Exception` lets it through."""

    def final_answer(answer):
        """End the episode with `answer` (converted to text)."""
        raise AgentDistillFinalAnswer(answer if isinstance(answer, str) else str(answer))

    if allowed is None:
        return final_answer
    allowed = frozenset(allowed)
    real_import = builtins.__import__
    is_file = os.path.isfile

    def written_in_a_cell(frame):
        # Cells run in __main__ from code that has no file on disk; libraries have their own module
        # names, and the template's start-up scripts (also run in __main__) are real files.
        if frame is None or frame.f_globals.get("__name__") != "__main__":
            return False
        filename = frame.f_code.co_filename
        return "ipykernel_" in filename or not is_file(filename)

    def guarded_import(name, globals=None, locals=None, fromlist=(), level=0):
        if written_in_a_cell(sys._getframe(1)) and (level != 0 or name.partition(".")[0] not in allowed):
            raise ImportError(
                f"Import of {name!r} is not allowed. Allowed modules: {', '.join(sorted(allowed))}"
            )
        return real_import(name, globals, locals, fromlist, level)

    builtins.__import__ = guarded_import
    return final_answer


final_answer = _agentdistill_setup(__ALLOWED_IMPORTS__)
del _agentdistill_setup
'''


class SandboxUnavailableError(RuntimeError):
    """This backend cannot work as configured: no API key, a rejected key, or parent-side tools."""


class RemoteSandbox(Protocol):
    """The part of ``e2b_code_interpreter.Sandbox`` this backend uses; a test stand-in provides the same."""

    def run_code(self, code: str, *, timeout: float | None = None) -> Any:
        """Run a cell in the VM's kernel; returns an ``e2b_code_interpreter.Execution``."""
        ...

    def kill(self) -> Any:
        """Shut the VM down."""
        ...


RemoteSandboxFactory = Callable[..., RemoteSandbox]
"""Creates a VM from keyword arguments ``template``, ``timeout`` and ``api_key`` (like ``Sandbox.create``)."""


def setup_cell(allowed_imports: Collection[str] | None) -> str:
    """The code run once in every new VM before model code: ``final_answer`` and the import policy."""
    allowed = None if allowed_imports is None else sorted(allowed_imports)
    return _SETUP_CELL.replace("__ALLOWED_IMPORTS__", repr(allowed))


def _default_factory() -> RemoteSandboxFactory:
    """``e2b_code_interpreter.Sandbox.create``, imported only when a VM is needed (an optional extra)."""
    try:
        from e2b_code_interpreter import Sandbox
    except ImportError as missing:
        raise SandboxUnavailableError(
            "sandbox='e2b' needs the E2B SDK: pip install 'agentdistill[e2b]' (or e2b-code-interpreter)"
        ) from missing
    return Sandbox.create


def _kill_quietly(remote: RemoteSandbox) -> None:
    """Kill a VM, ignoring failures: it may be gone already, and E2B kills it at its timeout anyway."""
    with contextlib.suppress(Exception):
        remote.kill()


class _RemoteSlot:
    """Holds the episode's VM and kills it when the slot is cleared or garbage-collected."""

    def __init__(self) -> None:
        self.remote: RemoteSandbox | None = None
        self._finalizer: weakref.finalize | None = None

    def set(self, remote: RemoteSandbox) -> None:
        self.clear()
        self.remote = remote
        self._finalizer = weakref.finalize(self, _kill_quietly, remote)

    def clear(self) -> None:
        if self._finalizer is not None:
            self._finalizer()
        self.remote = None
        self._finalizer = None


class E2BSandbox:
    """Runs cells in an E2B cloud VM, one VM per episode; see the module docstring for the semantics.

    Args:
        tools: must be empty. Functions in this process cannot be called from the VM, so a QA env
            needs its retriever reachable over HTTP from the VM (a remote retrieval server, see the
            README), or ``sandbox="local"``.
        allowed_imports: top-level modules cell code may import (``None``: any).
        limits: ``step_timeout_s`` bounds each cell, ``output_chars`` the captured output.
        api_key: the E2B key; defaults to the ``E2B_API_KEY`` environment variable.
        template: the E2B template to start (``None``: the SDK's code-interpreter template).
        sandbox_timeout_s: how long E2B lets a VM live after creation (a backstop, not extended).
        sandbox_factory: creates a VM; defaults to ``e2b_code_interpreter.Sandbox.create`` (tests pass a
            stand-in here).

    The VM is created on the first :meth:`run`, so building an env costs nothing. :meth:`reset` kills it
    and the next :meth:`run` boots a new one: one VM start (seconds, billed) per episode.
    """

    isolation = "e2b"

    def __init__(
        self,
        *,
        tools: Mapping[str, ToolFunction] | None = None,
        allowed_imports: Collection[str] | None = None,
        limits: SandboxLimits | None = None,
        api_key: str | None = None,
        template: str | None = None,
        sandbox_timeout_s: int = DEFAULT_SANDBOX_TIMEOUT_S,
        sandbox_factory: RemoteSandboxFactory | None = None,
    ) -> None:
        if tools:
            raise SandboxUnavailableError(_tools_message(sorted(tools)))
        key = api_key or os.environ.get(API_KEY_VARIABLE)
        if not key:
            raise SandboxUnavailableError(
                f"sandbox='e2b' needs an E2B API key: set the {API_KEY_VARIABLE} environment variable "
                "or pass api_key=... (keys: https://e2b.dev/dashboard?tab=keys)"
            )
        if sandbox_timeout_s <= 0:
            raise ValueError(f"sandbox_timeout_s must be positive, got {sandbox_timeout_s!r}")
        self.limits = limits or SandboxLimits()
        self._api_key = key
        self._template = template
        self._sandbox_timeout_s = sandbox_timeout_s
        self._factory = sandbox_factory
        self._setup_code = setup_cell(allowed_imports)
        self._slot = _RemoteSlot()

    def __repr__(self) -> str:
        # Written out so that the API key never reaches a log through a repr.
        return f"E2BSandbox(template={self._template!r}, live={self._slot.remote is not None})"

    @property
    def remote(self) -> RemoteSandbox | None:
        """The live VM handle, if any (for tests and diagnostics)."""
        return self._slot.remote

    def run(self, code: str) -> ExecutionResult:
        """Run ``code`` in the episode's VM, creating it first if needed. Only configuration errors raise."""
        started = time.monotonic()
        remote = self._slot.remote
        if remote is None:
            try:
                remote = self._start()
            except SandboxUnavailableError:
                raise
            except Exception as failure:  # noqa: BLE001 - network, quota, busy service: report, don't crash
                return ExecutionResult(
                    logs="",
                    error=f"Could not start the E2B sandbox: {_describe_failure(failure)}",
                    duration_s=time.monotonic() - started,
                )
        try:
            execution = remote.run_code(code, timeout=self.limits.step_timeout_s)
        except Exception as failure:  # noqa: BLE001 - any failure here leaves the kernel's state unknown
            return self._recover(failure, time.monotonic() - started)
        return self._result_from(execution, code, time.monotonic() - started)

    def reset(self) -> None:
        """Kill the VM; the next :meth:`run` boots a fresh one (seconds, and billed as a new VM)."""
        self._slot.clear()

    def close(self) -> None:
        """Kill the VM, if any. Safe to call twice."""
        self._slot.clear()

    def _start(self) -> RemoteSandbox:
        """Create a VM and run the set-up cell in it; a VM whose set-up fails is killed at once."""
        factory = self._factory or _default_factory()
        try:
            remote = factory(template=self._template, timeout=self._sandbox_timeout_s, api_key=self._api_key)
        except Exception as failure:
            if _is_authentication_failure(failure):
                raise SandboxUnavailableError(f"E2B rejected the API key: {failure}") from failure
            raise
        self._slot.set(remote)
        try:
            execution = remote.run_code(self._setup_code, timeout=SETUP_TIMEOUT_S)
        except Exception:
            self._slot.clear()
            raise
        if execution.error is not None:
            self._slot.clear()
            raise RuntimeError(f"the set-up cell failed: {execution.error.name}: {execution.error.value}")
        return remote

    def _result_from(self, execution: Any, code: str, duration_s: float) -> ExecutionResult:
        """Map an SDK ``Execution`` to the env's record, in the local backend's wording."""
        logs = _bounded_logs(execution.logs.stdout, execution.logs.stderr, self.limits.output_chars)
        error = execution.error
        if error is None:
            return ExecutionResult(logs=logs, value=_main_result_text(execution.results), duration_s=duration_s)
        if error.name == FINAL_ANSWER_ERROR:
            return ExecutionResult(logs=logs, final_answer=str(error.value), duration_s=duration_s)
        if error.name in _KERNEL_LOST_ERRORS:
            self._slot.clear()
            return ExecutionResult(
                logs=logs,
                error=f"The Python kernel running the code was lost ({error.name}: {error.value}). "
                "Its state was reset: variables from earlier steps are gone.",
                state_lost=True,
                duration_s=duration_s,
            )
        return ExecutionResult(
            logs=logs,
            error=describe_kernel_error(error.name, error.value, error.traceback, code),
            duration_s=duration_s,
        )

    def _recover(self, failure: Exception, duration_s: float) -> ExecutionResult:
        """The cell overran its timeout or the VM could not be reached: drop the VM, report the step."""
        self._slot.clear()
        timed_out = _is_execution_timeout(failure)
        if timed_out:
            reason = (
                f"Code execution timed out after {self.limits.step_timeout_s:g} seconds and the sandbox was stopped."
            )
        else:
            reason = f"The E2B sandbox could not run the code ({_describe_failure(failure)})."
        return ExecutionResult.state_reset(reason, timed_out=timed_out, duration_s=duration_s)


def _tools_message(names: Sequence[str]) -> str:
    return (
        f"sandbox='e2b' cannot call tools that live in this process ({', '.join(names)}): model code runs "
        "in a cloud VM that cannot reach them. QA envs need their retriever reachable over HTTP from the "
        "sandbox (a remote retrieval server, see the README); sandbox='local' works for them as they are."
    )


def _main_result_text(results: Sequence[Any]) -> str | None:
    """The kernel's text of the cell's last expression; display() outputs are not the value."""
    for result in results:
        if result.is_main_result:
            return result.text
    return None


def _bounded_logs(stdout: Sequence[str], stderr: Sequence[str], limit: int) -> str:
    """stdout then stderr, cut to ``limit`` characters keeping head and tail, as the local worker does."""
    capture = BoundedCapture(limit)
    for chunk in (*stdout, *stderr):
        capture.write(str(chunk))
    return capture.getvalue()


def describe_kernel_error(name: str, value: str, traceback: str, code: str) -> str:
    """Word a kernel error as the local backend does, locating the line from IPython's traceback."""
    traceback = _ANSI_ESCAPE.sub("", traceback or "")
    lines = code.splitlines()
    if name in _SYNTAX_ERRORS:
        location = _SYNTAX_LOCATION.match(value or "")
        message = location["message"] if location else value
        number = _failing_line_number(traceback) or (int(location["line"]) if location else None)
        if number is None:
            return f"Code parsing failed on an unknown line due to: SyntaxError: {message}"
        text = lines[number - 1].strip() if 0 < number <= len(lines) else ""
        return f"Code parsing failed on line {number} ('{text}') due to: SyntaxError: {message}"
    number = _failing_line_number(traceback)
    line = lines[number - 1].strip() if number and 0 < number <= len(lines) else "?"
    return f"Code execution failed at line '{line}' due to: {name}: {value}"


def _failing_line_number(traceback: str) -> int | None:
    """The innermost line of the current cell in an IPython traceback.

    Frames of earlier cells (a function defined two steps ago) carry smaller execution counts, so the
    newest cell's frames are those with the largest count; the last of them is the innermost.
    """
    frames = []
    for match in _CELL_FRAME.finditer(traceback):
        cell = match["cell"] or match["old_cell"]
        line = match["line"] or match["old_line"]
        frames.append((int(cell), int(line)))
    if not frames:
        return None
    newest = max(cell for cell, _ in frames)
    return [line for cell, line in frames if cell == newest][-1]


def _describe_failure(failure: BaseException) -> str:
    message = str(failure).strip()
    return f"{type(failure).__name__}: {message}" if message else type(failure).__name__


def _is_execution_timeout(failure: BaseException) -> bool:
    """Whether ``run_code`` gave up because the cell overran ``timeout`` (not a connect or VM failure).

    The SDK raises the same ``TimeoutException`` class for a cell timeout, a connect timeout and a VM
    killed mid-request; only the cell timeout's message comes from ``format_execution_timeout_error``,
    so the comparison follows the SDK's own wording. A raw ``httpx.ReadTimeout`` counts too.
    """
    try:
        import httpx
        from e2b_code_interpreter.exceptions import format_execution_timeout_error
    except ImportError:
        return False
    if isinstance(failure, httpx.ReadTimeout):
        return True
    expected = format_execution_timeout_error()
    return type(failure) is type(expected) and str(failure) == str(expected)


def _is_authentication_failure(failure: BaseException) -> bool:
    """A rejected key is a configuration error to raise, not a step to report to the model."""
    try:
        from e2b import AuthenticationException
    except ImportError:
        return False
    return isinstance(failure, AuthenticationException)


__all__ = [
    "API_KEY_VARIABLE",
    "DEFAULT_SANDBOX_TIMEOUT_S",
    "FINAL_ANSWER_ERROR",
    "E2BSandbox",
    "RemoteSandbox",
    "RemoteSandboxFactory",
    "SandboxUnavailableError",
    "describe_kernel_error",
    "setup_cell",
]
