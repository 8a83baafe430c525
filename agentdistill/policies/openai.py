"""A :class:`~agentdistill.policies.base.Policy` backed by any OpenAI-compatible chat completions server.

The paper's teachers (Qwen2.5-32B-Instruct and the like) are served by vLLM behind its OpenAI-compatible
API; SGLang and hosted providers speak the same protocol. The rollout loop hands :meth:`OpenAIPolicy.generate`
every conversation that waits for an action at once, so the requests are sent concurrently (bounded by
``max_concurrency``) and the server's continuous batching sees them together.

What is sent, per conversation, is one ``POST <base_url>/chat/completions`` with the standard fields
``model, messages, n, temperature, top_p, max_tokens, stop`` (and ``seed`` when set), plus:

* ``continue_final_message: true, add_generation_prompt: false`` when the conversation ends with a partial
  assistant message (the first-thought prefix, FTP). These are vLLM extensions (SGLang accepts them too):
  the chat template then leaves the last message open and the model writes on from where it stops.
  Plain OpenAI does not know them and answers HTTP 400 ("Unrecognized request argument"); the failed
  completion then says so and names the option. Without them a server would treat the partial message
  as a finished turn and start a new one, which silently breaks FTP, so they are never dropped.
* ``logprobs: true, return_tokens_as_token_ids: true, return_token_ids: true`` when the policy is made with
  ``logprobs=True``. The first is standard; the others are vLLM's, so that per-token ids come back (as
  ``token_ids`` per choice and ``prompt_token_ids`` per response from vLLM >= 0.10.2, or parsed from the
  ``"token_id:<id>"`` tokens of the logprobs on older versions).

Which stop string ended a turn matters: the server cuts the stop string off, and a turn cut at
``<end_code>`` gets the marker back (:func:`~agentdistill.policies.base.restore_end_code`). vLLM reports
the matched string as ``stop_reason`` in each choice and SGLang as ``matched_stop``; for a server that
reports neither, a turn that finished with ``"stop"`` and whose text ends with a closed code fence is
taken to have stopped on ``<end_code>`` (the only place that marker can occur in a CodeAct action).
Some servers (``transformers serve``) keep the stop string in the text, with the rest of the token that
completed it: every reply is cut here at its first stop string too, as the ``hf:`` policy cuts, so that
every backend returns the same text. (Token ids, where a server returns them, are left as sent.)

``n`` candidates (SAG) are asked for in one request. A server that ignores ``n`` and answers one choice
(``transformers serve`` does) is detected on its first such answer: a warning says so once, the missing
candidates are asked for one by one, and so are all later ones. Seeds are per request: with
``SamplingParams.seed`` set, the ``i``-th request of a :meth:`OpenAIPolicy.generate` call carries
``seed + i * n``, and its ``j``-th candidate, when asked for alone, ``seed + i * n + j``; so identical
conversations in one call get different samples, and the same call gets the same ones again.

Failures stay per conversation: connection errors, timeouts, HTTP 429 and 5xx are retried with capped,
jittered exponential backoff; any other 4xx, or an answer that cannot be read, is not (the same request
would get the same answer). A conversation that still fails gets ``n`` failed completions carrying the
reason, and the rest of the batch is unaffected.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import random
import threading
import time
import warnings
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import replace
from types import TracebackType
from typing import Any, Self, TypeVar
from urllib.parse import urlsplit, urlunsplit

import httpx

from agentdistill.envs.codeact import END_CODE
from agentdistill.errors import UserError
from agentdistill.policies.base import (
    Completion,
    FinishReason,
    PolicyRequest,
    SamplingParams,
    first_stop,
    restore_end_code,
)
from agentdistill.retrying import check_retry_settings

logger = logging.getLogger(__name__)

SPEC_PREFIX = "openai:"
"""How a policy spec names this backend: ``openai:<base_url>#<model>``."""

FTP_FIELDS = ("continue_final_message", "add_generation_prompt")
"""The vLLM request fields that make the server continue a partial assistant message."""

TOKEN_FIELDS = ("return_tokens_as_token_ids", "return_token_ids")
"""The vLLM request fields that bring back token ids with the logprobs."""

