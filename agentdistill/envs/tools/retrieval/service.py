"""A shared retrieval service: many envs' queries, searched together.

Why: encoding the query is about 99 % of dense retrieval time (FlashRAG's measurements), and an
encoder costs nearly the same for 32 queries in one forward pass as for one. With N envs each calling
``web_search`` on its own, the encoder would run N times per step; :class:`BatchingRetriever` holds
callers while they keep arriving (each may wait up to ``max_wait_s`` for the next, and the first at most
``max_delay_s`` in all), sends the distinct queries to the inner retriever in one call, and hands each
caller its own hits. Waiting for a pause rather than a fixed time from the first caller matters behind the
HTTP server: its requests reach the service one by one as the event loop reads them, spread over more
than a few milliseconds, and a fixed window cut them into two or three encoder calls. Repeated queries
(agents often re-ask, and rollouts of the same task ask alike) are answered from an LRU cache without
touching the inner retriever.

The same object serves threads in one process (envs of a thread-pool vector env) and the HTTP
server (:mod:`agentdistill.envs.tools.retrieval.server`), whose concurrent requests become callers.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

from agentdistill.envs.tools.retrieval.base import Retriever, SearchHit, checked_search_args

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchingStats:
    """Counters since the service started, for benchmarks and the server's health answer.

    ``batches`` counts calls to the inner retriever (one per distinct ``k`` in a collected batch);
    ``batched_queries`` counts the distinct queries those calls carried.
    """

    requests: int = 0
    queries: int = 0
    cache_hits: int = 0
    batches: int = 0
    batched_queries: int = 0
    failed_batches: int = 0

    @property
    def mean_batch_size(self) -> float:
        """Distinct queries per inner call (0.0 before the first)."""
        return self.batched_queries / self.batches if self.batches else 0.0


@dataclass
class _Pending:
    """One caller's cache misses, waiting for the worker."""

    k: int
    queries: tuple[str, ...]
    enqueued_at: float
    done: threading.Event = field(default_factory=threading.Event)
    results: list[tuple[SearchHit, ...]] | None = None
    error: BaseException | None = None

    def finish(self, results: list[tuple[SearchHit, ...]] | None, error: BaseException | None) -> None:
        self.results, self.error = results, error
        self.done.set()


