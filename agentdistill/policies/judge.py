"""LLM judges for factual QA, built on any policy.

Exact match undercounts correct answers phrased differently ("the 44th president" for "Barack Obama");
a judge model decides equivalence instead. Two judges share the QA grader's hook
(``judge(question, prediction, golds) -> score``):

- :class:`PolicyJudge`, this package's own yes/no prompt:
  ``gym.make("AgentQA-HotpotQA-v0", reward="judge", judge=PolicyJudge(make_policy("openai:URL#MODEL")))``.
- :class:`PaperJudge`, the judge of Kang et al.'s tables, asked exactly as their ``score_answers.py`` asks
  gpt-4o-mini: the prompt of ``judge_prompt.txt`` (read from the user's ``prompts_dir``) as one user
  message, a JSON reply ``{explanation, score}``. It also judges many answers in one batched policy call
  (:meth:`PaperJudge.judge`), which is how :mod:`agentdistill.rollouts.rescore` and ``eval --judge`` use it,
  and it keeps the explanation and the reason a verdict could not be had.

A judge must not crash a scoring run that took hours to produce, nor reward what it could not check: a
reply that holds no readable verdict, or a request that failed, is asked again a few times and then
scores 0 as a *failure*, which the callers count and report.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

from agentdistill.envs.paper.prompts import PaperPrompts
from agentdistill.errors import UserError
from agentdistill.policies.base import Completion, Policy, PolicyRequest, SamplingParams

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


# --- the paper's judge -------------------------------------------------------------------------------

DEFAULT_JUDGE_ATTEMPTS = 3
"""Requests per answer before it counts as a judge failure (each HTTP request is itself retried by an HTTP
policy on connection errors and 5xx; these attempts also cover replies that hold no verdict)."""


def paper_judge_sampling() -> SamplingParams:
    """How the paper's judge samples: it sets no temperature, so the OpenAI API's defaults apply
    (temperature 1, top-p 1); no stop strings, so the JSON object is never cut. The paper sets no token
    limit either; 1,024 is far more than a verdict takes and bounds a judge that rambles."""
    return SamplingParams(temperature=1.0, top_p=1.0, max_new_tokens=1024, stop=())


def paper_response_format() -> dict[str, Any]:
    """The ``response_format`` the paper's request carries: OpenAI structured outputs for its pydantic
    model ``ResponseFormat(explanation: str, score: int)``, as the OpenAI SDK's ``parse`` sends it."""
    return {
        "type": "json_schema",
        "json_schema": {
            "name": "ResponseFormat",
            "strict": True,
            "schema": {
                "type": "object",
                "title": "ResponseFormat",
                "properties": {
                    "explanation": {"title": "Explanation", "type": "string"},
                    "score": {"title": "Score", "type": "integer"},
                },
                "required": ["explanation", "score"],
                "additionalProperties": False,
            },
        },
    }


@dataclass(frozen=True)
class JudgeItem:
    """One answer to judge: the raw question (without any instruction), the answer given, the gold answer."""

    question: str
    predicted: str
    gold: str


@dataclass(frozen=True)
class Verdict:
    """The judge's decision on one answer.

    ``score`` is 0 or 1; ``explanation`` is the judge's own text; ``attempts`` counts the requests made;
    ``failure`` says why no verdict could be read after every attempt (``score`` is then 0).
    """

    score: int
    explanation: str
    attempts: int
    failure: str | None = None

    @property
    def failed(self) -> bool:
        return self.failure is not None


def read_verdict(text: str) -> tuple[int, str]:
    """``(score, explanation)`` from a judge's reply: the first JSON object in it that has a ``score``,
    bare, inside a code fence or amid other text; the score may be the number 0 or 1 or the string
    ``"0"`` or ``"1"``. Raises ``ValueError`` saying what is wrong with any other reply."""
    found = next((candidate for candidate in _json_objects(text) if "score" in candidate), None)
    if found is None:
        raise ValueError("no JSON object with a 'score' field in the reply")
    explanation = found.get("explanation")
    return _score(found["score"]), "" if explanation is None else str(explanation)