_TOKEN_ID_PREFIX = "token_id:"
_OTHER_ENDPOINTS = frozenset({"completions", "models", "embeddings", "responses", "chat"})
"""Last path segments of OpenAI endpoints that a base URL must not end in."""
_T = TypeVar("_T")


def parse_openai_spec(spec: str) -> tuple[str, str]:
    """``(base_url, model)`` from ``"openai:http://host:8000/v1#Qwen/Qwen2.5-32B-Instruct"``; ``base_url`` may
    list several replicas of one model, comma-separated (``openai:http://a:8000/v1,http://b:8000/v1#MODEL``).

    The model follows the first ``#``: model names contain ``/`` but never ``#``, and a URL fragment
    means nothing to an API server.
    """
    if not isinstance(spec, str) or not spec.startswith(SPEC_PREFIX):
        raise ValueError(f"expected a policy spec like 'openai:http://host:8000/v1#<model>', got {spec!r}")
    base_url, separator, model = spec[len(SPEC_PREFIX) :].partition("#")
    base_url, model = base_url.strip(), model.strip()
    if not separator or not model:
        raise ValueError(f"policy spec {spec!r} names no model: expected 'openai:<base_url>#<model>'")
    _replica_urls(base_url)  # validates every URL
    return base_url, model


class OpenAIPolicy:
    """Continues conversations through ``/chat/completions`` of an OpenAI-compatible server.

    Args:
        base_url: the API root as OpenAI clients take it, e.g. ``http://127.0.0.1:8000/v1``; a bare
            ``http://host:port`` gets ``/v1`` added, and a full ``.../chat/completions`` URL is used as is.
            Another endpoint (``.../completions``, ``.../models``) is refused: it is not a base to build on.
        model: the served model name (vLLM's ``--served-model-name``, by default the HF repo id).
        api_key: sent as a bearer token; defaults to ``$OPENAI_API_KEY``, else ``"EMPTY"`` (what a local
            vLLM started without ``--api-key`` accepts).
        max_concurrency: requests in flight at once, across all :meth:`generate` calls; also the size of
            the connection pool. vLLM schedules them itself, so this only needs to cover its batch size.
        timeout_s: limit for one attempt, from connecting to the last byte of the answer. Generation
            happens before the server answers, so this bounds the time to generate one turn.
        retries: further attempts after the first for a transient failure.
        backoff_s: sleep before the first retry, doubled before each next one up to ``max_backoff_s`` and
            scaled by a random factor in [0.5, 1] so a batch of failed requests does not return in
            lockstep; a 429's ``Retry-After`` is honoured up to ``max_backoff_s``.
        extra_body: more request fields (e.g. ``{"top_k": 20}`` or ``{"chat_template_kwargs": ...}`` for
            vLLM), merged into every request last, so they override the fields set here.
        logprobs: ask for per-token logprobs and token ids (see the module docstring for the fields).
        name: the name recorded in trajectories; defaults to ``openai:<base_url>#<model>``.
        replica_cooldown_s: with several replicas in ``base_url`` (comma-separated), how long one that could not
            be reached is passed over before it is tried again.

    Several replicas of one model (``base_url`` lists them, comma-separated) share the load with sticky routing:
    every request of an episode (its task, from the env's ``reset`` info in the request's context; else its first
    user message) goes to the same replica, so the replica's prefix cache keeps the episode's growing prompt. A
    request that fails on its replica is retried on the next one (a replica that cannot be reached is passed over
    by every request for ``replica_cooldown_s``), so a replica that dies costs retries, not episodes.

    The worst case for one conversation is about ``(retries + 1) * timeout_s`` plus the backoff sleeps.
    Token counts come from the response's ``usage``: ``prompt_tokens`` is the conversation's prompt;
    ``completion_tokens`` is the choice's own count when the server returns its tokens, else the
    response's total split between the ``n`` choices in proportion to their text lengths (exact for
    ``n=1``; the split always sums to the server's total).
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        max_concurrency: int = 64,
        timeout_s: float = 600.0,
        retries: int = 4,
        backoff_s: float = 1.0,
        max_backoff_s: float = 30.0,
        extra_body: Mapping[str, Any] | None = None,
        logprobs: bool = False,
        name: str | None = None,
        replica_cooldown_s: float = 30.0,
    ) -> None:
        self.urls = _replica_urls(base_url)
        self.url = self.urls[0]
        if not isinstance(model, str) or not model.strip():
            raise ValueError(f"model must be a non-empty model name, got {model!r}")
        if isinstance(max_concurrency, bool) or not isinstance(max_concurrency, int) or max_concurrency < 1:
            raise ValueError(f"max_concurrency must be a positive int, got {max_concurrency!r}")
        check_retry_settings(timeout_s=timeout_s, retries=retries, backoff_s=backoff_s, max_backoff_s=max_backoff_s)
        self.base_url = base_url.strip().rstrip("/")
        self.model = model.strip()
        self.max_concurrency = max_concurrency
        self.timeout_s = float(timeout_s)
        self.retries = retries
        self.backoff_s = float(backoff_s)
        self.max_backoff_s = float(max_backoff_s)
        self.extra_body: dict[str, Any] = dict(extra_body or {})
        self.logprobs = bool(logprobs)
        self.name = name or f"{SPEC_PREFIX}{self.base_url}#{self.model}"
        key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY") or "EMPTY"
        self._headers = {"Authorization": f"Bearer {key}"}
        self._random = random.Random()
        self._lock = threading.Lock()
        self._loop: _LoopThread | None = None
        self._client: httpx.AsyncClient | None = None
        self._semaphore: asyncio.Semaphore | None = None
        self._closed = False
        self._single_choice = False  # set once the server is seen to ignore n
        self.replica_cooldown_s = float(replica_cooldown_s)
        self._down_until = [0.0] * len(self.urls)  # per replica: unreachable until then (monotonic seconds)

    @classmethod
    def from_spec(cls, spec: str, **options: Any) -> OpenAIPolicy:
        """A policy for ``"openai:<base_url>#<model>"`` (see :func:`parse_openai_spec`)."""
        base_url, model = parse_openai_spec(spec)
        return cls(base_url, model, **options)

    def generate(self, requests: Sequence[PolicyRequest], params: SamplingParams) -> list[list[Completion]]:
        """``params.n`` completions per request, in request order; all requests are sent concurrently.

        Never raises for a request the server fails: that request gets failed completions instead.
        """
        requests = list(requests)
        if not requests:
            return []
        loop = self._loop_thread()
        return loop.run(self._generate_all(requests, params))

    def close(self) -> None:
        """Close the connections and stop the event loop thread; later calls to :meth:`generate` raise."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            loop, self._loop = self._loop, None
        if loop is not None:
            try:
                loop.run(self._close_client())
            finally:
                loop.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"OpenAIPolicy({self.base_url!r}, {self.model!r}, max_concurrency={self.max_concurrency})"

    # -- the request body ---------------------------------------------------------------------------

    def request_body(self, request: PolicyRequest, params: SamplingParams) -> dict[str, Any]:
        """The JSON body sent for ``request`` (public so that callers and tests can see it); the seed is
        ``params.seed`` as given (:meth:`generate` makes it distinct per request)."""
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [dict(message) for message in request.messages],
            "n": params.n,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "max_tokens": params.max_new_tokens,
        }
        if params.stop:
            body["stop"] = list(params.stop)
        if params.seed is not None:
            body["seed"] = params.seed
        if request.continues_assistant:
            body["continue_final_message"] = True
            body["add_generation_prompt"] = False
        if self.logprobs:
            body["logprobs"] = True
            for field_name in TOKEN_FIELDS:
                body[field_name] = True
        body.update(self.extra_body)
        return body

    # -- async machinery ----------------------------------------------------------------------------

    def _loop_thread(self) -> _LoopThread:
        with self._lock:
            if self._closed:
                raise RuntimeError(f"{self!r} is closed")
            if self._loop is None:
                self._loop = _LoopThread(name=f"openai-policy-{self.model}")
            return self._loop

    async def _generate_all(self, requests: list[PolicyRequest], params: SamplingParams) -> list[list[Completion]]:
        client, semaphore = self._connections()
        tasks = [
            self._candidates(client, semaphore, request, _reseeded(params, index * params.n))
            for index, request in enumerate(requests)
        ]
        return list(await asyncio.gather(*tasks))

    async def _candidates(
        self, client: httpx.AsyncClient, semaphore: asyncio.Semaphore, request: PolicyRequest, params: SamplingParams
    ) -> list[Completion]:
        """``params.n`` completions of one conversation: one request, or one per candidate from a server that
        ignores ``n`` (each with its own seed)."""
        if params.n > 1 and not self._single_choice:
            completions, returned = await self._serve(client, semaphore, request, params)
            if returned == 0 or returned >= params.n:
                return completions
            self._notice_single_choice(returned, params.n)
            kept = completions[:returned]
            first_missing = returned
        else:
            kept, first_missing = [], 0
        singles = [
            self._serve(client, semaphore, request, _reseeded(replace(params, n=1), candidate))
            for candidate in range(first_missing, params.n)
        ]
        for completions, _ in await asyncio.gather(*singles):
            kept.extend(completions)
        return kept

    def _notice_single_choice(self, returned: int, asked: int) -> None:
        with self._lock:
            if self._single_choice:
                return
            self._single_choice = True
        warnings.warn(
            f"{self.url} answered {returned} choice(s) when asked for n={asked}: it ignores n, so candidates "
            f"(SAG) are now asked for one request each, with distinct seeds",
            stacklevel=2,
        )

    def _connections(self) -> tuple[httpx.AsyncClient, asyncio.Semaphore]:
        # Runs on the loop thread only, so there is no race on the lazy creation.
        if self._client is None or self._semaphore is None:
            limits = httpx.Limits(max_connections=self.max_concurrency, max_keepalive_connections=self.max_concurrency)
            timeout = httpx.Timeout(self.timeout_s, connect=min(self.timeout_s, 30.0))
            self._client = httpx.AsyncClient(timeout=timeout, limits=limits, headers=self._headers)
            self._semaphore = asyncio.Semaphore(self.max_concurrency)
        return self._client, self._semaphore

    async def _close_client(self) -> None:
        if self._client is not None:
            await self._client.aclose()

    async def _serve(
        self, client: httpx.AsyncClient, semaphore: asyncio.Semaphore, request: PolicyRequest, params: SamplingParams
    ) -> tuple[list[Completion], int]:
        """The completions of one request and how many choices the server returned (0 when it failed);
        every failure becomes failed completions."""
        try:
            body = self.request_body(request, params)
            payload = await self._post(client, semaphore, body, routing_key(request))
            try:
                return completions_from_response(payload, params), len(payload["choices"])
            except (KeyError, TypeError, ValueError, AttributeError) as error:
                raise _RequestFailed(f"malformed response: {type(error).__name__}: {error}") from error
        except _RequestFailed as failure:
            reason = str(failure)
        except Exception as error:
            logger.exception("chat completion request to %s failed unexpectedly", self.url)
            reason = f"unexpected {type(error).__name__}: {error}"
        return [Completion.failed(f"{self.name}: {reason}") for _ in range(params.n)], 0

    async def _post(
        self, client: httpx.AsyncClient, semaphore: asyncio.Semaphore, body: dict[str, Any], key: str
    ) -> Mapping[str, Any]:
        attempts = self.retries + 1
        home = _stable_hash(key) % len(self.urls)
        for attempt in range(1, attempts + 1):
            replica = self._replica(home, attempt)
            url = self.urls[replica]
            try:
                # The slot is held for the attempt only: a request waiting to retry leaves it to others.
                async with semaphore:
                    return await self._attempt(client, url, body)
            except _Fatal as failure:
                raise _RequestFailed(_with_attempts(str(failure), attempt)) from failure
            except _Retryable as failure:
                if failure.unreachable and len(self.urls) > 1:
                    self._down_until[replica] = time.monotonic() + self.replica_cooldown_s
                if attempt == attempts:
                    raise _RequestFailed(_with_attempts(str(failure), attempt)) from failure
                delay = 0.0 if failure.unreachable and len(self.urls) > 1 else self._delay(attempt, failure.retry_after)
                logger.warning("%s: %s (attempt %d of %d); retrying in %.2f s", url, failure, attempt, attempts, delay)
                await asyncio.sleep(delay)
        raise AssertionError("unreachable: the loop returns or raises")

    def _replica(self, home: int, attempt: int) -> int:
        """The replica of an attempt: the request's own (``home``) first, the next ones on retries, passing over
        replicas that could not be reached lately (all of them, when none can)."""
        count = len(self.urls)
        order = [(home + attempt - 1 + offset) % count for offset in range(count)]
        now = time.monotonic()
        reachable = [replica for replica in order if self._down_until[replica] <= now]
        return (reachable or order)[0]

    async def _attempt(self, client: httpx.AsyncClient, url: str, body: dict[str, Any]) -> Mapping[str, Any]:
        try:
            # httpx's timeouts bound each network phase only: a server (or proxy) that dribbles its answer a
            # few bytes at a time would never trip them. The whole attempt gets ``timeout_s``.
            async with asyncio.timeout(self.timeout_s):
                response = await client.post(url, json=body)
        except (httpx.TimeoutException, TimeoutError) as error:
            raise _Retryable(f"timed out after {self.timeout_s:g} s ({type(error).__name__})") from error
        except httpx.TransportError as error:
            message = f"network error ({type(error).__name__}: {error or 'no detail'})"
            raise _Retryable(message, unreachable=isinstance(error, httpx.ConnectError)) from error
        status = response.status_code
        if status == 429 or status >= 500:
            raise _Retryable(f"HTTP {status}{_detail(response)}", retry_after=_retry_after(response))
        if not response.is_success:
            raise _Fatal(f"HTTP {status}{_detail(response)}{_unsupported_hint(body, status)}")
        try:
            payload = response.json()
        except ValueError as error:
            raise _Fatal(f"malformed response: body is not JSON ({_snippet(response.text) or 'empty'})") from error
        if not isinstance(payload, Mapping) or not isinstance(payload.get("choices"), list):
            raise _Fatal(f"malformed response: no 'choices' list ({_snippet(response.text)})")
        return payload

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        delay = min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1)) * self._random.uniform(0.5, 1.0)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.max_backoff_s))
        return delay


