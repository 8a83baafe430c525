"""Teacher, student and scripted-expert policies behind one batched interface (:mod:`.base`).

:func:`make_policy` turns a spec string, as the CLI and configs write it, into a policy:

- ``expert`` (or ``expert:0.3`` for an expert that breaks 30 % of its code): the synthetic envs' teacher;
- ``hf:PATH`` (optionally ``hf:PATH@ADAPTER``): a transformers model (a student), with a PEFT adapter;
- ``vllm:MODEL`` (optionally ``vllm:MODEL@LORA``): vLLM's offline engine (``pip install agentdistill[vllm]``);
- ``openai:URL#MODEL``: any OpenAI-compatible server (vLLM, SGLang, a provider), e.g.
  ``openai:http://localhost:8000/v1#Qwen/Qwen2.5-32B-Instruct``.
"""

from __future__ import annotations

from typing import Any

from agentdistill.policies.base import Completion, Policy, PolicyRequest, SamplingParams

POLICY_KINDS = ("expert", "hf", "vllm", "openai")


def make_policy(spec: str, **kwargs: Any) -> Policy:
    """Build the policy ``spec`` names (see the module docstring); ``kwargs`` go to its constructor."""
    kind, _, target = spec.partition(":")
    if kind == "expert":
        from agentdistill.policies.expert import ExpertPolicy

        return ExpertPolicy(error_rate=float(target) if target else 0.0, **kwargs)
    if kind in ("hf", "vllm") and target:
        model, _, adapter = target.partition("@")
        if kind == "hf":
            from agentdistill.policies.hf import HFPolicy

            return HFPolicy(model, adapter=adapter or None, **kwargs)
        from agentdistill.policies.vllm import VLLMPolicy

        return VLLMPolicy(model, lora=adapter or None, **kwargs)
    if kind == "openai" and target:
        from agentdistill.policies.openai import OpenAIPolicy, parse_openai_spec

        base_url, model = parse_openai_spec(spec)
        return OpenAIPolicy(base_url, model, **kwargs)
    raise ValueError(
        f"unknown policy {spec!r}; expected 'expert', 'hf:PATH[@ADAPTER]', 'vllm:MODEL[@LORA]' or 'openai:URL#MODEL'"
    )


__all__ = ["POLICY_KINDS", "Completion", "Policy", "PolicyRequest", "SamplingParams", "make_policy"]
