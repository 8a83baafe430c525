"""LLM judges: the prompt carries question, golds and prediction; the verdict drives the reward.

:class:`PolicyJudge` is tested with a keyword stand-in for the judge model; :class:`PaperJudge` against a
fake OpenAI-compatible server on 127.0.0.1 (``tests/policies/fake_judge.py``: gpt-4o-mini cannot be reached
from here), through the real HTTP policy, with the paper's prompt file from ``../shared/data``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from agentdistill.envs.paper.prompts import PaperPrompts
from agentdistill.envs.qa import AgentQAEnv
from agentdistill.errors import UserError
from agentdistill.policies.base import Completion, PolicyRequest, SamplingParams
from agentdistill.policies.judge import JudgeItem, PaperJudge, PolicyJudge, paper_response_format, read_verdict
from agentdistill.policies.openai import OpenAIPolicy
from tests.conftest import SHARED_DATA, code_action
from tests.policies.fake_judge import (
    JUDGE_MODEL,
    FakeJudge,
    judge_spec,
    paper_prompt,
    running_fake_judge,
    shared_prompts_dir,
    verdict_json,
)


class KeywordJudgeModel:
    """Stands in for a judge LLM (none runs here): says yes when the prediction shares a word with a gold."""

    name = "keyword-judge"

    def __init__(self) -> None:
        self.prompts: list[str] = []

    def generate(self, requests: Sequence[PolicyRequest], params: SamplingParams) -> list[list[Completion]]:
        replies = []
        for request in requests:
            prompt = request.messages[-1]["content"]
            self.prompts.append(prompt)
            gold = prompt.split("Gold answer(s): ")[1].split("\n")[0].lower().split()
            prediction = prompt.split("Predicted answer: ")[1].split("\n")[0].lower().split()
            replies.append([Completion(text="Yes." if set(gold) & set(prediction) else "No, it differs.")])
        return replies

    def close(self) -> None:
        pass


def test_judge_reward_in_a_real_env() -> None:
    model = KeywordJudgeModel()
    env = AgentQAEnv(
        "HotpotQA", data_path=str(SHARED_DATA / "hotpotqa/distractor_dev_500_hf.jsonl"), max_tasks=2,
        reward="judge", judge=PolicyJudge(model),
    )
    try:
        env.reset(options={"task_index": 0})
        _, reward, terminated, _, info = env.step(code_action('final_answer("the poet Levertov")'))
        assert terminated and reward == 1.0 and info["metrics"]["em"] == 0.0 and info["metrics"]["judge"] == 1.0
        assert "Question: Between Harvey Pekar and Denise Levertov who was born earlier?" in model.prompts[-1]
        env.reset(options={"task_index": 0})
        _, reward, *_ = env.step(code_action('final_answer("Pekar")'))
        assert reward == 0.0
    finally:
        env.close()


def test_failed_or_unclear_verdicts_count_as_incorrect() -> None:
    class Unclear(KeywordJudgeModel):
        def generate(self, requests, params):  # type: ignore[no-untyped-def]
            return [[Completion(text="maybe")], ] if len(requests) == 1 else []

    assert PolicyJudge(Unclear())("q", "a", ["a"]) == 0.0

    class Down(KeywordJudgeModel):
        def generate(self, requests, params):  # type: ignore[no-untyped-def]
            return [[Completion.failed("HTTP 503")]]

    assert PolicyJudge(Down())("q", "a", ["a"]) == 0.0


# --- the paper's judge, against a fake OpenAI-compatible server ---------------------------------------


@pytest.fixture(scope="module")
def judge_server() -> Iterator[tuple[FakeJudge, str]]:
    with running_fake_judge() as running:
        yield running


@pytest.fixture()
def server(judge_server: tuple[FakeJudge, str]) -> FakeJudge:
    state, _ = judge_server
    state.reset()
    return state


@pytest.fixture()
def http_judge_policy(judge_server: tuple[FakeJudge, str]) -> Iterator[OpenAIPolicy]:
    """The judge model's client, retrying a failed request once (quickly) by itself."""
    _, url = judge_server
    with OpenAIPolicy(url, JUDGE_MODEL, timeout_s=5.0, retries=1, backoff_s=0.01, max_backoff_s=0.01) as policy:
        yield policy


