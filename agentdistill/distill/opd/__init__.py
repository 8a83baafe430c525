"""On-policy distillation (OPD) of an agent in its environments: the student acts, the teacher grades every token.

The student plays episodes in an env through the rollout loop (many envs at once, token-in/token-out, SAG off);
the teacher then reads each episode in its own context (its system prompt, the same task, the student's turns and
the env's observations, as token ids) and gives the log-probability of every token the student sampled
(:mod:`.teachers`: ``hf:`` by a forward pass, ``vllm:`` by ``prompt_logprobs``, ``openai:`` by completions with
``echo``). Each sampled token's advantage is the teacher's log-probability minus the student's, the negative of the
per-token reverse KL, optionally plus the env's reward (``reward_weight``); TRL's GRPO trainer takes the
per-token advantages and does the update (:mod:`.trainer`), so LoRA or full fine-tuning, several processes,
checkpoints and resume are GRPO's. Teacher and student must share a tokenizer.

Everything else is GRPO's run (:func:`~agentdistill.distill.grpo.train.train_in_env`): held-out evaluation
before and after with the paired gain and its standard error in ``OUT/opd_result.json``, W&B (``opd/teacher_logprob``,
``opd/reverse_kl``, ``env/success``, ``env/invalid_rate``), and ``OUT`` loads as ``hf:OUT``::

    agentdistill opd --env AgentMath-Synthetic-v0 --student hf:students/small --teacher hf:students/teacher \\
        --out opd/small --config configs/opd/opd_cpu_tiny.yaml
"""

from __future__ import annotations

from types import MappingProxyType

from agentdistill.distill import lazy_exports

_EXPORTS = MappingProxyType(
    {
        "OPDResult": "settings",
        "OPDSettings": "settings",
        "launch_opd": "launch",
        "train_opd": "train",
    }
)
"""The package's entry points and the module each lives in (imported on first use, :func:`lazy_exports`)."""

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS)
