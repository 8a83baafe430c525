"""The default sandbox: model code runs in isolated worker processes on this machine.

A :class:`LocalSandbox` starts one *zygote* (``zygote.py``): a Python process that isolates itself,
imports the modules model code may use, and forks one worker per episode, so a fresh episode costs a
fork rather than an interpreter start. Each episode worker runs in its own session with a private
working directory, a scrubbed environment (no API keys from the parent) and rlimits on memory, CPU
time, file size and processes. Where the platform allows (root on Linux) it is also isolated in
namespaces under a user id of its own (``isolation.py``): no network, no writes outside its directory,
no view of other processes. Where it cannot be, the sandbox says so loudly (a
:class:`SandboxIsolationWarning` and the level in :attr:`LocalSandbox.isolation`), never silently.

A step that overruns its timeout is stopped by an alarm inside the worker (the episode's variables
survive); a worker that still does not answer is killed with everything it started and the next step
starts a fresh episode state. Tools stay in this process and are called over the worker's socket with
JSON frames, so the retriever is never loaded (or trusted) inside the sandbox.

For self-consistent action generation (SAG), :meth:`LocalSandbox.run_candidates` runs several cells
from the same episode state, each in a forked copy of the worker, without changing that state;
:meth:`LocalSandbox.adopt` then makes one candidate's resulting state the episode's, so the winning
cell never runs twice.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import warnings
import weakref
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Collection, Literal, Mapping, Sequence

from agentdistill.envs.tools.sandbox import zygote as zygote_module
from agentdistill.envs.tools.sandbox.base import ExecutionResult, SandboxLimits, ToolCall, ToolFunction
from agentdistill.envs.tools.sandbox.worker import ProtocolError, read_frame, write_frame

_PASSED_ENVIRONMENT = ("PATH", "LANG", "LC_ALL", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
"""Variables the workers may see: locale, search path and CPU-correctness settings, never secrets."""

_STARTUP_TIMEOUT_S = 60.0
_ZYGOTE_EXIT_WAIT_S = 0.5
_CONTROL_BUFFER = 1 << 16

IsolationMode = Literal["auto", "namespaces", "process"]


class SandboxIsolationWarning(UserWarning):
    """The sandbox runs with weaker isolation than asked for (e.g. no namespaces without root)."""


class SandboxIsolationError(RuntimeError):
    """``isolation="namespaces"`` was required but the platform cannot provide it."""


@dataclass
class _Channel:
    """This side of one worker's link: frames on ``data``, descriptors for candidates on ``fds``."""

    data: socket.socket
    fds: socket.socket
    pids: tuple[int, ...] = ()  # candidates this worker forked, as its own namespace numbers them

    def close(self) -> None:
        self.data.close()
        self.fds.close()


def _channel_pair() -> tuple[_Channel, tuple[socket.socket, socket.socket]]:
    """Our end of a new worker link, and the two sockets that go to the worker."""
    data_ours, data_theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    fds_ours, fds_theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    return _Channel(data_ours, fds_ours), (data_theirs, fds_theirs)


@dataclass
class _Candidate:
    channel: _Channel | None
    result: ExecutionResult


@dataclass
class _Episode:
    """One episode's processes: the worker serving it, the earlier workers whose state was replaced by
    an adopted candidate (kept idle: in a PID namespace the first one is the init of them all), and
    the live candidates of the last :meth:`LocalSandbox.run_candidates`."""

    pid: int
    workdir: Path
    current: _Channel
    ancestors: list[_Channel] = field(default_factory=list)
    candidates: list[_Candidate] = field(default_factory=list)

    def channels(self) -> list[_Channel]:
        live = [candidate.channel for candidate in self.candidates if candidate.channel is not None]
        return [self.current, *self.ancestors, *live]


@dataclass
class _Zygote:
    process: subprocess.Popen[bytes]
    control: socket.socket
    isolation: str
    detail: object = None
    """Why the isolation is what it is (the zygote's own words), for the warning."""
    lock: threading.Lock = field(default_factory=threading.Lock)
    """One request at a time on the control socket: sandboxes sharing the zygote take turns."""
    users: int = 0