class Recording:
    """The real HTTP policy, noting the size of every batch the judge hands it."""

    def __init__(self, policy: OpenAIPolicy) -> None:
        self.policy, self.name, self.batches = policy, policy.name, []

    def generate(self, requests: Sequence[PolicyRequest], params: SamplingParams) -> list[list[Completion]]:
        self.batches.append(len(requests))
        return self.policy.generate(requests, params)

    def close(self) -> None:
        pass


def _paper_judge(policy: Any, attempts: int = 3) -> PaperJudge:
    return PaperJudge(policy, PaperPrompts.load(shared_prompts_dir()), attempts=attempts)


def test_the_paper_judge_sends_the_papers_prompt_as_one_user_message(judge_server: tuple[FakeJudge, str],
                                                                      server: FakeJudge) -> None:
    _, url = judge_server
    question = "Between Harvey Pekar and Denise Levertov who was born earlier?"
    with PaperJudge.from_spec(judge_spec(url), shared_prompts_dir()) as judge:
        verdicts = judge.judge([JudgeItem(question, "It was Denise Levertov, born 1923.", "Denise Levertov"),
                                JudgeItem(question, "Harvey Pekar", "Denise Levertov")])
    assert [(verdict.score, verdict.failed) for verdict in verdicts] == [(1, False), (0, False)]
    assert verdicts[0].explanation == "gold found in the prediction" and verdicts[0].attempts == 1
    expected = paper_prompt(question, "It was Denise Levertov, born 1923.", "Denise Levertov")
    (body,) = [sent for sent in server.bodies if sent["messages"][0]["content"] == expected]  # sent concurrently
    assert body["messages"] == [{"role": "user", "content": expected}]
    assert body["model"] == JUDGE_MODEL and body["n"] == 1 and "stop" not in body
    assert (body["temperature"], body["top_p"]) == (1.0, 1.0)  # the OpenAI API's defaults: the paper sets none
    assert body["response_format"] == paper_response_format()
    assert body["response_format"]["json_schema"]["schema"]["required"] == ["explanation", "score"]


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ('{"explanation": "same person", "score": 1}', (1, "same person")),
        ('```json\n{"explanation": "differs", "score": 0}\n```', (0, "differs")),
        ('Here is my evaluation: {"explanation": "ok", "score": "1"} Hope it helps.', (1, "ok")),
        ('{"note": {"x": 1}, "score": 0}', (0, "")),
        ('{"a": 1} then {"explanation": "second", "score": 1}', (1, "second")),
    ],
)
def test_a_verdict_is_read_from_json_bare_fenced_or_amid_text(reply: str, expected: tuple[int, str]) -> None:
    assert read_verdict(reply) == expected


@pytest.mark.parametrize(
    ("reply", "problem"),
    [
        ("Yes, they match.", "no JSON object with a 'score'"),
        ('{"explanation": "x", "score": 2}', "the score 2 is not 0 or 1"),
        ('{"explanation": "x", "score": true}', "the score True is not 0 or 1"),
        ('{"explanation": "x", "score": "yes"}', "the score 'yes' is not 0 or 1"),
        ('{"explanation": "cut off", "sco', "no JSON object with a 'score'"),
    ],
)
def test_a_reply_without_a_verdict_says_why(reply: str, problem: str) -> None:
    with pytest.raises(ValueError, match=re.escape(problem)):
        read_verdict(reply)


