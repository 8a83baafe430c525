"""A :class:`~agentdistill.envs.tools.retrieval.base.Retriever` that asks a retrieval server over HTTP.

The paper's dense retriever (e5 + FAISS over 21M Wikipedia passages) lives in its own process, as in
Search-R1; envs reach it with this client. Each ``search`` call is one ``POST /retrieve`` with all its
queries, so batching done by the caller survives the network hop.

Failures are for the agent to read: ``web_search`` turns a tool exception into an exception inside
model code, so :class:`RetrievalUnavailableError` says which server, what went wrong and how often it
was tried, in one sentence. Transient failures (connection errors, timeouts, HTTP 5xx) are retried
with capped exponential backoff; a 4xx or a malformed answer is not, since repeating the same request
would only get the same answer.
"""

from __future__ import annotations

import errno
import logging
import random
import threading
import time
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit, urlunsplit

import httpx

from agentdistill.envs.tools.retrieval.base import SearchHit, checked_search_args
from agentdistill.envs.tools.retrieval.protocol import (
    HEALTH_PATH,
    RETRIEVE_PATH,
    RetrievalProtocolError,
    decode_response,
    encode_request,
)
from agentdistill.retrying import check_retry_settings

logger = logging.getLogger(__name__)


class RetrievalUnavailableError(RuntimeError):
    """The retrieval server could not answer: which server, why, and after how many attempts."""

    def __init__(self, url: str, reason: str, attempts: int) -> None:
        self.url = url
        self.reason = reason
        self.attempts = attempts
        tries = "attempt" if attempts == 1 else "attempts"
        super().__init__(f"retrieval server {url} is unavailable: {reason} (after {attempts} {tries})")

    def __reduce__(self) -> tuple[Any, ...]:
        # Keeps the error picklable (vector envs send exceptions between processes).
        return (type(self), (self.url, self.reason, self.attempts))


class _Retryable(Exception):
    """Internal: one attempt failed in a way another attempt might not."""


class _Fatal(Exception):
    """Internal: one attempt failed in a way every attempt would."""


