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

``protocol="paper"`` (with ``prompts_dir``, see :class:`~agentdistill.envs.paper.prompts.PaperPrompts`) asks
as the paper's reasoning baseline asks (``processors/reasoning.py``): the system prompt of the paper's
``teacher_model.yaml``, the raw question as the user turn, greedy, 4,096 new tokens, no stop strings, and
the answer read from ``<answer>...</answer>`` (see :func:`paper_cot_answer`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import gymnasium as gym

from agentdistill.envs.graders import extract_answer
from agentdistill.envs.paper import ProtocolName, check_protocol_name
from agentdistill.envs.paper.prompts import PaperPrompts
from agentdistill.envs.tools.retrieval.base import Retriever, format_search_results
from agentdistill.errors import UserError
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
from agentdistill.rollouts.records import TrajectoryWriter, read_trajectories, recorded_protocol, run_identity
from agentdistill.runs import RunDirectory

COT_MAX_NEW_TOKENS = 2048
"""Default answer length: a reasoned math answer needs more room than one CodeAct turn."""

PAPER_COT_MAX_NEW_TOKENS = 4096
"""The answer length of the paper's CoT runs (``run_cot_student.sh``: ``--max_tokens 4096``)."""

COT_RAG_SYSTEM_PROMPT = (
    COT_SYSTEM_PROMPT + " Documents retrieved for the question come before it; use them where they help."
)

_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


def default_cot_sampling() -> SamplingParams:
    """Greedy, without the CodeAct stop strings (a CoT answer has no code block to stop after)."""
    return SamplingParams(stop=(), max_new_tokens=COT_MAX_NEW_TOKENS)


def paper_cot_sampling() -> SamplingParams:
    """The paper's CoT decoding: greedy (its ``top_p=0.8`` does nothing at temperature 0), no stop strings,
    4,096 new tokens."""
    return SamplingParams(stop=(), max_new_tokens=PAPER_COT_MAX_NEW_TOKENS)


def cot_sampling(protocol: ProtocolName) -> SamplingParams:
    """The default CoT decoding of a protocol."""
    return paper_cot_sampling() if check_protocol_name(protocol) == "paper" else default_cot_sampling()


def cot_user_message(question: str, documents: str | None = None) -> str:
    """The user turn: the question alone, or the retrieved documents followed by the question."""
    if documents is None:
        return question
    return f"Documents:\n{documents}\n\nQuestion: {question}"


def paper_cot_user_message(question: str, documents: str | None = None) -> str:
    """The paper's user turn: the raw question, or its retrieved documents, a newline, then the question."""
    return question if documents is None else f"{documents}\n{question}"


def paper_cot_answer(response: str, *, math: bool) -> str:
    """The answer in a response to the paper's CoT prompt, as the paper reads it, up to the math extraction.

    The text between the first ``<answer>`` and ``</answer>`` tags, stripped, or the whole response when
    there is none. For math, the paper then wraps a one-paragraph answer in a box and runs Qwen's
    ``extract_answer`` on it, which comes down to the last ``\\boxed{}`` content if the answer holds one, else
    the answer itself, then ``strip_string`` (units, ``\\text{}``, ``\\left``/``\\right`` and spaces removed,
    ``dfrac`` read as ``frac``). Here this package's :func:`~agentdistill.envs.graders.extract_answer` takes that
    step (the same box rule) and the math grader's equivalence check absorbs what ``strip_string`` normalises.
    Where the two differ: an answer of several paragraphs without a box, which the paper reduces further
    (to the text after ``the answer is`` or ``final answer is``, else the last number) and this keeps whole.
    """
    match = _ANSWER_TAG.search(response)
    answer = match.group(1).strip() if match else response
    return extract_answer(answer) if math else answer


@dataclass(frozen=True)
class _CoTStyle:
    """How one protocol asks for a chain-of-thought answer and reads it."""

    protocol: ProtocolName
    system_prompt: str
    rag_system_prompt: str
    user_message: Callable[[str, str | None], str]

    def messages(self, question: str, documents: str | None) -> tuple[dict[str, str], dict[str, str]]:
        system = self.system_prompt if documents is None else self.rag_system_prompt
        user = self.user_message(question, documents)
        return {"role": "system", "content": system}, {"role": "user", "content": user}

    def answer(self, response: str, env_id: str) -> str:
        if self.protocol == "paper":
            return paper_cot_answer(response, math=domain_of(env_id) == "math")
        return extract_answer(response)


def _style(protocol: ProtocolName, prompts_dir: str | os.PathLike[str] | None) -> _CoTStyle:
    """The prompts of ``protocol``; the paper's are read from ``prompts_dir`` (a clear error when it is missing)."""
    if check_protocol_name(protocol) == "agentdistill":
        return _CoTStyle("agentdistill", COT_SYSTEM_PROMPT, COT_RAG_SYSTEM_PROMPT, cot_user_message)
    teacher = PaperPrompts.load(prompts_dir).teacher_system_prompt
    return _CoTStyle("paper", teacher, teacher, paper_cot_user_message)


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
    protocol: ProtocolName = "agentdistill",
    prompts_dir: str | os.PathLike[str] | None = None,
) -> int:
    """Ask ``policy`` for a chain-of-thought answer to each task not yet in ``out``; returns how many it added.

    Each line is ``{env_id, task_index, task_id, messages, answer, gold, score, metrics, rag, ...}``, where
    ``messages`` is the ``[system, user, assistant]`` conversation and ``answer`` the answer graded by
    ``env``'s grader (the boxed one; under ``protocol="paper"`` the ``<answer>`` one, :func:`paper_cot_answer`,
    with the paper's prompts from ``prompts_dir``). With ``rag=True`` the env's retriever is searched with the
    question and the top ``top_k`` documents are put before it (QA envs only). A request the backend failed is
    recorded with score 0 and the error under ``failed`` (and asked again when ``out`` is resumed).
    ``env_args`` (the arguments ``env`` was built with) and the protocol go into the run identity that ``out``
    checks on resume, as for agent trajectories. ``sampling`` defaults to the protocol's (:func:`cot_sampling`).
    """
    if top_k < 1:
        raise ValueError(f"top_k must be a positive int, got {top_k!r}")
    style = _style(protocol, prompts_dir)
    base = env.unwrapped
    env_id = env.spec.id if env.spec is not None else type(base).__name__
    sampling = sampling or cot_sampling(style.protocol)
    added = 0
    identity = {
        **run_identity(
            env_id=env_id, env_args=env_args, policy=policy.name, sampling=asdict(sampling), sag=None, ftp_prefixes=None,
            protocol=style.protocol,
        ),
        "method": "chain-of-thought",
        "rag": rag,
        "top_k": top_k if rag else None,
    }
    with TrajectoryWriter(out, identity=identity) as writer:
        todo = [index for index in task_indices if not writer.is_done(env_id, index)]
        for start in range(0, len(todo), batch_size):
            batch = todo[start : start + batch_size]
            prepared = [_prepare(base, index, style, rag=rag, top_k=top_k) for index in batch]
            requests = [request for request, _ in prepared]
            try:
                answers = policy.generate(requests, sampling)
            except Exception as error:  # noqa: BLE001 - a failed batch fails its tasks, never the run
                answers = [[Completion.failed(f"{type(error).__name__}: {error}")] for _ in requests]
            for index, (request, task), choices in zip(batch, prepared, answers):
                writer.write(_record(env_id, index, task, request, choices, base, policy.name, rag, style))
                added += 1
    return added