def test_bad_replies_and_failed_requests_are_retried_in_batches_then_counted_as_failures(
    server: FakeJudge, http_judge_policy: OpenAIPolicy
) -> None:
    server.scripts.update({
        "garbage once": ["I think they match!", '```json\n{"explanation": "fenced", "score": 1}\n```'],
        "garbage always": ["no idea"],
        "500 twice": [500, 500, verdict_json(1)],  # the client's own retry, then the judge's second attempt
        "500 always": [500],
    })
    recording = Recording(http_judge_policy)
    judge = _paper_judge(recording, attempts=3)
    items = [JudgeItem("q?", predicted, "gold") for predicted in ("gold", *server.scripts)]
    verdicts = judge.judge(items)
    good, once, always, flaky, down = verdicts
    assert (good.score, good.attempts, good.failed) == (1, 1, False)
    assert (once.score, once.explanation, once.attempts, once.failed) == (1, "fenced", 2, False)
    assert (flaky.score, flaky.attempts, flaky.failed) == (1, 2, False)
    assert (always.score, always.attempts) == (0, 3) and always.failure is not None
    assert "unreadable judge reply 'no idea': no JSON object with a 'score'" in always.failure
    assert (down.score, down.attempts) == (0, 3) and down.failure is not None
    assert "the judge request failed" in down.failure and "500" in down.failure
    assert recording.batches == [5, 4, 2], "each round asks every answer still without a verdict in one call"
    assert server.attempts == {"gold": 1, "garbage once": 2, "garbage always": 3, "500 twice": 3, "500 always": 6}


def test_a_judge_policy_that_raises_fails_its_answers_without_crashing() -> None:
    class Broken:
        name = "broken"

        def generate(self, requests: Sequence[PolicyRequest], params: SamplingParams) -> list[list[Completion]]:
            raise RuntimeError("CUDA out of memory")

        def close(self) -> None:
            pass

    verdicts = _paper_judge(Broken(), attempts=2).judge([JudgeItem("q", "a", "a")] * 3)
    assert all(verdict.score == 0 and verdict.attempts == 2 for verdict in verdicts)
    assert verdicts[0].failure == "the judge request failed: RuntimeError: CUDA out of memory"


def test_the_paper_judge_grades_a_real_env_through_the_qa_grader_hook(
    server: FakeJudge, http_judge_policy: OpenAIPolicy
) -> None:
    env = AgentQAEnv(
        "HotpotQA", data_path=str(SHARED_DATA / "hotpotqa/distractor_dev_500_hf.jsonl"), max_tasks=1,
        reward="judge", judge=_paper_judge(http_judge_policy),
    )
    try:
        env.reset(options={"task_index": 0})
        _, reward, terminated, _, info = env.step(code_action('final_answer("the poet Denise Levertov")'))
    finally:
        env.close()
    assert terminated and reward == 1.0 and info["metrics"] == {"em": 0.0, "f1": 0.8, "judge": 1.0}
    assert server.prompts() == [paper_prompt("Between Harvey Pekar and Denise Levertov who was born earlier?",
                                             "the poet Denise Levertov", "Denise Levertov")]


def test_a_judge_without_its_prompts_or_with_a_bad_spec_is_a_one_line_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"needs prompts_dir=DIR \(--prompts-dir\).*judge_prompt\.txt"):
        PaperJudge.from_spec("openai:http://127.0.0.1:9/v1#gpt-4o-mini", None)
    with pytest.raises(UserError, match=r"lacks code_agent\.yaml, teacher_model\.yaml, judge_prompt\.txt"):
        PaperJudge.from_spec("openai:http://127.0.0.1:9/v1#gpt-4o-mini", tmp_path)
    with pytest.raises(UserError, match=r"judge 'gpt-4o-mini': unknown policy"):
        PaperJudge.from_spec("gpt-4o-mini", shared_prompts_dir())
    with pytest.raises(ValueError, match="attempts must be a positive int"):
        _paper_judge(KeywordJudgeModel(), attempts=0)