def completions_from_response(payload: Mapping[str, Any], params: SamplingParams) -> list[Completion]:
    """``params.n`` completions from one chat completion response body.

    Missing choices (a server that ignores ``n``) become failed completions, so the caller always gets
    ``n``; a choice whose content cannot be read raises ``ValueError``/``KeyError``/``TypeError``.
    """
    choices = sorted(payload["choices"], key=lambda choice: choice.get("index", 0))
    usage = payload.get("usage") or {}
    prompt_tokens = _int(usage.get("prompt_tokens"))
    total_completion_tokens = _int(usage.get("completion_tokens"))
    prompt_ids = _int_tuple(payload.get("prompt_token_ids"))
    texts = [_message_text(choice) for choice in choices[: params.n]]
    estimated = _split_tokens(total_completion_tokens, texts)

    completions: list[Completion] = []
    for choice, text, estimate in zip(choices, texts, estimated):
        token_ids, logprobs = _choice_tokens(choice)
        finish, error = _finish(choice.get("finish_reason"))
        text, kept_stop = first_stop(text, params.stop)  # a server that returned its stop string, and beyond
        if kept_stop is not None and finish != "error":
            finish, error = "stop", None
            text = restore_end_code(text, kept_stop)
        elif finish == "stop":
            text = restore_end_code(text, _stopped_on(choice, text, params.stop))
        completions.append(
            Completion(
                text=text,
                prompt_tokens=prompt_tokens,
                completion_tokens=len(token_ids) if token_ids is not None else estimate,
                finish_reason=finish,
                token_ids=token_ids,
                logprobs=logprobs,
                prompt_token_ids=prompt_ids,
                error=error,
            )
        )
    for _ in range(params.n - len(completions)):
        completions.append(
            Completion.failed(f"the server returned {len(choices)} of {params.n} choices (does it support n > 1?)")
        )
    return completions