class RemoteRetriever:
    """Top-``k`` search against a Search-R1-compatible ``/retrieve`` endpoint.

    One :class:`httpx.Client` is kept for the retriever's life so connections are reused; it is
    documented as safe to share between threads, so many envs may call :meth:`search` at once.

    Args:
        url: the server, as ``http://host:port`` or the full ``http://host:port/retrieve`` that
            Search-R1 configs use (``search_url``); a path prefix before ``/retrieve`` is kept.
        timeout_s: limit for one attempt, from connecting to the last byte of the answer (a server that
            dribbles its answer is cut off too, at most one read timeout late).
        retries: further attempts after the first when a failure may be transient.
        backoff_s: sleep before the first retry; doubled before each next one, up to
            ``max_backoff_s``, and scaled by a random factor in [0.5, 1] so many envs retrying
            together do not hit a recovering server in lockstep.

    The worst case of one call is about ``(retries + 1) * timeout_s`` plus the sleeps, which are at
    most ``retries * max_backoff_s``.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = 10.0,
        retries: int = 3,
        backoff_s: float = 0.5,
        max_backoff_s: float = 8.0,
    ) -> None:
        self.retrieve_url, self.health_url = _endpoints(url)
        self.url = self.retrieve_url
        check_retry_settings(timeout_s=timeout_s, retries=retries, backoff_s=backoff_s, max_backoff_s=max_backoff_s)
        self.timeout_s = float(timeout_s)
        self.retries = retries
        self.backoff_s = float(backoff_s)
        self.max_backoff_s = float(max_backoff_s)
        self._client = httpx.Client(timeout=self.timeout_s)
        self._random = random.Random()
        self._random_lock = threading.Lock()

    def search(self, queries: Sequence[str], k: int) -> list[list[SearchHit]]:
        """Best-first hits per query from one ``POST /retrieve``; raises :class:`RetrievalUnavailableError`."""
        queries = checked_search_args(queries, k)
        if not queries:
            return []
        if self._client.is_closed:
            raise RuntimeError(f"RemoteRetriever for {self.url} is closed")
        payload = encode_request(queries, k, return_scores=True)
        attempts = self.retries + 1
        for attempt in range(1, attempts + 1):
            try:
                return self._attempt(payload, len(queries), k)
            except _Fatal as failure:
                raise RetrievalUnavailableError(self.url, str(failure), attempt) from failure.__cause__
            except _Retryable as failure:
                if attempt == attempts:
                    raise RetrievalUnavailableError(self.url, str(failure), attempt) from failure.__cause__
                delay = self._delay(attempt)
                logger.warning(
                    "retrieval server %s: %s (attempt %d of %d); retrying in %.2f s",
                    self.url,
                    failure,
                    attempt,
                    attempts,
                    delay,
                )
                time.sleep(delay)
        raise AssertionError("unreachable: the loop returns or raises")

    def health(self, timeout_s: float | None = None) -> bool:
        """Whether the server answers, in one try and without raising.

        ``GET /health`` must answer 2xx; a server without it (stock Search-R1 answers 404) counts as
        healthy if an empty ``/retrieve`` request gets a well-formed answer.
        """
        timeout = self.timeout_s if timeout_s is None else timeout_s
        try:
            response = self._client.get(self.health_url, timeout=timeout)
            if response.status_code in (404, 405):
                response = self._client.post(self.retrieve_url, json=encode_request([], 1), timeout=timeout)
                if not response.is_success:
                    return False
                decode_response(response.json(), 0)
                return True
            return response.is_success
        except (httpx.HTTPError, ValueError, RuntimeError):
            return False

    def close(self) -> None:
        """Close the pooled connections; later searches raise."""
        self._client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        # Envs may be pickled into vector-env worker processes; each process opens its own connections.
        state = self.__dict__.copy()
        state["_closed"] = self._client.is_closed
        del state["_client"], state["_random_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        closed = state.pop("_closed")
        self.__dict__.update(state)
        self._client = httpx.Client(timeout=self.timeout_s)
        self._random_lock = threading.Lock()
        if closed:
            self._client.close()

    def __repr__(self) -> str:
        return f"RemoteRetriever({self.url!r}, timeout_s={self.timeout_s:g}, retries={self.retries})"

    def _attempt(self, payload: dict[str, Any], n_queries: int, k: int) -> list[list[SearchHit]]:
        try:
            response = self._post(payload)
        except httpx.TimeoutException as error:
            raise _Retryable(f"timed out after {self.timeout_s:g} s") from error
        except httpx.ConnectError as error:
            raise _Retryable(_connect_failure(error)) from error
        except httpx.TransportError as error:
            raise _Retryable(f"network error ({type(error).__name__}: {error})") from error
        if response.status_code >= 500:
            raise _Retryable(f"HTTP {response.status_code}{_detail(response)}")
        if not response.is_success:
            raise _Fatal(f"HTTP {response.status_code}{_detail(response)}")
        try:
            body = response.json()
        except ValueError as error:
            raise _Fatal(f"malformed response: body is not JSON ({_snippet(response.text) or 'empty'})") from error
        try:
            return decode_response(body, n_queries, k)
        except RetrievalProtocolError as error:
            raise _Fatal(f"malformed response: {error}") from error

    def _post(self, payload: dict[str, Any]) -> httpx.Response:
        """``POST /retrieve``, read to the end within about ``timeout_s`` in all.

        httpx's timeouts bound each network phase only, so a server (or proxy) that dribbles its answer
        a few bytes at a time would never trip them and the env would wait without end; the answer is
        therefore read chunk by chunk against one deadline (overshot by at most one read timeout).
        """
        deadline = time.monotonic() + self.timeout_s
        with self._client.stream("POST", self.retrieve_url, json=payload) as streamed:
            raw = bytearray()
            for chunk in streamed.iter_raw():
                raw += chunk
                if time.monotonic() > deadline:
                    raise httpx.ReadTimeout("the answer arrived too slowly", request=streamed.request)
            # raw bytes and the original headers: the new response decodes any content encoding itself
            return httpx.Response(
                streamed.status_code, headers=streamed.headers, content=bytes(raw), request=streamed.request
            )

    def _delay(self, attempt: int) -> float:
        base = min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1))
        with self._random_lock:
            return base * self._random.uniform(0.5, 1.0)


def _endpoints(url: str) -> tuple[str, str]:
    """``(retrieve_url, health_url)`` for a server URL, which is checked here."""
    if not isinstance(url, str):
        raise TypeError(f"the retrieval server URL must be a string like 'http://127.0.0.1:8000', got {url!r}")
    try:
        parts = urlsplit(url.strip())
        parts.port  # noqa: B018 - raises ValueError on a non-numeric or out-of-range port
    except ValueError as error:
        raise ValueError(f"invalid retrieval server URL {url!r}: {error}") from error
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(
            f"invalid retrieval server URL {url!r}: expected http:// or https:// and a host, "
            "e.g. 'http://127.0.0.1:8000' or 'http://127.0.0.1:8000/retrieve'"
        )
    base = parts.path.rstrip("/")
    base = base.removesuffix(RETRIEVE_PATH)

    def at(path: str) -> str:
        return urlunsplit((parts.scheme, parts.netloc, base + path, parts.query, ""))

    return at(RETRIEVE_PATH), at(HEALTH_PATH)


def _connect_failure(error: httpx.ConnectError) -> str:
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, ConnectionRefusedError) or getattr(cause, "errno", None) == errno.ECONNREFUSED:
            return "connection refused"
        cause = cause.__cause__ or cause.__context__
    if "refused" in str(error).lower():
        return "connection refused"
    return f"could not connect ({error})"


def _detail(response: httpx.Response) -> str:
    """``": <server's explanation>"`` from a FastAPI ``{"detail": ...}`` body or the raw text."""
    try:
        body = response.json()
    except ValueError:
        text = response.text.strip()
        return f": {_snippet(text)}" if text else ""
    if isinstance(body, dict) and "detail" in body:
        return f": {_snippet(str(body['detail']))}"
    return f": {_snippet(response.text)}"


def _snippet(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
