"""Grading of short factual answers (HotpotQA, MuSiQue, 2Wiki, Bamboogle).

The metrics follow the SQuAD / HotpotQA evaluation scripts so that numbers are comparable with
published results: answers are compared after :func:`normalize_answer`, exact match is 0/1, and token
F1 gives partial credit. A task's aliases count as gold answers too, and every metric takes the best
score over them.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from typing import Callable, Literal, Sequence, get_args

from agentdistill.envs.graders.base import Grade
from agentdistill.envs.tasks import Task

__all__ = ["JudgeFn", "QAGrader", "QAMetric", "exact_match", "normalize_answer", "token_f1"]

JudgeFn = Callable[[str, str, Sequence[str]], float]
"""An answer judge: ``(question, prediction, golds) -> score in [0, 1]`` (e.g. an LLM judge)."""

QAMetric = Literal["em", "f1", "judge"]

_METRICS: tuple[str, ...] = get_args(QAMetric)
_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(?:a|an|the)\b")
_CLOSED_CLASS = frozenset({"yes", "no", "noanswer"})
"""Answers that a partial token overlap must not reward (HotpotQA's rule)."""


def normalize_answer(text: str) -> str:
    """Canonical form of an answer for comparison.

    Lower-cases, drops ASCII punctuation, drops the articles "a", "an" and "the" and squeezes
    whitespace, so that "The Eiffel Tower." and "eiffel tower" compare equal. This is the SQuAD
    normalisation; keeping to it exactly keeps scores comparable with published numbers.
    """
    lowered = text.lower()
    without_punctuation = "".join(char for char in lowered if char not in _PUNCTUATION)
    without_articles = _ARTICLES.sub(" ", without_punctuation)
    return " ".join(without_articles.split())


def exact_match(prediction: str, golds: Sequence[str]) -> float:
    """1.0 when the normalised prediction equals some normalised gold answer, else 0.0."""
    predicted = normalize_answer(prediction)
    return max((float(predicted == normalize_answer(gold)) for gold in golds), default=0.0)


def token_f1(prediction: str, golds: Sequence[str]) -> float:
    """Best token-level F1 between the prediction and any gold answer (0.0 with no golds)."""
    predicted = normalize_answer(prediction)
    return max((_single_f1(predicted, normalize_answer(gold)) for gold in golds), default=0.0)


def _single_f1(predicted: str, gold: str) -> float:
    """F1 of the bags of tokens of two normalised answers.

    A yes/no (or "noanswer") answer is either right or wrong: sharing no tokens with a
    different answer is what the generic formula would give anyway, but "no" against "no way" must not
    earn partial credit, so a mismatch involving one of them scores 0. When either side has no tokens
    at all, the score is whether both are empty (the SQuAD v2 convention), rather than a division by zero.
    """
    if predicted != gold and (predicted in _CLOSED_CLASS or gold in _CLOSED_CLASS):
        return 0.0
    predicted_tokens = predicted.split()
    gold_tokens = gold.split()
    if not predicted_tokens or not gold_tokens:
        return float(predicted_tokens == gold_tokens)
    overlap = sum((Counter(predicted_tokens) & Counter(gold_tokens)).values())
    if overlap == 0:
        return 0.0
    precision = overlap / len(predicted_tokens)
    recall = overlap / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


class QAGrader:
    """Rewards a QA answer by exact match, token F1 or an external judge.

    Args:
        metric: which metric :meth:`grade` returns as the reward: ``"em"``, ``"f1"`` or ``"judge"``.
        judge: the hook ``(question, prediction, golds) -> score`` that ``"judge"`` calls; when it is
            given with another metric, :meth:`details` still reports its score.

    Raises:
        ValueError: for an unknown metric, or for ``metric="judge"`` without a ``judge``.
    """

    def __init__(self, metric: QAMetric = "em", judge: JudgeFn | None = None) -> None:
        if metric not in _METRICS:
            raise ValueError(f"unknown QA metric {metric!r}; expected one of {', '.join(map(repr, _METRICS))}")
        if metric == "judge" and judge is None:
            raise ValueError('metric="judge" needs a judge: pass judge=fn, where fn(question, prediction, golds) '
                             "returns a score in [0, 1]")
        self.metric: QAMetric = metric
        self.judge = judge

    def grade(self, prediction: str, task: Task) -> Grade:
        """EM and F1 (and the judge's score when a judge is set) against ``task.gold_answers``; the
        reward is the chosen metric. The judge is called once per answer."""
        metrics = {
            "em": exact_match(prediction, task.gold_answers),
            "f1": token_f1(prediction, task.gold_answers),
        }
        if self.judge is not None:
            metrics["judge"] = self._judge_score(prediction, task)
        return Grade(score=metrics[self.metric], metrics=metrics)

    def _judge_score(self, prediction: str, task: Task) -> float:
        """The judge's score, checked to be a reward: a judge bug must surface, not be clipped."""
        assert self.judge is not None
        value = float(self.judge(task.question, prediction, task.gold_answers))
        if not (math.isfinite(value) and 0.0 <= value <= 1.0):
            raise ValueError(f"the judge returned {value!r}; a judge score must lie in [0, 1]")
        return value

    def __repr__(self) -> str:
        return f"QAGrader(metric={self.metric!r}, judge={self.judge!r})"