class ZygotePool:
    """Zygotes shared by the :class:`LocalSandbox` es of one process that run model code the same way.

    A zygote costs an interpreter with the allowed modules imported (tens of MiB with numpy and sympy), and it
    only forks: one serves every env of a process as well as it serves one, each episode still in a worker of its
    own. Sandboxes given the same pool share one zygote per distinct setting (interpreter, tools' names, allowed
    and preloaded imports, limits, isolation), started by the first, stopped when the last one closes. A zygote
    that dies (the OOM killer, a stray signal) ends the episodes it forked, and only those; the next sandbox to
    start an episode starts its replacement, which the others then use too.

    A pool is copied by reference (``copy.deepcopy`` keeps it: envs built from one set of keyword arguments share
    it) and pickled empty (envs in other processes get pools of their own).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._zygotes: dict[str, _Zygote] = {}

    def acquire(self, key: str, start: Callable[[], _Zygote]) -> _Zygote:
        """The live zygote for ``key``, started with ``start`` when there is none (or only a dead one)."""
        with self._lock:
            zygote = self._zygotes.get(key)
            if zygote is None or zygote.process.poll() is not None:
                zygote = start()
                self._zygotes[key] = zygote
            zygote.users += 1
            return zygote

    def release(self, key: str, zygote: _Zygote) -> None:
        """One sandbox is done with ``zygote``; the last one stops it."""
        with self._lock:
            zygote.users -= 1
            if zygote.users > 0:
                return
            if self._zygotes.get(key) is zygote:
                del self._zygotes[key]
        _stop_zygote(zygote)

    def live_zygotes(self) -> int:
        """How many zygotes the pool runs now (for tests and benchmarks)."""
        with self._lock:
            return sum(1 for zygote in self._zygotes.values() if zygote.process.poll() is None)

    def __deepcopy__(self, memo: dict[int, Any]) -> ZygotePool:
        return self

    def __getstate__(self) -> dict[str, Any]:
        return {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__()  # type: ignore[misc]


@dataclass
class _Resources:
    """Everything a sandbox holds, so that a finalizer can release it even if ``close`` is never called."""

    zygote: _Zygote | None = None
    episode: _Episode | None = None
    pool: ZygotePool | None = None
    pool_key: str = ""

    def drop_zygote(self) -> None:
        """Stop using the zygote: give it back to the pool, or stop it when it is this sandbox's own."""
        zygote, self.zygote = self.zygote, None
        if zygote is None:
            return
        if self.pool is not None:
            self.pool.release(self.pool_key, zygote)
        else:
            _stop_zygote(zygote)


@dataclass(frozen=True)
class _ToolOverrun:
    """A tool call that was still running when the step's time ran out."""

    call: ToolCall
    seconds: float

    def note(self) -> str:
        """Why the step timed out, for the observation: the code was waiting on the tool, not looping."""
        outcome = self.call.error if self.call.error else f"{self.call.name} answered too late"
        return f"The time ran out while the code waited {self.seconds:.1f} s for the tool {self.call.name}: {outcome}."