def _json_objects(text: str) -> Iterator[dict[str, Any]]:
    """Every JSON object that starts at some ``{`` of ``text``, in order of position."""
    decoder = json.JSONDecoder()
    position = text.find("{")
    while position != -1:
        try:
            value, _ = decoder.raw_decode(text, position)
        except ValueError:
            value = None
        if isinstance(value, dict):
            yield value
        position = text.find("{", position + 1)


def _score(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value in (0, 1):
        return value
    if isinstance(value, str) and value.strip() in ("0", "1"):
        return int(value.strip())
    raise ValueError(f"the score {value!r} is not 0 or 1")


class PaperJudge:
    """The paper's LLM judge for factual QA, asked through any policy.

    Args:
        policy: the judge model (the paper: gpt-4o-mini through the OpenAI API; any
            :class:`~agentdistill.policies.base.Policy`, e.g. ``make_policy("openai:URL#MODEL")``).
        prompts: the paper's prompt files; the judge uses ``judge_prompt.txt``.
        attempts: requests per answer at most: one whose reply held no verdict, or whose request failed,
            is asked again until it has a verdict or has used them all.
        sampling: how the judge samples (default :func:`paper_judge_sampling`).
        owns_policy: :meth:`close` closes ``policy`` too (set by :meth:`from_spec`, which built it).
    """

    def __init__(
        self,
        policy: Policy,
        prompts: PaperPrompts,
        *,
        attempts: int = DEFAULT_JUDGE_ATTEMPTS,
        sampling: SamplingParams | None = None,
        owns_policy: bool = False,
    ) -> None:
        if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
            raise ValueError(f"attempts must be a positive int, got {attempts!r}")
        self.policy = policy
        self.prompts = prompts
        self.attempts = attempts
        self.sampling = sampling or paper_judge_sampling()
        self._owns_policy = owns_policy

    @classmethod
    def from_spec(
        cls,
        spec: str,
        prompts_dir: str | os.PathLike[str] | None,
        *,
        attempts: int = DEFAULT_JUDGE_ATTEMPTS,
        sampling: SamplingParams | None = None,
        **policy_options: Any,
    ) -> PaperJudge:
        """A judge asking the policy ``spec`` names (e.g. ``"openai:https://api.openai.com/v1#gpt-4o-mini"``)
        with the prompt of ``prompts_dir``; ``policy_options`` go to the policy's constructor (e.g. an HTTP
        policy's own ``retries``). The spec and the prompt files are checked before the policy is built.
        An ``openai:`` judge sends the paper's ``response_format`` (:func:`paper_response_format`) unless
        ``extra_body`` in ``policy_options`` sets another."""
        from agentdistill.policies import make_policy, parse_policy_spec

        try:
            kind = parse_policy_spec(spec).kind
        except ValueError as error:
            raise UserError(f"judge {spec!r}: {error}") from None
        prompts = load_judge_prompts(prompts_dir)
        if kind == "openai":
            given = policy_options.get("extra_body") or {}
            policy_options["extra_body"] = {"response_format": paper_response_format(), **given}
        policy = make_policy(spec, **policy_options)
        return cls(policy, prompts, attempts=attempts, sampling=sampling, owns_policy=True)

    @property
    def name(self) -> str:
        """The judge model, as results name it (the policy's name)."""
        return self.policy.name

    @property
    def prompt_sha256(self) -> str:
        """A digest of the judge prompt template: verdicts under another prompt are other verdicts."""
        return hashlib.sha256(self.prompts.judge_template.encode("utf-8")).hexdigest()

    def request(self, item: JudgeItem) -> PolicyRequest:
        """What the paper sends for one answer: the filled prompt as the only (user) message."""
        prompt = self.prompts.judge_prompt(item.question, item.predicted, item.gold)
        return PolicyRequest(messages=({"role": "user", "content": prompt},))

    def judge(self, items: Sequence[JudgeItem]) -> list[Verdict]:
        """A verdict per item, in order. Every round sends all the items still without a verdict in one
        policy call (an HTTP policy sends them concurrently); never raises for a bad reply or request."""
        verdicts: dict[int, Verdict] = {}
        reasons: dict[int, str] = {}
        pending = list(range(len(items)))
        attempts = 0
        while pending and attempts < self.attempts:
            attempts += 1
            replies = self._ask([items[index] for index in pending])
            for index, reply in zip(pending, replies):
                try:
                    score, explanation = _verdict_of(reply)
                except ValueError as error:
                    reasons[index] = str(error)
                    continue
                verdicts[index] = Verdict(score=score, explanation=explanation, attempts=attempts)
            pending = [index for index in pending if index not in verdicts]
        for index in pending:
            verdicts[index] = Verdict(score=0, explanation="", attempts=attempts, failure=reasons[index])
        return [verdicts[index] for index in range(len(items))]

    def __call__(self, question: str, prediction: str, golds: Sequence[str]) -> float:
        """The QA grader's hook: the paper's judge against the first gold answer (the paper's
        ``true_answer``; aliases are the judge's to recognise). A failed verdict scores 0."""
        gold = golds[0] if golds else ""
        return float(self.judge([JudgeItem(question=question, predicted=prediction, gold=gold)])[0].score)

    def _ask(self, items: Sequence[JudgeItem]) -> list[Completion | None]:
        """One reply per item (``None`` when the policy returned none for it)."""
        requests = [self.request(item) for item in items]
        try:
            batches = self.policy.generate(requests, self.sampling)
        except Exception as error:  # noqa: BLE001 - a judge outage is counted per answer, never a crash
            return [Completion.failed(f"{type(error).__name__}: {error}") for _ in items]
        replies: list[Completion | None] = [batch[0] if batch else None for batch in batches]
        return (replies + [None] * len(items))[: len(items)]

    def close(self) -> None:
        """Close the policy when this judge built it (:meth:`from_spec`)."""
        if self._owns_policy:
            self.policy.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"PaperJudge({self.name!r}, prompts_dir={str(self.prompts.directory)!r}, attempts={self.attempts})"


def _verdict_of(reply: Completion | None) -> tuple[int, str]:
    if reply is None:
        raise ValueError("the judge policy returned no reply")
    if reply.finish_reason == "error":
        raise ValueError(f"the judge request failed: {reply.error}")
    try:
        return read_verdict(reply.text)
    except ValueError as error:
        raise ValueError(f"unreadable judge reply {_snippet(reply.text)}: {error}") from None


def _snippet(text: str, limit: int = 120) -> str:
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


def load_judge_prompts(prompts_dir: str | os.PathLike[str] | None) -> PaperPrompts:
    """The paper's prompt files for a judge; without a directory, a :class:`UserError` that says which."""
    if prompts_dir is None:
        raise UserError(
            "the paper's judge needs prompts_dir=DIR (--prompts-dir): the directory of the paper's prompt "
            "files, judge_prompt.txt among them"
        )
    return PaperPrompts.load(prompts_dir)


def as_paper_judge(judge: str | Policy | PaperJudge, prompts_dir: str | os.PathLike[str] | None) -> PaperJudge:
    """``judge`` as a :class:`PaperJudge`: a spec is built (the result owns its policy), a policy is wrapped
    (and left open by the result's :meth:`~PaperJudge.close`), a judge is returned as is."""
    if isinstance(judge, PaperJudge):
        return judge
    if isinstance(judge, str):
        return PaperJudge.from_spec(judge, prompts_dir)
    return PaperJudge(judge, load_judge_prompts(prompts_dir))


def judge_label(name: str) -> str:
    """How results name the metric of a paper judge."""
    return f"LLM judge ({name}, the paper's prompt)"


__all__ = [
    "DEFAULT_JUDGE_ATTEMPTS",
    "JUDGE_SYSTEM_PROMPT",
    "JudgeItem",
    "PaperJudge",
    "PolicyJudge",
    "Verdict",
    "as_paper_judge",
    "judge_label",
    "load_judge_prompts",
    "paper_judge_sampling",
    "paper_response_format",
    "read_verdict",
]
