"""Fault: the OpenAI-compatible teacher server fails while the rollout loop collects trajectories.

:class:`~agentdistill.policies.openai.OpenAIPolicy` on its own is tested against these failures in
``tests/policies/test_openai_policy.py``; here the whole pipeline meets them. A real HTTP server
(FastAPI under uvicorn, in a thread) plays a teacher that solves synthetic math tasks in two turns,
and misbehaves for chosen tasks and turns: HTTP 500 once or always, answers slower than the client's
timeout, an answer dribbled out a few bytes at a time (each read within the timeout, the whole far
beyond it), connections dropped mid-response once or always, and a 500 on the second turn of an
episode that started well. The run must finish (never hang), every task must have exactly one
complete record, each failure must be retried within the budget and then recorded as a failed
episode with the reason, and the episodes that succeeded must be recorded as successes.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

import agentdistill  # noqa: F401 - registers the env ids
from agentdistill.envs.tools.retrieval.server import ServerThread
from agentdistill.policies.openai import OpenAIPolicy
from agentdistill.rollouts.loop import make_rollout_envs, run_rollouts
from tests.conftest import code_action
from tests.faults.support import assert_one_record_per_task

ENV_ID = "AgentMath-Synthetic-v0"
TIMEOUT_S = 1.0
RETRIES = 2
ATTEMPTS = RETRIES + 1
SLOW_ANSWER_S = 3 * TIMEOUT_S


@dataclass(frozen=True)
class Fault:
    """What the server does for one turn of one task: ``kind`` for the first ``times`` attempts."""

    kind: str  # "500", "slow", "trickle" or "drop"
    times: int = 10**6


FAULTS: dict[tuple[int, int], Fault] = {  # (task index, turn) -> fault; other turns are answered well
    (1, 0): Fault("500", times=1),
    (2, 0): Fault("500"),
    (3, 0): Fault("slow"),
    (4, 0): Fault("drop"),
    (5, 0): Fault("drop", times=1),
    (6, 1): Fault("500"),
    (8, 0): Fault("trickle"),
}
TASKS = 9
TRICKLE_CHUNK, TRICKLE_PAUSE_S = 4, 0.3 * TIMEOUT_S
SUCCEEDS = (0, 1, 5, 7)
FAILS = {
    2: f"HTTP 500: scripted failure (after {ATTEMPTS} attempts)",
    3: f"timed out after {TIMEOUT_S:g} s",
    4: "network error (RemoteProtocolError",
    6: f"HTTP 500: scripted failure (after {ATTEMPTS} attempts)",
    8: f"timed out after {TIMEOUT_S:g} s",
}


@dataclass
class Teacher:
    """The fake server's knowledge (each task's question and answer) and the attempts it has seen."""

    answers: dict[str, str]  # question -> gold answer
    tasks: dict[str, int]  # question -> task index
    attempts: dict[tuple[int, int], int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def action(self, question: str, turn: int) -> str:
        if turn == 0:
            return code_action("x = 6 * 7\nprint(x)", "I will compute something first.")
        return code_action(f"final_answer({self.answers[question]!r})", "Now the answer.")


def teacher_app(teacher: Teacher) -> FastAPI:
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        body = await request.json()
        question = next(m["content"] for m in body["messages"] if m["role"] == "user")
        turn = sum(1 for m in body["messages"] if m["role"] == "assistant")
        key = (teacher.tasks[question], turn)
        with teacher.lock:
            teacher.attempts[key] = attempt = teacher.attempts.get(key, 0) + 1
        fault = FAULTS.get(key)
        if fault is not None and attempt <= fault.times:
            if fault.kind == "500":
                return JSONResponse({"error": {"message": "scripted failure"}}, status_code=500)
            if fault.kind == "slow":
                await asyncio.sleep(SLOW_ANSWER_S)
            if fault.kind == "drop":

                async def dropped() -> Any:
                    yield b'{"choices": ['
                    raise ConnectionAbortedError("the fake teacher drops the connection mid-response")

                return StreamingResponse(dropped(), media_type="application/json")
        text = teacher.action(question, turn)
        choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        usage = {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120}
        answer = {"object": "chat.completion", "model": body["model"], "choices": [choice], "usage": usage}
        if fault is not None and attempt <= fault.times and fault.kind == "trickle":
            payload = json.dumps(answer).encode()

            async def dribbled() -> Any:
                for start in range(0, len(payload), TRICKLE_CHUNK):
                    await asyncio.sleep(TRICKLE_PAUSE_S)
                    yield payload[start : start + TRICKLE_CHUNK]

            return StreamingResponse(dribbled(), media_type="application/json")
        return JSONResponse(answer)

    return app


@pytest.fixture(scope="module")
def teacher() -> Teacher:
    env = gym.make(ENV_ID)
    try:
        questions = {}
        answers = {}
        for index in range(TASKS):
            observation, info = env.reset(options={"task_index": index})
            questions[observation] = index
            answers[observation] = str(info["plan"][-1]["answer"])
    finally:
        env.close()
    return Teacher(answers=answers, tasks=questions)


@pytest.fixture(scope="module")
def teacher_url(teacher: Teacher) -> Iterator[str]:
    with ServerThread(teacher_app(teacher), health_path=None, shutdown_timeout_s=SLOW_ANSWER_S + 2) as server:
        yield f"{server.url}/v1"


@pytest.mark.timeout(180)
def test_server_failures_are_retried_then_recorded_as_failed_and_nothing_is_lost(
    teacher: Teacher, teacher_url: str, tmp_path: Path
) -> None:
    out = tmp_path / "t.jsonl"
    policy = OpenAIPolicy(teacher_url, "teacher", timeout_s=TIMEOUT_S, retries=RETRIES, backoff_s=0.01, max_backoff_s=0.05)
    envs = make_rollout_envs(ENV_ID, 3)
    try:
        summary = run_rollouts(envs, policy, env_id=ENV_ID, task_indices=range(TASKS), out=str(out), progress=False)
    finally:
        envs.close()
        policy.close()

    records = {record["task_index"]: record for record in assert_one_record_per_task(out, ENV_ID, TASKS)}
    assert summary.episodes == TASKS and summary.metrics["failed_episodes"] == len(FAILS)

    for index in SUCCEEDS:  # a transient fault, retried, cost nothing
        record = records[index]
        assert record["failed"] is None and record["score"] == 1.0 and record["terminated"], record
        assert [step["observation"] for step in record["steps"]][0].endswith("42")
    assert teacher.attempts[(1, 0)] == 2 and teacher.attempts[(5, 0)] == 2

    for index, reason in FAILS.items():  # a lasting fault: the whole budget, then a failed episode saying why
        record = records[index]
        assert reason in record["failed"] and record["failed"].startswith(policy.name)
        assert record["failed"].endswith(f"(after {ATTEMPTS} attempts)")
        assert record["score"] == 0.0 and not record["terminated"]
        assert record["steps"][-1] == {"policy_error": record["failed"]}
    for key in ((2, 0), (3, 0), (4, 0), (6, 1), (8, 0)):
        assert teacher.attempts[key] == ATTEMPTS

    interrupted = records[6]  # failed on its second turn: the first one stays in the record
    assert interrupted["steps"][0]["observation"].endswith("42") and interrupted["steps"][0]["code"]
    assert [message["role"] for message in interrupted["messages"]] == ["system", "user", "assistant", "user"]
