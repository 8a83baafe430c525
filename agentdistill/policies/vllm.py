"""A :class:`~agentdistill.policies.base.Policy` running vLLM's offline engine in this process.

This is how students are evaluated and sampled in the paper: the base model loaded once with
``enable_lora=True`` and the fine-tuned adapter applied per request (``LoRARequest``), so several
adapters can share one engine. Teachers can run this way too when a server is not wanted.

vLLM needs a CUDA machine and is an optional extra (``pip install agentdistill[vllm]``); it is imported
only when a :class:`VLLMPolicy` is made, so the rest of the package works without it.

Conversations are rendered by the model's chat template inside :meth:`vllm.LLM.chat`. Those ending with
a partial assistant message (the first-thought prefix) go in a separate ``chat`` call with
``continue_final_message=True, add_generation_prompt=False`` (vLLM applies the two flags to a whole
call, and refuses both set together); the completion is then only the text written after the prefix.
"""

from __future__ import annotations

import gc
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from agentdistill.policies.base import Completion, FinishReason, PolicyRequest, SamplingParams, restore_end_code

logger = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'agentdistill[vllm]'"

_LORA_RANKS = (16, 32, 64, 128, 256, 320, 512)
"""``max_lora_rank`` values vLLM accepts from its default (16) up; older versions stop at 64 or 256."""

LORA_NAME = "adapter"
LORA_ID = 1
"""Name and integer id of the one adapter a policy serves (ids must be positive and unique per engine)."""


@dataclass(frozen=True)
class _VLLM:
    """The parts of vLLM used here, imported together so one place handles their absence."""

    LLM: Any
    SamplingParams: Any
    LoRARequest: Any


def _import_vllm() -> _VLLM:
    try:
        from vllm import LLM
        from vllm import SamplingParams as VLLMSamplingParams
        from vllm.lora.request import LoRARequest
    except ImportError as error:
        raise ImportError(
            f"VLLMPolicy needs vLLM, which is not installed (or failed to import: {error}); install it with "
            f"`{INSTALL_HINT}` on a CUDA machine, or serve the model with `vllm serve` elsewhere and use "
            "OpenAIPolicy"
        ) from error
    return _VLLM(LLM=LLM, SamplingParams=VLLMSamplingParams, LoRARequest=LoRARequest)


