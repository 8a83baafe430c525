"""Tests of :class:`~agentdistill.policies.openai.OpenAIPolicy` against a fake server on 127.0.0.1.

The fake stands in for vLLM's ``POST /v1/chat/completions`` (no GPU or model here): it records every
request body and answers deterministic completions shaped like vLLM's (``stop_reason`` per choice,
``usage``), and a test can script, per conversation (keyed by its first user message), failures with a
status code, a slow answer, a connection closed mid-response, or a custom answer.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import warnings
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from agentdistill.envs.codeact import END_CODE
from agentdistill.envs.tools.retrieval.server import ServerThread
from agentdistill.policies.base import PolicyRequest, SamplingParams
from agentdistill.policies.openai import OpenAIPolicy, completions_from_response, parse_openai_spec

MODEL = "Qwen/Qwen2.5-32B-Instruct"
SYSTEM = {"role": "system", "content": "You are a CodeAct agent."}


@dataclass
class Script:
    """What the fake server does for one conversation."""

    fail_status: int = 0
    fail_times: int = 0  # answer ``fail_status`` this many times, then normally
    close_times: int = 0  # drop the connection mid-body this many times, then answer normally
    sleep_s: float = 0.0
    choices: list[dict[str, Any]] | None = None  # the answer's choices, instead of the default
    usage: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # more top-level response fields


@dataclass
class FakeServer:
    """State of the fake chat completions server (shared by the app's handler and the tests)."""

    scripts: dict[str, Script] = field(default_factory=dict)
    bodies: list[dict[str, Any]] = field(default_factory=list)
    authorizations: list[str | None] = field(default_factory=list)
    attempts: dict[str, int] = field(default_factory=dict)
    in_flight: int = 0
    max_in_flight: int = 0
    delay_s: float = 0.0  # every answer waits this long, so that concurrent requests overlap
    reject_continue: bool = False  # answer 400 to continue_final_message, as plain OpenAI does
    lock: threading.Lock = field(default_factory=threading.Lock)

    def reset(self) -> None:
        with self.lock:
            self.scripts.clear()
            self.bodies.clear()
            self.authorizations.clear()
            self.attempts.clear()
            self.in_flight = self.max_in_flight = 0
            self.delay_s = 0.0
            self.reject_continue = False

    def bodies_for(self, key: str) -> list[dict[str, Any]]:
        return [body for body in self.bodies if _key(body) == key]


def _key(body: dict[str, Any]) -> str:
    return next(message["content"] for message in body["messages"] if message["role"] == "user")


def _words(text: str) -> int:
    return len(text.split())


def _default_choice(user: str, index: int) -> dict[str, Any]:
    # Like vLLM: the stop string is cut off and named in stop_reason.
    text = f"Thought: answering {user} (sample {index})\n```py\nprint({index})\n```"
    return {
        "index": index,
        "message": {"role": "assistant", "content": text},
        "finish_reason": "stop",
        "stop_reason": END_CODE,
    }


def create_fake_app(state: FakeServer) -> FastAPI:
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        body = await request.json()
        key = _key(body)
        with state.lock:
            state.bodies.append(body)
            state.authorizations.append(request.headers.get("authorization"))
            state.attempts[key] = attempt = state.attempts.get(key, 0) + 1
            state.in_flight += 1
            state.max_in_flight = max(state.max_in_flight, state.in_flight)
            script = state.scripts.get(key, Script())
        try:
            await asyncio.sleep(state.delay_s + script.sleep_s)
            if state.reject_continue and "continue_final_message" in body:
                message = "Unrecognized request argument supplied: continue_final_message"
                return JSONResponse({"error": {"message": message, "type": "invalid_request_error"}}, 400)
            if attempt <= script.fail_times:
                message = f"scripted failure {attempt}"
                return JSONResponse({"error": {"message": message, "code": script.fail_status}}, script.fail_status)
            if attempt <= script.close_times:

                async def broken() -> AsyncIterator[bytes]:
                    yield b'{"choices": ['
                    raise ConnectionAbortedError("the fake server drops the connection mid-response")

                return StreamingResponse(broken(), media_type="application/json")
            choices = script.choices or [_default_choice(key, index) for index in range(body.get("n", 1))]
            prompt_tokens = sum(_words(message["content"]) for message in body["messages"])
            completion_tokens = sum(_words(choice.get("message", {}).get("content") or "") for choice in choices)
            usage = script.usage or {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            }
            return JSONResponse(
                {"id": f"chatcmpl-{attempt}", "object": "chat.completion", "model": body["model"], "choices": choices}
                | {"usage": usage}
                | script.extra
            )
        finally:
            with state.lock:
                state.in_flight -= 1

    return app


@pytest.fixture(scope="module")
def fake() -> Iterator[tuple[FakeServer, str]]:
    state = FakeServer()
    with ServerThread(create_fake_app(state), health_path=None, shutdown_timeout_s=4.0) as server:
        yield state, server.url


@pytest.fixture()
def server(fake: tuple[FakeServer, str]) -> FakeServer:
    state, _ = fake
    state.reset()
    return state


@pytest.fixture()
def policy(fake: tuple[FakeServer, str]) -> Iterator[OpenAIPolicy]:
    _, url = fake
    with OpenAIPolicy(f"{url}/v1", MODEL, max_concurrency=8, timeout_s=5.0, retries=2, backoff_s=0.01) as made:
        yield made


def ask(user: str, *partial: str) -> PolicyRequest:
    messages = [SYSTEM, {"role": "user", "content": user}]
    messages += [{"role": "assistant", "content": text} for text in partial]
    return PolicyRequest(messages=tuple(messages))


def test_batch_runs_concurrently_within_the_limit(server: FakeServer, policy: OpenAIPolicy) -> None:
    server.delay_s = 0.1
    requests = [ask(f"question {index}") for index in range(20)]
    started = time.monotonic()
    results = policy.generate(requests, SamplingParams())
    elapsed = time.monotonic() - started

    assert len(server.bodies) == 20
    assert 1 < server.max_in_flight <= policy.max_concurrency
    assert elapsed < 20 * 0.1 / 2  # far from one at a time
    for index, completions in enumerate(results):  # request order is kept
        assert len(completions) == 1
        assert completions[0].error is None
        assert completions[0].text.startswith(f"Thought: answering question {index} ")


def test_request_body_fields(server: FakeServer, policy: OpenAIPolicy) -> None:
    params = SamplingParams(temperature=0.4, top_p=0.8, max_new_tokens=321, n=2, seed=7)
    policy.generate([ask("fields")], params)
    (body,) = server.bodies
    assert body == {
        "model": MODEL,
        "messages": [SYSTEM, {"role": "user", "content": "fields"}],
        "n": 2,
        "temperature": 0.4,
        "top_p": 0.8,
        "max_tokens": 321,
        "stop": [END_CODE, "Observation:"],
        "seed": 7,
    }

    server.reset()
    policy.generate([ask("no seed")], SamplingParams())
    assert "seed" not in server.bodies[0]
    assert "continue_final_message" not in server.bodies[0]


def test_n_choices_and_end_code_restored(server: FakeServer, policy: OpenAIPolicy) -> None:
    (completions,) = policy.generate([ask("three")], SamplingParams(n=3, temperature=0.4))
    assert len(completions) == 3
    for index, completion in enumerate(completions):
        assert completion.text == f"Thought: answering three (sample {index})\n```py\nprint({index})\n```{END_CODE}"
        assert completion.finish_reason == "stop"


def test_which_stop_fired_decides_the_restore(server: FakeServer, policy: OpenAIPolicy) -> None:
    code = "Thought: t\n```py\nx = 1\n```"
    server.scripts["stops"] = Script(
        choices=[
            {"index": 0, "message": {"content": code}, "finish_reason": "stop", "stop_reason": "Observation:"},
            {"index": 1, "message": {"content": "Final words"}, "finish_reason": "stop", "stop_reason": None},
            {"index": 2, "message": {"content": code}, "finish_reason": "length", "stop_reason": None},
            {"index": 3, "message": {"content": code}, "finish_reason": "stop", "matched_stop": END_CODE},  # SGLang
            {"index": 4, "message": {"content": code}, "finish_reason": "stop"},  # reports no stop: inferred
            {"index": 5, "message": {"content": "no code"}, "finish_reason": "stop"},
        ]
    )
    (completions,) = policy.generate([ask("stops")], SamplingParams(n=6))
    assert [completion.text for completion in completions] == [
        code,
        "Final words",
        code,
        code + END_CODE,
        code + END_CODE,
        "no code",
    ]
    assert [completion.finish_reason for completion in completions] == [
        "stop",
        "stop",
        "length",
        "stop",
        "stop",
        "stop",
    ]


def test_first_thought_prefix_continues_the_assistant_message(server: FakeServer, policy: OpenAIPolicy) -> None:
    prefix = "Thought: I will first search for"
    results = policy.generate([ask("ftp", prefix), ask("plain")], SamplingParams())
    assert all(completions[0].error is None for completions in results)
    (body,) = server.bodies_for("ftp")
    assert body["continue_final_message"] is True
    assert body["add_generation_prompt"] is False
    assert body["messages"][-1] == {"role": "assistant", "content": prefix}
    (plain,) = server.bodies_for("plain")
    assert "continue_final_message" not in plain and "add_generation_prompt" not in plain


def test_server_without_continuation_names_the_option(server: FakeServer, policy: OpenAIPolicy) -> None:
    server.reject_continue = True
    ftp, plain = policy.generate([ask("ftp", "Thought: partial"), ask("plain")], SamplingParams())
    assert plain[0].error is None
    assert ftp[0].finish_reason == "error"
    assert "HTTP 400" in ftp[0].error and "continue_final_message" in ftp[0].error
    assert "first-thought prefix" in ftp[0].error
    assert server.attempts["ftp"] == 1  # a 400 is not retried


@pytest.mark.parametrize("status", [500, 429])
def test_transient_failures_are_retried(server: FakeServer, policy: OpenAIPolicy, status: int) -> None:
    server.scripts["flaky"] = Script(fail_status=status, fail_times=2)
    flaky, fine = policy.generate([ask("flaky"), ask("fine")], SamplingParams())
    assert flaky[0].error is None and flaky[0].text.startswith("Thought: answering flaky")
    assert server.attempts["flaky"] == 3
    assert fine[0].error is None and server.attempts["fine"] == 1


def test_persistent_500_fails_only_that_request(server: FakeServer, policy: OpenAIPolicy) -> None:
    server.scripts["broken"] = Script(fail_status=500, fail_times=99)
    results = policy.generate([ask("a"), ask("broken"), ask("b")], SamplingParams(n=2))
    broken = results[1]
    assert len(broken) == 2
    for completion in broken:
        assert completion.finish_reason == "error" and completion.text == ""
        assert "HTTP 500" in completion.error and "scripted failure 3" in completion.error
        assert "after 3 attempts" in completion.error and policy.name in completion.error
    assert server.attempts["broken"] == 3
    assert all(completion.error is None for index in (0, 2) for completion in results[index])


def test_400_fails_only_that_request_without_retry(server: FakeServer, policy: OpenAIPolicy) -> None:
    server.scripts["bad"] = Script(fail_status=400, fail_times=99)
    good, bad = policy.generate([ask("good"), ask("bad")], SamplingParams())
    assert good[0].error is None
    assert bad[0].finish_reason == "error"
    assert "HTTP 400: scripted failure 1 (after 1 attempt)" in bad[0].error
    assert server.attempts["bad"] == 1


def test_connection_closed_mid_response_is_retried(server: FakeServer, policy: OpenAIPolicy) -> None:
    server.scripts["dropped"] = Script(close_times=1)
    ((completion,),) = policy.generate([ask("dropped")], SamplingParams())
    assert completion.error is None and completion.text.endswith(END_CODE)
    assert server.attempts["dropped"] == 2

    server.scripts["always dropped"] = Script(close_times=99)
    ((completion,),) = policy.generate([ask("always dropped")], SamplingParams())
    assert completion.finish_reason == "error" and "network error" in completion.error


def test_timeout_is_bounded(fake: tuple[FakeServer, str], server: FakeServer) -> None:
    _, url = fake
    server.scripts["slow"] = Script(sleep_s=1.0)
    with OpenAIPolicy(url, MODEL, timeout_s=0.2, retries=1, backoff_s=0.01) as policy:
        started = time.monotonic()
        slow, quick = policy.generate([ask("slow"), ask("quick")], SamplingParams())
        elapsed = time.monotonic() - started
    assert quick[0].error is None
    assert slow[0].finish_reason == "error"
    assert "timed out after 0.2 s" in slow[0].error and "after 2 attempts" in slow[0].error
    assert elapsed < 1.5  # two attempts of 0.2 s and a short backoff; the server would take 2 s
    assert server.attempts["slow"] == 2


def test_unreachable_server_fails_every_request() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with OpenAIPolicy(f"http://127.0.0.1:{port}/v1", MODEL, retries=1, backoff_s=0.01) as policy:
        results = policy.generate([ask("a"), ask("b")], SamplingParams(n=2))
    assert [len(completions) for completions in results] == [2, 2]
    for completions in results:
        for completion in completions:
            assert completion.finish_reason == "error"
            assert "network error" in completion.error or "connect" in completion.error.lower()


def test_token_counts_from_usage(server: FakeServer, policy: OpenAIPolicy) -> None:
    server.scripts["counted"] = Script(usage={"prompt_tokens": 42, "completion_tokens": 17, "total_tokens": 59})
    ((completion,),) = policy.generate([ask("counted")], SamplingParams())
    assert (completion.prompt_tokens, completion.completion_tokens) == (42, 17)

    # n > 1 without per-choice tokens: the total is split in proportion to the texts' lengths.
    long_text, short_text = "x" * 300, "y" * 100
    server.scripts["split"] = Script(
        choices=[
            {"index": 0, "message": {"content": long_text}, "finish_reason": "length"},
            {"index": 1, "message": {"content": short_text}, "finish_reason": "length"},
        ],
        usage={"prompt_tokens": 10, "completion_tokens": 41},
    )
    (completions,) = policy.generate([ask("split")], SamplingParams(n=2))
    assert [completion.prompt_tokens for completion in completions] == [10, 10]
    assert [completion.completion_tokens for completion in completions] == [31, 10]


def test_logprobs_and_token_ids(fake: tuple[FakeServer, str], server: FakeServer) -> None:
    _, url = fake
    content = [
        {"token": "token_id:11", "logprob": -0.5, "top_logprobs": []},
        {"token": "token_id:12", "logprob": -1.5, "top_logprobs": []},
    ]
    server.scripts["vllm new"] = Script(  # vLLM >= 0.10.2 with return_token_ids
        choices=[
            {
                "index": 0,
                "message": {"content": "Hi"},
                "logprobs": {"content": content},
                "finish_reason": "stop",
                "stop_reason": None,
                "token_ids": [11, 12, 13],
            }
        ],
        extra={"prompt_token_ids": [1, 2, 3, 4]},
    )
    server.scripts["vllm old"] = Script(  # older vLLM: ids only in the logprobs' tokens
        choices=[{"index": 0, "message": {"content": "Hi"}, "logprobs": {"content": content}, "finish_reason": "stop"}]
    )
    with OpenAIPolicy(url, MODEL, logprobs=True, backoff_s=0.01) as policy:
        ((new,), (old,)) = policy.generate([ask("vllm new"), ask("vllm old")], SamplingParams())
    for body in server.bodies:
        assert body["logprobs"] is True
        assert body["return_tokens_as_token_ids"] is True and body["return_token_ids"] is True
    assert new.token_ids == (11, 12, 13) and new.completion_tokens == 3
    assert new.prompt_token_ids == (1, 2, 3, 4)
    assert new.logprobs == (-0.5, -1.5)
    assert old.token_ids == (11, 12) and old.logprobs == (-0.5, -1.5) and old.prompt_token_ids is None


def test_a_server_that_ignores_n_gets_one_request_per_candidate(fake: tuple[FakeServer, str], server: FakeServer) -> None:
    """Like `transformers serve`, which answers one choice whatever n asks for."""
    _, url = fake
    server.scripts["one"] = Script(choices=[_default_choice("one", 0)])
    with OpenAIPolicy(url, MODEL, extra_body={"top_k": 20}, backoff_s=0.01) as policy:
        with pytest.warns(UserWarning, match=r"answered 1 choice\(s\) when asked for n=3: it ignores n"):
            (completions,) = policy.generate([ask("one")], SamplingParams(n=3, seed=7, temperature=0.4))
        assert len(completions) == 3 and all(completion.error is None for completion in completions)
        bodies = server.bodies_for("one")
        assert [(body["n"], body["seed"]) for body in bodies] == [(3, 7), (1, 8), (1, 9)]
        assert all(body["top_k"] == 20 for body in bodies)
        server.bodies.clear()
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # said once per policy
            pair = policy.generate([ask("one"), ask("one")], SamplingParams(n=2, seed=7, temperature=0.4))
        assert [len(completions) for completions in pair] == [2, 2]
        assert sorted((body["n"], body["seed"]) for body in server.bodies) == [(1, 7), (1, 8), (1, 9), (1, 10)]


def test_identical_conversations_in_one_call_get_distinct_seeds(server: FakeServer, policy: OpenAIPolicy) -> None:
    policy.generate([ask("same"), ask("same"), ask("same")], SamplingParams(n=2, seed=100, temperature=1.0))
    assert sorted(body["seed"] for body in server.bodies_for("same")) == [100, 102, 104]
    server.bodies.clear()
    policy.generate([ask("same")], SamplingParams(temperature=1.0))
    assert "seed" not in server.bodies[0]


def test_a_reply_that_keeps_its_stop_string_is_cut_there(server: FakeServer, policy: OpenAIPolicy) -> None:
    """Like `transformers serve`: the stop string stays in the text, with the rest of the token that completed it
    and whatever the server generated until it noticed; no stop_reason."""
    code = "Thought: add.\n```py\nprint(1 + 1)\n```"
    kept = {"index": 0, "message": {"role": "assistant", "content": code + "<end_code>\nObservation: 2 (made up)"},
            "finish_reason": "stop"}
    server.scripts["kept"] = Script(choices=[kept])
    (completion,) = policy.generate([ask("kept")], SamplingParams(n=1))[0]
    assert completion.text == code + END_CODE and completion.finish_reason == "stop"
    cut_late = {"index": 0, "message": {"role": "assistant", "content": "Thought: x\nObservation: y and more"},
                "finish_reason": "length"}
    server.scripts["late"] = Script(choices=[cut_late])
    (completion,) = policy.generate([ask("late")], SamplingParams(n=1))[0]
    assert completion.text == "Thought: x\n" and completion.finish_reason == "stop"


def test_an_endpoint_given_as_the_base_url_is_refused() -> None:
    from agentdistill.errors import UserError

    for endpoint in ("completions", "models"):
        with pytest.raises(UserError, match=rf"ends in the /{endpoint} endpoint; give the API base instead, e.g. 'http://h:8000/v1'"):
            parse_openai_spec(f"openai:http://h:8000/v1/{endpoint}#m")
    assert OpenAIPolicy("http://h:8000/v1/chat/completions", "m").url == "http://h:8000/v1/chat/completions"


def test_malformed_answer_fails_that_request(server: FakeServer, policy: OpenAIPolicy) -> None:
    server.scripts["odd"] = Script(choices=[{"index": 0, "text": "a /v1/completions choice, not a chat one"}])
    odd, fine = policy.generate([ask("odd"), ask("fine")], SamplingParams())
    assert fine[0].error is None
    assert odd[0].finish_reason == "error" and "malformed response: KeyError" in odd[0].error
    assert server.attempts["odd"] == 1


def test_completions_from_response_abort_and_null_content() -> None:
    payload = {
        "choices": [
            {"index": 1, "message": {"content": None}, "finish_reason": "abort"},
            {"index": 0, "message": {"content": "ok"}, "finish_reason": "stop", "stop_reason": None},
        ]
    }
    first, second = completions_from_response(payload, SamplingParams(n=2))
    assert (first.text, first.finish_reason, first.error) == ("ok", "stop", None)
    assert second.text == "" and second.finish_reason == "error" and "abort" in second.error
    assert first.prompt_tokens == 0 and first.completion_tokens == 0  # no usage given


def test_name_url_spec_and_close(fake: tuple[FakeServer, str], server: FakeServer) -> None:
    assert parse_openai_spec(f"openai:http://host:8000/v1#{MODEL}") == ("http://host:8000/v1", MODEL)
    assert parse_openai_spec("openai:https://api.example.com/v1#gpt-4o") == ("https://api.example.com/v1", "gpt-4o")
    for bad in ("http://host:8000/v1#model", "openai:http://host:8000/v1", "openai:http://host:8000/v1#", "openai:#m"):
        with pytest.raises(ValueError):
            parse_openai_spec(bad)

    _, url = fake
    policy = OpenAIPolicy.from_spec(f"openai:{url}/v1#{MODEL}")
    assert policy.name == f"openai:{url}/v1#{MODEL}"
    assert policy.url == f"{url}/v1/chat/completions"
    assert OpenAIPolicy(url, MODEL).url == f"{url}/v1/chat/completions"
    assert OpenAIPolicy(f"{url}/v1/chat/completions", MODEL).url == f"{url}/v1/chat/completions"
    assert OpenAIPolicy("http://h:1/api/v2/", MODEL).url == "http://h:1/api/v2/chat/completions"
    assert policy.generate([], SamplingParams()) == []
    assert policy.generate([ask("before close")], SamplingParams())[0][0].error is None
    policy.close()
    policy.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        policy.generate([ask("after close")], SamplingParams())
    with pytest.raises(ValueError):
        OpenAIPolicy("ftp://host", MODEL)
    with pytest.raises(ValueError):
        OpenAIPolicy(url, MODEL, max_concurrency=0)


def test_api_key_header(fake: tuple[FakeServer, str], server: FakeServer, monkeypatch: pytest.MonkeyPatch) -> None:
    _, url = fake
    monkeypatch.setenv("OPENAI_API_KEY", "from-env")
    with OpenAIPolicy(url, MODEL) as from_env, OpenAIPolicy(url, MODEL, api_key="given") as given:
        from_env.generate([ask("env key")], SamplingParams())
        given.generate([ask("given key")], SamplingParams())
    monkeypatch.delenv("OPENAI_API_KEY")
    with OpenAIPolicy(url, MODEL) as local:
        local.generate([ask("no key")], SamplingParams())
        assert "EMPTY" not in repr(local) and "EMPTY" not in local.name
    assert server.authorizations == ["Bearer from-env", "Bearer given", "Bearer EMPTY"]