# -- reading one choice -------------------------------------------------------------------------------


def _reseeded(params: SamplingParams, offset: int) -> SamplingParams:
    """``params`` with its seed moved by ``offset`` (nothing to move when unseeded)."""
    return params if params.seed is None or offset == 0 else replace(params, seed=params.seed + offset)


def _message_text(choice: Mapping[str, Any]) -> str:
    message = choice["message"]
    content = message.get("content")
    if content is None:
        return ""
    if not isinstance(content, str):
        raise TypeError(f"message content is {type(content).__name__}, not a string")
    return content


def _finish(reason: Any) -> tuple[FinishReason, str | None]:
    """Our finish reason (and error) for the server's ``finish_reason``."""
    if reason == "length":
        return "length", None
    if reason in ("abort", "error"):
        return "error", f"the server ended the completion with finish_reason={reason!r}"
    # "stop", an end-of-sequence token, and the rest ("tool_calls", "content_filter", none given) all mean
    # the model's turn is over.
    return "stop", None


def _stopped_on(choice: Mapping[str, Any], text: str, stops: Sequence[str]) -> str | None:
    """Which stop string ended a finished turn, if any: from vLLM's ``stop_reason`` or SGLang's
    ``matched_stop``; else, for a server that reports neither, inferred from a closing code fence."""
    for key in ("stop_reason", "matched_stop"):
        if key in choice:
            matched = choice[key]
            return matched if isinstance(matched, str) else None  # an int is a stop token id
    if END_CODE in stops and text.rstrip().endswith("```"):
        return END_CODE
    return None


