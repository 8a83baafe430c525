"""Remote and shared retrieval: the Search-R1 wire format, the HTTP client, the batching service, the server.

Every server here is a real uvicorn on 127.0.0.1 on an ephemeral port, started by the test itself; the
corpus is real HotpotQA distractor paragraphs read in place from the shared data folder.
"""

from __future__ import annotations

import json
import pickle
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse

from agentdistill.envs.data import load_tasks
from agentdistill.envs.qa import pooled_documents
from agentdistill.envs.tasks import Document, Task
from agentdistill.envs.tools.retrieval.base import SearchHit
from agentdistill.envs.tools.retrieval.bm25 import BM25Retriever
from agentdistill.envs.tools.retrieval.protocol import (
    RetrievalProtocolError,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
)
from agentdistill.envs.tools.retrieval.remote import RemoteRetriever, RetrievalUnavailableError
from agentdistill.envs.tools.retrieval.server import ServerThread, create_app
from agentdistill.envs.tools.retrieval.service import BatchingRetriever
from agentdistill.envs.tools.retrieval.tool import WebSearchTool
from tests.conftest import SHARED_DATA

HOTPOT = SHARED_DATA / "hotpotqa/distractor_dev_500_hf.jsonl"


# -- fixtures and test retrievers ------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Requests to 127.0.0.1 must go straight there, never through a configured proxy."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def tasks() -> list[Task]:
    return load_tasks(HOTPOT, kind="qa")[:4]


@pytest.fixture(scope="module")
def bm25(tasks: list[Task]) -> BM25Retriever:
    documents = pooled_documents(tasks)
    assert 30 <= len(documents) <= 40  # a few dozen real paragraphs
    return BM25Retriever(documents)


@pytest.fixture(scope="module")
def questions(tasks: list[Task]) -> list[str]:
    return [task.question for task in tasks]


@pytest.fixture(scope="module")
def server(bm25: BM25Retriever) -> Iterator[ServerThread]:
    with ServerThread.for_retriever(bm25) as running:
        yield running


class CountingRetriever:
    """Wraps a retriever, recording every inner call; optionally slow, like a query encoder."""

    def __init__(self, inner: BM25Retriever, delay_s: float = 0.0) -> None:
        self.inner = inner
        self.delay_s = delay_s
        self.calls: list[tuple[tuple[str, ...], int]] = []
        self._lock = threading.Lock()

    @property
    def documents(self) -> tuple[Document, ...]:
        return self.inner.documents

    def search(self, queries: Sequence[str], k: int) -> list[list[SearchHit]]:
        with self._lock:
            self.calls.append((tuple(queries), k))
        if self.delay_s:
            time.sleep(self.delay_s)
        return self.inner.search(queries, k)


class GatedRetriever(CountingRetriever):
    """Its first call blocks until :attr:`gate` opens, so callers pile up behind it deterministically;
    any call with a query containing "boom" fails."""

    def __init__(self, inner: BM25Retriever) -> None:
        super().__init__(inner)
        self.gate = threading.Event()
        self.entered = threading.Event()

    def search(self, queries: Sequence[str], k: int) -> list[list[SearchHit]]:
        first = not self.calls
        hits = super().search(queries, k)
        if first:
            self.entered.set()
            assert self.gate.wait(10), "test gate never opened"
        if any("boom" in query for query in queries):
            raise RuntimeError("index shard 3 is offline")
        return hits


class SleepyRetriever:
    """Answers only after :attr:`release` is set (or 5 s): a server slower than the client's timeout."""

    def __init__(self, inner: BM25Retriever) -> None:
        self.inner = inner
        self.release = threading.Event()

    def search(self, queries: Sequence[str], k: int) -> list[list[SearchHit]]:
        self.release.wait(5)
        return self.inner.search(queries, k)


def wait_for(condition: Any, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.002)