class VLLMPolicy:
    """Continues conversations with an in-process ``vllm.LLM``.

    Args:
        model: HF repo id or local path of the (base) model.
        lora: path of a PEFT LoRA adapter to apply to every request; turns on ``enable_lora`` and, when
            the adapter's ``adapter_config.json`` has a rank ``r`` above vLLM's default ``max_lora_rank``
            of 16, raises that limit to the next value vLLM accepts (``engine_kwargs`` still win).
        tensor_parallel_size, gpu_memory_utilization, max_model_len: passed to ``vllm.LLM``.
        logprobs: return the sampled tokens' logprobs (vLLM ``SamplingParams(logprobs=0)``: the chosen
            token only). They are vLLM's ``logprobs_mode``, by default the raw model logprobs before
            temperature and top-p; pass ``logprobs_mode="processed_logprobs"`` for the sampling ones.
        name: the name recorded in trajectories; defaults to ``vllm:<model>`` or ``vllm:<model>@<lora>``,
            the spec that ``make_policy`` reads.
        **engine_kwargs: any other ``vllm.LLM`` / ``EngineArgs`` option (``dtype``, ``seed``,
            ``enforce_eager``, ``max_lora_rank``, ...).

    Token ids are always returned (vLLM has them for free), and the prompt's ids with them, so RL can
    train on exactly what was sampled. A request that vLLM rejects (say, a prompt longer than
    ``max_model_len``) fails on its own: when a batch call raises, its requests are retried one by one
    and only those that fail again get failed completions.
    """

    def __init__(
        self,
        model: str,
        *,
        lora: str | Path | None = None,
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.9,
        max_model_len: int | None = None,
        logprobs: bool = False,
        name: str | None = None,
        **engine_kwargs: Any,
    ) -> None:
        vllm = _import_vllm()
        self.model = model
        self.lora = str(lora) if lora is not None else None
        self.logprobs = bool(logprobs)
        self.name = name or f"vllm:{model}" + (f"@{self.lora}" if self.lora else "")
        options: dict[str, Any] = {
            "tensor_parallel_size": tensor_parallel_size,
            "gpu_memory_utilization": gpu_memory_utilization,
        }
        if max_model_len is not None:
            options["max_model_len"] = max_model_len
        if self.lora is not None:
            options["enable_lora"] = True
            rank = _max_lora_rank(self.lora)
            if rank is not None:
                options["max_lora_rank"] = rank
        options.update(engine_kwargs)
        self._vllm = vllm
        self._lora_request = vllm.LoRARequest(LORA_NAME, LORA_ID, self.lora) if self.lora is not None else None
        self._llm: Any = vllm.LLM(model=model, **options)
        self._owns_engine = True
        self._tokenizer: Any = None

    @classmethod
    def from_engine(cls, llm: Any, *, tokenizer: Any = None, name: str = "vllm:engine", logprobs: bool = True) -> Self:
        """A policy over an engine someone else owns, e.g. TRL's colocated engine during GRPO, whose weights
        TRL syncs before each rollout; :meth:`close` leaves that engine running."""
        policy = cls.__new__(cls)
        policy._vllm = _import_vllm()
        policy.model = name
        policy.lora = None
        policy.logprobs = bool(logprobs)
        policy.name = name
        policy._lora_request = None
        policy._llm = llm
        policy._owns_engine = False
        policy._tokenizer = tokenizer
        return policy

    @property
    def tokenizer(self) -> Any:
        """The engine's tokenizer (what ``prompt_ids`` renders with)."""
        if self._tokenizer is None:
            if self._llm is None:
                raise RuntimeError(f"{self.name} is closed")
            self._tokenizer = self._llm.get_tokenizer()
        return self._tokenizer

    def prompt_ids(self, request: PolicyRequest) -> list[int]:
        """The ids a request is generated from: its ``prompt_token_ids``, or its messages rendered by the chat
        template (as ``LLM.chat`` renders them)."""
        if request.prompt_token_ids is not None:
            return [int(token) for token in request.prompt_token_ids]
        continues = request.continues_assistant
        ids = self.tokenizer.apply_chat_template(
            [dict(message) for message in request.messages], tokenize=True,
            add_generation_prompt=not continues, continue_final_message=continues,
        )
        ids = ids["input_ids"] if not isinstance(ids, list) else ids
        return [int(token) for token in ids]

    def generate(self, requests: Sequence[PolicyRequest], params: SamplingParams) -> list[list[Completion]]:
        """``params.n`` completions per request, in request order."""
        requests = list(requests)
        if self._llm is None:
            raise RuntimeError(f"{self.name} is closed")
        results: list[list[Completion] | None] = [None] * len(requests)
        by_ids = [index for index, request in enumerate(requests) if request.prompt_token_ids is not None]
        if by_ids:
            prompts = [list(requests[index].prompt_token_ids or ()) for index in by_ids]
            for index, completions in zip(by_ids, self._generate_ids(prompts, params, by_ids)):
                results[index] = completions
        for continues in (False, True):
            indices = [
                index for index, request in enumerate(requests)
                if request.continues_assistant == continues and request.prompt_token_ids is None
            ]
            if not indices:
                continue
            conversations = [[dict(message) for message in requests[index].messages] for index in indices]
            for index, completions in zip(indices, self._chat(conversations, params, continues, indices)):
                results[index] = completions
        return [completions if completions is not None else [] for completions in results]

    def close(self) -> None:
        """Drop the engine and free its GPU memory (best effort: vLLM offers no single call for it); an engine
        given to :meth:`from_engine` is only let go of."""
        llm, self._llm = self._llm, None
        if llm is None or not self._owns_engine:
            return
        engine = getattr(llm, "llm_engine", None)
        core = getattr(engine, "engine_core", None)
        for shutdown in (getattr(core, "shutdown", None), getattr(engine, "shutdown", None)):
            if callable(shutdown):
                try:
                    shutdown()
                except Exception:
                    logger.debug("vLLM engine shutdown failed", exc_info=True)
                break
        del llm, engine, core
        _release_gpu_memory()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"VLLMPolicy({self.model!r}, lora={self.lora!r})"

    def _sampling_params(self, params: SamplingParams, request_indices: Sequence[int]) -> list[Any]:
        """One vLLM ``SamplingParams`` per request. A greedy request with ``n > 1`` is decoded once (its samples
        would all be alike, and vLLM refuses greedy ``n > 1``); with a seed, request ``i`` of the call samples
        with ``seed + i * n``, so identical conversations in one call get different samples, as with ``hf:``.
        vLLM's own checks of the values raise here, for the caller to fail these requests only."""
        greedy = params.temperature == 0
        return [
            self._vllm.SamplingParams(
                n=1 if greedy else params.n,
                temperature=params.temperature,
                top_p=params.top_p,
                max_tokens=params.max_new_tokens,
                stop=list(params.stop),
                seed=None if params.seed is None else params.seed + index * params.n,
                logprobs=0 if self.logprobs else None,
            )
            for index in request_indices
        ]

    def _chat(
        self, conversations: list[list[dict[str, Any]]], params: SamplingParams, continues: bool,
        request_indices: Sequence[int],
    ) -> list[list[Completion]]:
        """One ``LLM.chat`` call for conversations that all continue (or all start) an assistant turn."""
        return self._batched(
            len(conversations), params, request_indices,
            lambda sampling: self._call_chat(conversations, sampling, continues),
            lambda single: self._chat([conversations[single]], params, continues, [request_indices[single]])[0],
        )

    def _generate_ids(
        self, prompts: list[list[int]], params: SamplingParams, request_indices: Sequence[int]
    ) -> list[list[Completion]]:
        """One ``LLM.generate`` call over token-id prompts (``PolicyRequest.prompt_token_ids``)."""
        return self._batched(
            len(prompts), params, request_indices,
            lambda sampling: list(
                self._llm.generate(
                    [{"prompt_token_ids": ids} for ids in prompts], sampling_params=sampling, use_tqdm=False,
                    lora_request=self._lora_request,
                )
            ),
            lambda single: self._generate_ids([prompts[single]], params, [request_indices[single]])[0],
        )

    def _batched(
        self,
        count: int,
        params: SamplingParams,
        request_indices: Sequence[int],
        call: Callable[[list[Any]], list[Any]],
        alone: Callable[[int], list[Completion]],
    ) -> list[list[Completion]]:
        """``count`` requests in one engine call; a call that raises is retried request by request so that only
        the culprits fail, and settings vLLM refuses fail these requests, never the caller."""
        try:
            sampling = self._sampling_params(params, request_indices)
        except Exception as error:  # noqa: BLE001 - vLLM's own validation of the values
            return [_failed(params, f"{self.name}: invalid sampling settings: {error}") for _ in range(count)]
        try:
            outputs = call(sampling)
        except Exception as error:  # noqa: BLE001 - find which requests fail, keep the others
            if count == 1:
                return [_failed(params, f"{self.name}: {type(error).__name__}: {error}")]
            logger.warning("vLLM batch of %d failed (%s); retrying one by one", count, error)
            return [alone(single) for single in range(count)]
        if len(outputs) != count:
            reason = f"{self.name}: vLLM returned {len(outputs)} outputs for {count} requests"
            return [_failed(params, reason) for _ in range(count)]
        if params.temperature == 0 and params.n > 1:  # decoded once: the one completion, n times
            return [_completions_from_output(output, replace(params, n=1)) * params.n for output in outputs]
        return [_completions_from_output(output, params) for output in outputs]

    def _call_chat(self, conversations: list[list[dict[str, Any]]], sampling: Any, continues: bool) -> list[Any]:
        return list(
            self._llm.chat(
                conversations,
                sampling_params=sampling,
                use_tqdm=False,
                lora_request=self._lora_request,
                add_generation_prompt=not continues,
                continue_final_message=continues,
            )
        )


