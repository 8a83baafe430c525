"""Several replicas of one model behind one ``openai:URL1,URL2#MODEL`` policy: sticky routing per episode, and a
replica that dies mid-run costs retries on the other, not episodes. Two fake chat-completions servers on
127.0.0.1 (the fake of ``test_openai_policy``: no GPU or model here) stand in for two vLLM replicas."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from agentdistill.envs.tools.retrieval.server import ServerThread
from agentdistill.policies import make_policy
from agentdistill.policies.base import PolicyRequest, SamplingParams
from agentdistill.policies.openai import OpenAIPolicy, parse_openai_spec
from tests.policies.test_openai_policy import MODEL, SYSTEM, FakeServer, create_fake_app


def episode_request(task: int, turn: int) -> PolicyRequest:
    messages = [SYSTEM, {"role": "user", "content": f"task {task}"}]
    messages += [{"role": "assistant", "content": f"step {step}"} for step in range(turn)]
    return PolicyRequest(messages=tuple(messages), context={"env_id": "E", "task_id": f"t{task}", "task_index": task})


@pytest.fixture()
def replicas() -> Iterator[tuple[list[FakeServer], list[ServerThread]]]:
    states = [FakeServer(), FakeServer()]
    threads = [ServerThread(create_fake_app(state), health_path=None, shutdown_timeout_s=4.0) for state in states]
    for thread in threads:
        thread.__enter__()
    try:
        yield states, threads
    finally:
        for thread in threads:
            thread.__exit__(None, None, None)


def test_each_episode_stays_on_one_replica_and_the_episodes_spread(replicas: tuple[list[FakeServer], list[ServerThread]]) -> None:
    states, threads = replicas
    spec = f"openai:{threads[0].url}/v1,{threads[1].url}/v1#{MODEL}"
    assert parse_openai_spec(spec) == (f"{threads[0].url}/v1,{threads[1].url}/v1", MODEL)
    with make_policy(spec, timeout_s=5.0, retries=2, backoff_s=0.01) as policy:
        for turn in range(3):
            completions = policy.generate([episode_request(task, turn) for task in range(16)], SamplingParams())
            assert all(completion[0].error is None for completion in completions)
    served = [{body["messages"][1]["content"] for body in state.bodies} for state in states]
    assert served[0] and served[1], "both replicas got episodes"
    assert not served[0] & served[1], "no episode was split over the replicas"
    assert sum(len(state.bodies) for state in states) == 16 * 3


def test_a_replica_that_dies_costs_retries_not_episodes(replicas: tuple[list[FakeServer], list[ServerThread]]) -> None:
    states, threads = replicas
    with OpenAIPolicy(
        f"{threads[0].url}/v1,{threads[1].url}/v1", MODEL, timeout_s=5.0, retries=2, backoff_s=0.01,
        replica_cooldown_s=60.0,
    ) as policy:
        first = policy.generate([episode_request(task, 0) for task in range(12)], SamplingParams())
        on_first = {body["messages"][1]["content"] for body in states[0].bodies}
        threads[0].__exit__(None, None, None)  # replica 0 dies between two turns
        second = policy.generate([episode_request(task, 1) for task in range(12)], SamplingParams())
    assert on_first, "replica 0 had episodes before it died"
    assert all(completion[0].error is None for completion in [*first, *second])
    moved = {body["messages"][1]["content"] for body in states[1].bodies if len(body["messages"]) == 3}
    assert on_first <= moved, "the dead replica's episodes went on on the other one"


def test_a_replica_listed_twice_or_malformed_is_refused() -> None:
    with pytest.raises(ValueError, match="lists a replica twice"):
        OpenAIPolicy("http://127.0.0.1:1/v1,http://127.0.0.1:1/v1", MODEL)
    with pytest.raises(ValueError, match="invalid base_url"):
        parse_openai_spec(f"openai:http://127.0.0.1:1/v1,ftp://x#{MODEL}")