def _prepare(base: Any, index: int, style: _CoTStyle, *, rag: bool, top_k: int) -> tuple[PolicyRequest, Any]:
    """The request for one task (reset gives the scripted experts their plan and the synthetic QA env its
    per-task corpus, so retrieval happens right after it).

    The paper's retrieved documents came from files it did not publish, so under its protocol the documents
    are listed as this package's ``web_search`` lists them, in the paper's layout (documents, a newline, the
    question)."""
    _, info = base.reset(options={"task_index": index})
    task = base.task
    documents = None
    if rag:
        hits = _retriever_of(base).search([task.question], top_k)[0]
        documents = format_search_results(task.question, hits)
    messages = style.messages(task.question, documents)
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
    style: _CoTStyle,
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
    answer = style.answer(choice.text, env_id)
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


def cot_dataset(
    paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]], *, protocol: ProtocolName | None = None
) -> Any:
    """The correct (score 1) answers of CoT files as a ``datasets.Dataset`` of ``{"messages": [...]}`` rows.

    Wrong and failed answers are dropped: the baseline, like the agent students, learns only from the
    teacher's successes (the paper's ``filter_reasoning_training_data.py`` keeps the same rows). With
    ``protocol``, answers collected under another protocol are refused (naming the file and record) rather
    than mixed in: the two ask with other prompts.
    """
    from datasets import Dataset, Features, Value

    files = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    rows = []
    for path in files:
        for number, record in enumerate(read_trajectories(path), start=1):
            if protocol is not None:
                _check_answer_protocol(record, protocol, f"{os.fspath(path)}: record {number}")
            if float(record.get("score") or 0.0) >= 1.0 and not record.get("failed"):
                messages = [{"role": str(m["role"]), "content": str(m["content"])} for m in record["messages"]]
                rows.append(messages)
    features = Features({"messages": [{"role": Value("string"), "content": Value("string")}]})
    return Dataset.from_dict({"messages": rows}, features=features)


