"""The one interface every policy implements: a batch of conversations in, ``n`` completions each out.

Teachers (an OpenAI-compatible server, vLLM), students (transformers, vLLM with LoRA) and the scripted
experts of the synthetic envs are interchangeable behind :class:`Policy`. Batching is the policy's job:
the rollout loop hands it every conversation that waits for an action, in one call.

A conversation whose last message is an ``assistant`` message is *continued*: the completion extends
that message instead of starting a new one. The first-thought prefix (FTP) uses this: the teacher's
first turn starts with ``Thought: <prefix>`` and the teacher writes the rest.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Mapping, Protocol, Sequence

from agentdistill.envs.codeact import END_CODE

Message = Mapping[str, str]
"""A chat message: ``{"role": "system" | "user" | "assistant", "content": str}``."""

DEFAULT_STOP: tuple[str, ...] = (END_CODE, "Observation:")
"""Stop strings of a CodeAct turn: the end of the code block, or a model starting to invent the
observation itself."""

FinishReason = Literal["stop", "length", "error"]


@dataclass(frozen=True)
class SamplingParams:
    """How to sample: the paper's SAG uses ``n=8, temperature=0.4, top_p=0.8``; greedy is the default."""

    temperature: float = 0.0
    top_p: float = 1.0
    max_new_tokens: int = 1024
    stop: tuple[str, ...] = DEFAULT_STOP
    n: int = 1
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature!r}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p!r}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be a positive int, got {self.max_new_tokens!r}")
        if self.n < 1:
            raise ValueError(f"n must be a positive int, got {self.n!r}")
        if isinstance(self.stop, str):
            raise ValueError("stop must be a sequence of strings, not one string")

    @property
    def greedy(self) -> bool:
        """Whether sampling reduces to taking the most likely token."""
        return self.temperature == 0.0


@dataclass(frozen=True)
class PolicyRequest:
    """One conversation to continue, with the env's ``reset`` info as ``context``.

    LLM backends use only ``messages``; scripted experts read the generator's plan from ``context``
    (it is never rendered into a prompt).

    ``prompt_token_ids``, when set, is the exact prompt to continue, token by token: backends that own a
    tokenizer (transformers, vLLM) generate from these ids instead of rendering ``messages``. RL rollouts
    use it so that every later turn's prompt holds the earlier turns' *sampled* ids, never a re-tokenised
    rendering of their text (see :mod:`agentdistill.rollouts.tokens`). Text-only backends (an OpenAI-compatible
    server, the scripted experts) cannot, and ``run_rollouts(token_trace=True)`` refuses them up front.
    """

    messages: tuple[Message, ...]
    context: Mapping[str, Any] = field(default_factory=dict)
    prompt_token_ids: tuple[int, ...] | None = None

    @property
    def continues_assistant(self) -> bool:
        """Whether the completion extends a partial assistant message (FTP) rather than starting one."""
        return bool(self.messages) and self.messages[-1].get("role") == "assistant"


@dataclass(frozen=True)
class Completion:
    """One sampled turn.

    ``text`` is what the policy wrote (after any partial assistant message it continued), with the
    ``<end_code>`` marker restored where a stop string cut it. Token ids and logprobs are filled where
    the backend has them (RL trains on the sampled ids, never on re-tokenised text). A backend failure
    for this conversation is ``finish_reason="error"`` with the reason in ``error``, so that one bad
    request fails one episode, not the run.
    """

    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: FinishReason = "stop"
    token_ids: tuple[int, ...] | None = None
    logprobs: tuple[float, ...] | None = None
    prompt_token_ids: tuple[int, ...] | None = None
    error: str | None = None

    @classmethod
    def failed(cls, error: str) -> Completion:
        """A completion standing for a request the backend could not serve."""
        return cls(text="", finish_reason="error", error=error)


class Policy(Protocol):
    """Anything that continues conversations in batches."""

    name: str
    """A short description for trajectory records (backend and model)."""

    def generate(self, requests: Sequence[PolicyRequest], params: SamplingParams) -> list[list[Completion]]:
        """``params.n`` completions for each request, in request order."""
        ...

    def close(self) -> None:
        """Release models, connections and processes."""
        ...


def restore_end_code(text: str, stopped_on: str | None) -> str:
    """Re-append ``<end_code>`` to a turn that a stop string cut inside or right after its code block.

    Stop strings are not returned by most backends, so a turn stopped by ``<end_code>`` loses its
    marker; the paper's code restores it so that the recorded turn (and what students learn) always
    ends the same way.
    """
    if stopped_on == END_CODE and not text.rstrip().endswith(END_CODE):
        return text.rstrip() + END_CODE
    return text


def first_stop(text: str, stops: Sequence[str]) -> tuple[str, str | None]:
    """Cut ``text`` at the earliest stop string; returns the kept text and which stop matched."""
    best: tuple[int, str] | None = None
    for stop in stops:
        position = text.find(stop)
        if position != -1 and (best is None or position < best[0]):
            best = (position, stop)
    if best is None:
        return text, None
    return text[: best[0]], best[1]
