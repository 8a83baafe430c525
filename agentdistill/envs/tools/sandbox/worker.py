"""The process that runs model-written code for one episode.

It is started as a plain script (``python -I worker.py``) so that it imports nothing of ours beyond this
file (standard library only) and starts fast. The parent talks to it over two pipes with length-prefixed
JSON frames; JSON, not pickle, because the parent must never unpickle what untrusted code could forge.

Frames from the parent: ``init`` (once: tool names, allowed imports, limits), ``exec`` (a cell), and
``tool_result`` (the answer to one of our ``tool_call`` frames). Frames to the parent: ``ready``,
``tool_call`` and ``result``. Variables live in one namespace for the life of the process, so they
survive between the steps of an episode.
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
        outcome: dict[str, Any] = {"value": None, "error": None, "final_answer": None, "timed_out": False}
        signal.setitimer(signal.ITIMER_REAL, timeout_s)
        try:
            outcome["value"] = self._execute(code)
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

    def _execute(self, code: str) -> str | None:
        tree = ast.parse(code, filename=CELL_FILENAME)
        last_expression = None
        if tree.body and isinstance(tree.body[-1], ast.Expr):
            last_expression = ast.Expression(tree.body.pop().value)
        exec(compile(tree, CELL_FILENAME, "exec"), self._namespace)  # noqa: S102 - this is the sandbox
        if last_expression is None:
            return None
        value = eval(compile(last_expression, CELL_FILENAME, "eval"), self._namespace)  # noqa: S307
        return None if value is None else repr(value)


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


def _raise_timeout(signum: int, frame: Any) -> None:
    raise _StepTimeout()


def _load_isolation_module() -> Any:
    """Load ``isolation.py`` from beside this file: the worker runs as a script, outside the package."""
    import importlib.util

    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "isolation.py")
    spec = importlib.util.spec_from_file_location("_agentdistill_sandbox_isolation", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _isolate(init: dict[str, Any]) -> tuple[str, str | None]:
    """Apply the isolation the parent asked for; returns the level reached and why it is lower."""
    if not init.get("isolate"):
        return "process", "isolation was not requested"
    isolation = _load_isolation_module()
    try:
        level = isolation.isolate(os.getcwd(), scratch_bytes=int(init.get("scratch_bytes", 64 * 1024**2)))
    except OSError as error:
        return "process", str(error)
    return level, None if level == isolation.NAMESPACES else "namespaces need root (euid 0)"


def main(in_fd: int, out_fd: int) -> None:
    """Serve ``exec`` frames from ``in_fd`` until the parent closes the pipe; answer on ``out_fd``."""
    init = read_frame(in_fd)
    level, detail = _isolate(init)
    _apply_limits(init.get("limits", {}))
    signal.signal(signal.SIGALRM, _raise_timeout)
    call_ids = iter(range(1, 1 << 62))

    def call_tool(name: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
        call_id = next(call_ids)
        write_frame(out_fd, {"op": "tool_call", "id": call_id, "name": name, "args": args, "kwargs": kwargs})
        while True:
            reply = read_frame(in_fd)
            if reply["op"] == "tool_result" and reply.get("id") == call_id:
                break
        if reply.get("error") is not None:
            raise RuntimeError(str(reply["error"]))
        return reply.get("value")

    runner = CellRunner(init.get("tools", []), call_tool, init.get("allowed_imports"), int(init["output_limit"]))
    worker_pid = os.getpid()
    write_frame(out_fd, {"op": "ready", "pid": worker_pid, "isolation": level, "detail": detail})
    while True:
        try:
            message = read_frame(in_fd)
        except ProtocolError:
            return
        if message["op"] != "exec":
            continue  # e.g. a tool result that arrived after its cell timed out
        outcome = runner.run(str(message["code"]), float(message["timeout_s"]))
        if os.getpid() != worker_pid:
            os._exit(0)  # a process that model code forked finished the cell: only the worker may answer
        write_frame(out_fd, {"op": "result", **outcome})


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]))
