"""Teachers that score a student's tokens: the log-probability the teacher gives each token the student sampled.

On-policy distillation needs, for every sampled token of a student's episode, ``log p_teacher(token | context)``
where the context is what the teacher would have seen: its own system prompt, then the same task, turns and
observations as token ids. A teacher only reads here, it never generates, so one forward pass per episode
scores every token at once:

* ``hf:DIR`` (or a hub id): a transformers model on this process's device, scored by a forward pass;
* ``vllm:MODEL``: vLLM's offline engine, scored with ``prompt_logprobs`` (the log-probability of every prompt
  token, the sampled one among them);
* ``openai:URL#MODEL``: an OpenAI-compatible completions server, scored with ``echo`` and ``logprobs`` on the
  token ids as prompt (vLLM's server does both); a server that does not return prompt log-probabilities is a
  clear error, not a silent zero.

The token ids only mean the same thing to both models when they share a tokenizer: :func:`check_same_tokenizer`
refuses a pair whose vocabularies differ before anything is scored.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import httpx
import torch

from agentdistill.errors import UserError

ScoringItem = tuple[Sequence[int], Sequence[int]]
"""``(prompt_ids, completion_ids)``: the teacher's prompt and the episode's ids after it."""


class Teacher(Protocol):
    """Scores completions: for each ``(prompt_ids, completion_ids)``, the teacher's log-probability of every
    completion token given everything before it (one float per completion token)."""

    name: str

    def score(self, items: Sequence[ScoringItem]) -> list[list[float]]: ...

    def close(self) -> None: ...


def check_same_tokenizer(student: Any, teacher: Any, *, teacher_name: str) -> None:
    """Raise :class:`UserError` unless ``student`` and ``teacher`` map every token to the same id."""
    if student.get_vocab() != teacher.get_vocab():
        raise UserError(
            f"the teacher {teacher_name} has another tokenizer than the student ({len(teacher.get_vocab())} vs "
            f"{len(student.get_vocab())} tokens, or the same tokens with other ids): on-policy distillation scores "
            "the student's token ids with the teacher, so both must share one tokenizer (e.g. one model family)"
        )


class HFTeacher:
    """A transformers model scoring by forward passes, ``batch_size`` episodes at a time.

    Episodes of a batch are left-padded (with position ids counted from each episode's first token, so padding
    changes nothing), so every completion ends at the last position and one forward keeps the logits of the last
    ``longest completion + 1`` positions only; log-probabilities are then taken ``chunk_tokens`` positions at a
    time, so a long episode over a large vocabulary never holds a ``(length, vocab)`` float32 tensor at once.
    """

    def __init__(
        self, model: Any, *, name: str, device: str | torch.device = "cpu", batch_size: int = 8, chunk_tokens: int = 512
    ) -> None:
        if batch_size < 1 or chunk_tokens < 1:
            raise ValueError(f"batch_size and chunk_tokens must be positive, got {batch_size}, {chunk_tokens}")
        self.name = name
        self.model = model.to(device).eval()
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.chunk_tokens = chunk_tokens

    @classmethod
    def load(
        cls,
        source: str,
        *,
        adapter: str | None = None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | None = None,
        batch_size: int = 8,
    ) -> tuple[HFTeacher, Any]:
        """The teacher of ``hf:source`` (a model or adapter directory, or a hub id) and its tokenizer; an
        adapter is merged into its base (a teacher is never trained)."""
        from agentdistill.distill.loading import load_student

        loaded = load_student(source, adapter=adapter, dtype=dtype)
        model = loaded.model.merge_and_unload() if loaded.adapter is not None else loaded.model
        return cls(model, name=f"hf:{source}", device=device, batch_size=batch_size), loaded.tokenizer

    @torch.no_grad()
    def score(self, items: Sequence[ScoringItem]) -> list[list[float]]:
        scores: list[list[float]] = []
        for start in range(0, len(items), self.batch_size):
            scores.extend(self._score_batch(items[start : start + self.batch_size]))
        return scores

    def _score_batch(self, items: Sequence[ScoringItem]) -> list[list[float]]:
        sequences = [[*prompt, *completion] for prompt, completion in items]
        width = max(len(sequence) for sequence in sequences)
        longest = max(len(completion) for _, completion in items)
        input_ids = torch.zeros((len(sequences), width), dtype=torch.long, device=self.device)
        attention = torch.zeros_like(input_ids)
        for row, sequence in enumerate(sequences):
            input_ids[row, width - len(sequence) :] = torch.tensor(sequence, device=self.device)
            attention[row, width - len(sequence) :] = 1
        positions = (attention.cumsum(dim=1) - 1).clamp(min=0)
        logits = self.model(
            input_ids=input_ids, attention_mask=attention, position_ids=positions, logits_to_keep=longest + 1
        ).logits
        # logits[:, j] predicts the token at position width - longest + j; completion token k of a row whose
        # completion has length c sits at position width - c + k.
        return [
            self._logprobs(logits[row, longest - len(completion) : longest], input_ids[row, width - len(completion) :])
            for row, (_, completion) in enumerate(items)
        ]

    def _logprobs(self, logits: torch.Tensor, targets: torch.Tensor) -> list[float]:
        values: list[float] = []
        for start in range(0, targets.shape[0], self.chunk_tokens):
            chunk = logits[start : start + self.chunk_tokens].float()
            chosen = chunk.gather(1, targets[start : start + self.chunk_tokens, None]).squeeze(1)
            values.extend((chosen - torch.logsumexp(chunk, dim=-1)).tolist())
        return values

    def close(self) -> None:
        self.model = None


class VLLMTeacher:
    """vLLM's offline engine scoring by ``prompt_logprobs`` (vLLM is the optional extra ``vllm``)."""

    def __init__(self, engine: Any, *, name: str) -> None:
        self.engine = engine
        self.name = name

    @classmethod
    def load(cls, model: str, **engine_options: Any) -> tuple[VLLMTeacher, Any]:
        """The teacher of ``vllm:model`` (its engine built here) and its tokenizer."""
        try:
            from vllm import LLM
        except ImportError as error:
            raise UserError("a vllm: teacher needs vLLM: pip install 'agentdistill[vllm]'") from error
        engine = LLM(model=model, **engine_options)
        return cls(engine, name=f"vllm:{model}"), engine.get_tokenizer()

    def score(self, items: Sequence[ScoringItem]) -> list[list[float]]:
        from vllm import SamplingParams

        prompts = [{"prompt_token_ids": [*prompt, *completion]} for prompt, completion in items]
        outputs = self.engine.generate(prompts, SamplingParams(max_tokens=1, prompt_logprobs=0), use_tqdm=False)
        return [
            prompt_logprobs_of(output.prompt_logprobs, [*prompt, *completion], len(prompt), where=self.name)
            for output, (prompt, completion) in zip(outputs, items)
        ]

    def close(self) -> None:
        self.engine = None


