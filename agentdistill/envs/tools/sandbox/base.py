"""The sandbox interface every code backend implements, and the records it returns.

An env owns one sandbox per episode state. It calls :meth:`Sandbox.run` once per step and
:meth:`Sandbox.reset` between episodes; tools that live in the env's process (the retriever) are given
to the sandbox as plain callables and reach model code as functions of the same name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol, Sequence, runtime_checkable

ToolFunction = Callable[..., Any]
"""A tool as the env defines it: called with the model's arguments, returns a JSON-able value."""


@dataclass(frozen=True)
class SandboxLimits:
    """Resource limits for the process that runs model code; ``None`` leaves a limit unset.

    ``processes`` and ``scratch_bytes`` (the size of the private ``/tmp``) take effect where the worker
    is isolated in namespaces (see ``isolation.py``). The step timeout is enforced twice: an alarm inside the worker stops Python-level loops and keeps
    the episode's variables; if the worker does not answer ``kill_grace_s`` later (a long C call, a
    swallowed alarm) its whole process group is killed and the next step starts from a fresh state.
    """

    step_timeout_s: float = 10.0
    kill_grace_s: float = 2.0
    memory_bytes: int | None = 4 * 1024**3
    cpu_seconds: int | None = 600
    file_size_bytes: int | None = 64 * 1024**2
    processes: int | None = 64
    scratch_bytes: int = 64 * 1024**2
    output_chars: int = 100_000

    def __post_init__(self) -> None:
        for name in ("step_timeout_s", "kill_grace_s", "output_chars", "scratch_bytes"):
            if getattr(self, name) <= 0:
                raise ValueError(f"SandboxLimits.{name} must be positive, got {getattr(self, name)!r}")
        for name in ("memory_bytes", "cpu_seconds", "file_size_bytes", "processes"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"SandboxLimits.{name} must be positive or None, got {value!r}")

    def as_worker_limits(self) -> dict[str, int | None]:
        """The rlimits the worker applies to itself before running any model code."""
        return {
            "memory_bytes": self.memory_bytes,
            "cpu_seconds": self.cpu_seconds,
            "file_size_bytes": self.file_size_bytes,
            "processes": self.processes,
            "core_bytes": 0,
        }


@dataclass(frozen=True)
class ToolCall:
    """One call that model code made to a parent-side tool, for the env's ``info``."""

    name: str
    args: tuple[Any, ...]
    kwargs: Mapping[str, Any]
    error: str | None = None


@dataclass(frozen=True)
class ExecutionResult:
    """What running one cell produced.

    ``state_lost`` is true when the worker had to be killed or died, so variables from earlier steps
    are gone; the env says so in the observation.
    """

    logs: str
    value: str | None = None
    """The ``repr`` of the cell's final expression, when it has one and it is not ``None``."""
    error: str | None = None
    final_answer: str | None = None
    timed_out: bool = False
    state_lost: bool = False
    tool_calls: tuple[ToolCall, ...] = field(default_factory=tuple)
    duration_s: float = 0.0
    last_output: str | None = None
    """The ``str`` of the last statement's value as smolagents reports it (assignments included, ``"None"`` for a
    statement without one): what the paper's observations show. ``None`` from a backend that cannot tell."""

    @classmethod
    def state_reset(
        cls, reason: str, *, timed_out: bool, tool_calls: tuple[ToolCall, ...] = (), duration_s: float = 0.0
    ) -> ExecutionResult:
        """A step whose worker had to be replaced: ``reason`` plus the news that the state is gone."""
        return cls(
            logs="",
            error=reason + " Its state was reset: variables from earlier steps are gone.",
            timed_out=timed_out,
            state_lost=True,
            tool_calls=tool_calls,
            duration_s=duration_s,
        )

    @property
    def is_final(self) -> bool:
        """Whether the cell called ``final_answer``."""
        return self.final_answer is not None


@runtime_checkable
class ForkableSandbox(Protocol):
    """A sandbox that can run candidate cells from the episode state without changing it (for SAG)."""

    def run_candidates(self, codes: Sequence[str]) -> list[ExecutionResult]:
        """Each cell from the current state, in its own copy of it."""
        ...

    def adopt(self, index: int) -> None:
        """Make candidate ``index``'s resulting state the episode's."""
        ...


class Sandbox(Protocol):
    """A place to run an episode's cells with persistent state."""

    isolation: str
    """A short description of the isolation in force, reported in the env's ``info``."""

    def run(self, code: str) -> ExecutionResult:
        """Run one cell in the current episode state."""
        ...

    def reset(self) -> None:
        """Drop the episode state; the next :meth:`run` starts from a fresh namespace."""
        ...

    def close(self) -> None:
        """Release every process and file this sandbox holds. Safe to call twice."""
        ...
