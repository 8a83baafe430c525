"""Tests for the seeded synthetic QA and math generators.

The properties checked are the ones a tiny imitation student depends on: tasks are reproducible,
varied, free of contradictions, use short names, and the hidden plan actually solves the task with the
tools the agent has (a BM25 search for QA, python execution for math).
"""

from __future__ import annotations

import contextlib
import io
import re
from collections import defaultdict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentdistill.envs.synthetic import generate_math_task, generate_qa_task, max_qa_hops
from agentdistill.envs.synthetic.qa import NAME_POOL
from agentdistill.envs.tasks import Task

bm25s = pytest.importorskip("bm25s")

# One full-match pattern per document template; ``s`` is the subject, other groups are relations.
_DOC_PATTERNS = (
    re.compile(r"(?P<s>[A-Z][a-z]+) is a film directed by (?P<director>[A-Z][a-z]+)\."),
    re.compile(r"(?P<s>[A-Z][a-z]+) is a book written by (?P<author>[A-Z][a-z]+)\."),
    re.compile(r"(?P<s>[A-Z][a-z]+) is an album recorded by the band (?P<band>[A-Z][a-z]+)\."),
    re.compile(
        r"(?P<s>[A-Z][a-z]+) is a company founded by (?P<founder>[A-Z][a-z]+)\. "
        r"It is based in the city of (?P<headquarters>[A-Z][a-z]+)\."
    ),
    re.compile(
        r"(?P<s>[A-Z][a-z]+) is a [a-z ]+ who was born in the city of (?P<birthplace>[A-Z][a-z]+)\."
    ),
    re.compile(r"(?P<s>[A-Z][a-z]+) is a band formed in the city of (?P<hometown>[A-Z][a-z]+)\."),
    re.compile(r"(?P<s>[A-Z][a-z]+) is a city in the country of (?P<country>[A-Z][a-z]+)\."),
    re.compile(
        r"(?P<s>[A-Z][a-z]+) is a country whose main language is (?P<language>[A-Z][a-z]+)\."
    ),
    re.compile(r"(?P<s>[A-Z][a-z]+) is a language\."),
)

QA_SEEDS = range(300)
POOL = frozenset(NAME_POOL)
MATH_SEEDS = range(300)


def _facts(task: Task) -> dict[tuple[str, str], list[str]]:
    """Every (subject, relation) -> values stated anywhere in the task's documents."""
    facts: dict[tuple[str, str], list[str]] = defaultdict(list)
    for doc in task.documents:
        matches = [m for p in _DOC_PATTERNS if (m := p.fullmatch(doc.text))]
        assert len(matches) == 1, f"document matches no single template: {doc.text!r}"
        groups = matches[0].groupdict()
        assert groups.pop("s") == doc.title
        for relation, value in groups.items():
            facts[(doc.title, relation)].append(value)
    return facts


def _search_steps(task: Task) -> list[dict]:
    assert task.plan is not None
    return [step for step in task.plan if step["action"] == "search"]


def _bm25_top(task: Task, queries: list[str], k: int = 3) -> list[list[int]]:
    """Top-k document indices for each query under a fresh bm25s index of the task's documents."""
    corpus = [f"{d.title}\n{d.text}" for d in task.documents]
    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize(corpus, show_progress=False), show_progress=False)
    tokens = bm25s.tokenize(queries, show_progress=False)
    docs, _ = retriever.retrieve(tokens, k=min(k, len(corpus)), show_progress=False)
    return [list(row) for row in docs]


