"""The chain-of-thought distillation baseline: the paper's "CoT" and "CoT + RAG" rows.

The baseline a distilled agent is compared with is a student fine-tuned on the teacher's plain
chain-of-thought answers (reason step by step, answer in ``\\boxed{}``; no tools), optionally with the
retriever's top-k documents for the question put in the prompt (CoT + RAG). Three steps:

1. :func:`collect_cot` asks a policy (the teacher, or a student being evaluated) for one answer per task,
   in one policy call per batch of questions, grades the boxed answer with the env's own grader and
   appends one JSON line per task (resumable, like rollout files);
2. :func:`cot_dataset` keeps the correct answers as ``{"messages": [system, user, assistant]}`` rows for SFT;
3. :func:`evaluate_cot` runs step 1 on a benchmark's first tasks and summarises it as a row of the
   :class:`~agentdistill.rollouts.evaluate.ResultsTable`.

The env only supplies questions, graders, retrievers and (for the scripted experts) the plan in the
request context; no episode is stepped.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import gymnasium as gym

from agentdistill.envs.graders import extract_answer
from agentdistill.envs.tools.retrieval.base import Retriever, format_search_results
from agentdistill.policies import make_policy
from agentdistill.policies.base import Completion, Policy, PolicyRequest, SamplingParams
from agentdistill.rollouts.evaluate import (
    PAPER_SUITE,
    ResultsTable,
    TaskResult,
    check_task_ids,
    claim_evaluation_directory,
    domain_of,
    episodes_of,
    metric_of,
    summarize_records,
    task_indices,
)
from agentdistill.rollouts.ftp import COT_SYSTEM_PROMPT
from agentdistill.rollouts.records import TrajectoryWriter, read_trajectories, run_identity
from agentdistill.runs import RunDirectory

COT_MAX_NEW_TOKENS = 2048
"""Default answer length: a reasoned math answer needs more room than one CodeAct turn."""

COT_RAG_SYSTEM_PROMPT = (
    COT_SYSTEM_PROMPT + " Documents retrieved for the question come before it; use them where they help."
)


def default_cot_sampling() -> SamplingParams:
    """Greedy, without the CodeAct stop strings (a CoT answer has no code block to stop after)."""
    return SamplingParams(stop=(), max_new_tokens=COT_MAX_NEW_TOKENS)


def cot_user_message(question: str, documents: str | None = None) -> str:
    """The user turn: the question alone, or the retrieved documents followed by the question."""
    if documents is None:
        return question
    return f"Documents:\n{documents}\n\nQuestion: {question}"


def collect_cot(
    policy: Policy,
    env: gym.Env,
    task_indices: Iterable[int],
    *,
    rag: bool = False,
    top_k: int = 3,
    sampling: SamplingParams | None = None,
    out: str | os.PathLike[str],
    batch_size: int = 64,
    env_args: Mapping[str, Any] | None = None,
) -> int:
    """Ask ``policy`` for a chain-of-thought answer to each task not yet in ``out``; returns how many it added.

    Each line is ``{env_id, task_index, task_id, messages, answer, gold, score, metrics, rag, ...}``, where
    ``messages`` is the ``[system, user, assistant]`` conversation and ``answer`` the boxed answer graded by
    ``env``'s grader. With ``rag=True`` the env's retriever is searched with the question and the top
    ``top_k`` documents are put before it (QA envs only). A request the backend failed is recorded with
    score 0 and the error under ``failed`` (and asked again when ``out`` is resumed). ``env_args`` (the
    arguments ``env`` was built with) go into the run identity that ``out`` checks on resume, as for
    agent trajectories.
    """
    if top_k < 1:
        raise ValueError(f"top_k must be a positive int, got {top_k!r}")
    base = env.unwrapped
    env_id = env.spec.id if env.spec is not None else type(base).__name__
    sampling = sampling or default_cot_sampling()
    added = 0
    identity = {
        **run_identity(
            env_id=env_id, env_args=env_args, policy=policy.name, sampling=asdict(sampling), sag=None, ftp_prefixes=None
        ),
        "method": "chain-of-thought",
        "rag": rag,
        "top_k": top_k if rag else None,
    }
    with TrajectoryWriter(out, identity=identity) as writer:
        todo = [index for index in task_indices if not writer.is_done(env_id, index)]
        for start in range(0, len(todo), batch_size):
            batch = todo[start : start + batch_size]
            prepared = [_prepare(base, index, rag=rag, top_k=top_k) for index in batch]
            requests = [request for request, _ in prepared]
            try:
                answers = policy.generate(requests, sampling)
            except Exception as error:  # noqa: BLE001 - a failed batch fails its tasks, never the run
                answers = [[Completion.failed(f"{type(error).__name__}: {error}")] for _ in requests]
            for index, (request, task), choices in zip(batch, prepared, answers):
                writer.write(_record(env_id, index, task, request, choices, base, policy.name, rag))
                added += 1
    return added


def _prepare(base: Any, index: int, *, rag: bool, top_k: int) -> tuple[PolicyRequest, Any]:
    """The request for one task (reset gives the scripted experts their plan and the synthetic QA env its
    per-task corpus, so retrieval happens right after it)."""
    _, info = base.reset(options={"task_index": index})
    task = base.task
    documents = None
    if rag:
        hits = _retriever_of(base).search([task.question], top_k)[0]
        documents = format_search_results(task.question, hits)
    messages = (
        {"role": "system", "content": COT_RAG_SYSTEM_PROMPT if rag else COT_SYSTEM_PROMPT},
        {"role": "user", "content": cot_user_message(task.question, documents)},
    )
    return PolicyRequest(messages=messages, context={**info, "purpose": "chain_of_thought"}), task


def _retriever_of(base: Any) -> Retriever:
    retriever = getattr(base, "retriever", None)
    if retriever is None:
        tool = getattr(base, "web_search", None)
        retriever = getattr(tool, "retriever", None)
    if retriever is None:
        raise ValueError(f"rag=True needs a QA env with a retriever; {type(base).__name__} has none")
    return retriever


def _record(
    env_id: str,
    index: int,
    task: Any,
    request: PolicyRequest,
    choices: Sequence[Completion],
    base: Any,
    policy_name: str,
    rag: bool,
) -> dict[str, Any]:
    usable = [choice for choice in choices if choice.finish_reason != "error"]
    record: dict[str, Any] = {
        "env_id": env_id,
        "task_index": index,
        "task_id": task.task_id,
        "policy": policy_name,
        "rag": rag,
        "gold": task.answer,
    }
    if not usable:
        reason = choices[0].error if choices else "the policy returned no completion"
        return {**record, "messages": list(request.messages), "answer": None, "score": 0.0, "metrics": None,
                "failed": reason, "tokens": {"prompt": 0, "completion": 0}}
    choice = usable[0]
    answer = extract_answer(choice.text)
    grade = base.grader.grade(answer, task)
    return {
        **record,
        "messages": [*request.messages, {"role": "assistant", "content": choice.text}],
        "answer": answer,
        "score": float(grade.score),
        "metrics": dict(grade.metrics),
        "failed": None,
        "finish_reason": choice.finish_reason,
        "tokens": {"prompt": choice.prompt_tokens, "completion": choice.completion_tokens},
    }


def cot_dataset(paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]]) -> Any:
    """The correct (score 1) answers of CoT files as a ``datasets.Dataset`` of ``{"messages": [...]}`` rows.

    Wrong and failed answers are dropped: the baseline, like the agent students, learns only from the
    teacher's successes.
    """
    from datasets import Dataset, Features, Value

    files = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    rows = []
    for path in files:
        for record in read_trajectories(path):
            if float(record.get("score") or 0.0) >= 1.0 and not record.get("failed"):
                messages = [{"role": str(m["role"]), "content": str(m["content"])} for m in record["messages"]]
                rows.append(messages)
    features = Features({"messages": [{"role": Value("string"), "content": Value("string")}]})
    return Dataset.from_dict({"messages": rows}, features=features)


def evaluate_cot(
    policy: str | Policy,
    env_id: str,
    env_kwargs: Mapping[str, Any] | None = None,
    *,
    limit: int | None,
    rag: bool = False,
    out_dir: str | os.PathLike[str],
    top_k: int = 3,
    sampling: SamplingParams | None = None,
    batch_size: int = 64,
) -> TaskResult:
    """Answer the first ``limit`` tasks of ``env_id`` by plain CoT (or CoT + RAG) and score them.

    Answers go to ``out_dir/cot/<env_id>.jsonl`` (``cot-rag`` with RAG) and a rerun resumes it. The
    returned row's ``accuracy`` is the CoT baseline's score; it has no invalid-action rate or steps.
    ``policy`` is a spec string (built and closed here) or a policy object (left open). ``out_dir`` is
    claimed as :func:`evaluate_cot_suite` claims it, so a row is never computed from another policy's or
    another decoding's answers.
    """
    owned = isinstance(policy, str)
    runner: Policy = make_policy(policy) if isinstance(policy, str) else policy
    try:
        with _claim_cot_directory(out_dir, runner.name, sampling=sampling, top_k=top_k):
            return _evaluate_cot_env(
                runner, env_id, env_kwargs, limit=limit, rag=rag, out_dir=out_dir, top_k=top_k, sampling=sampling,
                batch_size=batch_size,
            )
    finally:
        if owned:
            runner.close()


def _evaluate_cot_env(
    policy: Policy,
    env_id: str,
    env_kwargs: Mapping[str, Any] | None,
    *,
    limit: int | None,
    rag: bool,
    out_dir: str | os.PathLike[str],
    top_k: int,
    sampling: SamplingParams | None,
    batch_size: int,
) -> TaskResult:
    """Answer the missing tasks of one benchmark into its file in a claimed ``out_dir`` and summarise it."""
    import agentdistill  # noqa: F401 - registers the env ids

    env_kwargs = dict(env_kwargs or {})
    path = Path(out_dir) / ("cot-rag" if rag else "cot") / f"{env_id}.jsonl"
    env = gym.make(env_id, **env_kwargs)
    try:
        indices = task_indices(env.unwrapped.num_tasks, limit, env_id)
        check_task_ids(path, env_id, indices, lambda index: env.unwrapped.task_at(index).task_id)
        collect_cot(
            policy, env, indices, rag=rag, top_k=top_k, sampling=sampling, out=path, batch_size=batch_size,
            env_args=env_kwargs,
        )
    finally:
        env.close()
    return summarize_records(env_id, episodes_of(path, env_id, indices), metric=metric_of(env_id, env_kwargs))


def _claim_cot_directory(
    out_dir: str | os.PathLike[str], policy_name: str, *, sampling: SamplingParams | None, top_k: int
) -> RunDirectory:
    """Claim an evaluation directory for CoT answers.

    CoT and CoT+RAG share one directory (their math rows are the same answers, under ``cot/``), so RAG is
    not part of the directory's identity; each answer file records it in its own run identity.
    """
    return claim_evaluation_directory(
        out_dir, policy=policy_name, method="chain-of-thought", sampling=sampling or default_cot_sampling(),
        extra={"top_k": top_k},
    )


def evaluate_cot_suite(
    policy: str | Policy,
    env_ids: Sequence[str] = PAPER_SUITE,
    *,
    env_kwargs_by_env: Mapping[str, Mapping[str, Any]] | None = None,
    limit: int | None = None,
    rag: bool = False,
    out_dir: str | os.PathLike[str],
    top_k: int = 3,
    sampling: SamplingParams | None = None,
    batch_size: int = 64,
) -> ResultsTable:
    """:func:`evaluate_cot` on every env, as a ``CoT`` (or ``CoT+RAG``) results table written to
    ``out_dir/cot[-rag]/results.*``.

    RAG applies to the factual benchmarks only: the math envs have no retriever, so their rows are the
    plain CoT answers (``out_dir/cot/``), shared by both tables. ``out_dir`` is claimed for this policy
    and decoding before anything is written (:func:`~agentdistill.rollouts.evaluate.claim_evaluation_directory`)
    and released at the end.
    """
    owned = isinstance(policy, str)
    runner: Policy = make_policy(policy) if isinstance(policy, str) else policy
    kwargs_by_env = env_kwargs_by_env or {}
    try:
        with _claim_cot_directory(out_dir, runner.name, sampling=sampling, top_k=top_k):
            rows = [
                _evaluate_cot_env(
                    runner, env_id, kwargs_by_env.get(env_id), limit=limit, out_dir=out_dir, top_k=top_k,
                    rag=rag and domain_of(env_id) == "factual", sampling=sampling, batch_size=batch_size,
                )
                for env_id in env_ids
            ]
            table = ResultsTable(policy=runner.name, rows=tuple(rows), method="CoT+RAG" if rag else "CoT", limit=limit)
            table.write(Path(out_dir) / ("cot-rag" if rag else "cot"))
    finally:
        if owned:
            runner.close()
    return table