def _choice_tokens(choice: Mapping[str, Any]) -> tuple[tuple[int, ...] | None, tuple[float, ...] | None]:
    """``(token_ids, logprobs)`` of a choice where the server returned them."""
    entries = (choice.get("logprobs") or {}).get("content")
    logprobs: tuple[float, ...] | None = None
    parsed_ids: tuple[int, ...] | None = None
    if isinstance(entries, list):
        logprobs = tuple(float(entry["logprob"]) for entry in entries)
        tokens = [entry.get("token") for entry in entries]
        if all(isinstance(token, str) and token.startswith(_TOKEN_ID_PREFIX) for token in tokens):
            parsed_ids = tuple(int(token[len(_TOKEN_ID_PREFIX) :]) for token in tokens)  # type: ignore[index]
    token_ids = _int_tuple(choice.get("token_ids"))
    return (token_ids if token_ids is not None else parsed_ids), logprobs


def _split_tokens(total: int, texts: Sequence[str]) -> list[int]:
    """``total`` split between the texts in proportion to their lengths (largest remainders first), so
    that the parts add up to ``total``; an even split when every text is empty."""
    if not texts:
        return []
    weights = [len(text) for text in texts]
    if sum(weights) == 0:
        weights = [1] * len(texts)
    scale = sum(weights)
    shares = [total * weight / scale for weight in weights]
    parts = [int(share) for share in shares]
    by_remainder = sorted(range(len(texts)), key=lambda index: shares[index] - parts[index], reverse=True)
    for index in by_remainder[: total - sum(parts)]:
        parts[index] += 1
    return parts


