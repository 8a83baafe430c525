"""Teacher, student and scripted-expert policies behind one batched interface (:mod:`.base`).

:func:`make_policy` turns a spec string, as the CLI and configs write it, into a policy:

- ``expert`` (or ``expert:0.3`` for an expert that breaks 30 % of its code): the synthetic envs' teacher;
- ``hf:PATH`` (optionally ``hf:PATH@ADAPTER``): a transformers model (a student), with a PEFT adapter;
- ``vllm:MODEL`` (optionally ``vllm:MODEL@LORA``): vLLM's offline engine (``pip install agentdistill[vllm]``);
- ``openai:URL#MODEL``: any OpenAI-compatible server (vLLM, SGLang, a provider), e.g.
  ``openai:http://localhost:8000/v1#Qwen/Qwen2.5-32B-Instruct``.

:func:`parse_policy_spec` reads a spec without building anything (no model load, no connection), so a
config can be checked before the GPU, the hub or a server is needed.

Each backend is one :class:`PolicyBackend` of :data:`POLICY_BACKENDS`, naming its parser and its builder by
``"module:attribute"`` strings: nothing of a backend (torch, vLLM, an HTTP client) is imported until a spec of
its kind is parsed or built. A new backend is its own module and one entry there.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import reduce
from types import MappingProxyType
from typing import Any

from agentdistill.policies.base import Completion, Policy, PolicyRequest, SamplingParams


@dataclass(frozen=True)
class PolicySpec:
    """What a spec string names: ``kind`` (one of :data:`POLICY_KINDS`), the ``model`` (a path or hub id for
    ``hf`` / ``vllm``, the served model name for ``openai``, empty for ``expert``), the ``adapter`` (PEFT
    adapter or vLLM LoRA), the server's ``base_url`` (``openai``) and the expert's ``error_rate``."""

    kind: str
    model: str = ""
    adapter: str | None = None
    base_url: str | None = None
    error_rate: float = 0.0


@dataclass(frozen=True)
class PolicyBackend:
    """One kind of policy: how its specs read and how it is built.

    Args:
        kind: the spec's prefix, before the first ``:``.
        syntax: the spec as error messages show it (``"hf:PATH[@ADAPTER]"``).
        parser: ``"module:function"``, a function of the spec string returning its :class:`PolicySpec` and
            raising ``ValueError`` with the spec in its message when it is malformed.
        builder: ``"module:attribute"``, the callable that builds the policy (its class, or a function), given
            the :attr:`spec_arguments` as keywords and the caller's options (``policy_args``) beside them.
        spec_arguments: each builder argument that the spec string sets, with the :class:`PolicySpec` field
            it is read from; a config's ``policy_args`` may not set them again.
        needs_target: whether the spec must name something after ``kind:`` (a model, a server).
    """

    kind: str
    syntax: str
    parser: str
    builder: str
    spec_arguments: Mapping[str, str] = field(default_factory=dict)
    needs_target: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "spec_arguments", MappingProxyType(dict(self.spec_arguments)))

    def parse(self, spec: str) -> PolicySpec:
        """``spec`` read by this backend's parser (which imports the backend's module, not its model)."""
        parsed: PolicySpec = _load(self.parser)(spec)
        return parsed

    def load_builder(self) -> Callable[..., Policy]:
        """The callable that builds this backend's policies (imports the backend's module)."""
        builder: Callable[..., Policy] = _load(self.builder)
        return builder

    def build(self, parsed: PolicySpec, **options: Any) -> Policy:
        """The policy ``parsed`` names, with ``options`` for its builder."""
        from_spec = {argument: getattr(parsed, name) for argument, name in self.spec_arguments.items()}
        return self.load_builder()(**from_spec, **options)


def parse_expert_spec(spec: str) -> PolicySpec:
    """``expert`` or ``expert:RATE``: the scripted expert, breaking the code of a share ``RATE`` of its actions."""
    _, _, rate = spec.partition(":")
    try:
        return PolicySpec(kind="expert", error_rate=float(rate) if rate else 0.0)
    except ValueError:
        raise ValueError(f"policy {spec!r}: the expert's error rate must be a number, e.g. 'expert:0.3'") from None


def parse_model_spec(spec: str) -> PolicySpec:
    """``KIND:MODEL[@ADAPTER]``: a model (a local path or a hub id) and an optional adapter over it."""
    kind, _, target = spec.partition(":")
    model, _, adapter = target.partition("@")
    return PolicySpec(kind=kind, model=model, adapter=adapter or None)


def parse_server_spec(spec: str) -> PolicySpec:
    """``openai:URL#MODEL``: a server's API root and the model it serves (the URL is checked here)."""
    from agentdistill.policies.openai import parse_openai_spec

    base_url, model = parse_openai_spec(spec)
    return PolicySpec(kind="openai", model=model, base_url=base_url)