def _run(code: str) -> str:
    """What ``code`` prints when executed in a fresh namespace."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        exec(code, {})  # noqa: S102 - the generator's own plan, under test
    return buffer.getvalue()


# --------------------------------------------------------------------------------------------------
# QA
# --------------------------------------------------------------------------------------------------


def test_qa_same_seed_same_task() -> None:
    for seed in (0, 1, 12345, 2**40):
        assert generate_qa_task(seed) == generate_qa_task(seed)
        assert generate_qa_task(seed, min_hops=1, max_hops=4, num_distractors=3) == generate_qa_task(
            seed, min_hops=1, max_hops=4, num_distractors=3
        )


def test_qa_variety() -> None:
    tasks = [generate_qa_task(seed) for seed in range(200)]
    assert len({t.question for t in tasks}) >= 190
    assert len({t.answer for t in tasks}) >= 190
    assert len({t.metadata["relations"] for t in tasks}) >= 8


def test_qa_ids_and_metadata() -> None:
    task = generate_qa_task(7)
    assert task.task_id == "synthetic-qa-7"
    assert task.metadata["hops"] == len(task.metadata["relations"]) == len(_search_steps(task))
    assert task.metadata["chain"][0] in task.question
    assert task.metadata["chain"][-1] == task.answer
    assert task.plan is not None and task.plan[-1] == {"action": "final_answer", "answer": task.answer}


@pytest.mark.parametrize(("min_hops", "max_hops"), [(1, 1), (2, 3), (3, 3), (1, 4), (4, 4)])
def test_qa_hops_in_range(min_hops: int, max_hops: int) -> None:
    seen = set()
    for seed in range(60):
        task = generate_qa_task(seed, min_hops=min_hops, max_hops=max_hops, num_distractors=4)
        hops = task.metadata["hops"]
        assert min_hops <= hops <= max_hops
        assert len(task.plan or ()) == hops + 1
        assert len(task.documents) == hops + 1 + 4
        seen.add(hops)
    assert seen == set(range(min_hops, max_hops + 1))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"min_hops": 0},
        {"min_hops": 3, "max_hops": 2},
        {"max_hops": 99},
        {"num_distractors": -1},
    ],
)
def test_qa_rejects_bad_arguments(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        generate_qa_task(0, **kwargs)


def test_qa_max_hops_is_reachable() -> None:
    task = generate_qa_task(3, min_hops=max_qa_hops(), max_hops=max_qa_hops())
    assert task.metadata["hops"] == max_qa_hops()


def test_qa_documents_are_consistent() -> None:
    for seed in range(300):
        task = generate_qa_task(seed, min_hops=1, max_hops=4)
        titles = [d.title for d in task.documents]
        assert len(titles) == len(set(titles)), "an entity name titles two documents"
        assert len({d.doc_id for d in task.documents}) == len(task.documents)
        facts = _facts(task)
        assert all(len(values) == 1 for values in facts.values()), "a fact has two values"
        values = [v for vs in facts.values() for v in vs]
        assert len(values) == len(set(values)), "an entity is the object of two facts"
        assert not set(values) & {name for name, _ in facts} - set(task.metadata["chain"]), (
            "a distractor points into another distractor's document"
        )


def test_qa_chain_follows_the_facts() -> None:
    for seed in range(300):
        task = generate_qa_task(seed, min_hops=1, max_hops=4)
        facts = _facts(task)
        chain, relations = task.metadata["chain"], task.metadata["relations"]
        for i, relation in enumerate(relations):
            assert facts[(chain[i], relation)] == [chain[i + 1]]
        assert chain[-1] == task.answer


def test_qa_question_names_only_the_first_entity() -> None:
    for seed in range(300):
        task = generate_qa_task(seed, min_hops=1, max_hops=4)
        words = set(re.findall(r"[A-Za-z]+", task.question))
        names = {d.title for d in task.documents}
        assert words & names == {task.metadata["chain"][0]}
        assert task.answer not in words


def test_qa_names_are_short_and_distinct_from_stopwords() -> None:
    from bm25s.stopwords import STOPWORDS_EN, STOPWORDS_EN_PLUS

    lowered = {name.lower() for name in NAME_POOL}
    assert len(lowered) == len(NAME_POOL) > 2000
    assert not lowered & (set(STOPWORDS_EN) | set(STOPWORDS_EN_PLUS))
    for name in NAME_POOL:
        assert 3 <= len(name) <= 5 and name.isalpha() and name[0].isupper() and name[1:].islower()
    for seed in range(100):
        for doc in generate_qa_task(seed).documents:
            assert doc.title in POOL and len(doc.title) <= 12


def test_qa_names_stay_out_of_template_words() -> None:
    for seed in range(100):
        task = generate_qa_task(seed)
        template_words = {
            w.lower()
            for text in (task.question, *(d.text for d in task.documents))
            for w in re.findall(r"[A-Za-z]+", text)
            if w not in POOL
        }
        assert not template_words & {n.lower() for n in NAME_POOL}


def test_qa_names_survive_stemming() -> None:
    """Under Snowball stemming (what the env's search uses) a name must keep its own stem and never
    share one with a template word: a name "Base" would match every "based"."""
    stemmer = pytest.importorskip("Stemmer").Stemmer("english")
    lowered = [name.lower() for name in NAME_POOL]
    assert stemmer.stemWords(lowered) == lowered
    tasks = [generate_qa_task(seed, min_hops=1, max_hops=4) for seed in range(200)]
    template_words = {
        w.lower()
        for task in tasks
        for text in (task.question, *(d.text for d in task.documents))
        for w in re.findall(r"[A-Za-z]+", text)
        if w not in POOL
    }
    assert not set(stemmer.stemWords(sorted(template_words))) & set(lowered)


def test_qa_plan_search_finds_next_hop_with_bm25() -> None:
    for seed in QA_SEEDS:
        task = generate_qa_task(seed)
        steps = _search_steps(task)
        tops = _bm25_top(task, [step["query"] for step in steps])
        for step, top in zip(steps, tops):
            hits = [task.documents[i] for i in top]
            target = [d for d in hits if d.title == step["title"]]
            assert target, f"seed {seed}: {step} not in top 3 {[d.title for d in hits]}"
            assert step["expect"] in target[0].text


def test_qa_plan_search_with_stemming_and_few_documents() -> None:
    """Same check under the env's own settings: title + text, English stop words, Snowball stems."""
    stemmer = pytest.importorskip("Stemmer").Stemmer("english")
    for seed in range(100):
        task = generate_qa_task(seed, min_hops=1, max_hops=4, num_distractors=seed % 4)
        corpus = [f"{d.title}\n{d.text}" for d in task.documents]
        retriever = bm25s.BM25()
        retriever.index(
            bm25s.tokenize(corpus, stopwords="en", stemmer=stemmer, show_progress=False),
            show_progress=False,
        )
        for step in _search_steps(task):
            tokens = bm25s.tokenize(
                [step["query"]], stopwords="en", stemmer=stemmer, return_ids=False, show_progress=False
            )
            docs, scores = retriever.retrieve(tokens, k=min(3, len(corpus)), show_progress=False)
            hits = {task.documents[i].title for i, score in zip(docs[0], scores[0]) if score > 0}
            assert step["title"] in hits


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(min_value=0, max_value=2**63),
    hops=st.tuples(st.integers(1, 4), st.integers(1, 4)).map(sorted),
    distractors=st.integers(0, 12),
)
def test_qa_properties_hold_for_any_seed(seed: int, hops: list[int], distractors: int) -> None:
    task = generate_qa_task(seed, min_hops=hops[0], max_hops=hops[1], num_distractors=distractors)
    assert task == generate_qa_task(
        seed, min_hops=hops[0], max_hops=hops[1], num_distractors=distractors
    )
    facts = _facts(task)
    assert all(len(values) == 1 for values in facts.values())
    assert hops[0] <= task.metadata["hops"] <= hops[1]
    for step in _search_steps(task):
        doc = next(d for d in task.documents if d.title == step["query"])
        assert step["expect"] in doc.text