def _int(value: Any) -> int:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0


def _int_tuple(value: Any) -> tuple[int, ...] | None:
    if not isinstance(value, list):
        return None
    return tuple(int(item) for item in value)


# -- errors -------------------------------------------------------------------------------------------


class _RequestFailed(Exception):
    """Internal: a conversation's request failed for good; the message is the reason to record."""


class _Retryable(Exception):
    """Internal: one attempt failed in a way another attempt might not."""

    def __init__(self, message: str, retry_after: float | None = None, *, unreachable: bool = False) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.unreachable = unreachable
        """The server could not be reached at all (not a slow or failing answer)."""


class _Fatal(Exception):
    """Internal: one attempt failed in a way every attempt would."""


def _with_attempts(reason: str, attempts: int) -> str:
    return f"{reason} (after {attempts} attempt{'s' if attempts != 1 else ''})"


def _unsupported_hint(body: Mapping[str, Any], status: int) -> str:
    """For a rejected request that used vLLM-only fields, which ones and what they were for."""
    if status not in (400, 422):
        return ""
    if body.get("continue_final_message"):
        return (
            "; the request continues a partial assistant message (the first-thought prefix) with vLLM's "
            "`continue_final_message: true` and `add_generation_prompt: false`, which this server may not "
            "support (plain OpenAI does not): serve the model with vLLM or SGLang, or run without the prefix"
        )
    used = [name for name in TOKEN_FIELDS if name in body]
    if used:
        return (
            f"; the request asks for token ids with vLLM's {', '.join(f'`{name}`' for name in used)}, which this "
            "server may not support: make the policy with logprobs=False"
        )
    return ""


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None  # an HTTP date; the computed backoff serves as well


