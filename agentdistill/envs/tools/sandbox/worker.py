"""What runs inside an episode's worker process: the cell runner and the frame protocol.

The zygote (``zygote.py``) forks one worker per episode and calls :func:`start_episode`; this file is
loaded there as a plain script module (standard library only), and the parent imports it for the
framing functions. The parent and a worker talk over a stream socket with length-prefixed JSON
frames; JSON, not pickle, because the parent must never unpickle what untrusted code could forge.

Frames from the parent: ``exec`` (a cell), ``tool_result`` (the answer to one of our ``tool_call``
frames), ``fork`` (SAG candidates) and ``kill``. Frames to the parent: ``ready``, ``tool_call``,
``result``, ``forked`` and ``killed``. Variables live in one namespace for the life of the worker, so
they survive between the steps of an episode.
"""

from __future__ import annotations

import ast
import builtins
import collections
import io
import json
import os
import select
import signal
import struct
import sys
import time
import traceback
from typing import Any, Callable, Collection

CELL_FILENAME = "<agent-code>"
_HEADER = struct.Struct(">I")
MAX_FRAME_BYTES = 64 * 1024 * 1024
_JSON_SCALARS = (str, int, float, bool, type(None))


# --- framing (also imported by the parent side) -------------------------------------------------


class ProtocolError(Exception):
    """The other side closed the pipe, sent a malformed frame, or did not answer in time."""


def write_frame(fd: int, message: dict[str, Any]) -> None:
    """Send one message; ``ensure_ascii`` keeps lone surrogates from model text encodable."""
    body = json.dumps(message, ensure_ascii=True).encode("ascii")
    view = memoryview(_HEADER.pack(len(body)) + body)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def read_frame(fd: int, deadline: float | None = None) -> dict[str, Any]:
    """Receive one message, waiting at most until ``deadline`` (``time.monotonic()``) if given."""
    (length,) = _HEADER.unpack(_read_exactly(fd, _HEADER.size, deadline))
    if length > MAX_FRAME_BYTES:
        raise ProtocolError(f"frame of {length} bytes exceeds the {MAX_FRAME_BYTES}-byte limit")
    try:
        message = json.loads(_read_exactly(fd, length, deadline))
    except ValueError as error:
        raise ProtocolError(f"malformed frame: {error}") from None
    if not isinstance(message, dict) or not isinstance(message.get("op"), str):
        raise ProtocolError("frame is not an object with an 'op' field")
    return message


def _read_exactly(fd: int, size: int, deadline: float | None) -> bytes:
    chunks: list[bytes] = []
    remaining = size
    while remaining:
        if deadline is not None:
            wait = deadline - time.monotonic()
            if wait <= 0 or not select.select([fd], [], [], wait)[0]:
                raise ProtocolError("timed out waiting for the other side")
        chunk = os.read(fd, min(remaining, 1 << 20))
        if not chunk:
            raise ProtocolError("the other side closed the connection")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


# --- the cell runner -------------------------------------------------------------------------------


class _StepTimeout(BaseException):
    """Raised by the step alarm; a BaseException so that ``except Exception`` in model code misses it."""


class _FinalAnswer(BaseException):
    """Raised by ``final_answer`` to stop the cell and carry the answer out."""

    def __init__(self, answer: str) -> None:
        super().__init__(answer)
        self.answer = answer