def refused_port() -> tuple[socket.socket, int]:
    """A 127.0.0.1 port that is bound (so nobody else takes it) but not listening: connections are refused."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    return sock, sock.getsockname()[1]


# -- the wire format -------------------------------------------------------------------------------


def test_protocol_round_trip_keeps_titles_texts_ids_and_scores(bm25: BM25Retriever, questions: list[str]) -> None:
    hits = bm25.search(questions, 5)
    wire = json.loads(json.dumps(encode_response(hits)))
    assert set(wire) == {"result"} and len(wire["result"]) == len(questions)
    first = wire["result"][0][0]
    assert set(first) == {"document", "score"}
    assert first["document"]["contents"] == f'"{hits[0][0].document.title}"\n{hits[0][0].document.text}'
    assert decode_response(wire, len(questions)) == hits

    unscored = json.loads(json.dumps(encode_response(hits, return_scores=False)))
    assert "contents" in unscored["result"][0][0]
    decoded = decode_response(unscored, len(questions))
    assert [[hit.document for hit in row] for row in decoded] == [[hit.document for hit in row] for row in hits]
    assert {hit.score for row in decoded for hit in row} == {0.0}

    assert decode_response(wire, len(questions), k=2) == [row[:2] for row in hits]
    assert encode_request(["a", "b"], 3) == {"queries": ["a", "b"], "topk": 3, "return_scores": True}


def test_protocol_reads_stock_search_r1_documents() -> None:
    dense = {"result": [[{"document": {"id": "2176", "contents": '"Paris"\nParis is the capital.'}, "score": 0.83}]]}
    assert decode_response(dense, 1) == [[SearchHit(Document("Paris", "Paris is the capital.", "2176"), 0.83)]]
    bm25_row = {"title": "Paris", "text": "Paris is the capital.", "contents": '"Paris"\nParis is the capital.'}
    assert decode_response({"result": [[{"document": bm25_row, "score": 7}]]}, 1)[0][0] == SearchHit(
        Document("Paris", "Paris is the capital.", ""), 7.0
    )


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ([], "JSON object"),
        ({"results": []}, 'no "result"'),
        ({"result": "nope"}, "one list per query"),
        ({"result": [[]]}, "1 lists for 2 queries"),
        ({"result": [[], {"a": 1}]}, "result[1] must be a list"),
        ({"result": [[], ["text"]]}, "result[1][0] must be an object"),
        ({"result": [[], [{"score": 1.0}]]}, 'result[1][0] has a "score" but no "document"'),
        ({"result": [[], [{"document": {"id": "1", "contents": "x"}}]]}, 'has a "document" but no "score"'),
        ({"result": [[], [{"document": {"id": "1"}, "score": 1.0}]]}, 'neither "contents"'),
        ({"result": [[], [{"document": {"contents": 5}, "score": 1.0}]]}, "contents must be a string"),
        ({"result": [[], [{"document": {"contents": "x"}, "score": "high"}]]}, "score must be a number"),
        ({"result": [[], [{"document": {"contents": "x"}, "score": True}]]}, "score must be a number"),
        ({"result": [[], [{"document": {"contents": "x"}, "score": float("nan")}]]}, "must be finite"),
        ({"result": [[], [{"document": {"contents": "x", "id": [1]}, "score": 1}]]}, "id must be a string"),
    ],
)
def test_protocol_rejects_garbage_responses(payload: Any, message: str) -> None:
    with pytest.raises(RetrievalProtocolError, match=_literal(message)):
        decode_response(payload, 2)


def test_protocol_rejects_garbage_requests_and_unencodable_scores() -> None:
    assert decode_request({"queries": ["a"]}, default_topk=3).topk == 3
    assert decode_request({"queries": [], "topk": 2, "return_scores": True}).return_scores is True
    bad: list[tuple[Any, str]] = [
        ("queries", "JSON object"),
        ({"topk": 3}, 'missing "queries"'),
        ({"queries": "a question"}, "list of strings"),
        ({"queries": ["ok", 7]}, '"queries"[1] must be a string'),
        ({"queries": ["a"], "topk": 0}, "between 1 and"),
        ({"queries": ["a"], "topk": "3"}, "positive integer"),
        ({"queries": ["a"], "topk": 3, "return_scores": "yes"}, "true or false"),
        ({"queries": ["a"] * 5, "topk": 1}, "at most 4"),
        ({"queries": ["a"]}, 'missing "topk"'),
    ]
    for payload, message in bad:
        with pytest.raises(RetrievalProtocolError, match=_literal(message)):
            decode_request(payload, max_queries=4)
    with pytest.raises(RetrievalProtocolError, match="non-finite score"):
        encode_response([[SearchHit(Document("t", "x"), float("inf"))]])


# -- client against a real server ------------------------------------------------------------------


def test_remote_search_matches_the_retriever_directly(
    server: ServerThread, bm25: BM25Retriever, questions: list[str]
) -> None:
    with RemoteRetriever(server.url) as remote, RemoteRetriever(server.url + "/retrieve/") as by_endpoint:
        assert remote.search(questions, 5) == bm25.search(questions, 5)
        assert by_endpoint.search(questions[:1], 3) == bm25.search(questions[:1], 3)
        assert remote.search([], 3) == []
        assert remote.search(["zzzqqq nothing matches this"], 3) == [[]]
        copied = pickle.loads(pickle.dumps(remote))  # e.g. into a vector-env worker process
        assert copied.search(questions[:2], 3) == bm25.search(questions[:2], 3)
        copied.close()
        tool = WebSearchTool(remote, top_k=2)
        assert tool(questions[0]) == WebSearchTool(bm25, top_k=2)(questions[0])


def test_remote_retriever_is_safe_to_share_between_threads(
    server: ServerThread, bm25: BM25Retriever, questions: list[str]
) -> None:
    with RemoteRetriever(server.url) as remote, ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda q: remote.search([q], 3), questions * 4))
    assert answers == [bm25.search([q], 3) for q in questions * 4]


def test_health_endpoint(server: ServerThread, bm25: BM25Retriever) -> None:
    body = httpx.get(server.url + "/health").json()
    assert body["status"] == "ok" and body["documents"] == len(bm25.documents)
    assert body["retriever"] == "BM25Retriever" and "mean_batch_size" in body["stats"]
    with RemoteRetriever(server.url) as remote:
        assert remote.health()
    sock, port = refused_port()
    with sock, RemoteRetriever(f"http://127.0.0.1:{port}") as down:
        assert not down.health()


def test_server_rejects_bad_requests_with_a_clear_message(server: ServerThread) -> None:
    url = server.url + "/retrieve"
    response = httpx.post(url, json={"queries": ["a"], "topk": 0})
    assert response.status_code == 422 and "topk" in response.json()["detail"]
    response = httpx.post(url, json={"queries": "a question", "topk": 3})
    assert response.status_code == 422 and "list of strings" in response.json()["detail"]
    response = httpx.post(url, content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 400 and "not valid JSON" in response.json()["detail"]
    response = httpx.post(url, json={"queries": ["x" * 5000], "topk": 3})
    assert response.status_code == 422 and "characters" in response.json()["detail"]
    # Search-R1 clients: topk left out takes the server default, return_scores false gives bare rows.
    response = httpx.post(url, json={"queries": ["Harvey Pekar"]})
    rows = response.json()["result"][0]
    assert response.status_code == 200 and len(rows) == 3 and set(rows[0]) >= {"id", "contents"}


def test_server_batches_concurrent_requests(bm25: BM25Retriever, questions: list[str]) -> None:
    slow = CountingRetriever(bm25, delay_s=0.1)
    n_requests = 16
    queries = [f"{questions[i % len(questions)]} variant {i}" for i in range(n_requests)]
    with ServerThread.for_retriever(slow, max_wait_s=0.02) as running, RemoteRetriever(running.url) as remote:
        barrier = threading.Barrier(n_requests)

        def ask(query: str) -> list[list[SearchHit]]:
            barrier.wait()
            return remote.search([query], 3)

        with ThreadPoolExecutor(n_requests) as pool:
            answers = list(pool.map(ask, queries))
    assert answers == [bm25.search([query], 3) for query in queries]
    assert 1 <= len(slow.calls) < n_requests / 2
    assert sum(len(call_queries) for call_queries, _ in slow.calls) == n_requests


# -- failures the agent reads ----------------------------------------------------------------------


def test_server_down_fails_fast_after_the_configured_retries() -> None:
    sock, port = refused_port()
    url = f"http://127.0.0.1:{port}"
    with sock, RemoteRetriever(url, retries=2, backoff_s=0.01, max_backoff_s=0.02) as remote:
        started = time.monotonic()
        with pytest.raises(RetrievalUnavailableError) as caught:
            remote.search(["who directed Alien?"], 3)
        elapsed = time.monotonic() - started
    error = caught.value
    assert elapsed < 2.0
    assert error.attempts == 3 and error.url == f"{url}/retrieve"
    assert str(error) == f"retrieval server {url}/retrieve is unavailable: connection refused (after 3 attempts)"
    assert pickle.loads(pickle.dumps(error)).args == error.args
    with pytest.raises(RetrievalUnavailableError, match="connection refused"):
        WebSearchTool(RemoteRetriever(url, retries=0), top_k=3)("who directed Alien?")


def test_slow_server_times_out_within_the_bound(bm25: BM25Retriever) -> None:
    sleepy = SleepyRetriever(bm25)
    with ServerThread.for_retriever(sleepy) as running:
        try:
            with RemoteRetriever(running.url, timeout_s=0.3, retries=1, backoff_s=0.01) as remote:
                started = time.monotonic()
                with pytest.raises(RetrievalUnavailableError) as caught:
                    remote.search(["Denise Levertov"], 3)
                elapsed = time.monotonic() - started
        finally:
            sleepy.release.set()
    assert 0.6 <= elapsed < 2.0
    assert "timed out after 0.3 s (after 2 attempts)" in str(caught.value)
    assert running.url in str(caught.value)


@pytest.fixture(scope="module")
def garbage_server() -> Iterator[tuple[ServerThread, dict[str, int]]]:
    """A server of our own that answers every kind of wrong, counting the requests it gets."""
    hits: dict[str, int] = {}
    app = FastAPI()

    @app.post("/{kind}/retrieve")
    async def retrieve(kind: str, request: Request) -> Any:
        hits[kind] = hits.get(kind, 0) + 1
        if kind == "junk":
            return JSONResponse({"result": "nope"})
        if kind == "short":
            return JSONResponse({"result": [[]]})
        if kind == "text":
            return PlainTextResponse("<html>hello</html>")
        if kind == "stock":  # a stock Search-R1 server: no /health, dense-style rows
            body = json.loads(await request.body())
            row = {"document": {"id": "7", "contents": '"Alien"\nAlien is a 1979 film.'}, "score": 0.5}
            return JSONResponse({"result": [[row] for _ in body["queries"]]})
        if kind == "crash":
            return JSONResponse({"detail": "CUDA out of memory"}, status_code=500)
        return JSONResponse({"detail": "topk too large"}, status_code=422)

    with ServerThread(app, health_path=None) as running:
        yield running, hits


@pytest.mark.parametrize(
    ("kind", "attempts", "reason"),
    [
        ("junk", 1, 'malformed response: "result" must be a list with one list per query, got a string'),
        ("short", 1, 'malformed response: "result" holds 1 lists for 2 queries'),
        ("text", 1, "malformed response: body is not JSON (<html>hello</html>)"),
        ("reject", 1, "HTTP 422: topk too large"),
        ("crash", 3, "HTTP 500: CUDA out of memory"),
    ],
)
def test_garbage_server_gives_a_clear_error_without_a_retry_storm(
    garbage_server: tuple[ServerThread, dict[str, int]], kind: str, attempts: int, reason: str
) -> None:
    running, hits = garbage_server
    url = f"{running.url}/{kind}"
    with RemoteRetriever(url, retries=2, backoff_s=0.01) as remote, pytest.raises(RetrievalUnavailableError) as caught:
        remote.search(["q1", "q2"], 3)
    error = caught.value
    assert hits[kind] == attempts == error.attempts
    assert error.reason.startswith(reason)
    assert f"{url}/retrieve" in str(error)


def test_client_speaks_to_a_stock_search_r1_server(garbage_server: tuple[ServerThread, dict[str, int]]) -> None:
    running, _ = garbage_server
    with RemoteRetriever(f"{running.url}/stock/retrieve") as stock, RemoteRetriever(f"{running.url}/junk") as junk:
        assert stock.health()  # no /health there: an empty /retrieve answering well counts
        assert not junk.health()
        assert (
            stock.search(["alien director", "1979 film"], 3)
            == [[SearchHit(Document("Alien", "Alien is a 1979 film.", "7"), 0.5)]] * 2
        )


@pytest.mark.parametrize("url", ["ftp://127.0.0.1:8000", "127.0.0.1:8000", "", "http://", "http://host:notaport"])
def test_bad_urls_are_rejected_by_name(url: str) -> None:
    with pytest.raises(ValueError, match=_literal(repr(url))):
        RemoteRetriever(url)


def test_search_after_close_raises(server: ServerThread) -> None:
    remote = RemoteRetriever(server.url)
    remote.close()
    with pytest.raises(RuntimeError, match="closed"):
        remote.search(["a"], 1)


# -- the batching service --------------------------------------------------------------------------


def test_32_threads_share_few_inner_calls_and_get_their_own_hits(bm25: BM25Retriever, questions: list[str]) -> None:
    counting = CountingRetriever(bm25, delay_s=0.01)
    n_threads = 32
    queries = [f"{questions[i % len(questions)]} {i}" for i in range(n_threads)]
    barrier = threading.Barrier(n_threads)
    with BatchingRetriever(counting, max_batch=32, max_wait_s=0.05) as service:

        def ask(query: str) -> list[list[SearchHit]]:
            barrier.wait()
            return service.search([query], 4)

        with ThreadPoolExecutor(n_threads) as pool:
            answers = list(pool.map(ask, queries))
        stats = service.stats
    assert answers == [bm25.search([query], 4) for query in queries]
    assert len(counting.calls) <= 8
    assert stats.batches == len(counting.calls) and stats.requests == n_threads and stats.queries == n_threads
    assert stats.mean_batch_size >= 4


def staggered_asks(service: BatchingRetriever, queries: Sequence[str], gap_s: float) -> list[list[list[SearchHit]]]:
    """Each query from its own thread, started ``gap_s`` after the previous one (callers that trickle in, as
    requests do through the HTTP server)."""
    with ThreadPoolExecutor(len(queries)) as pool:
        futures = []
        for query in queries:
            futures.append(pool.submit(service.search, [query], 3))
            time.sleep(gap_s)
        return [future.result(10) for future in futures]


def test_callers_that_keep_trickling_in_share_one_inner_call(bm25: BM25Retriever, questions: list[str]) -> None:
    """8 callers 40 ms apart span 280 ms, beyond the 250 ms a caller waits for the next: each arrival extends
    the wait, so they still go as one batch (a window fixed from the first caller would cut them in two)."""
    counting = CountingRetriever(bm25)
    queries = [f"{questions[i % len(questions)]} {i}" for i in range(8)]
    with BatchingRetriever(counting, max_batch=32, max_wait_s=0.25, max_delay_s=10.0, cache_size=0) as service:
        answers = staggered_asks(service, queries, gap_s=0.04)
    assert answers == [bm25.search([query], 3) for query in queries]
    assert [len(batch) for batch, _ in counting.calls] == [8]


def test_a_steady_stream_of_callers_is_cut_at_max_delay(bm25: BM25Retriever, questions: list[str]) -> None:
    """However steadily callers arrive, the first of a batch waits at most ``max_delay_s``."""
    counting = CountingRetriever(bm25)
    queries = [f"{questions[i % len(questions)]} {i}" for i in range(10)]
    with BatchingRetriever(counting, max_batch=32, max_wait_s=5.0, max_delay_s=0.15, cache_size=0) as service:
        answers = staggered_asks(service, queries, gap_s=0.04)
    assert answers == [bm25.search([query], 3) for query in queries]
    assert len(counting.calls) >= 2 and sum(len(batch) for batch, _ in counting.calls) == 10


def test_duplicate_queries_are_asked_once_and_the_cache_answers_repeats(
    bm25: BM25Retriever, questions: list[str]
) -> None:
    counting = CountingRetriever(bm25)
    with BatchingRetriever(counting, cache_size=2, max_wait_s=0) as service:
        first = service.search([questions[0], questions[1], questions[0]], 3)
        assert first == bm25.search([questions[0], questions[1], questions[0]], 3)
        assert counting.calls == [((questions[0], questions[1]), 3)]
        assert service.search([questions[1], questions[0]], 3) == [first[1], first[0]]
        assert len(counting.calls) == 1 and service.stats.cache_hits == 2
        service.search([questions[0]], 2)  # another k is another entry: evicts the least recent (q1, 3)
        assert len(counting.calls) == 2
        service.search([questions[0], questions[1]], 3)
        assert counting.calls[-1] == ((questions[1],), 3)
        first[0].clear()  # callers own their lists; the cache is unaffected
        assert service.search([questions[0]], 3) == [bm25.search([questions[0]], 3)[0]]


def test_inner_error_reaches_only_the_callers_of_its_batch(bm25: BM25Retriever, questions: list[str]) -> None:
    gated = GatedRetriever(bm25)
    with BatchingRetriever(gated, max_batch=64, max_wait_s=0.01) as service, ThreadPoolExecutor(8) as pool:
        blocker = pool.submit(service.search, ["warm up"], 3)
        assert gated.entered.wait(5)
        # While the first batch is stuck in the inner retriever, these queue up as one next batch:
        # k=2 holds the failing query, k=3 does not.
        doomed = [pool.submit(service.search, [query], 2) for query in ("boom", questions[0], questions[1])]
        spared = [pool.submit(service.search, [query], 3) for query in questions[:3]]
        wait_for(lambda: service.stats.requests == 7)
        gated.gate.set()
        assert blocker.result(5) == bm25.search(["warm up"], 3)
        for future in doomed:
            with pytest.raises(RuntimeError, match="index shard 3 is offline"):
                future.result(5)
        assert [future.result(5) for future in spared] == [bm25.search([q], 3) for q in questions[:3]]
        assert service.stats.failed_batches == 1
        # The failure is not cached: the next batch with k=2 is asked afresh and succeeds.
        assert service.search([questions[0]], 2) == bm25.search([questions[0]], 2)
    assert len(gated.calls) == 4


def test_close_stops_the_worker_and_fails_later_searches(bm25: BM25Retriever) -> None:
    service = BatchingRetriever(bm25)
    assert service.search(["Harvey Pekar"], 1) == bm25.search(["Harvey Pekar"], 1)
    service.close()
    service.close()
    assert not service._worker.is_alive()
    with pytest.raises(RuntimeError, match="closed"):
        service.search(["Harvey Pekar"], 1)
    with pytest.raises(ValueError, match="k must be"):
        BatchingRetriever(bm25).search(["x"], 0)


def test_create_app_answers_through_the_batching_service(bm25: BM25Retriever) -> None:
    counting = CountingRetriever(bm25)
    with ServerThread(create_app(counting, cache_size=100)) as running, RemoteRetriever(running.url) as remote:
        remote.search(["Joyce Brabner"], 2)
        remote.search(["Joyce Brabner"], 2)
        stats = httpx.get(running.url + "/health").json()["stats"]
    assert len(counting.calls) == 1 and stats["cache_hits"] == 1 and stats["requests"] == 2


def _literal(text: str) -> str:
    import re

    return re.escape(text)
