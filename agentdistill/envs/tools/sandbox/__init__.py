"""Where model-written code runs: one interface (:class:`Sandbox`), several backends.

``"local"`` (the default) runs each episode in a separate worker process on this machine, isolated in
Linux namespaces where it can be; ``"e2b"`` runs it in an E2B cloud VM (``pip install
agentdistill[e2b]``, key in ``E2B_API_KEY``); a callable can build any other backend with the same
interface.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Callable, Collection, Mapping, Union

from agentdistill.envs.tools.sandbox.base import ExecutionResult, Sandbox, SandboxLimits, ToolCall, ToolFunction
from agentdistill.envs.tools.sandbox.e2b import E2BSandbox, SandboxUnavailableError
from agentdistill.envs.tools.sandbox.local import (
    LocalSandbox,
    SandboxIsolationError,
    SandboxIsolationWarning,
    ZygotePool,
)

SandboxFactory = Callable[..., Sandbox]
"""Builds a sandbox from keyword arguments ``tools``, ``allowed_imports`` and ``limits``."""

SandboxSpec = Union[str, SandboxFactory]

SANDBOX_BACKENDS: Mapping[str, SandboxFactory] = MappingProxyType({"local": LocalSandbox, "e2b": E2BSandbox})


class SharedLocalSandboxes:
    """A sandbox factory (``sandbox=`` of an env) whose local sandboxes share zygotes (:class:`ZygotePool`): the
    envs of one process built with the same factory (the rollout loop's, :func:`agentdistill.rollouts.loop.
    make_rollout_envs`) start one zygote per distinct setting instead of one each."""

    def __init__(self) -> None:
        self.zygotes = ZygotePool()

    def __call__(
        self, *, tools: Mapping[str, ToolFunction], allowed_imports: Collection[str] | None, limits: SandboxLimits
    ) -> LocalSandbox:
        return LocalSandbox(tools=tools, allowed_imports=allowed_imports, limits=limits, zygotes=self.zygotes)


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
    "SharedLocalSandboxes",
    "ToolCall",
    "ToolFunction",
    "ZygotePool",
    "make_sandbox",
]
