"""A :class:`~agentdistill.policies.base.Policy` running a transformers causal LM in this process.

This is the backend that works everywhere (CPU included): tests, the quickstart's scratch students, and
evaluation or RL of small students where vLLM is not available. Conversations are rendered by the
tokenizer's chat template, left-padded into batches and decoded with ``model.generate``.

What a :class:`~agentdistill.policies.base.Completion` holds here:

* ``text``: the decoded continuation (special tokens skipped), cut before the first stop string of
  ``SamplingParams.stop`` (the stop string itself is dropped), then ``<end_code>`` restored by
  :func:`~agentdistill.policies.base.restore_end_code` when that was the stop.
* ``token_ids``: the tokens the model sampled for this completion, up to and including the one that ended
  it: the token that completed the first stop string (so a cut ``<end_code>`` is still in the ids), or the
  end-of-sequence token, or all ``max_new_tokens`` tokens when the length ran out. Padding after the end is
  never included. This is what vLLM returns too, so RL trains on the same thing with either backend.
  ``completion_tokens == len(token_ids)``.
* ``logprobs``: one per token id, the log-probability of that token under the model's raw next-token
  distribution (log-softmax of the logits, before temperature and top-p), recorded during generation
  (vLLM's default ``raw_logprobs`` mode). Greedy or not, they describe the model, not the sampler.
* ``prompt_token_ids``: the unpadded prompt ids, as the chat template and tokenizer produced them (or as the
  request gave them in ``PolicyRequest.prompt_token_ids``).
"""

from __future__ import annotations

import copy
import gc
import inspect
import logging
import os
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Self

import torch
from transformers import (
    AutoTokenizer,
    GenerationConfig,
    LogitsProcessor,
    LogitsProcessorList,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    StoppingCriteriaList,
    StopStringCriteria,
)

from agentdistill.policies.base import Completion, PolicyRequest, SamplingParams, first_stop, restore_end_code
from agentdistill.policies.model_source import explaining_model_load

logger = logging.getLogger(__name__)