POLICY_BACKENDS: tuple[PolicyBackend, ...] = (
    PolicyBackend(
        "expert", "expert", "agentdistill.policies:parse_expert_spec", "agentdistill.policies.expert:ExpertPolicy",
        {"error_rate": "error_rate"}, needs_target=False,
    ),
    PolicyBackend(
        "hf", "hf:PATH[@ADAPTER]", "agentdistill.policies:parse_model_spec", "agentdistill.policies.hf:HFPolicy",
        {"model_or_path": "model", "adapter": "adapter"},
    ),
    PolicyBackend(
        "vllm", "vllm:MODEL[@LORA]", "agentdistill.policies:parse_model_spec", "agentdistill.policies.vllm:VLLMPolicy",
        {"model": "model", "lora": "adapter"},
    ),
    PolicyBackend(
        "openai", "openai:URL#MODEL", "agentdistill.policies:parse_server_spec",
        "agentdistill.policies.openai:OpenAIPolicy", {"base_url": "base_url", "model": "model"},
    ),
)
"""Every policy backend, in the order error messages list them."""

POLICY_KINDS: tuple[str, ...] = tuple(backend.kind for backend in POLICY_BACKENDS)


def policy_backend(kind: str, backends: Sequence[PolicyBackend] = POLICY_BACKENDS) -> PolicyBackend:
    """The backend of ``kind`` (a ``KeyError`` for a kind no backend has: a spec's kind is checked when it is
    parsed)."""
    for backend in backends:
        if backend.kind == kind:
            return backend
    raise KeyError(f"no policy backend of kind {kind!r}; kinds: {', '.join(backend.kind for backend in backends)}")


def parse_policy_spec(spec: str, backends: Sequence[PolicyBackend] = POLICY_BACKENDS) -> PolicySpec:
    """Parse ``spec`` (see the module docstring); a ``ValueError`` names a malformed one."""
    return _backend_of(spec, backends).parse(spec)


def make_policy(spec: str, *, backends: Sequence[PolicyBackend] = POLICY_BACKENDS, **kwargs: Any) -> Policy:
    """Build the policy ``spec`` names (see the module docstring); ``kwargs`` go to its constructor."""
    backend = _backend_of(spec, backends)
    return backend.build(backend.parse(spec), **kwargs)


def _backend_of(spec: str, backends: Sequence[PolicyBackend]) -> PolicyBackend:
    """The backend whose kind begins ``spec``; a ``ValueError`` listing every syntax when there is none, or when
    the spec names nothing after a kind that needs a target."""
    kind, _, target = spec.partition(":") if isinstance(spec, str) else ("", "", "")
    backend = next((backend for backend in backends if backend.kind == kind), None)
    if backend is None or (backend.needs_target and not target):
        raise ValueError(f"unknown policy {spec!r}; expected {_alternatives([b.syntax for b in backends])}")
    return backend


def _alternatives(syntaxes: Sequence[str]) -> str:
    """``'a', 'b' or 'c'``."""
    quoted = [repr(syntax) for syntax in syntaxes]
    return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"


def _load(reference: str) -> Any:
    """The attribute ``"module:attribute"`` names (dotted attributes reach into classes), its module imported."""
    module_name, _, attribute = reference.partition(":")
    return reduce(getattr, attribute.split("."), importlib.import_module(module_name))


__all__ = [
    "POLICY_BACKENDS",
    "POLICY_KINDS",
    "Completion",
    "Policy",
    "PolicyBackend",
    "PolicyRequest",
    "PolicySpec",
    "SamplingParams",
    "make_policy",
    "parse_policy_spec",
    "policy_backend",
]