def _completions_from_output(output: Any, params: SamplingParams) -> list[Completion]:
    """``params.n`` completions from one vLLM ``RequestOutput``.

    Reads only the attributes it needs, so any object shaped like ``RequestOutput`` works:
    ``prompt_token_ids`` and ``outputs``, a list of ``CompletionOutput`` with ``index, text, token_ids,
    logprobs`` (per position a mapping from token id to a ``Logprob`` with ``.logprob``, or to a float),
    ``finish_reason`` (``"stop"``, ``"length"``, ``"abort"``) and ``stop_reason`` (the matched stop
    string, a stop token id, or ``None`` at end of sequence). Missing outputs become failed completions.
    """
    prompt_ids = _int_tuple(getattr(output, "prompt_token_ids", None))
    prompt_tokens = len(prompt_ids) if prompt_ids is not None else 0
    completions: list[Completion] = []
    for sample in sorted(output.outputs, key=lambda sample: sample.index)[: params.n]:
        token_ids = _int_tuple(sample.token_ids) or ()
        finish, error = _finish(sample.finish_reason)
        text = sample.text
        if finish == "stop":
            stop_reason = getattr(sample, "stop_reason", None)
            text = restore_end_code(text, stop_reason if isinstance(stop_reason, str) else None)
        completions.append(
            Completion(
                text=text,
                prompt_tokens=prompt_tokens,
                completion_tokens=len(token_ids),
                finish_reason=finish,
                token_ids=token_ids,
                logprobs=_sampled_logprobs(getattr(sample, "logprobs", None), token_ids),
                prompt_token_ids=prompt_ids,
                error=error,
            )
        )
    missing = params.n - len(completions)
    completions += [Completion.failed(f"vLLM returned {len(completions)} of {params.n} samples")] * max(0, missing)
    return completions