def _detail(response: httpx.Response) -> str:
    """``": <server's explanation>"`` from an OpenAI ``{"error": {"message"}}``, an older vLLM
    ``{"message"}``, a FastAPI ``{"detail"}`` body, or the raw text."""
    try:
        body = response.json()
    except ValueError:
        text = response.text.strip()
        return f": {_snippet(text)}" if text else ""
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and "message" in error:
            return f": {_snippet(str(error['message']))}"
        for key in ("message", "detail", "error"):
            if key in body:
                return f": {_snippet(str(body[key]))}"
    return f": {_snippet(response.text)}"


def _snippet(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _replica_urls(base_url: str) -> tuple[str, ...]:
    """The chat completions endpoint of every replica ``base_url`` lists (comma-separated; checked here)."""
    if not isinstance(base_url, str):
        raise TypeError(f"base_url must be a string like 'http://127.0.0.1:8000/v1', got {base_url!r}")
    urls = tuple(_chat_url(part) for part in base_url.split(","))
    if len(set(urls)) != len(urls):
        raise ValueError(f"base_url {base_url!r} lists a replica twice")
    return urls


def routing_key(request: PolicyRequest) -> str:
    """What keeps an episode on one replica: its env and task (from the env's ``reset`` info), else the first
    user message (an episode's task turn)."""
    context = request.context
    if context.get("task_id") is not None or context.get("task_index") is not None:
        return f"{context.get('env_id')}|{context.get('task_id')}|{context.get('task_index')}"
    return next((str(message.get("content")) for message in request.messages if message.get("role") == "user"), "")


def _stable_hash(key: str) -> int:
    """The same number for the same key in every process (Python's ``hash`` of a string is salted per process)."""
    return int.from_bytes(hashlib.sha256(key.encode("utf-8", errors="replace")).digest()[:8], "big")


def _chat_url(base_url: str) -> str:
    """The chat completions endpoint under ``base_url`` (checked here)."""
    if not isinstance(base_url, str):
        raise TypeError(f"base_url must be a string like 'http://127.0.0.1:8000/v1', got {base_url!r}")
    try:
        parts = urlsplit(base_url.strip())
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as error:
        raise ValueError(f"invalid base_url {base_url!r}: {error}") from error
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"invalid base_url {base_url!r}: expected http:// or https:// and a host")
    path = parts.path.rstrip("/")
    endpoint = path.rsplit("/", 1)[-1]
    if not path.endswith("/chat/completions") and endpoint in _OTHER_ENDPOINTS:
        base = urlunsplit((parts.scheme, parts.netloc, path.rsplit("/", 1)[0], "", ""))
        raise UserError(
            f"invalid base_url {base_url!r}: it ends in the /{endpoint} endpoint; give the API base instead, "
            f"e.g. {base!r} (chat completions are sent to <base>/chat/completions)"
        )
    if not path.endswith("/chat/completions"):
        last = path.rsplit("/", 1)[-1]
        is_versioned = len(last) > 1 and last[0] == "v" and last[1:].isdigit()
        path += "/chat/completions" if is_versioned else "/v1/chat/completions"
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


# -- the event loop -----------------------------------------------------------------------------------


class _LoopThread:
    """An asyncio event loop running in a daemon thread, for sync callers.

    ``generate`` is synchronous for the rollout loop, but its requests must run concurrently; a loop of
    our own (rather than ``asyncio.run`` per call) keeps the connection pool alive between calls and
    works even when the caller's thread already runs an event loop (notebooks, async frameworks).
    """

    def __init__(self, name: str) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, _T]) -> _T:
        """Run ``coroutine`` on the loop and wait for it; an interrupt of the waiter cancels it."""
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()
            raise

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10.0)
        if not self._thread.is_alive():
            self._loop.close()
