"""The LLM-judge hook: the prompt carries question, golds and prediction; the verdict drives the reward."""

from __future__ import annotations

from typing import Sequence

from agentdistill.envs.qa import AgentQAEnv
from agentdistill.policies.base import Completion, PolicyRequest, SamplingParams
from agentdistill.policies.judge import PolicyJudge
from tests.conftest import SHARED_DATA, code_action


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
