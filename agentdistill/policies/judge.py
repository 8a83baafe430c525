"""An LLM judge for factual QA, built on any policy (the paper judged answers with gpt-4o-mini).

Exact match undercounts correct answers phrased differently ("the 44th president" for "Barack Obama");
a judge model decides equivalence instead. It plugs into the QA grader's hook:
``gym.make("AgentQA-HotpotQA-v0", reward="judge", judge=PolicyJudge(make_policy("openai:URL#MODEL")))``.
"""

from __future__ import annotations

import re
from typing import Sequence

from agentdistill.policies.base import Policy, PolicyRequest, SamplingParams

JUDGE_SYSTEM_PROMPT = (
    "You grade answers to questions. Given a question, the gold answer(s) and a predicted answer, decide "
    "whether the prediction means the same as a gold answer (paraphrases, aliases and extra detail that "
    "does not contradict it count as correct). Reply with one word: yes or no."
)

_VERDICT = re.compile(r"\b(yes|no)\b", re.IGNORECASE)


class PolicyJudge:
    """``judge(question, prediction, golds) -> 1.0 | 0.0`` asked of ``policy`` (greedy, short answers).

    A reply with neither "yes" nor "no", or a failed request, counts as incorrect (0.0): a grader must
    not reward what it could not check.
    """

    def __init__(self, policy: Policy, *, max_new_tokens: int = 8) -> None:
        self.policy = policy
        self.sampling = SamplingParams(temperature=0.0, max_new_tokens=max_new_tokens, stop=())

    def request(self, question: str, prediction: str, golds: Sequence[str]) -> PolicyRequest:
        """The conversation sent to the judge model."""
        gold_text = " | ".join(golds)
        user = f"Question: {question}\nGold answer(s): {gold_text}\nPredicted answer: {prediction}\nCorrect?"
        return PolicyRequest(messages=({"role": "system", "content": JUDGE_SYSTEM_PROMPT}, {"role": "user", "content": user}))

    def __call__(self, question: str, prediction: str, golds: Sequence[str]) -> float:
        completion = self.policy.generate([self.request(question, prediction, golds)], self.sampling)[0][0]
        if completion.finish_reason == "error":
            return 0.0
        verdict = _VERDICT.search(completion.text)
        return 1.0 if verdict and verdict.group(1).lower() == "yes" else 0.0
