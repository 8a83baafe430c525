"""Tests of the answer graders: SQuAD-style QA metrics and math equivalence with real math-verify."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentdistill.envs.graders import (
    Grader,
    MathGrader,
    QAGrader,
    exact_match,
    extract_answer,
    is_equivalent,
    normalize_answer,
    token_f1,
)
from agentdistill.envs.graders import math as math_graders
from agentdistill.envs.tasks import Task

HANG_TIMEOUT_S = 0.3
HANG_BOUND_S = HANG_TIMEOUT_S * 4 + 5
PATHOLOGICAL = [
    r"2^{2^{2^{2^{100}}}}",
    r"10^{10^{10}}!",
    # Math-Verify issue #65: hangs math-verify's own signal timeout, which cannot interrupt C code.
    r"\dfrac{5^{\left(5^{\left(5^{\left(5^5\right)}\right)} - 4\right)} - 5}{16}",
    "1" * 100_000,
    r"\frac{" * 1_500,  # under the length cap, so math-verify does get it
]
LATEX_ALPHABET = st.sampled_from(
    ["\\boxed", "\\fbox", "\\frac", "{", "}", "\\{", "$", "1", "0.5", "x", "^", "_", " ", "\\", ",", "(", "]", "yes"]
)


def _task(answer: str, *aliases: str, question: str = "q?") -> Task:
    return Task(task_id="t", question=question, answer=answer, aliases=aliases)


def _timed(call: Callable[[], bool]) -> tuple[bool, float]:
    start = time.monotonic()
    result = call()
    return result, time.monotonic() - start


def _in_thread(call: Callable[[], bool]) -> tuple[bool, float]:
    """Run ``call`` in a non-main thread; return its result and wall time."""
    outcome: dict[str, object] = {}

    def target() -> None:
        outcome["result"], outcome["elapsed"] = _timed(call)

    worker = threading.Thread(target=target)
    worker.start()
    worker.join(timeout=HANG_BOUND_S * 2)
    assert not worker.is_alive(), "the check hung in a worker thread"
    return outcome["result"], outcome["elapsed"]  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------- QA


@pytest.mark.parametrize(
    ("text", "normalized"),
    [
        ("The Eiffel Tower.", "eiffel tower"),
        ("  An apple a   day!  ", "apple day"),
        ("theatre, anthem", "theatre anthem"),
        ("Émile Zola", "émile zola"),
        ("", ""),
    ],
)
def test_normalize_answer(text: str, normalized: str) -> None:
    assert normalize_answer(text) == normalized


@pytest.mark.parametrize(
    ("prediction", "golds", "em", "f1"),
    [
        ("The Eiffel Tower.", ["eiffel tower"], 1.0, 1.0),
        ("PARIS", ["paris"], 1.0, 1.0),
        ("yes", ["no"], 0.0, 0.0),
        ("no", ["no way"], 0.0, 0.0),  # HotpotQA: a yes/no mismatch earns no partial credit
        ("Barack Obama", ["Barack Hussein Obama"], 0.0, 0.8),
        ("John Smith Jr", ["Smith"], 0.0, 0.5),
        ("New York City", ["New York"], 0.0, 0.8),
        ("usa", ["United States", "USA"], 1.0, 1.0),
        ("Émile Zola", ["émile zola"], 1.0, 1.0),
        ("", ["Paris"], 0.0, 0.0),
        ("Paris", [], 0.0, 0.0),
        ("Lyon", ["Paris"], 0.0, 0.0),
    ],
)
def test_qa_metrics(prediction: str, golds: Sequence[str], em: float, f1: float) -> None:
    assert exact_match(prediction, golds) == em
    assert token_f1(prediction, golds) == pytest.approx(f1)


def test_qa_grader_uses_aliases_and_reports_details() -> None:
    task = _task("United States", "USA", "US")
    grader = QAGrader()
    assert isinstance(grader, Grader)
    assert grader.grade("the usa", task).score == 1.0
    graded = grader.grade("United States of America", task)
    assert graded.score == 0.0 and graded.metrics == {"em": 0.0, "f1": pytest.approx(2 / 3)}
    assert QAGrader(metric="f1").grade("United States of America", task).score == pytest.approx(2 / 3)


def test_qa_grader_judge_hook() -> None:
    calls: list[tuple[str, str, tuple[str, ...]]] = []

    def judge(question: str, prediction: str, golds: Sequence[str]) -> float:
        calls.append((question, prediction, tuple(golds)))
        return 0.75

    task = _task("Paris", "City of Light", question="Capital of France?")
    grader = QAGrader(metric="judge", judge=judge)
    assert grader.grade("It is Paris", task).score == 0.75
    assert calls == [("Capital of France?", "It is Paris", ("Paris", "City of Light"))], "one judge call per answer"
    graded = grader.grade("Paris", task)
    assert graded.score == 0.75 and graded.metrics == {"em": 1.0, "f1": 1.0, "judge": 0.75}
    with_em = QAGrader(metric="em", judge=judge).grade("Lyon", task)
    assert with_em.score == 0.0 and with_em.metrics["judge"] == 0.75


def test_qa_grader_rejects_bad_configuration_and_bad_judge_scores() -> None:
    with pytest.raises(ValueError, match=r"judge=") as missing:
        QAGrader(metric="judge")
    assert "judge" in str(missing.value)
    with pytest.raises(ValueError, match=r"'bleu'.*'em', 'f1', 'judge'"):
        QAGrader(metric="bleu")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        QAGrader(metric="judge", judge=lambda q, p, g: 1.5).grade("x", _task("x"))


# -------------------------------------------------------------------------------------- extraction


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        (r"so the answer is \boxed{5}.", "5"),
        (r"\boxed{\frac{1}{2}}", r"\frac{1}{2}"),
        (r"\boxed{\left( 3, \frac{\pi}{2} \right)}", r"\left( 3, \frac{\pi}{2} \right)"),
        (r"first \boxed{1}, finally \boxed{2}", "2"),
        (r"\fbox{7}", "7"),
        (r"The answer is \boxed 5", "5"),
        (r"$\boxed{\{1,2\}}$", r"\{1,2\}"),
        (r"\boxed{ x^{2} }", "x^{2}"),
        (r"\boxed{3} and then \boxed{4", "3"),  # the last box is unclosed: take the last complete one
        (r"\boxed{a}}", "a"),
        ("  $x+1$ ", "x+1"),
        (r"\[ 3 \]", "3"),
        ("42", "42"),
        ("", ""),
    ],
)
def test_extract_answer(text: str, answer: str) -> None:
    assert extract_answer(text) == answer


@pytest.mark.parametrize("text", ["{" * 1_000_000, "\\boxed" + "{" * 1_000_000, "\\boxed{" * 200_000])
def test_extract_answer_is_linear_on_adversarial_input(text: str) -> None:
    result, elapsed = _timed(lambda: extract_answer(text))  # type: ignore[arg-type, return-value]
    assert isinstance(result, str)
    assert elapsed < 5.0


# -------------------------------------------------------------------------------------- equivalence


@pytest.mark.parametrize(
    ("prediction", "gold", "equivalent"),
    [
        (r"\frac{1}{2}", "0.5", True),
        (r"(3,\pi/2)", r"\left( 3, \frac{\pi}{2} \right)", True),
        (r"\boxed{\frac{\sqrt{3}}{2}}", r"\frac{\sqrt3}{2}", True),
        (r"The answer is $\boxed{42}$.", "42", True),
        ("13138980.0", "13138980", True),
        ("-9867630", "-9867630.0", True),
        ("0.33333", r"\frac{1}{3}", True),
        ("1,000", "1000", True),
        (r"10,\!000", "10000", True),
        (r"(-\infty,-8]\cup [8,\infty)", r"(-\infty,-8]\cup [8,\infty)", True),
        (r"(-\infty, -8] \cup [8, \infty)", r"(-\infty,-8]\cup [8,\infty)", True),
        (r"\{2,1\}", r"\{1,2\}", True),
        ("(x+1)^2", "x^2+2x+1", True),
        ("1.001", "1", False),
        ("0.33", r"\frac{1}{3}", False),
        ("13138981", "13138980", False),  # two integers must agree exactly
        (r"(-\infty,-8)\cup (8,\infty)", r"(-\infty,-8]\cup [8,\infty)", False),
        ("2", "3", False),
        ("x+1", "x+2", False),
        ("", "5", False),
        ("5", "", False),
        ("no answer", "5", False),
    ],
)
def test_is_equivalent(prediction: str, gold: str, equivalent: bool) -> None:
    assert is_equivalent(prediction, gold) is equivalent


def test_relative_tolerance_is_configurable() -> None:
    assert is_equivalent("1.001", "1", rel_tol=1e-2)
    assert not is_equivalent("1.0000001", "1", rel_tol=1e-9)


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf"), True, "5"])
def test_numeric_arguments_are_validated(bad: object) -> None:
    with pytest.raises(ValueError, match="rel_tol"):
        MathGrader(rel_tol=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timeout_s"):
        MathGrader(timeout_s=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timeout_s"):
        is_equivalent("1", "1", timeout_s=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("expression", PATHOLOGICAL, ids=lambda text: text[:24])
def test_pathological_expression_is_bounded_in_main_thread(expression: str) -> None:
    result, elapsed = _timed(lambda: is_equivalent(expression, "3", timeout_s=HANG_TIMEOUT_S))
    assert result is False
    assert elapsed < HANG_BOUND_S


@pytest.mark.parametrize("expression", PATHOLOGICAL[:3], ids=lambda text: text[:24])
def test_pathological_expression_is_bounded_in_worker_thread(expression: str) -> None:
    result, elapsed = _in_thread(lambda: is_equivalent(expression, "3", timeout_s=HANG_TIMEOUT_S))
    assert result is False
    assert elapsed < HANG_BOUND_S


def test_equivalence_works_from_worker_thread() -> None:
    assert _in_thread(lambda: is_equivalent(r"\frac{1}{2}", "0.5"))[0] is True
    assert _in_thread(lambda: is_equivalent(r"\frac{1}{3}", "0.5"))[0] is False


def test_spawn_fallback_gives_the_same_verdicts() -> None:
    """The path taken where fork does not exist; its timeout also covers interpreter start-up."""
    assert math_graders._run_spawned(r"\frac{1}{2}", "0.5", 1e-4, 60.0) is True
    result, elapsed = _timed(lambda: math_graders._run_spawned(PATHOLOGICAL[0], "3", 1e-4, HANG_TIMEOUT_S))
    assert result is False
    assert elapsed < HANG_BOUND_S


# ------------------------------------------------------------------------------------- MathGrader


@pytest.mark.parametrize(
    ("prediction", "task", "score"),
    [
        (r"Converting, we get $\boxed{(3, \frac{\pi}{2})}$.", _task(r"\left( 3, \frac{\pi}{2} \right)"), 1.0),
        (r"\boxed{-9867630}", _task("-9867630.0"), 1.0),
        (r"\boxed{7}", _task(r"\boxed{7}"), 1.0),
        (r"\boxed{0.5}", _task("3", r"\frac{1}{2}"), 1.0),
        (r"\boxed{4}", _task("3"), 0.0),
        ("", _task("3"), 0.0),
    ],
)
def test_math_grader(prediction: str, task: Task, score: float) -> None:
    grader = MathGrader()
    assert isinstance(grader, Grader)
    graded = grader.grade(prediction, task)
    assert graded.score == score
    assert graded.metrics == {"correct": score}


# ------------------------------------------------------------------------------------------ fuzzing

FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ANY_TEXT = st.text() | st.lists(LATEX_ALPHABET, max_size=30).map("".join)


@FUZZ
@given(ANY_TEXT, st.lists(ANY_TEXT, max_size=3))
def test_qa_metrics_never_raise(prediction: str, golds: list[str]) -> None:
    assert 0.0 <= exact_match(prediction, golds) <= 1.0
    assert 0.0 <= token_f1(prediction, golds) <= 1.0
    assert QAGrader().grade(prediction, _task(golds[0] if golds else "x")).metrics["em"] in (0.0, 1.0)


@FUZZ
@given(ANY_TEXT)
def test_extract_answer_never_raises(text: str) -> None:
    assert isinstance(extract_answer(text), str)


@settings(FUZZ, max_examples=30)
@given(ANY_TEXT, ANY_TEXT)
def test_is_equivalent_never_raises(prediction: str, gold: str) -> None:
    assert is_equivalent(prediction, gold, timeout_s=HANG_TIMEOUT_S) in (True, False)
