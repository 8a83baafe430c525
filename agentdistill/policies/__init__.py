"""Teacher, student and scripted-expert policies behind one batched interface (:mod:`.base`).

:func:`make_policy` turns a spec string, as the CLI and configs write it, into a policy:

- ``expert`` (or ``expert:0.3`` for an expert that breaks 30 % of its code): the synthetic envs' teacher;
- ``hf:PATH`` (optionally ``hf:PATH@ADAPTER``): a transformers model (a student), with a PEFT adapter;
- ``vllm:MODEL`` (optionally ``vllm:MODEL@LORA``): vLLM's offline engine (``pip install agentdistill[vllm]``);
- ``openai:URL#MODEL``: any OpenAI-compatible server (vLLM, SGLang, a provider), e.g.
  ``openai:http://localhost:8000/v1#Qwen/Qwen2.5-32B-Instruct``.

:func:`parse_policy_spec` reads a spec without building anything (no model load, no connection), so a
config can be checked before the GPU, the hub or a server is needed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agentdistill.policies.base import Completion, Policy, PolicyRequest, SamplingParams

POLICY_KINDS = ("expert", "hf", "vllm", "openai")


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


def parse_policy_spec(spec: str) -> PolicySpec:
    """Parse ``spec`` (see the module docstring); a ``ValueError`` names a malformed one."""
    kind, _, target = spec.partition(":") if isinstance(spec, str) else ("", "", "")
    if kind == "expert":
        try:
            rate = float(target) if target else 0.0
        except ValueError:
            raise ValueError(f"policy {spec!r}: the expert's error rate must be a number, e.g. 'expert:0.3'") from None
        return PolicySpec(kind="expert", error_rate=rate)
    if kind in ("hf", "vllm") and target:
        model, _, adapter = target.partition("@")
        return PolicySpec(kind=kind, model=model, adapter=adapter or None)
    if kind == "openai" and target:
        from agentdistill.policies.openai import parse_openai_spec

        base_url, model = parse_openai_spec(spec)
        return PolicySpec(kind="openai", model=model, base_url=base_url)
    raise ValueError(
        f"unknown policy {spec!r}; expected 'expert', 'hf:PATH[@ADAPTER]', 'vllm:MODEL[@LORA]' or 'openai:URL#MODEL'"
    )


def make_policy(spec: str, **kwargs: Any) -> Policy:
    """Build the policy ``spec`` names (see the module docstring); ``kwargs`` go to its constructor."""
    parsed = parse_policy_spec(spec)
    if parsed.kind == "expert":
        from agentdistill.policies.expert import ExpertPolicy

        return ExpertPolicy(error_rate=parsed.error_rate, **kwargs)
    if parsed.kind == "hf":
        from agentdistill.policies.hf import HFPolicy

        return HFPolicy(parsed.model, adapter=parsed.adapter, **kwargs)
    if parsed.kind == "vllm":
        from agentdistill.policies.vllm import VLLMPolicy

        return VLLMPolicy(parsed.model, lora=parsed.adapter, **kwargs)
    from agentdistill.policies.openai import OpenAIPolicy

    assert parsed.base_url is not None
    return OpenAIPolicy(parsed.base_url, parsed.model, **kwargs)


__all__ = [
    "POLICY_KINDS",
    "Completion",
    "Policy",
    "PolicyRequest",
    "PolicySpec",
    "SamplingParams",
    "make_policy",
    "parse_policy_spec",
]