class BoundedCapture(io.TextIOBase):
    """A text sink for stdout/stderr that keeps the first and last ``limit // 2`` characters.

    Memory stays bounded however much the cell prints, and the tail (where errors and results usually
    are) survives.
    """

    def __init__(self, limit: int) -> None:
        super().__init__()
        self._half = max(limit // 2, 1)
        self._head: list[str] = []
        self._head_len = 0
        self._tail: collections.deque[str] = collections.deque()
        self._tail_len = 0
        self.dropped = 0

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        written = len(text)
        start = 0
        if self._head_len < self._half:
            taken = text[: self._half - self._head_len]
            self._head.append(taken)
            self._head_len += len(taken)
            start = len(taken)
        if written - start > self._half:  # slice only the tail we keep: no copy of a huge remainder
            self.dropped += written - start - self._half
            start = written - self._half
        if start < written:
            piece = text[start:] if start else text
            self._tail.append(piece)
            self._tail_len += len(piece)
            self._trim_tail()
        return written

    def _trim_tail(self) -> None:
        while self._tail_len > self._half:
            excess = self._tail_len - self._half
            first = self._tail[0]
            if len(first) <= excess:
                self._tail.popleft()
                cut = len(first)
            else:
                self._tail[0] = first[excess:]
                cut = excess
            self._tail_len -= cut
            self.dropped += cut

    def getvalue(self) -> str:
        gap = f"\n[... {self.dropped} characters of output dropped ...]\n" if self.dropped else ""
        return "".join(self._head) + gap + "".join(self._tail)


class CellRunner:
    """Runs cells in one persistent namespace, with the tools and ``final_answer`` bound."""

    def __init__(
        self,
        tool_names: Collection[str],
        call_tool: Callable[[str, list[Any], dict[str, Any]], Any],
        allowed_imports: Collection[str] | None,
        output_limit: int,
    ) -> None:
        self._output_limit = output_limit
        self._namespace: dict[str, Any] = {
            "__name__": "__main__",
            "__builtins__": _guarded_builtins(allowed_imports),
            "final_answer": _final_answer,
        }
        for name in tool_names:
            self._namespace[name] = _tool_function(name, call_tool)

    def run(self, code: str, timeout_s: float) -> dict[str, Any]:
        """Run one cell; returns the ``result`` frame's fields. Never raises for model errors."""
        capture = BoundedCapture(self._output_limit)
        saved = sys.stdout, sys.stderr
        sys.stdout = sys.stderr = capture
        outcome: dict[str, Any] = {
            "value": None, "last_output": None, "error": None, "final_answer": None, "timed_out": False,
        }
        signal.setitimer(signal.ITIMER_REAL, timeout_s)
        try:
            outcome["value"], outcome["last_output"] = self._execute(code)
        except _FinalAnswer as final:
            outcome["final_answer"] = final.answer
        except _StepTimeout:
            outcome["timed_out"] = True
            outcome["error"] = f"Code execution timed out after {timeout_s:g} seconds."
        except SyntaxError as error:
            outcome["error"] = _describe_syntax_error(error)
        except BaseException as error:  # noqa: BLE001 - model code may raise anything, SystemExit included
            outcome["error"] = _describe_exception(error, code)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            sys.stdout, sys.stderr = saved
        outcome["logs"] = capture.getvalue()
        return outcome

    def _execute(self, code: str) -> tuple[str | None, str]:
        """Run a cell; returns the ``repr`` of its final expression (``None`` without one, or for ``None``) and
        the ``str`` of its last statement's value as smolagents' interpreter reports it (the paper's "Last output
        from code snippet"): an expression's value, an assignment's assigned value, ``None`` for anything else."""
        tree = ast.parse(code, filename=CELL_FILENAME)
        last = tree.body.pop() if tree.body and isinstance(tree.body[-1], _VALUED_STATEMENTS) else None
        exec(compile(tree, CELL_FILENAME, "exec"), self._namespace)  # noqa: S102 - this is the sandbox
        if last is None:
            return None, "None"
        if isinstance(last, ast.Expr):
            value = eval(compile(ast.Expression(last.value), CELL_FILENAME, "eval"), self._namespace)  # noqa: S307
            return (None if value is None else repr(value)), _text(value)
        exec(compile(ast.Module(body=[last], type_ignores=[]), CELL_FILENAME, "exec"), self._namespace)  # noqa: S102
        return None, _text(eval(compile(_assigned_value(last), CELL_FILENAME, "eval"), self._namespace))  # noqa: S307


_VALUED_STATEMENTS = (ast.Expr, ast.Assign, ast.AugAssign, ast.AnnAssign)
"""Last statements whose value smolagents reports; every other statement reports ``None``."""


def _assigned_value(statement: ast.Assign | ast.AugAssign | ast.AnnAssign) -> ast.Expression:
    """An expression that reads back what an assignment stored: its (first) target, which after ``x, y = 1, 2``
    is the tuple of the names it bound, and after ``x += 4`` the new value."""
    target = statement.targets[0] if isinstance(statement, ast.Assign) else statement.target
    readable = _as_load(target)
    return ast.fix_missing_locations(ast.Expression(readable))


def _as_load(node: ast.expr) -> ast.expr:
    """``node`` (an assignment target) as an expression that reads the same place."""
    if isinstance(node, (ast.Tuple, ast.List)):
        return ast.Tuple(elts=[_as_load(element) for element in node.elts], ctx=ast.Load())
    if isinstance(node, ast.Starred):
        return _as_load(node.value)
    copy = ast.parse(ast.unparse(node), mode="eval").body
    return ast.copy_location(copy, node)


def _text(value: Any) -> str:
    """``str(value)``, never raising (a model's object may have a broken ``__str__``)."""
    try:
        return str(value)
    except BaseException:  # noqa: BLE001
        return "<unprintable value>"


def _final_answer(answer: Any) -> None:
    """End the episode with ``answer`` (converted to text)."""
    raise _FinalAnswer(answer if isinstance(answer, str) else str(answer))


def _tool_function(name: str, call_tool: Callable[[str, list[Any], dict[str, Any]], Any]) -> Callable[..., Any]:
    def tool(*args: Any, **kwargs: Any) -> Any:
        for value in (*args, *kwargs.values()):
            if not isinstance(value, _JSON_SCALARS):
                raise TypeError(
                    f"{name}() takes plain values (str, int, float, bool, None), got {type(value).__name__}"
                )
        return call_tool(name, list(args), kwargs)

    tool.__name__ = name
    return tool


def _guarded_builtins(allowed_imports: Collection[str] | None) -> dict[str, Any]:
    """A copy of the builtins whose ``__import__`` only lets model code import allowed modules.

    Only imports written in model code go through this copy; libraries keep the real ``__import__``.
    This is a policy that keeps agents on the intended tools, not a security boundary: the process
    itself is the boundary.
    """
    namespace = dict(vars(builtins))
    if allowed_imports is None:
        return namespace
    allowed = frozenset(allowed_imports)
    real_import = builtins.__import__

    def guarded_import(name: str, globals: Any = None, locals: Any = None, fromlist: Any = (), level: int = 0) -> Any:
        root = name.split(".", 1)[0]
        if level != 0 or root not in allowed:
            raise ImportError(
                f"Import of {name!r} is not allowed. Allowed modules: {', '.join(sorted(allowed))}"
            )
        return real_import(name, globals, locals, fromlist, level)

    namespace["__import__"] = guarded_import
    return namespace


def _describe_syntax_error(error: SyntaxError) -> str:
    line = (error.text or "").strip()
    where = f"line {error.lineno} ('{line}')" if error.lineno else "an unknown line"
    return f"Code parsing failed on {where} due to: SyntaxError: {error.msg}"


def _describe_exception(error: BaseException, code: str) -> str:
    line_number = None
    for frame, number in traceback.walk_tb(error.__traceback__):
        if frame.f_code.co_filename == CELL_FILENAME:
            line_number = number
    lines = code.splitlines()
    line = lines[line_number - 1].strip() if line_number and line_number <= len(lines) else "?"
    try:
        message = str(error)
    except BaseException:  # noqa: BLE001 - a hostile __str__ must not take the worker down
        message = "<unprintable message>"
    return f"Code execution failed at line '{line}' due to: {type(error).__name__}: {message}"


# --- the process ------------------------------------------------------------------------------------


def _apply_limits(limits: dict[str, Any]) -> None:
    """Set the per-process resource limits the parent asked for (before any model code runs).

    ``RLIMIT_NPROC`` counts every process of the user id, and root ignores it: it only bounds a fork
    bomb once isolation has dropped the worker to a user id of its own.
    """
    import resource

    names = {
        "memory_bytes": resource.RLIMIT_AS,
        "cpu_seconds": resource.RLIMIT_CPU,
        "file_size_bytes": resource.RLIMIT_FSIZE,
        "core_bytes": resource.RLIMIT_CORE,
        "processes": resource.RLIMIT_NPROC,
    }
    for key, which in names.items():
        value = limits.get(key)
        if value is None:
            continue
        _, hard = resource.getrlimit(which)
        soft = value if hard == resource.RLIM_INFINITY else min(value, hard)
        resource.setrlimit(which, (soft, soft if key != "cpu_seconds" else hard))


def raise_step_timeout(signum: int, frame: Any) -> None:
    """The SIGALRM handler: interrupts the running cell (installed once, in the zygote)."""
    raise _StepTimeout()


# --- serving one episode ----------------------------------------------------------------------------


class Channel:
    """An episode worker's link to the parent: a stream socket for frames and a datagram socket over
    which the parent passes the sockets of SAG candidates (descriptors cannot travel in JSON)."""

    def __init__(self, data_fd: int, fds_fd: int) -> None:
        self.data_fd = data_fd
        self.fds_fd = fds_fd

    def receive_descriptors(self, count: int) -> list[int]:
        import socket

        carrier = socket.socket(fileno=os.dup(self.fds_fd))
        try:
            _, descriptors, _, _ = socket.recv_fds(carrier, 16, count)
        finally:
            carrier.close()
        if len(descriptors) != count:
            raise ProtocolError(f"expected {count} descriptors, got {len(descriptors)}")
        return descriptors

    def close(self) -> None:
        for fd in (self.data_fd, self.fds_fd):
            try:
                os.close(fd)
            except OSError:
                pass


class EpisodeWorker:
    """Serves one episode's frames: ``exec`` runs a cell; ``fork`` starts SAG candidates, each a forked
    copy of this process (so of the episode state) that runs one cell and then serves frames on its own
    channel, so the parent can adopt it as the episode's new worker; ``kill`` stops candidates."""

    def __init__(self, channel: Channel, runner_factory: Callable[[Callable[..., Any]], CellRunner]) -> None:
        self.channel = channel
        self._call_ids = iter(range(1, 1 << 62))
        self.runner = runner_factory(self._call_tool)

    def _call_tool(self, name: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
        call_id = next(self._call_ids)
        data_fd = self.channel.data_fd
        write_frame(data_fd, {"op": "tool_call", "id": call_id, "name": name, "args": args, "kwargs": kwargs})
        while True:
            reply = read_frame(data_fd)
            if reply["op"] == "tool_result" and reply.get("id") == call_id:
                break
        if reply.get("error") is not None:
            raise RuntimeError(str(reply["error"]))
        return reply.get("value")

    def run_and_answer(self, code: str, timeout_s: float) -> None:
        """Run a cell and send its result; a process that model code forked exits instead."""
        me = os.getpid()
        outcome = self.runner.run(code, timeout_s)
        if os.getpid() != me:
            os._exit(0)  # only the worker may answer, not what the cell forked
        write_frame(self.channel.data_fd, {"op": "result", **outcome})

    def serve(self) -> None:
        """Answer frames until the parent closes the channel."""
        while True:
            try:
                message = read_frame(self.channel.data_fd)
            except ProtocolError:
                return
            if message["op"] == "exec":
                self.run_and_answer(str(message["code"]), float(message["timeout_s"]))
            elif message["op"] == "fork":
                self._fork_candidates([str(code) for code in message["codes"]], float(message["timeout_s"]))
            elif message["op"] == "kill":
                _kill_and_reap([int(pid) for pid in message["pids"]])
                write_frame(self.channel.data_fd, {"op": "killed"})
            # anything else (a tool result that arrived after its cell timed out) is dropped

    def _fork_candidates(self, codes: list[str], timeout_s: float) -> None:
        descriptors = self.channel.receive_descriptors(2 * len(codes))
        pids = []
        for index, code in enumerate(codes):
            pid = os.fork()
            if pid == 0:
                own = Channel(descriptors[2 * index], descriptors[2 * index + 1])
                for fd in descriptors:
                    if fd not in (own.data_fd, own.fds_fd):
                        os.close(fd)
                self.channel.close()
                self.channel = own
                self.run_and_answer(code, timeout_s)
                self.serve()
                os._exit(0)
            pids.append(pid)
        for fd in descriptors:
            os.close(fd)
        write_frame(self.channel.data_fd, {"op": "forked", "pids": pids})


def _kill_and_reap(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    for pid in pids:
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass


def start_episode(
    init: dict[str, Any], channel: Channel, level: str, detail: str | None
) -> None:
    """In a freshly forked episode process: apply limits, build the runner, say ready, serve."""
    os.environ.update(HOME=os.getcwd(), TMPDIR=os.getcwd())
    _apply_limits(init.get("limits", {}))

    def make_runner(call_tool: Callable[..., Any]) -> CellRunner:
        return CellRunner(init.get("tools", []), call_tool, init.get("allowed_imports"), int(init["output_limit"]))

    worker = EpisodeWorker(channel, make_runner)
    write_frame(channel.data_fd, {"op": "ready", "pid": os.getpid(), "isolation": level, "detail": detail})
    worker.serve()