def _stop_episode(episode: _Episode) -> None:
    """Kill an episode's processes (its session; its PID namespace follows) and remove its directory."""
    try:
        os.killpg(episode.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    for channel in episode.channels():
        channel.close()
    shutil.rmtree(episode.workdir, ignore_errors=True)


def _stop_zygote(zygote: _Zygote) -> None:
    zygote.control.close()  # the zygote reads EOF and exits; its episodes die with it
    try:
        os.killpg(zygote.process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        zygote.process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


def _release(resources: _Resources) -> None:
    if resources.episode is not None:
        _stop_episode(resources.episode)
        resources.episode = None
    resources.drop_zygote()


class LocalSandbox:
    """Runs cells in isolated local worker processes; see the module docstring for what is contained.

    Args:
        tools: functions model code may call by name; they run in this process.
        allowed_imports: top-level modules model code may import (``None``: any).
        limits: resource limits and timeouts.
        isolation: ``"auto"`` (namespaces where possible, else a warning and plain processes),
            ``"namespaces"`` (refuse to run without them) or ``"process"`` (never try).
        preload: modules the zygote imports once so episodes start with them (default: the allowed
            imports). Each costs memory in the zygote, once per sandbox.
        max_parallel: how many SAG candidates run at once (default: the number of CPUs).
        python: the interpreter that runs the workers (defaults to this one, so the same packages).
        zygotes: a :class:`ZygotePool` to share zygotes with the other sandboxes of this process
            (default: a zygote of this sandbox's own).
    """

    def __init__(
        self,
        *,
        tools: Mapping[str, ToolFunction] | None = None,
        allowed_imports: Collection[str] | None = None,
        limits: SandboxLimits | None = None,
        isolation: IsolationMode = "auto",
        preload: Collection[str] | None = None,
        max_parallel: int | None = None,
        python: str = sys.executable,
        zygotes: ZygotePool | None = None,
    ) -> None:
        if isolation not in ("auto", "namespaces", "process"):
            raise ValueError(f"isolation must be 'auto', 'namespaces' or 'process', got {isolation!r}")
        if max_parallel is not None and max_parallel < 1:
            raise ValueError(f"max_parallel must be a positive int or None, got {max_parallel!r}")
        self.isolation_mode: IsolationMode = isolation
        self._tools = dict(tools or {})
        self._allowed_imports = None if allowed_imports is None else sorted(allowed_imports)
        self._preload = sorted(preload) if preload is not None else list(self._allowed_imports or [])
        self.limits = limits or SandboxLimits()
        self.max_parallel = max_parallel or os.cpu_count() or 1
        self._python = python
        self._resources = _Resources(pool=zygotes, pool_key=json.dumps([python, self._zygote_init()], sort_keys=True))
        self._finalizer = weakref.finalize(self, _release, self._resources)

    # --- the Sandbox interface ------------------------------------------------------------------

    @property
    def isolation(self) -> str:
        """The isolation in force: ``"namespaces"`` or ``"process"`` (before the zygote starts: the
        mode asked for)."""
        zygote = self._resources.zygote
        return zygote.isolation if zygote else self.isolation_mode

    def run(self, code: str) -> ExecutionResult:
        """Run ``code`` in the episode's worker, starting an episode if none is live."""
        started = time.monotonic()
        episode = self._resources.episode or self._start_episode()
        self._discard_candidates(episode)
        tool_calls: list[ToolCall] = []
        overran: list[_ToolOverrun] = []
        try:
            write_frame(episode.current.data.fileno(), self._exec_frame(code))
            message = self._await_result(episode.current, started, tool_calls, overran)
        except (ProtocolError, OSError) as failure:
            result = self._lost_episode(episode, failure, tool_calls, time.monotonic() - started)
        else:
            result = self._result_from(message, tool_calls, time.monotonic() - started)
        if overran and result.timed_out:
            result = replace(result, error=f"{result.error} {overran[0].note()}")
        return result

    def reset(self) -> None:
        """Replace the episode with a fresh one (a forked worker, a new directory), ready to run."""
        self._end_episode()
        self._start_episode()

    def close(self) -> None:
        """Stop every process of this sandbox and remove its directories. Safe to call twice."""
        self._finalizer()

    # --- SAG candidates ---------------------------------------------------------------------------

    def run_candidates(self, codes: Sequence[str]) -> list[ExecutionResult]:
        """Run each cell in its own copy of the current episode state, ``max_parallel`` at a time.

        The episode state does not change. Each candidate keeps its resulting state until the next
        :meth:`run`, :meth:`run_candidates` or :meth:`reset`; :meth:`adopt` makes one of them the
        episode's state. Results come back in the order of ``codes``.
        """
        episode = self._resources.episode or self._start_episode()
        self._discard_candidates(episode)
        for start in range(0, len(codes), self.max_parallel):
            batch = list(codes[start : start + self.max_parallel])
            try:
                episode.candidates += self._run_batch(episode, batch)
            except (ProtocolError, OSError) as failure:
                lost = self._lost_episode(episode, failure, [], 0.0)
                # The episode is gone, so no candidate can become its state: those of earlier batches keep what
                # they printed but report the state as lost (the next step starts a fresh episode).
                ran = [replace(candidate.result, state_lost=True) for candidate in episode.candidates]
                self._discard_candidates(episode)
                episode.candidates = [_Candidate(None, result) for result in ran]
                episode.candidates += [_Candidate(None, lost) for _ in range(len(codes) - len(ran))]
                break
        return [candidate.result for candidate in episode.candidates]

    def adopt(self, index: int) -> None:
        """Make candidate ``index`` of the last :meth:`run_candidates` the episode's state."""
        episode = self._resources.episode
        if episode is None or not 0 <= index < len(episode.candidates):
            count = len(episode.candidates) if episode else 0
            raise ValueError(f"no candidate {index!r} to adopt: the last run_candidates left {count}")
        chosen = episode.candidates[index]
        if chosen.channel is None:
            raise ValueError(f"candidate {index} cannot be adopted: its process did not survive its cell")
        episode.candidates[index] = _Candidate(None, chosen.result)
        self._discard_candidates(episode)
        episode.ancestors.append(episode.current)
        episode.current = chosen.channel

    # --- diagnostics ------------------------------------------------------------------------------

    @property
    def worker_pid(self) -> int | None:
        """The host pid of the live episode's process (its session leader), if any."""
        return self._resources.episode.pid if self._resources.episode else None

    @property
    def workdir(self) -> Path | None:
        """The live episode's private working directory, as this process sees it."""
        return self._resources.episode.workdir if self._resources.episode else None

    # --- internals --------------------------------------------------------------------------------

    def _exec_frame(self, code: str) -> dict[str, Any]:
        return {"op": "exec", "code": code, "timeout_s": self.limits.step_timeout_s}

    def _zygote(self) -> _Zygote:
        resources = self._resources
        if resources.zygote is None:
            if resources.pool is not None:
                resources.zygote = resources.pool.acquire(resources.pool_key, self._start_zygote)
            else:
                resources.zygote = self._start_zygote()
            self._check_isolation(resources.zygote.isolation, resources.zygote.detail)
        return resources.zygote

    def _zygote_init(self) -> dict[str, Any]:
        """What a zygote is started with: everything that decides how it runs model code."""
        return {
            "tools": sorted(self._tools),
            "allowed_imports": self._allowed_imports,
            "preload": self._preload,
            "limits": self.limits.as_worker_limits(),
            "output_limit": self.limits.output_chars,
            "isolate": self.isolation_mode != "process",
            "scratch_bytes": self.limits.scratch_bytes,
        }

    def _start_zygote(self) -> _Zygote:
        """A started zygote, ready to fork; a zygote that fails to start is stopped before this raises."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            process = subprocess.Popen(  # noqa: S603 - fixed argv: our interpreter and our zygote script
                [self._python, "-I", zygote_module.__file__, str(theirs.fileno())],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                cwd=tempfile.gettempdir(),
                env=self._worker_environment(),
                start_new_session=True,
                pass_fds=(theirs.fileno(),),
            )
        finally:
            theirs.close()
        zygote = _Zygote(process, ours, isolation="starting")
        try:
            ready = self._control_request(zygote, {"op": "init", **self._zygote_init()}, _STARTUP_TIMEOUT_S)
            if ready.get("op") != "ready":
                raise ProtocolError(f"the sandbox zygote sent {ready.get('op')!r} instead of 'ready'")
        except BaseException:
            _stop_zygote(zygote)
            raise
        zygote.isolation = str(ready.get("isolation", "process"))
        zygote.detail = ready.get("detail")
        return zygote

    def _control_request(
        self, zygote: _Zygote, message: dict[str, Any], timeout_s: float, descriptors: Sequence[int] = ()
    ) -> dict[str, Any]:
        payload = json.dumps(message).encode("ascii")
        with zygote.lock:
            if descriptors:
                socket.send_fds(zygote.control, [payload], list(descriptors))
            else:
                zygote.control.send(payload)
            if not select.select([zygote.control], [], [], timeout_s)[0]:
                raise ProtocolError(f"the sandbox zygote did not answer {message['op']!r} within {timeout_s:g} s")
            reply = zygote.control.recv(_CONTROL_BUFFER)
        if not reply:
            raise ProtocolError("the sandbox zygote exited")
        return dict(json.loads(reply))

    def _check_isolation(self, level: str, detail: object) -> None:
        """Refuse or warn when the sandbox is less isolated than asked; never degrade silently."""
        if level == "namespaces" or self.isolation_mode == "process":
            return
        message = (
            f"the code sandbox runs without namespace isolation ({detail}): model code can reach the "
            "network and write wherever this user can. Run as root on Linux, or in a container or VM."
        )
        if self.isolation_mode == "namespaces":
            self.close()
            raise SandboxIsolationError(message)
        warnings.warn(message, SandboxIsolationWarning, stacklevel=5)

    def _worker_environment(self) -> dict[str, str]:
        environment = {name: os.environ[name] for name in _PASSED_ENVIRONMENT if name in os.environ}
        environment.update(
            PYTHONDONTWRITEBYTECODE="1",
            OMP_NUM_THREADS="1",
            OPENBLAS_NUM_THREADS="1",
            MKL_NUM_THREADS="1",
        )
        return environment

    def _start_episode(self) -> _Episode:
        try:
            return self._spawn_episode()
        except (ProtocolError, OSError):
            if not self._zygote_died():
                raise
        # The zygote was killed (the OOM killer, a stray signal) and its episodes with it: a new one serves
        # from now on, rather than every later reset of this env failing.
        self._drop_zygote()
        return self._spawn_episode()

    def _spawn_episode(self) -> _Episode:
        zygote = self._zygote()
        workdir = Path(tempfile.mkdtemp(prefix="agentdistill-sandbox-"))
        channel, theirs = _channel_pair()
        try:
            reply = self._control_request(
                zygote,
                {"op": "spawn", "workdir": str(workdir)},
                _STARTUP_TIMEOUT_S,
                [sock.fileno() for sock in theirs],
            )
        except BaseException:
            channel.close()
            shutil.rmtree(workdir, ignore_errors=True)  # no episode owns it yet: nobody else would remove it
            raise
        finally:
            for sock in theirs:
                sock.close()
        episode = _Episode(pid=int(reply["pid"]), workdir=workdir, current=channel)
        self._resources.episode = episode
        try:
            ready = read_frame(channel.data.fileno(), time.monotonic() + _STARTUP_TIMEOUT_S)
        except BaseException:
            self._end_episode()
            raise
        if ready["op"] == "failed":
            self._end_episode()
            raise RuntimeError(f"the sandbox could not start an episode: {ready.get('error')}")
        if ready["op"] != "ready":
            raise ProtocolError(f"the episode worker sent {ready['op']!r} instead of 'ready'")
        return episode

    def _end_episode(self) -> None:
        if self._resources.episode is not None:
            _stop_episode(self._resources.episode)
            self._resources.episode = None

    def _zygote_died(self) -> bool:
        """Whether the zygote has exited (waiting briefly: a killed process closes its sockets a moment
        before it can be reaped)."""
        zygote = self._resources.zygote
        if zygote is None:
            return False
        try:
            zygote.process.wait(timeout=_ZYGOTE_EXIT_WAIT_S)
        except subprocess.TimeoutExpired:
            return False
        return True

    def _drop_zygote(self) -> None:
        self._resources.drop_zygote()

    def _await_result(
        self, channel: _Channel, started: float, tool_calls: list[ToolCall], overran: list[_ToolOverrun]
    ) -> dict[str, Any]:
        """Serve the worker's tool calls until its ``result`` frame arrives.

        Tools run in this process and may outlast the step (a retrieval server slow to fail): the
        worker's alarm then stops the cell while we wait, and its result is already in the socket when
        the tool returns. The first such call is recorded in ``overran`` (the observation names it)
        and earns the worker one more grace period to be read, so that our delay does not get a
        healthy worker killed and the episode's variables lost. Only once: a cell that swallows its
        timeouts and keeps calling tools is still killed.
        """
        timeout_at = started + self.limits.step_timeout_s
        deadline = timeout_at + self.limits.kill_grace_s
        while True:
            message = read_frame(channel.data.fileno(), deadline)
            if message["op"] == "result":
                return message
            if message["op"] == "tool_call":
                called = time.monotonic()
                self._answer_tool_call(channel, message, tool_calls)
                returned = time.monotonic()
                if not overran and returned > timeout_at:
                    overran.append(_ToolOverrun(tool_calls[-1], returned - called))
                    deadline = max(deadline, returned + self.limits.kill_grace_s)

    def _run_batch(self, episode: _Episode, codes: list[str]) -> list[_Candidate]:
        pairs = [_channel_pair() for _ in codes]
        main = episode.current
        write_frame(main.data.fileno(), {"op": "fork", "codes": codes, "timeout_s": self.limits.step_timeout_s})
        theirs = [sock for _, ends in pairs for sock in ends]
        try:
            socket.send_fds(main.fds, [b"fds"], [sock.fileno() for sock in theirs])
        finally:
            for sock in theirs:
                sock.close()
        forked = read_frame(main.data.fileno(), time.monotonic() + _STARTUP_TIMEOUT_S)
        if forked["op"] != "forked":
            detail = f" ({forked['error']})" if forked.get("error") else ""
            raise ProtocolError(f"the episode worker sent {forked['op']!r} instead of 'forked'{detail}")
        main.pids = tuple(int(pid) for pid in forked["pids"])
        started = time.monotonic()
        outcomes = self._collect([channel for channel, _ in pairs], started)
        stuck = [pid for pid, outcome in zip(main.pids, outcomes) if isinstance(outcome, Exception)]
        if stuck:
            write_frame(main.data.fileno(), {"op": "kill", "pids": stuck})
            read_frame(main.data.fileno(), time.monotonic() + _STARTUP_TIMEOUT_S)
        candidates = []
        for (channel, _), outcome in zip(pairs, outcomes):
            if isinstance(outcome, Exception):
                channel.close()
                candidates.append(_Candidate(None, self._failure_result(outcome, [], time.monotonic() - started)))
            else:
                message, calls, duration = outcome
                candidates.append(_Candidate(channel, self._result_from(message, calls, duration)))
        return candidates

    def _collect(
        self, channels: list[_Channel], started: float
    ) -> list[tuple[dict[str, Any], list[ToolCall], float] | Exception]:
        """Wait for every candidate's result at once, serving their tool calls as they come."""
        deadline = started + self.limits.step_timeout_s + self.limits.kill_grace_s
        outcomes: list[tuple[dict[str, Any], list[ToolCall], float] | Exception | None] = [None] * len(channels)
        calls: list[list[ToolCall]] = [[] for _ in channels]
        while any(outcome is None for outcome in outcomes):
            waiting = {channels[i].data.fileno(): i for i, outcome in enumerate(outcomes) if outcome is None}
            remaining = deadline - time.monotonic()
            ready = select.select(list(waiting), [], [], max(remaining, 0))[0] if remaining > 0 else []
            if not ready:
                for index in waiting.values():
                    outcomes[index] = ProtocolError("timed out waiting for the other side")
                break
            for fd in ready:
                index = waiting[fd]
                try:
                    message = read_frame(fd, deadline)
                    if message["op"] == "tool_call":
                        self._answer_tool_call(channels[index], message, calls[index])
                    elif message["op"] == "result":
                        outcomes[index] = (message, calls[index], time.monotonic() - started)
                except (ProtocolError, OSError) as failure:
                    outcomes[index] = failure
        return [outcome for outcome in outcomes if outcome is not None]

    def _discard_candidates(self, episode: _Episode) -> None:
        """Close the candidates of the last SAG round: idle ones read EOF and exit."""
        for candidate in episode.candidates:
            if candidate.channel is not None:
                candidate.channel.close()
        episode.candidates = []

    def _answer_tool_call(self, channel: _Channel, message: dict[str, Any], tool_calls: list[ToolCall]) -> None:
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
        write_frame(channel.data.fileno(), reply)

    @staticmethod
    def _result_from(message: dict[str, Any], tool_calls: list[ToolCall], duration_s: float) -> ExecutionResult:
        def text_or_none(key: str) -> str | None:
            value = message.get(key)
            return None if value is None else str(value)

        return ExecutionResult(
            logs=str(message.get("logs", "")),
            value=text_or_none("value"),
            last_output=text_or_none("last_output"),
            error=text_or_none("error"),
            final_answer=text_or_none("final_answer"),
            timed_out=bool(message.get("timed_out", False)),
            tool_calls=tuple(tool_calls),
            duration_s=duration_s,
        )

    def _lost_episode(
        self, episode: _Episode, failure: Exception, tool_calls: list[ToolCall], duration_s: float
    ) -> ExecutionResult:
        """The episode's worker hung, died or spoke nonsense: end the episode and report why."""
        ended = None if "timed out" in str(failure) else self._how_it_ended(episode.pid)
        self._end_episode()
        return self._failure_result(failure, tool_calls, duration_s, ended)

    def _how_it_ended(self, pid: int) -> dict[str, Any] | None:
        zygote = self._resources.zygote
        if zygote is None:
            return None
        try:
            return self._control_request(zygote, {"op": "status", "pid": pid}, 5.0)
        except (ProtocolError, OSError):
            return None

    def _failure_result(
        self,
        failure: Exception,
        tool_calls: list[ToolCall],
        duration_s: float,
        ended: dict[str, Any] | None = None,
    ) -> ExecutionResult:
        timed_out = "timed out" in str(failure)
        if timed_out:
            reason = f"Code execution timed out after {self.limits.step_timeout_s:g} seconds and was killed."
        elif ended and ended.get("signal"):
            reason = f"The Python process running the code was killed by signal {signal.Signals(ended['signal']).name}."
        else:
            reason = f"The Python process running the code stopped unexpectedly ({failure})."
        return ExecutionResult.state_reset(
            reason, timed_out=timed_out, tool_calls=tuple(tool_calls), duration_s=duration_s
        )
