"""Where model-written code runs: one interface (:class:`Sandbox`), several backends.

``"local"`` (the default) runs each episode in a separate worker process on this machine, isolated in
Linux namespaces where it can be; ``"e2b"`` runs it in an E2B cloud VM (``pip install
agentdistill[e2b]``, key in ``E2B_API_KEY``); a callable can build any other backend with the same
interface.
"""

from __future__ import annotations

from typing import Callable, Collection, Mapping, Union

from agentdistill.envs.tools.sandbox.base import ExecutionResult, Sandbox, SandboxLimits, ToolCall, ToolFunction
from agentdistill.envs.tools.sandbox.e2b import E2BSandbox, SandboxUnavailableError
from agentdistill.envs.tools.sandbox.local import LocalSandbox, SandboxIsolationError, SandboxIsolationWarning

SandboxFactory = Callable[..., Sandbox]
"""Builds a sandbox from keyword arguments ``tools``, ``allowed_imports`` and ``limits``."""

SandboxSpec = Union[str, SandboxFactory]

SANDBOX_BACKENDS: Mapping[str, SandboxFactory] = {"local": LocalSandbox, "e2b": E2BSandbox}


def make_sandbox(
    spec: SandboxSpec,
    *,
    tools: Mapping[str, ToolFunction],
    allowed_imports: Collection[str] | None,
    limits: SandboxLimits,
) -> Sandbox:
    """Build the sandbox named by ``spec`` (a backend name or a factory) for one env."""
    if callable(spec):
        return spec(tools=tools, allowed_imports=allowed_imports, limits=limits)
    factory = SANDBOX_BACKENDS.get(spec)
    if factory is None:
        raise ValueError(f"unknown sandbox {spec!r}; expected one of {sorted(SANDBOX_BACKENDS)} or a factory")
    return factory(tools=tools, allowed_imports=allowed_imports, limits=limits)


__all__ = [
    "E2BSandbox",
    "ExecutionResult",
    "LocalSandbox",
    "Sandbox",
    "SandboxFactory",
    "SandboxIsolationError",
    "SandboxIsolationWarning",
    "SandboxLimits",
    "SandboxSpec",
    "SandboxUnavailableError",
    "ToolCall",
    "ToolFunction",
    "make_sandbox",
]
