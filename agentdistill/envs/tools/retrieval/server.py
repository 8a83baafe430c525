"""An HTTP retrieval server speaking Search-R1's ``/retrieve`` protocol, with cross-request batching.

Any :class:`~agentdistill.envs.tools.retrieval.base.Retriever` can be served; the point is the dense
e5 + FAISS one, which needs a GPU and a large index and so is loaded once, in one process, for all
env workers (as Search-R1 runs it). Requests are answered through a
:class:`~agentdistill.envs.tools.retrieval.service.BatchingRetriever`, so queries from concurrent
requests are encoded together rather than one request at a time.

The handlers are async; the blocking ``search`` runs on a dedicated thread pool so the event loop
keeps accepting the requests that a batch is waiting for.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import socket
import threading
import time
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from types import TracebackType
from typing import Any, Self

import httpx
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from agentdistill.envs.tools.retrieval.base import Retriever, SearchHit
from agentdistill.envs.tools.retrieval.protocol import (
    DEFAULT_MAX_QUERIES,
    DEFAULT_MAX_QUERY_CHARS,
    DEFAULT_MAX_TOPK,
    HEALTH_PATH,
    RETRIEVE_PATH,
    RetrievalProtocolError,
    decode_request,
    encode_response,
)
from agentdistill.envs.tools.retrieval.service import BatchingRetriever

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Limits:
    default_topk: int
    max_queries: int
    max_topk: int
    max_query_chars: int
    max_body_bytes: int


@dataclass
class _Running:
    """What exists while the app is started: the batching service and the threads that wait on it."""

    service: BatchingRetriever
    executor: ThreadPoolExecutor


def create_app(
    retriever: Retriever,
    *,
    max_batch: int = 32,
    max_wait_s: float = 0.005,
    max_delay_s: float = 0.05,
    cache_size: int = 10_000,
    default_topk: int = 3,
    max_queries: int = DEFAULT_MAX_QUERIES,
    max_topk: int = DEFAULT_MAX_TOPK,
    max_query_chars: int = DEFAULT_MAX_QUERY_CHARS,
    max_body_bytes: int = 8 * 1024 * 1024,
    max_concurrency: int = 256,
) -> FastAPI:
    """A FastAPI app serving ``POST /retrieve`` and ``GET /health`` over ``retriever``.

    ``default_topk`` answers requests that leave ``topk`` out (Search-R1's ``--topk``, 3).
    ``max_concurrency`` bounds the requests waiting on the batching service at once; more queue in
    the event loop. The service starts and stops with the app's lifespan.
    """
    limits = _Limits(default_topk, max_queries, max_topk, max_query_chars, max_body_bytes)
    if not 1 <= default_topk <= max_topk:
        raise ValueError(f"default_topk must be between 1 and max_topk ({max_topk}), got {default_topk!r}")
    if max_concurrency < 1:
        raise ValueError(f"max_concurrency must be a positive int, got {max_concurrency!r}")

    request_schema = {
        "type": "object",
        "required": ["queries"],
        "properties": {
            "queries": {"type": "array", "items": {"type": "string"}, "maxItems": max_queries},
            "topk": {"type": "integer", "minimum": 1, "maximum": max_topk, "default": default_topk},
            "return_scores": {"type": "boolean", "default": False},
        },
    }

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service = BatchingRetriever(
            retriever, max_batch=max_batch, max_wait_s=max_wait_s, max_delay_s=max_delay_s, cache_size=cache_size
        )
        executor = ThreadPoolExecutor(max_workers=max_concurrency, thread_name_prefix="retrieval-request")
        app.state.retrieval = _Running(service, executor)
        try:
            yield
        finally:

            def stop() -> None:
                service.close()  # waiting requests fail at once, which frees the executor's threads
                executor.shutdown(wait=True, cancel_futures=True)

            # Closing waits for a batch in progress; off the event loop, so shutdown stays responsive.
            await asyncio.to_thread(stop)

    app = FastAPI(title="agentdistill retrieval server", lifespan=lifespan)

    @app.post(
        RETRIEVE_PATH,
        openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": request_schema}}}},
    )
    async def retrieve(request: Request) -> JSONResponse:
        """Search-R1's ``/retrieve``: ``{"queries", "topk", "return_scores"}`` → ``{"result": ...}``."""
        return await _retrieve(request, limits)

    @app.get(HEALTH_PATH)
    async def health(request: Request) -> JSONResponse:
        """``{"status": "ok", ...}`` once the service runs, with the corpus size when known."""
        running: _Running | None = getattr(request.app.state, "retrieval", None)
        if running is None:
            return JSONResponse({"status": "starting"}, status_code=503)
        stats = running.service.stats
        return JSONResponse(
            {
                "status": "ok",
                "retriever": type(retriever).__name__,
                "documents": _document_count(retriever),
                "default_topk": default_topk,
                "stats": {**asdict(stats), "mean_batch_size": stats.mean_batch_size},
            }
        )

    return app


async def _retrieve(request: Request, limits: _Limits) -> JSONResponse:
    body = await request.body()
    if len(body) > limits.max_body_bytes:
        return _error(413, f"request body is {len(body)} bytes; at most {limits.max_body_bytes}")
    try:
        payload = json.loads(body)
    except ValueError as error:
        return _error(400, f"request body is not valid JSON ({error})")
    try:
        parsed = decode_request(
            payload,
            default_topk=limits.default_topk,
            max_queries=limits.max_queries,
            max_topk=limits.max_topk,
            max_query_chars=limits.max_query_chars,
        )
    except RetrievalProtocolError as error:
        return _error(422, str(error))
    running: _Running | None = getattr(request.app.state, "retrieval", None)
    if running is None:
        return _error(503, "the retrieval service is not running (the app's lifespan has not started)")
    loop = asyncio.get_running_loop()
    try:
        hits: Sequence[Sequence[SearchHit]] = await loop.run_in_executor(
            running.executor, running.service.search, list(parsed.queries), parsed.topk
        )
    except Exception as error:  # any retriever failure becomes a 500 the client can read
        logger.exception("retrieval of %d queries failed", len(parsed.queries))
        return _error(500, f"retrieval failed: {type(error).__name__}: {error}")
    try:
        content = encode_response(hits, return_scores=parsed.return_scores)
    except RetrievalProtocolError as error:
        return _error(500, f"retrieval failed: {error}")
    return JSONResponse(content)


def _error(status: int, detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status)


def _document_count(retriever: Retriever) -> int | None:
    documents = getattr(retriever, "documents", None)
    try:
        return len(documents) if documents is not None else None  # type: ignore[arg-type]
    except TypeError:
        return None


def serve(
    retriever: Retriever,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    log_level: str = "info",
    max_batch: int = 32,
    max_wait_s: float = 0.005,
    max_delay_s: float = 0.05,
    cache_size: int = 10_000,
    default_topk: int = 3,
) -> None:
    """Serve ``retriever`` until interrupted. Binds loopback by default: pass ``host="0.0.0.0"``
    deliberately to accept other machines (the server has no authentication)."""
    app = create_app(
        retriever,
        max_batch=max_batch,
        max_wait_s=max_wait_s,
        max_delay_s=max_delay_s,
        cache_size=cache_size,
        default_topk=default_topk,
    )
    uvicorn.run(app, host=host, port=port, log_level=log_level)


class ServerThread:
    """Runs an ASGI app under uvicorn in a background thread, on a free port by default.

    For tests and for an in-process shared service. ``start`` returns once uvicorn listens and, when
    ``health_path`` is set, that path answers 2xx. Use as a context manager::

        with ServerThread.for_retriever(retriever) as server:
            RemoteRetriever(server.url).search(["query"], 3)
    """

    def __init__(
        self,
        app: Any,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        log_level: str = "warning",
        health_path: str | None = HEALTH_PATH,
        startup_timeout_s: float = 10.0,
        shutdown_timeout_s: float = 10.0,
    ) -> None:
        self.app = app
        self.host = host
        self.port = port
        self.log_level = log_level
        self.health_path = health_path
        self.startup_timeout_s = startup_timeout_s
        self.shutdown_timeout_s = shutdown_timeout_s
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None
        self._failure: BaseException | None = None

    @classmethod
    def for_retriever(
        cls,
        retriever: Retriever,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        log_level: str = "warning",
        **app_options: Any,
    ) -> ServerThread:
        """A server thread for ``create_app(retriever, **app_options)``."""
        return cls(create_app(retriever, **app_options), host=host, port=port, log_level=log_level)

    @property
    def url(self) -> str:
        """``http://host:port`` of the running server."""
        if self._socket is None:
            raise RuntimeError("the server is not started")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> Self:
        """Bind, start uvicorn and wait until it answers; raises RuntimeError if it cannot start."""
        if self._thread is not None:
            raise RuntimeError("the server was already started")
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.bind((self.host, self.port))
        except OSError:
            sock.close()
            raise
        self._socket = sock
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            log_level=self.log_level,
            log_config=None,  # leave the host process's logging setup alone
            access_log=False,
            timeout_graceful_shutdown=max(1, math.ceil(self.shutdown_timeout_s / 2)),
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, name=f"uvicorn-{self.port}", daemon=True)
        self._thread.start()
        try:
            self._wait_until_ready()
        except BaseException:
            self.stop()
            raise
        logger.info("retrieval server thread listening on %s", self.url)
        return self

    def stop(self) -> None:
        """Ask uvicorn to exit and wait for it (forcing exit after ``shutdown_timeout_s``)."""
        server, thread = self._server, self._thread
        if server is not None and thread is not None:
            server.should_exit = True
            thread.join(self.shutdown_timeout_s)
            if thread.is_alive():
                server.force_exit = True
                thread.join(self.shutdown_timeout_s)
                if thread.is_alive():
                    logger.warning("uvicorn thread on port %d did not stop", self.port)
        if self._socket is not None:
            self._socket.close()
        self._server = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _run(self) -> None:
        assert self._server is not None and self._socket is not None
        try:
            self._server.run(sockets=[self._socket])
        except BaseException as error:  # noqa: BLE001 - uvicorn exits with SystemExit on startup failure
            self._failure = error

    def _wait_until_ready(self) -> None:
        assert self._server is not None and self._thread is not None
        deadline = time.monotonic() + self.startup_timeout_s
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError(f"uvicorn failed to start on {self.host}:{self.port}: {self._failure!r}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"uvicorn did not start on {self.host}:{self.port} in {self.startup_timeout_s} s")
            time.sleep(0.005)
        if self.health_path is None:
            return
        with httpx.Client(timeout=1.0) as client:
            while True:
                try:
                    if client.get(self.url + self.health_path).is_success:
                        return
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self.url}{self.health_path} did not answer in {self.startup_timeout_s} s")
                time.sleep(0.01)
