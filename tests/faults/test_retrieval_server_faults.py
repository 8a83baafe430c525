"""Fault: the retrieval server a QA env searches is down, slow or dribbling past its timeout, or talks garbage.

The client's own behaviour (retries, error text) is tested in ``tests/envs/tools/test_remote_retrieval.py``;
here a real env steps through each fault end to end, as an agent meets it: the ``web_search`` call
becomes an observation that says which server failed and why, the client tries a bounded number of
times (counted on the server), and the episode goes on with its variables. A server slower than the
*step's* timeout is covered too: the observation must blame the tool, not the agent's code.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse

import agentdistill  # noqa: F401 - registers the env ids
from agentdistill.envs.tools.retrieval.remote import RemoteRetriever
from agentdistill.envs.tools.retrieval.server import ServerThread
from agentdistill.envs.tools.sandbox import SandboxLimits
from tests.conftest import SHARED_DATA, code_action

HOTPOT = SHARED_DATA / "hotpotqa" / "distractor_dev_500_hf.jsonl"
LIMITS = SandboxLimits(step_timeout_s=1.0, kill_grace_s=0.5)
SLOW_ANSWER_S = 2.0
"""How long the slow server takes: longer than any client timeout used here."""
FAST_RETRIES = {"backoff_s": 0.01, "max_backoff_s": 0.02}


@dataclass
class Hits:
    """Requests each misbehaving endpoint received."""

    counts: dict[str, int] = field(default_factory=dict)


def misbehaving_app(hits: Hits) -> FastAPI:
    app = FastAPI()

    @app.post("/{kind}/retrieve")
    async def retrieve(kind: str, request: Request) -> Response:
        hits.counts[kind] = hits.counts.get(kind, 0) + 1
        await request.body()
        if kind == "slow":
            await asyncio.sleep(SLOW_ANSWER_S)
            return JSONResponse({"result": [[]]})
        if kind == "trickle":  # a valid answer, two bytes at a time: each read is quick, the whole is not

            async def dribbled() -> Any:
                payload = b'{"result": [[]]}'
                for start in range(0, len(payload), 2):
                    await asyncio.sleep(0.15)
                    yield payload[start : start + 2]

            return StreamingResponse(dribbled(), media_type="application/json")
        if kind == "junk":
            return JSONResponse({"result": "no documents today"})
        if kind == "html":
            return PlainTextResponse("<html>502 Bad Gateway</html>")
        if kind == "crash":
            return JSONResponse({"detail": "CUDA out of memory"}, status_code=500)

        async def dropped() -> Any:  # "drop": the connection dies mid-response
            yield b'{"result": [['
            raise ConnectionAbortedError("the fake server drops the connection mid-response")

        return StreamingResponse(dropped(), media_type="application/json")

    return app


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, Hits]]:
    hits = Hits()
    with ServerThread(misbehaving_app(hits), health_path=None, shutdown_timeout_s=SLOW_ANSWER_S + 2) as running:
        yield running.url, hits


@pytest.fixture(scope="module")
def down_url() -> Iterator[str]:
    """A loopback port that is bound but not listening: every connection is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


def search_through(retriever: RemoteRetriever) -> tuple[str, dict[str, Any], str]:
    """One episode: set a variable, search (the fault), then use the variable. Returns the search's
    observation and info, and the observation of the step after it."""
    env = gym.make("AgentQA-HotpotQA-v0", data_path=str(HOTPOT), max_tasks=2, retriever=retriever, sandbox_limits=LIMITS)
    try:
        env.reset(options={"task_index": 0})
        env.step(code_action("kept = 41"))
        observation, _, terminated, truncated, info = env.step(code_action('print(web_search("Alien director"))'))
        assert not terminated and not truncated
        after, *_ = env.step(code_action("print(kept + 1)"))
        return observation, info, after
    finally:
        env.close()
        retriever.close()


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("kind", "retries", "attempts", "reason"),
    [
        ("junk", 3, 1, 'malformed response: "result" must be a list with one list per query, got a string'),
        ("html", 3, 1, "malformed response: body is not JSON (<html>502 Bad Gateway</html>)"),
        ("crash", 2, 3, "HTTP 500: CUDA out of memory"),
        ("drop", 2, 3, "network error (RemoteProtocolError"),
    ],
)
def test_garbage_answers_become_a_clear_observation_after_bounded_attempts(
    server: tuple[str, Hits], kind: str, retries: int, attempts: int, reason: str
) -> None:
    url, hits = server
    observation, info, after = search_through(RemoteRetriever(f"{url}/{kind}", retries=retries, **FAST_RETRIES))
    noun = "attempt" if attempts == 1 else "attempts"
    assert f"retrieval server {url}/{kind}/retrieve is unavailable: {reason}" in observation
    assert f"(after {attempts} {noun})" in observation
    assert hits.counts[kind] == attempts  # a malformed answer is not retried; a 5xx or a drop is, boundedly
    assert info["tool_calls"][0]["error"] and not info["state_lost"]
    assert "42" in after  # the episode went on with its variables


@pytest.mark.timeout(120)
def test_server_down_becomes_a_clear_observation(down_url: str) -> None:
    observation, info, after = search_through(RemoteRetriever(down_url, retries=2, **FAST_RETRIES))
    assert f"retrieval server {down_url}/retrieve is unavailable: connection refused (after 3 attempts)" in observation
    assert not info["state_lost"] and "42" in after


@pytest.mark.timeout(120)
def test_slow_server_times_out_within_the_clients_bound(server: tuple[str, Hits]) -> None:
    url, hits = server
    before = hits.counts.get("slow", 0)
    retriever = RemoteRetriever(f"{url}/slow", timeout_s=0.2, retries=1, **FAST_RETRIES)  # 2 x 0.2 s < the step's 1 s
    observation, info, after = search_through(retriever)
    assert "is unavailable: timed out after 0.2 s (after 2 attempts)" in observation
    assert hits.counts["slow"] - before == 2
    assert not info["timed_out"] and not info["state_lost"] and "42" in after


@pytest.mark.timeout(120)
def test_server_dribbling_its_answer_is_cut_off_at_the_timeout(server: tuple[str, Hits]) -> None:
    """Every read returns within the client's 0.4 s, the whole answer takes 1.2 s: httpx alone never times out."""
    url, hits = server
    retriever = RemoteRetriever(f"{url}/trickle", timeout_s=0.4, retries=1, **FAST_RETRIES)
    observation, info, after = search_through(retriever)
    assert "is unavailable: timed out after 0.4 s (after 2 attempts)" in observation
    assert hits.counts["trickle"] == 2
    assert not info["timed_out"] and not info["state_lost"] and "42" in after


@pytest.mark.timeout(120)
def test_server_slower_than_the_step_blames_the_tool_and_keeps_the_episode_state(server: tuple[str, Hits]) -> None:
    """The client's bound (3 x 0.5 s) outlasts the step's 1 s timeout: the step times out while
    ``web_search`` is still waiting; the observation says so and why the search failed, and the
    worker (which did nothing wrong) keeps its variables."""
    url, hits = server
    before = hits.counts.get("slow", 0)
    retriever = RemoteRetriever(f"{url}/slow", timeout_s=0.5, retries=2, **FAST_RETRIES)
    observation, info, after = search_through(retriever)
    assert "Code execution timed out after 1 seconds." in observation
    assert "while the code waited" in observation and "for the tool web_search" in observation
    assert "is unavailable: timed out after 0.5 s (after 3 attempts)" in observation
    assert hits.counts["slow"] - before == 3
    assert info["timed_out"] and not info["state_lost"] and "42" in after