def prompt_logprobs_of(
    prompt_logprobs: Sequence[Mapping[int, Any] | None] | None, ids: Sequence[int], start: int, *, where: str
) -> list[float]:
    """The log-probabilities of ``ids[start:]`` from vLLM's ``prompt_logprobs`` (one mapping of token id to
    ``Logprob`` per prompt position, ``None`` at position 0)."""
    if prompt_logprobs is None or len(prompt_logprobs) < len(ids):
        raise RuntimeError(f"{where} returned no prompt log-probabilities for a sequence of {len(ids)} tokens")
    values = []
    for position in range(start, len(ids)):
        entry = prompt_logprobs[position] or {}
        logprob = entry.get(int(ids[position]))
        if logprob is None:
            raise RuntimeError(f"{where} gave no log-probability for token {ids[position]} at position {position}")
        values.append(float(getattr(logprob, "logprob", logprob)))
    return values


class OpenAITeacher:
    """An OpenAI-compatible completions server scoring by ``echo`` with ``logprobs`` (vLLM's server does it).

    Each item is one ``POST <base_url>/completions`` with the ids as ``prompt``, ``max_tokens: 1``, ``echo: true``
    and ``logprobs: 0``; the answer's ``logprobs.token_logprobs`` holds one value per prompt token (the first is
    ``null``). Connection errors, 429 and 5xx are retried ``retries`` times with doubling backoff.
    """

    def __init__(
        self, base_url: str, model: str, *, api_key: str | None = None, timeout_s: float = 300.0, retries: int = 3
    ) -> None:
        self.name = f"openai:{base_url}#{model}"
        self.model = model
        self.retries = retries
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(base_url=base_url.rstrip("/") + "/", timeout=timeout_s, headers=headers)

    def score(self, items: Sequence[ScoringItem]) -> list[list[float]]:
        return [self._score_one([*prompt, *completion], len(prompt)) for prompt, completion in items]

    def _score_one(self, ids: list[int], start: int) -> list[float]:
        body = {"model": self.model, "prompt": ids, "max_tokens": 1, "echo": True, "logprobs": 0, "temperature": 0.0}
        payload = self._post(body)
        try:
            token_logprobs = payload["choices"][0]["logprobs"]["token_logprobs"]
        except (KeyError, IndexError, TypeError):
            token_logprobs = None
        if not isinstance(token_logprobs, list) or len(token_logprobs) < len(ids):
            raise UserError(
                f"the teacher {self.name} returned no log-probabilities for the prompt tokens (completions with "
                "echo=true and logprobs); serve it with vLLM (`vllm serve MODEL`), which does"
            )
        return [float(value) for value in token_logprobs[start : len(ids)]]

    def _post(self, body: Mapping[str, Any]) -> Mapping[str, Any]:
        for attempt in range(self.retries + 1):
            try:
                response = self._client.post("completions", json=body)
            except httpx.TransportError as error:
                failure = f"{type(error).__name__}: {error}"
            else:
                if response.status_code == 200:
                    return response.json()
                failure = f"HTTP {response.status_code}: {response.text[:200]}"
                if response.status_code != 429 and response.status_code < 500:
                    break
            if attempt < self.retries:
                time.sleep(min(0.5 * 2**attempt, 8.0))
        raise RuntimeError(f"the teacher {self.name} failed to score: {failure}")

    def close(self) -> None:
        self._client.close()


def make_teacher(
    spec: str, *, device: str | torch.device = "cpu", dtype: torch.dtype | None = None, batch_size: int = 8
) -> tuple[Teacher, Any]:
    """The teacher a policy spec names (``hf:``, ``vllm:`` or ``openai:``) and its tokenizer (``None`` for a
    server, whose tokenizer is not at hand: the run then trusts that the server serves the student's family)."""
    from agentdistill.policies import parse_policy_spec

    parsed = parse_policy_spec(spec)
    if parsed.kind == "hf":
        return HFTeacher.load(parsed.model, adapter=parsed.adapter, device=device, dtype=dtype, batch_size=batch_size)
    if parsed.kind == "vllm":
        if parsed.adapter is not None:
            raise UserError(f"a vllm: teacher scores with its base model; got a LoRA adapter in {spec!r}")
        return VLLMTeacher.load(parsed.model)
    if parsed.kind == "openai":
        assert parsed.base_url is not None
        return OpenAITeacher(parsed.base_url, parsed.model, api_key=os.environ.get("OPENAI_API_KEY")), None
    raise UserError(f"a teacher scores token log-probabilities: give hf:, vllm: or openai:, got {spec!r}")
