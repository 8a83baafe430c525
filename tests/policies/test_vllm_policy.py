"""Tests of :mod:`agentdistill.policies.vllm` that run without vLLM (which needs a CUDA machine).

The output mapping is tested with stand-in objects shaped like vLLM's ``RequestOutput``,
``CompletionOutput`` and ``Logprob`` (only the attributes the mapping reads), and the request grouping
with a stand-in engine put in place of the vLLM import; neither says anything about vLLM itself.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from agentdistill.envs.codeact import END_CODE
from agentdistill.policies import vllm as vllm_policy
from agentdistill.policies.base import PolicyRequest, SamplingParams
from agentdistill.policies.vllm import VLLMPolicy, _completions_from_output


@dataclass
class Logprob:  # stand-in for vllm.logprobs.Logprob
    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


@dataclass
class CompletionOutput:  # stand-in for vllm.outputs.CompletionOutput
    index: int
    text: str
    token_ids: list[int]
    cumulative_logprob: float | None = None
    logprobs: list[dict[int, Logprob]] | None = None
    finish_reason: str | None = "stop"
    stop_reason: int | str | None = None


@dataclass
class RequestOutput:  # stand-in for vllm.outputs.RequestOutput
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput]
    request_id: str = "0"
    prompt: str | None = None
    finished: bool = True


CODE = "Thought: t\n```py\nprint(1)\n```"


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")
def test_without_vllm_construction_says_how_to_install() -> None:
    with pytest.raises(ImportError, match=r"pip install 'agentdistill\[vllm\]'"):
        VLLMPolicy("Qwen/Qwen2.5-0.5B-Instruct")


def test_output_mapping() -> None:
    output = RequestOutput(
        prompt_token_ids=[1, 2, 3],
        outputs=[
            CompletionOutput(1, CODE, [7, 8], stop_reason="Observation:"),
            CompletionOutput(
                0,
                CODE,
                [4, 5, 6],
                cumulative_logprob=-0.6,
                logprobs=[{4: Logprob(-0.1)}, {5: Logprob(-0.2), 9: Logprob(-3.0)}, {6: Logprob(-0.3)}],
                stop_reason=END_CODE,
            ),
            CompletionOutput(2, "cut", [9], finish_reason="length"),
            CompletionOutput(3, "Final answer", [10], stop_reason=151645),  # a stop token id: no string
        ],
    )
    first, second, third, fourth = _completions_from_output(output, SamplingParams(n=4))
    assert first.text == CODE + END_CODE
    assert first.token_ids == (4, 5, 6) and first.logprobs == (-0.1, -0.2, -0.3)
    assert (first.prompt_tokens, first.completion_tokens, first.prompt_token_ids) == (3, 3, (1, 2, 3))
    assert second.text == CODE and second.logprobs is None and second.completion_tokens == 2
    assert (third.text, third.finish_reason) == ("cut", "length")
    assert (fourth.text, fourth.finish_reason, fourth.error) == ("Final answer", "stop", None)


def test_output_mapping_abort_and_missing_samples() -> None:
    output = RequestOutput(prompt_token_ids=[1], outputs=[CompletionOutput(0, "par", [3], finish_reason="abort")])
    aborted, missing = _completions_from_output(output, SamplingParams(n=2))
    assert aborted.finish_reason == "error" and "abort" in aborted.error and aborted.text == "par"
    assert missing.finish_reason == "error" and "1 of 2" in missing.error


@dataclass
class FakeLLM:  # stand-in engine: records calls, answers n samples per conversation
    model: str
    options: dict[str, Any]
    calls: list[dict[str, Any]] = field(default_factory=list)
    fail_on: str | None = None

    def chat(self, conversations: list[list[dict[str, str]]], **kwargs: Any) -> list[RequestOutput]:
        self.calls.append({"conversations": conversations, **kwargs})
        if self.fail_on is not None and any(self.fail_on in c[-1]["content"] for c in conversations):
            raise ValueError("prompt is longer than max_model_len")
        sampling = kwargs["sampling_params"]  # one per conversation, as vLLM accepts them
        assert isinstance(sampling, list) and len(sampling) == len(conversations)
        return [
            RequestOutput(
                [0] * len(c),
                [CompletionOutput(i, f"re: {c[-1]['content']}", [1], stop_reason=END_CODE) for i in range(params.n)],
            )
            for c, params in zip(conversations, sampling)
        ]


@dataclass
class FakeSamplingParams:
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 16
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    logprobs: int | None = None


@pytest.fixture()
def fake_vllm(monkeypatch: pytest.MonkeyPatch) -> None:
    def LLM(model: str, **options: Any) -> FakeLLM:
        return FakeLLM(model, options)

    def LoRARequest(name: str, number: int, path: str) -> tuple[str, int, str]:
        return (name, number, path)

    fake = vllm_policy._VLLM(LLM=LLM, SamplingParams=FakeSamplingParams, LoRARequest=LoRARequest)
    monkeypatch.setattr(vllm_policy, "_import_vllm", lambda: fake)


def ask(user: str, *partial: str) -> PolicyRequest:
    messages = [{"role": "user", "content": user}] + [{"role": "assistant", "content": text} for text in partial]
    return PolicyRequest(messages=tuple(messages))


def test_grouping_flags_and_order_with_a_stand_in_engine(fake_vllm: None, tmp_path: Path) -> None:
    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 24}))
    policy = VLLMPolicy("base-model", lora=tmp_path, max_model_len=4096, logprobs=True, dtype="bfloat16")
    llm = policy._llm
    assert llm.options == {
        "tensor_parallel_size": 1,
        "gpu_memory_utilization": 0.9,
        "max_model_len": 4096,
        "enable_lora": True,
        "max_lora_rank": 32,
        "dtype": "bfloat16",
    }
    assert policy.name == f"vllm:base-model@{tmp_path}"

    requests = [ask("a"), ask("b", "Thought: partial"), ask("c")]
    results = policy.generate(requests, SamplingParams(seed=3, max_new_tokens=99))
    assert [completions[0].text for completions in results] == [
        f"re: {x}{END_CODE}" for x in ("a", "Thought: partial", "c")
    ]
    fresh, continued = llm.calls
    assert (fresh["add_generation_prompt"], fresh["continue_final_message"]) == (True, False)
    assert (continued["add_generation_prompt"], continued["continue_final_message"]) == (False, True)
    assert len(fresh["conversations"]) == 2 and continued["conversations"][0][-1]["role"] == "assistant"
    assert fresh["lora_request"] == ("adapter", 1, str(tmp_path))
    sampling = fresh["sampling_params"][0]
    assert (sampling.seed, sampling.max_tokens, sampling.logprobs, sampling.stop) == (
        3,
        99,
        0,
        [END_CODE, "Observation:"],
    )
    # per-request seeds: request i of the call samples with seed + i * n (a, then c; b continued)
    assert [params.seed for params in fresh["sampling_params"]] == [3, 5]
    assert [params.seed for params in continued["sampling_params"]] == [4]

    policy.close()
    with pytest.raises(RuntimeError, match="closed"):
        policy.generate(requests, SamplingParams())


def test_a_failing_request_fails_alone(fake_vllm: None) -> None:
    policy = VLLMPolicy("base-model")
    policy._llm.fail_on = "too long"
    good, bad = policy.generate([ask("fine"), ask("too long")], SamplingParams(n=2))
    assert [completion.text for completion in good] == [f"re: fine{END_CODE}"] * 2
    assert len(policy._llm.calls) == 3  # the batch, then each conversation alone
    assert [completion.finish_reason for completion in bad] == ["error", "error"]
    assert "max_model_len" in bad[0].error


@dataclass
class FakeEngineWithGenerate(FakeLLM):  # stand-in for TRL's colocated engine: token-id prompts too
    def generate(self, prompts: list[dict[str, list[int]]], **kwargs: Any) -> list[RequestOutput]:
        self.calls.append({"prompts": prompts, **kwargs})
        return [
            RequestOutput(p["prompt_token_ids"], [CompletionOutput(i, "t", [len(p["prompt_token_ids"])]) for i in range(s.n)])
            for p, s in zip(prompts, kwargs["sampling_params"])
        ]

    shut_down: bool = False

    @property
    def llm_engine(self) -> FakeEngineWithGenerate:  # where VLLMPolicy.close looks for shutdown()
        return self

    def shutdown(self) -> None:
        self.shut_down = True


def test_from_engine_generates_from_token_ids_and_leaves_the_engine_running(fake_vllm: None) -> None:
    engine = FakeEngineWithGenerate("trl-colocated", {})
    policy = VLLMPolicy.from_engine(engine, tokenizer=object(), name="vllm:grpo")
    by_ids = PolicyRequest(messages=({"role": "user", "content": "q"},), prompt_token_ids=(5, 6, 7))
    results = policy.generate([ask("hello"), by_ids], SamplingParams(n=2))
    assert [call.get("prompts") for call in engine.calls if "prompts" in call] == [[{"prompt_token_ids": [5, 6, 7]}]]
    assert results[0][0].text.startswith("re: hello")  # rendered by the engine's chat
    assert [c.prompt_token_ids for c in results[1]] == [(5, 6, 7)] * 2 and results[1][0].token_ids == (3,)
    assert policy.prompt_ids(by_ids) == [5, 6, 7]
    policy.close()
    assert not engine.shut_down, "an engine given to from_engine belongs to its owner"


def test_a_greedy_request_for_n_samples_is_decoded_once_and_repeated(fake_vllm: None) -> None:
    policy = VLLMPolicy("base-model")
    (completions,) = policy.generate([ask("a")], SamplingParams(n=4, temperature=0.0))
    assert [c.text for c in completions] == [f"re: a{END_CODE}"] * 4
    assert [params.n for params in policy._llm.calls[0]["sampling_params"]] == [1]


def test_sampling_settings_vllm_refuses_fail_the_requests_not_the_caller(fake_vllm: None, monkeypatch: pytest.MonkeyPatch) -> None:
    def refusing(**values: Any) -> FakeSamplingParams:
        if values["temperature"] > 2:
            raise ValueError(f"temperature must be in [0, 2], got {values['temperature']}")
        return FakeSamplingParams(**values)

    policy = VLLMPolicy("base-model")
    monkeypatch.setattr(policy, "_vllm", vllm_policy._VLLM(LLM=None, SamplingParams=refusing, LoRARequest=None))
    results = policy.generate([ask("a"), ask("b")], SamplingParams(n=2, temperature=3.0))
    assert [[c.finish_reason for c in completions] for completions in results] == [["error"] * 2] * 2
    assert "invalid sampling settings: temperature must be in [0, 2], got 3.0" in results[0][0].error
    assert policy._llm.calls == []