def _finish(reason: Any) -> tuple[FinishReason, str | None]:
    if reason == "length":
        return "length", None
    if reason == "stop":
        return "stop", None
    return "error", f"vLLM ended the sample with finish_reason={reason!r}"


def _sampled_logprobs(positions: Any, token_ids: Sequence[int]) -> tuple[float, ...] | None:
    """The logprob of each sampled token, from vLLM's per-position ``{token_id: Logprob}`` mappings."""
    if positions is None:
        return None
    values: list[float] = []
    for position, token_id in zip(positions, token_ids):
        entry = position.get(token_id) if isinstance(position, Mapping) else None
        if entry is None:
            return None
        values.append(float(getattr(entry, "logprob", entry)))
    return tuple(values)


def _int_tuple(values: Any) -> tuple[int, ...] | None:
    return None if values is None else tuple(int(value) for value in values)


def _failed(params: SamplingParams, reason: str) -> list[Completion]:
    return [Completion.failed(reason) for _ in range(params.n)]


def _max_lora_rank(path: str) -> int | None:
    """The ``max_lora_rank`` a local adapter needs beyond vLLM's default, from its ``adapter_config.json``.

    ``None`` when the default serves (rank <= 16), when the config cannot be read (a hub id, say: vLLM
    then reports a too-large rank itself), or when the rank is beyond every value vLLM accepts.
    """
    config = Path(path) / "adapter_config.json"
    try:
        rank = json.loads(config.read_text(encoding="utf-8")).get("r")
    except (OSError, ValueError, AttributeError):
        return None
    if isinstance(rank, bool) or not isinstance(rank, int) or rank <= _LORA_RANKS[0]:
        return None
    return next((allowed for allowed in _LORA_RANKS if allowed >= rank), None)


def _release_gpu_memory() -> None:
    """Tear down vLLM's parallel state and empty the CUDA cache, so another engine can load."""
    try:
        from vllm.distributed.parallel_state import destroy_distributed_environment, destroy_model_parallel

        destroy_model_parallel()
        destroy_distributed_environment()
    except Exception:
        logger.debug("vLLM parallel state teardown skipped", exc_info=True)
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:
        logger.debug("CUDA cache release skipped", exc_info=True)