# --------------------------------------------------------------------------------------------------
# Math
# --------------------------------------------------------------------------------------------------


def test_math_same_seed_same_task() -> None:
    for seed in (0, 1, 999, 2**40):
        assert generate_math_task(seed) == generate_math_task(seed)
        assert generate_math_task(seed, min_ops=1, max_ops=4) == generate_math_task(
            seed, min_ops=1, max_ops=4
        )


def test_math_variety() -> None:
    tasks = [generate_math_task(seed) for seed in range(200)]
    assert len({t.question for t in tasks}) >= 190
    assert len({t.answer for t in tasks}) >= 190
    assert len({t.metadata["template"] for t in tasks}) >= 8


def test_math_plan_prints_the_answer() -> None:
    for seed in MATH_SEEDS:
        task = generate_math_task(seed, min_ops=1, max_ops=4)
        assert task.task_id == f"synthetic-math-{seed}"
        assert re.fullmatch(r"0|[1-9][0-9]*", task.answer), task.answer
        assert task.plan is not None and len(task.plan) == 2
        code_step, final = task.plan
        assert code_step["action"] == "code" and code_step["expect"] == task.answer
        assert final == {"action": "final_answer", "answer": task.answer}
        assert _run(code_step["code"]) == task.answer + "\n"


def test_math_code_copies_the_question_numbers() -> None:
    for seed in range(100):
        task = generate_math_task(seed, min_ops=1, max_ops=4)
        assert task.plan is not None
        literals = re.findall(r"^\w+ = (\d+)$", task.plan[0]["code"], flags=re.MULTILINE)
        question_numbers = {n.replace(",", "") for n in re.findall(r"\d[\d,]*", task.question)}
        assert literals and set(literals) <= question_numbers


@pytest.mark.parametrize(("min_ops", "max_ops"), [(1, 1), (2, 3), (3, 4), (4, 4)])
def test_math_ops_in_range(min_ops: int, max_ops: int) -> None:
    seen = {generate_math_task(s, min_ops=min_ops, max_ops=max_ops).metadata["ops"] for s in range(80)}
    assert seen == set(range(min_ops, max_ops + 1))


@pytest.mark.parametrize("kwargs", [{"min_ops": 0}, {"min_ops": 3, "max_ops": 2}, {"max_ops": 9}])
def test_math_rejects_bad_arguments(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        generate_math_task(0, **kwargs)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(min_value=0, max_value=2**63))
def test_math_answer_is_exact_for_any_seed(seed: int) -> None:
    task = generate_math_task(seed, min_ops=1, max_ops=4)
    assert task.answer.isdigit()
    assert task.plan is not None
    assert _run(task.plan[0]["code"]) == task.answer + "\n"