class HFPolicy:
    """Continues conversations with a transformers ``AutoModelForCausalLM`` (optionally with a PEFT adapter).

    Args:
        model_or_path: a local directory or hub id to load with ``AutoModelForCausalLM``, or a loaded
            model. The policy takes the model over: it sets eval mode, moves it to ``device``, replaces its
            ``generation_config`` by one holding only the special token ids (so a checkpoint's defaults,
            e.g. Qwen2.5-Instruct's ``top_k=20`` and ``repetition_penalty=1.05``, never change what
            :class:`SamplingParams` asks for), and :meth:`close` drops it.
        tokenizer: a tokenizer or its path; defaults to ``model_or_path`` when that is a path. It is
            copied, then set to left padding (pad = eos when it has no pad token).
        adapter: path of a PEFT adapter loaded on top with ``peft.PeftModel.from_pretrained``.
        device: where the model runs (``"cpu"``, ``"cuda"``, ``"cuda:1"``...).
        dtype: a torch dtype (or its name) to load or cast the model to; ``None`` or ``"auto"`` keeps the
            saved one.
        max_batch_size: at most this many requests go into one ``generate`` call (``n`` rows each).
        name: the name recorded in trajectories; defaults to ``hf:<path or class>`` (``+lora:<adapter>``).
        reuse_prefix: compute the leading tokens every row of a batch shares (the system prompt, or a whole
            prompt sampled ``n`` times) once per ``generate`` call and start every row from that KV cache;
            ``False``: left-pad whole prompts. Greedy outputs are the same either way up to floating-point
            rounding (the prefix is computed in a batch of one).

    Seeds: with ``SamplingParams.seed`` set, chunk ``k`` of a call samples from a generator seeded with
    ``seed + k`` (the global torch RNG is left untouched), so the same requests, parameters and
    ``max_batch_size`` give the same completions. A request sampled in another batch gets other samples.
    Greedy requests with ``n > 1`` are decoded once and the completion repeated.

    A conversation the chat template cannot render fails alone (``finish_reason="error"``); when a whole
    ``generate`` call raises, its requests are retried one by one so that only the culprits fail.
    """

    def __init__(
        self,
        model_or_path: str | os.PathLike[str] | PreTrainedModel,
        *,
        tokenizer: PreTrainedTokenizerBase | str | os.PathLike[str] | None = None,
        adapter: str | os.PathLike[str] | None = None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | str | None = None,
        max_batch_size: int = 32,
        name: str | None = None,
        reuse_prefix: bool = True,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be a positive int, got {max_batch_size!r}")
        self.device = torch.device(device)
        self.max_batch_size = max_batch_size
        self.reuse_prefix = reuse_prefix
        self.adapter = os.fspath(adapter) if adapter is not None else None
        torch_dtype: torch.dtype | str | None = (
            getattr(torch, dtype) if isinstance(dtype, str) and dtype != "auto" else dtype
        )

        if isinstance(model_or_path, (str, os.PathLike)):
            from agentdistill.distill.loading import load_student

            source = os.fspath(model_or_path)
            student = load_student(source, adapter=self.adapter, dtype=torch_dtype)
            model: Any = student.model
            tokenizer = tokenizer if tokenizer is not None else student.tokenizer
        else:
            source = type(model_or_path).__name__
            model = model_or_path
            if tokenizer is None:
                raise ValueError("HFPolicy needs a tokenizer (or its path) when given a loaded model")
            if isinstance(torch_dtype, torch.dtype):
                model = model.to(torch_dtype)
        self.tokenizer = _left_padding_copy(tokenizer)
        self._stop_ids = _stop_token_ids(model, self.tokenizer)
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        base.generation_config = GenerationConfig(
            eos_token_id=self._stop_ids,
            pad_token_id=self.tokenizer.pad_token_id,
            bos_token_id=getattr(model.generation_config, "bos_token_id", None),
        )
        if self.adapter is not None and not isinstance(model_or_path, (str, os.PathLike)):
            from agentdistill.distill.loading import attach_adapter

            model = attach_adapter(model, self.adapter)
        self._model: Any = model.to(self.device).eval()
        self.name = name or f"hf:{source}" + (f"+lora:{self.adapter}" if self.adapter else "")
        self._stop_criteria: dict[tuple[str, ...], StopStringCriteria] = {}

    @property
    def model(self) -> Any:
        """The model generating (a ``PeftModel`` when an adapter is loaded)."""
        if self._model is None:
            raise RuntimeError(f"{self.name} is closed")
        return self._model

    def generate(self, requests: Sequence[PolicyRequest], params: SamplingParams) -> list[list[Completion]]:
        """``params.n`` completions per request, in request order."""
        model = self.model
        requests = list(requests)
        results: list[list[Completion]] = []
        for chunk_index, start in enumerate(range(0, len(requests), self.max_batch_size)):
            chunk = requests[start : start + self.max_batch_size]
            seed = None if params.seed is None else params.seed + chunk_index
            results.extend(self._generate_chunk(model, chunk, params, seed))
        return results

    def close(self) -> None:
        """Drop the model (and free its accelerator memory); later calls to :meth:`generate` raise."""
        model, self._model = self._model, None
        if model is None:
            return
        del model
        self._stop_criteria.clear()
        gc.collect()
        if self.device.type == "cuda" and torch.cuda.is_available():
            torch.cuda.empty_cache()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"HFPolicy({self.name!r}, device={str(self.device)!r})"

    def prompt_ids(self, request: PolicyRequest) -> list[int]:
        """The prompt of ``request``: its ``prompt_token_ids`` when set, else its messages rendered by the chat
        template with a new assistant header (or the open partial assistant turn)."""
        if request.prompt_token_ids is not None:
            return [int(token_id) for token_id in request.prompt_token_ids]
        messages = [dict(message) for message in request.messages]
        continues = request.continues_assistant
        encoded = self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=not continues, continue_final_message=continues, tokenize=True
        )
        ids = encoded["input_ids"] if not isinstance(encoded, list) else encoded
        return [int(token_id) for token_id in ids]

    def _generate_chunk(
        self, model: Any, requests: list[PolicyRequest], params: SamplingParams, seed: int | None
    ) -> list[list[Completion]]:
        """Render, batch and decode one chunk; a failing batch is retried request by request."""
        results: list[list[Completion] | None] = [None] * len(requests)
        prompts: list[tuple[int, list[int]]] = []
        for index, request in enumerate(requests):
            try:
                prompts.append((index, self.prompt_ids(request)))
            except Exception as error:  # noqa: BLE001 - one bad conversation fails one episode
                results[index] = _failed(params, f"{self.name}: cannot render the prompt: {error}")
        if prompts:
            try:
                generated = self._generate_batch(model, [ids for _, ids in prompts], params, seed)
            except Exception as error:  # noqa: BLE001 - find which requests fail, keep the others
                if len(prompts) == 1:
                    generated = [_failed(params, f"{self.name}: {type(error).__name__}: {error}")]
                else:
                    logger.warning("HF batch of %d failed (%s); retrying one by one", len(prompts), error)
                    generated = [
                        self._generate_chunk(model, [requests[index]], params, seed)[0] for index, _ in prompts
                    ]
            for (index, _), completions in zip(prompts, generated):
                results[index] = completions
        return [completions if completions is not None else _failed(params, "not generated") for completions in results]

    def _generate_batch(
        self, model: Any, prompts: list[list[int]], params: SamplingParams, seed: int | None
    ) -> list[list[Completion]]:
        """One ``generate`` call; ``params.n`` completions per prompt. The rows' shared start (a system prompt)
        is computed once when it is long enough (:func:`shared_prefix_length`), else the prompts are left-padded."""
        samples = 1 if params.greedy else params.n
        prefix = shared_prefix_length(prompts) if self.reuse_prefix and len(prompts) * samples > 1 else 0
        if prefix >= MIN_SHARED_PREFIX:
            batch = self._prefixed_batch(model, prompts, prefix, samples)
            expand = 1
        else:
            batch = self.tokenizer.pad({"input_ids": prompts}, padding=True, return_tensors="pt").to(self.device)
            expand = samples
        prompt_width = batch["input_ids"].shape[1]
        recorder = _LogprobRecorder(prompt_width)
        config = GenerationConfig(
            max_new_tokens=params.max_new_tokens,
            do_sample=not params.greedy,
            num_return_sequences=expand,
            eos_token_id=self._stop_ids,
            pad_token_id=self.tokenizer.pad_token_id,
            use_cache=True,
            **({"temperature": params.temperature, "top_p": params.top_p, "top_k": 0} if not params.greedy else {}),
        )
        stopping = StoppingCriteriaList([self._stop_criterion(params.stop)]) if params.stop else None
        with torch.inference_mode(), torch.random.fork_rng(devices=self._rng_devices(), enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(seed)
            sequences = model.generate(
                **batch,
                generation_config=config,
                logits_processor=LogitsProcessorList([recorder]),
                stopping_criteria=stopping,
            )
        logprobs = recorder.finish(sequences)
        generated = sequences[:, prompt_width:].tolist()
        results: list[list[Completion]] = []
        for prompt_index, prompt in enumerate(prompts):
            completions = []
            for sample in range(samples):
                row = prompt_index * samples + sample
                completions.append(self._completion(prompt, generated[row], logprobs[row], params))
            results.append(completions * (params.n // samples))
        return results

    def _prefixed_batch(self, model: Any, prompts: list[list[int]], prefix: int, samples: int) -> dict[str, Any]:
        """Inputs for ``generate`` whose first ``prefix`` tokens, the same in every row, are already in a KV cache
        computed once: each row is the prefix, padding, then the rest of its prompt (masked out, so every real
        token keeps the position it has alone), repeated ``samples`` times. Without it a batch of B prompts pays
        B times for the prefix: on a CPU the prompt pass costs the same per token at any batch size."""
        head = torch.tensor([prompts[0][:prefix]], device=self.device)
        cache_name = _cache_argument(model)
        tails = [prompt[prefix:] for prompt in prompts for _ in range(samples)]
        width = max(len(tail) for tail in tails)
        pad = self.tokenizer.pad_token_id
        ids = [prompts[0][:prefix] + [pad] * (width - len(tail)) + tail for tail in tails]
        mask = [[1] * prefix + [0] * (width - len(tail)) + [1] * len(tail) for tail in tails]
        with torch.inference_mode():
            cache = model(input_ids=head, use_cache=True)[cache_name]
            cache.batch_repeat_interleave(len(tails))
        return {
            "input_ids": torch.tensor(ids, device=self.device),
            "attention_mask": torch.tensor(mask, device=self.device),
            cache_name: cache,
        }

    def _completion(
        self, prompt: list[int], generated: list[int], logprobs: list[float], params: SamplingParams
    ) -> Completion:
        """Map one generated row to a Completion: cut at the end token or first stop string (see module doc)."""
        end = next((position for position, token in enumerate(generated) if token in self._stop_ids), None)
        body = generated if end is None else generated[:end]
        decoded = self._decode(body)
        kept, stopped_on = first_stop(decoded, params.stop)
        if stopped_on is not None:
            token_ids = body[: self._tokens_through_stop(body, params.stop)]
            finish = "stop"
        elif end is not None:
            token_ids = generated[: end + 1]
            finish = "stop"
        else:
            token_ids = body
            # Ended early without an end token or a visible stop: a stop string that straddled the prompt.
            finish = "length" if len(generated) >= params.max_new_tokens else "stop"
        return Completion(
            text=restore_end_code(kept, stopped_on),
            prompt_tokens=len(prompt),
            completion_tokens=len(token_ids),
            finish_reason=finish,
            token_ids=tuple(token_ids),
            logprobs=tuple(logprobs[: len(token_ids)]),
            prompt_token_ids=tuple(prompt),
        )

    def _decode(self, token_ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(token_ids), skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def _tokens_through_stop(self, token_ids: list[int], stops: Sequence[str]) -> int:
        """The fewest leading tokens whose text contains a stop string (binary search: containment only grows)."""
        low, high = 1, len(token_ids)
        while low < high:
            middle = (low + high) // 2
            if first_stop(self._decode(token_ids[:middle]), stops)[1] is not None:
                high = middle
            else:
                low = middle + 1
        return high

    def _stop_criterion(self, stops: tuple[str, ...]) -> StopStringCriteria:
        """transformers' stop-string criterion, built once per stop tuple (it preprocesses the whole vocab)."""
        criterion = self._stop_criteria.get(stops)
        if criterion is None:
            criterion = StopStringCriteria(tokenizer=self.tokenizer, stop_strings=list(stops))
            self._stop_criteria[stops] = criterion
        return criterion

    def _rng_devices(self) -> list[int]:
        if self.device.type == "cuda":
            return [self.device.index if self.device.index is not None else torch.cuda.current_device()]
        return []


MIN_SHARED_PREFIX = 16
"""Fewest shared leading tokens worth a forward pass of their own: below this, left padding costs less."""


def shared_prefix_length(prompts: Sequence[Sequence[int]]) -> int:
    """How many leading tokens every prompt shares, leaving each at least one token of its own (``generate``
    needs one uncached input token per row)."""
    shortest = min(len(prompt) for prompt in prompts)
    first = prompts[0]
    length = 0
    while length < shortest - 1 and all(prompt[length] == first[length] for prompt in prompts):
        length += 1
    return length


def _cache_argument(model: Any) -> str:
    """The KV cache's name in ``forward`` and ``generate``: ``cache`` since transformers 5.2x, before that
    ``past_key_values``."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


class _LogprobRecorder(LogitsProcessor):
    """Records the raw log-probability of each generated token, without keeping every step's full distribution.

    ``generate`` calls logits processors with the raw float32 logits before it applies temperature and top-p
    (those warpers come after user processors in transformers 5), and with ``input_ids`` that end with the
    token sampled at the previous step. So each call looks up the previous step's token in the previous
    step's log-softmax, then keeps only the current one; :meth:`finish` looks up the last token. Positions
    are keyed by sequence length, so a step that ``generate`` undoes afterwards does no harm. The scores are
    returned unchanged.
    """

    def __init__(self, prompt_width: int) -> None:
        self.prompt_width = prompt_width
        self.gathered: dict[int, torch.Tensor] = {}
        self.pending: tuple[int, torch.Tensor] | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        length = input_ids.shape[1]
        self._gather(input_ids, length - 1)
        self.pending = (length, torch.log_softmax(scores.float(), dim=-1))
        return scores

    def finish(self, sequences: torch.Tensor) -> list[list[float]]:
        """Per row, the logprob of every generated position of ``sequences``."""
        self._gather(sequences, sequences.shape[1] - 1)
        self.pending = None
        positions = range(self.prompt_width, sequences.shape[1])
        if not positions:
            return [[] for _ in range(sequences.shape[0])]
        missing = [position for position in positions if position not in self.gathered]
        if missing:
            raise RuntimeError(f"no logits were recorded for generated positions {missing[:5]}")
        return torch.stack([self.gathered[position] for position in positions], dim=1).tolist()

    def _gather(self, input_ids: torch.Tensor, position: int) -> None:
        if self.pending is None or self.pending[0] != position or position >= input_ids.shape[1]:
            return
        tokens = input_ids[:, position].to(self.pending[1].device)
        self.gathered[position] = self.pending[1].gather(1, tokens[:, None]).squeeze(1).cpu()


def _left_padding_copy(tokenizer: PreTrainedTokenizerBase | str | os.PathLike[str]) -> PreTrainedTokenizerBase:
    """A private tokenizer that pads on the left (decoder-only batching) and has a pad token."""
    if isinstance(tokenizer, (str, os.PathLike)):
        with explaining_model_load(tokenizer, what="tokenizer"):
            tokenizer = AutoTokenizer.from_pretrained(os.fspath(tokenizer))
    else:
        tokenizer = copy.deepcopy(tokenizer)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _stop_token_ids(model: Any, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Token ids that end a completion: the model's generation eos ids, the tokenizer's eos, and pad.

    Pad is included because ``generate`` fills finished rows with it; a model sampling pad has ended too.
    """
    ids: list[int] = []
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    candidates = configured if isinstance(configured, (list, tuple)) else [configured]
    for token_id in (*candidates, tokenizer.eos_token_id, tokenizer.pad_token_id):
        if token_id is not None and int(token_id) not in ids:
            ids.append(int(token_id))
    if not ids:
        raise ValueError("the tokenizer has no eos token and the model's generation config names none")
    return ids


def _failed(params: SamplingParams, error: str) -> list[Completion]:
    return [Completion.failed(error) for _ in range(params.n)]