def _check_answer_protocol(record: Mapping[str, Any], protocol: ProtocolName, where: str) -> None:
    recorded = recorded_protocol(record)
    if recorded != protocol:
        raise UserError(
            f"{where} was collected under protocol {recorded!r}, not {protocol!r}: train on answers of one protocol"
        )


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
    protocol: ProtocolName = "agentdistill",
    prompts_dir: str | os.PathLike[str] | None = None,
) -> TaskResult:
    """Answer the first ``limit`` tasks of ``env_id`` by plain CoT (or CoT + RAG) and score them.

    Answers go to ``out_dir/cot/<env_id>.jsonl`` (``cot-rag`` with RAG) and a rerun resumes it. The
    returned row's ``accuracy`` is the CoT baseline's score; it has no invalid-action rate or steps.
    ``policy`` is a spec string (built and closed here) or a policy object (left open). ``out_dir`` is
    claimed as :func:`evaluate_cot_suite` claims it, so a row is never computed from another policy's,
    another decoding's or another protocol's answers. ``protocol`` and ``prompts_dir`` as for
    :func:`collect_cot`.
    """
    _style(protocol, prompts_dir)  # a missing prompts_dir is refused before a model is loaded
    owned = isinstance(policy, str)
    runner: Policy = make_policy(policy) if isinstance(policy, str) else policy
    options = _CoTOptions(rag=rag, top_k=top_k, sampling=sampling or cot_sampling(protocol), batch_size=batch_size,
                          protocol=protocol, prompts_dir=prompts_dir)
    try:
        with _claim_cot_directory(out_dir, runner.name, options):
            return _evaluate_cot_env(runner, env_id, env_kwargs, limit=limit, out_dir=out_dir, options=options)
    finally:
        if owned:
            runner.close()


@dataclass(frozen=True)
class _CoTOptions:
    """How the answers of an evaluation are asked for (the same for every benchmark of a suite)."""

    rag: bool
    top_k: int
    sampling: SamplingParams
    batch_size: int
    protocol: ProtocolName
    prompts_dir: str | os.PathLike[str] | None


def _evaluate_cot_env(
    policy: Policy,
    env_id: str,
    env_kwargs: Mapping[str, Any] | None,
    *,
    limit: int | None,
    out_dir: str | os.PathLike[str],
    options: _CoTOptions,
) -> TaskResult:
    """Answer the missing tasks of one benchmark into its file in a claimed ``out_dir`` and summarise it."""
    import agentdistill  # noqa: F401 - registers the env ids

    env_kwargs = dict(env_kwargs or {})
    path = Path(out_dir) / ("cot-rag" if options.rag else "cot") / f"{env_id}.jsonl"
    env = gym.make(env_id, **env_kwargs)
    try:
        indices = task_indices(env.unwrapped.num_tasks, limit, env_id)
        check_task_ids(path, env_id, indices, lambda index: env.unwrapped.task_at(index).task_id)
        collect_cot(
            policy, env, indices, rag=options.rag, top_k=options.top_k, sampling=options.sampling, out=path,
            batch_size=options.batch_size, env_args=env_kwargs, protocol=options.protocol,
            prompts_dir=options.prompts_dir,
        )
    finally:
        env.close()
    return summarize_records(env_id, episodes_of(path, env_id, indices), metric=metric_of(env_id, env_kwargs))


def _claim_cot_directory(out_dir: str | os.PathLike[str], policy_name: str, options: _CoTOptions) -> RunDirectory:
    """Claim an evaluation directory for CoT answers.

    CoT and CoT+RAG share one directory (their math rows are the same answers, under ``cot/``), so RAG is
    not part of the directory's identity; each answer file records it in its own run identity. The paper's
    protocol is (directories of this package's protocol keep the identity they always had).
    """
    extra: dict[str, Any] = {"top_k": options.top_k}
    if options.protocol != "agentdistill":
        extra["protocol"] = options.protocol
    return claim_evaluation_directory(
        out_dir, policy=policy_name, method="chain-of-thought", sampling=options.sampling, extra=extra
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
    protocol: ProtocolName = "agentdistill",
    prompts_dir: str | os.PathLike[str] | None = None,
) -> ResultsTable:
    """:func:`evaluate_cot` on every env, as a ``CoT`` (or ``CoT+RAG``) results table written to
    ``out_dir/cot[-rag]/results.*``.

    RAG applies to the factual benchmarks only: the math envs have no retriever, so their rows are the
    plain CoT answers (``out_dir/cot/``), shared by both tables. ``out_dir`` is claimed for this policy,
    decoding and protocol before anything is written
    (:func:`~agentdistill.rollouts.evaluate.claim_evaluation_directory`) and released at the end.
    """
    _style(protocol, prompts_dir)  # a missing prompts_dir is refused before a model is loaded
    owned = isinstance(policy, str)
    runner: Policy = make_policy(policy) if isinstance(policy, str) else policy
    kwargs_by_env = env_kwargs_by_env or {}
    options = _CoTOptions(rag=rag, top_k=top_k, sampling=sampling or cot_sampling(protocol), batch_size=batch_size,
                          protocol=protocol, prompts_dir=prompts_dir)
    try:
        with _claim_cot_directory(out_dir, runner.name, options):
            rows = [
                _evaluate_cot_env(
                    runner, env_id, kwargs_by_env.get(env_id), limit=limit, out_dir=out_dir,
                    options=replace(options, rag=rag and domain_of(env_id) == "factual"),
                )
                for env_id in env_ids
            ]
            table = ResultsTable(policy=runner.name, rows=tuple(rows), method="CoT+RAG" if rag else "CoT", limit=limit)
            table.write(Path(out_dir) / ("cot-rag" if rag else "cot"))
    finally:
        if owned:
            runner.close()
    return table
