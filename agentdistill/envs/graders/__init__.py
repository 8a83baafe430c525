"""Graders: turn an agent's final answer into a reward in [0, 1].

Every grader follows the :class:`Grader` protocol: ``grade`` gives the reward an env returns and every
metric it knows, for the env's ``info``, as a :class:`Grade`.

- :class:`QAGrader` grades short factual answers by SQuAD exact match, token F1, or an LLM-judge hook.
- :class:`MathGrader` grades math answers by equivalence (math-verify plus numeric tolerance), with
  every symbolic check bounded in time, in any thread.
"""

from __future__ import annotations

from agentdistill.envs.graders.base import Grade, Grader
from agentdistill.envs.graders.math import MathGrader, extract_answer, is_equivalent, normalize_math_answer
from agentdistill.envs.graders.qa import JudgeFn, QAGrader, QAMetric, exact_match, normalize_answer, token_f1

__all__ = [
    "Grade",
    "Grader",
    "JudgeFn",
    "MathGrader",
    "QAGrader",
    "QAMetric",
    "exact_match",
    "extract_answer",
    "is_equivalent",
    "normalize_answer",
    "normalize_math_answer",
    "token_f1",
]