class BatchingRetriever:
    """Thread-safe :class:`Retriever` that batches concurrent callers' queries and caches answers.

    Args:
        retriever: the inner retriever; it is called from one background thread only, so it need
            not be thread-safe. It is not closed by :meth:`close`.
        max_batch: a batch is sent as soon as this many queries wait (a single larger call is sent
            whole, since the inner retriever chunks for its own device).
        max_wait_s: how long a batch waits for the next caller after the latest arrived; the latency a
            lone caller pays for batching.
        max_delay_s: the longest the first caller of a batch waits in all, however steadily others keep
            arriving (a batch also leaves as soon as ``max_batch`` queries wait).
        cache_size: (query, k) answers kept, least recently used dropped first; 0 turns caching off.

    An error of the inner call is raised to the callers whose queries were in that call, and only
    to them; the next batch is tried afresh.
    """

    def __init__(
        self,
        retriever: Retriever,
        *,
        max_batch: int = 32,
        max_wait_s: float = 0.005,
        max_delay_s: float = 0.05,
        cache_size: int = 10_000,
    ) -> None:
        if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
            raise ValueError(f"max_batch must be a positive int, got {max_batch!r}")
        if not (isinstance(max_wait_s, (int, float)) and max_wait_s >= 0):
            raise ValueError(f"max_wait_s must be a non-negative number of seconds, got {max_wait_s!r}")
        if not (isinstance(max_delay_s, (int, float)) and max_delay_s >= 0):
            raise ValueError(f"max_delay_s must be a non-negative number of seconds, got {max_delay_s!r}")
        if isinstance(cache_size, bool) or not isinstance(cache_size, int) or cache_size < 0:
            raise ValueError(f"cache_size must be a non-negative int, got {cache_size!r}")
        self.retriever = retriever
        self.max_batch = max_batch
        self.max_wait_s = float(max_wait_s)
        self.max_delay_s = float(max_delay_s)
        self.cache_size = cache_size
        self._cond = threading.Condition()
        self._pending: list[_Pending] = []
        self._pending_queries = 0
        self._cache: OrderedDict[tuple[str, int], tuple[SearchHit, ...]] = OrderedDict()
        self._stats = BatchingStats()
        self._closed = False
        self._worker = threading.Thread(target=self._run, name="retrieval-batcher", daemon=True)
        self._worker.start()

    @property
    def stats(self) -> BatchingStats:
        """A snapshot of the counters."""
        with self._cond:
            return self._stats

    def search(self, queries: Sequence[str], k: int) -> list[list[SearchHit]]:
        """Best-first hits per query; blocks until this caller's batch is answered."""
        queries = checked_search_args(queries, k)
        if not queries:
            return []
        found: dict[str, tuple[SearchHit, ...]] = {}
        missing: list[str] = []
        with self._cond:
            if self._closed:
                raise RuntimeError("BatchingRetriever is closed")
            for query in dict.fromkeys(queries):
                cached = self._cache_get(query, k)
                if cached is None:
                    missing.append(query)
                else:
                    found[query] = cached
            self._count(requests=1, queries=len(queries), cache_hits=len(found))
            pending = None
            if missing:
                pending = _Pending(k, tuple(missing), time.monotonic())
                self._pending.append(pending)
                self._pending_queries += len(missing)
                self._cond.notify_all()
        if pending is not None:
            pending.done.wait()
            if pending.error is not None:
                raise pending.error
            assert pending.results is not None
            found.update(zip(pending.queries, pending.results))
        return [list(found[query]) for query in queries]

    def close(self) -> None:
        """Stop the worker after its current batch; callers still waiting get a RuntimeError."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if threading.current_thread() is not self._worker:
            self._worker.join()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- the worker thread -------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                batch = self._collect()
                if batch is None:
                    return
                self._answer(batch)
        finally:
            with self._cond:
                self._closed = True
                left, self._pending, self._pending_queries = self._pending, [], 0
            for pending in left:
                pending.finish(None, RuntimeError("BatchingRetriever was closed before answering this search"))

    def _collect(self) -> list[_Pending] | None:
        """Wait for work, then for a full batch while callers keep coming: until ``max_wait_s`` pass without
        a new one, or ``max_delay_s`` since the oldest waiter."""
        with self._cond:
            while not self._pending and not self._closed:
                self._cond.wait()
            latest = self._pending[0].enqueued_at + self.max_delay_s if self._pending else 0.0
            while not self._closed and self._pending_queries < self.max_batch:
                remaining = min(self._pending[-1].enqueued_at + self.max_wait_s, latest) - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            if self._closed:
                return None
            batch: list[_Pending] = []
            size = 0
            while self._pending and (not batch or size + len(self._pending[0].queries) <= self.max_batch):
                pending = self._pending.pop(0)
                batch.append(pending)
                size += len(pending.queries)
            self._pending_queries -= size
            return batch

    def _answer(self, batch: list[_Pending]) -> None:
        """One inner call per distinct ``k``, with that group's distinct uncached queries."""
        groups: dict[int, list[_Pending]] = {}
        for pending in batch:
            groups.setdefault(pending.k, []).append(pending)
        for k, members in groups.items():
            wanted = list(dict.fromkeys(query for pending in members for query in pending.queries))
            with self._cond:
                # A query may have been answered by the previous batch while this one waited.
                known = {query: hits for query in wanted if (hits := self._cache_get(query, k)) is not None}
                self._count(cache_hits=len(known))
            to_fetch = [query for query in wanted if query not in known]
            try:
                fetched = self._fetch(to_fetch, k) if to_fetch else {}
            except BaseException as error:  # handed to exactly this group's callers
                with self._cond:
                    self._count(batches=1, batched_queries=len(to_fetch), failed_batches=1)
                for pending in members:
                    pending.finish(None, error)
                if not isinstance(error, Exception):
                    raise
                continue
            with self._cond:
                if to_fetch:
                    self._count(batches=1, batched_queries=len(to_fetch))
                for query, hits in fetched.items():
                    self._cache_put(query, k, hits)
            answers = {**known, **fetched}
            for pending in members:
                pending.finish([answers[query] for query in pending.queries], None)

    def _fetch(self, queries: list[str], k: int) -> dict[str, tuple[SearchHit, ...]]:
        hits = self.retriever.search(queries, k)
        if not isinstance(hits, list) or len(hits) != len(queries):
            got = f"{len(hits)} lists" if isinstance(hits, list) else type(hits).__name__
            raise RuntimeError(
                f"{type(self.retriever).__name__}.search returned {got} for {len(queries)} queries; "
                "expected one list per query"
            )
        return {query: tuple(query_hits) for query, query_hits in zip(queries, hits)}

    # -- helpers called with self._cond held ---------------------------------------------------------

    def _cache_get(self, query: str, k: int) -> tuple[SearchHit, ...] | None:
        hits = self._cache.get((query, k))
        if hits is not None:
            self._cache.move_to_end((query, k))
        return hits

    def _cache_put(self, query: str, k: int, hits: tuple[SearchHit, ...]) -> None:
        if self.cache_size == 0:
            return
        self._cache[(query, k)] = hits
        self._cache.move_to_end((query, k))
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    def _count(self, **increments: int) -> None:
        stats = self._stats
        self._stats = BatchingStats(
            **{name: getattr(stats, name) + increments.get(name, 0) for name in BatchingStats.__dataclass_fields__}
        )
