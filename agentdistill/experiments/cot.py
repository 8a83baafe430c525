"""``kind: cot``: the chain-of-thought distillation baselines of the paper, CoT and CoT + RAG (``rag: true``).

Three optional sections, run in this order (:mod:`agentdistill.distill.cot` does the work):

- ``collect``: a teacher answers training tasks by plain chain-of-thought (with ``rag``, QA questions come
  with the retriever's top-k documents), graded, one resumable file per entry: ``OUT/answers/<name>.jsonl``;
- ``train``: a student is fine-tuned on the correct answers (the sft kind's :class:`TrainSection`, plus
  ``data``: answer files, by default this experiment's own) into ``OUT/student``;
- ``eval``: a policy (by default the student just trained) answers the benchmarks the same way, as
  ``agentdistill eval --cot cot|cot-rag`` does; results under ``OUT/eval/cot`` or ``OUT/eval/cot-rag``.

RAG applies to the QA tasks only: math tasks get the plain CoT prompt in both baselines, as in the paper.

``protocol: paper`` (with ``prompts_dir``) asks and reads answers as the paper's reasoning baseline does
(:mod:`agentdistill.distill.cot`): its ``teacher_model.yaml`` prompt, the raw question, ``<answer>`` tags. Its
runs decoded 4,096 new tokens greedily; the ``sampling`` sections say what this config decodes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from agentdistill.distill.cot import COT_MAX_NEW_TOKENS, PAPER_COT_MAX_NEW_TOKENS
from agentdistill.envs.paper import ProtocolName
from agentdistill.experiments.checks import (
    check_policy,
    count_records,
    describe_policy,
    describe_range,
    entry_env_kwargs,
    entry_start,
    entry_tasks,
    from_hub,
    is_factual,
    probe_env,
)
from agentdistill.experiments.evaluation import benchmark_ids, benchmark_kwargs, plan_benchmarks
from agentdistill.experiments.fields import Location
from agentdistill.experiments.plan import Plan
from agentdistill.experiments.protocol import check_protocol, describe_prompts_dir, with_resolved_prompts_dir
from agentdistill.experiments.registry import ExperimentKind
from agentdistill.experiments.schema import TaskEntry, check_benchmarks, check_positive, check_task_entries
from agentdistill.experiments.sft import TrainSection, plan_training, train
from agentdistill.policies.base import SamplingParams
from agentdistill.rollouts.collect import task_range


def _cot_sampling() -> SamplingParams:
    """Greedy, no CodeAct stop strings, room for a reasoned answer (as
    :func:`agentdistill.distill.cot.default_cot_sampling`)."""
    return SamplingParams(stop=(), max_new_tokens=COT_MAX_NEW_TOKENS)


@dataclass(frozen=True, kw_only=True)
class CoTCollectSection:
    """The teacher's chain-of-thought answers on training tasks."""

    policy: str
    policy_args: Mapping[str, Any] = field(default_factory=dict)
    tasks: tuple[TaskEntry, ...]
    sampling: SamplingParams = field(default_factory=_cot_sampling)
    top_k: int = 3
    """Documents put before a QA question with ``rag`` (the paper's 3)."""
    batch_size: int = 64

    def __post_init__(self) -> None:
        check_task_entries(self.tasks)
        check_positive(top_k=self.top_k, batch_size=self.batch_size)


@dataclass(frozen=True, kw_only=True)
class CoTTrainSection(TrainSection):
    """SFT of a student on correct chain-of-thought answers."""

    data: tuple[str, ...] = ()
    """Answer files of a teacher's ``collect`` (default: this experiment's ``OUT/answers/*.jsonl``)."""


@dataclass(frozen=True, kw_only=True)
class CoTEvalSection:
    """Chain-of-thought answers of a policy on the benchmarks, as a results table."""

    policy: str | None = None
    """Default: ``hf:OUT/student``, the student of the ``train`` section."""
    policy_args: Mapping[str, Any] = field(default_factory=dict)
    suite: Literal["paper", "factual", "math"] | None = None
    tasks: tuple[str, ...] = ()
    env_args: Mapping[str, Any] = field(default_factory=dict)
    limit: int | None = None
    sampling: SamplingParams = field(default_factory=_cot_sampling)
    top_k: int = 3
    batch_size: int = 64

    def __post_init__(self) -> None:
        check_benchmarks(self.suite, self.tasks)
        check_positive(limit=self.limit, top_k=self.top_k, batch_size=self.batch_size)


@dataclass(frozen=True, kw_only=True)
class CoTExperiment:
    """A CoT (or CoT + RAG) baseline: any of collect, train and eval (see the module docstring)."""

    out: str
    rag: bool = False
    data_root: str | None = None
    retriever: str | None = None
    """For QA envs: the search behind RAG (a server URL, an index directory, ``bm25``, ``dense``)."""
    protocol: ProtocolName = "agentdistill"
    """``paper``: the paper's CoT prompt and answer tags (:mod:`agentdistill.distill.cot`); needs ``prompts_dir``."""
    prompts_dir: str | None = None
    """The paper's prompt files (``teacher_model.yaml`` among them), for ``protocol: paper``; a relative path is read
    under ``data_root`` when that is set."""
    collect: CoTCollectSection | None = None
    train: CoTTrainSection | None = None
    eval: CoTEvalSection | None = None

    def __post_init__(self) -> None:
        with_resolved_prompts_dir(self)
        check_protocol(self.protocol, self.prompts_dir)
        if self.collect is None and self.train is None and self.eval is None:
            raise ValueError("a cot experiment needs at least one of the sections collect, train, eval")
        if self.train is not None and not self.train.data and self.collect is None:
            raise ValueError("train.data is empty and there is no collect section: list the answer files to train on")
        if self.eval is not None and self.eval.policy is None and self.train is None:
            raise ValueError("eval.policy is not set and there is no train section whose student it could be")

    @property
    def method(self) -> str:
        return "cot-rag" if self.rag else "cot"

    def answers_path(self, entry: TaskEntry) -> Path:
        return Path(self.out) / "answers" / f"{entry.label}.jsonl"

    @property
    def student_dir(self) -> Path:
        return Path(self.out) / "student"

    def train_data(self) -> list[str]:
        assert self.train is not None
        if self.train.data:
            return list(self.train.data)
        assert self.collect is not None
        return [str(self.answers_path(entry)) for entry in self.collect.tasks]

    def eval_policy(self) -> str:
        assert self.eval is not None
        return self.eval.policy or f"hf:{self.student_dir}"


def plan(config: CoTExperiment, where: Location) -> Plan:
    result = Plan(f"cot: the {'CoT + RAG' if config.rag else 'CoT'} distillation baseline ({where.file})")
    if config.protocol == "paper":
        assert config.prompts_dir is not None  # checked when the config was read
        prompts = describe_prompts_dir(config.prompts_dir, where.child("prompts_dir"))
        result.step(f"Protocol paper: the paper's CoT prompt and <answer> tags, {prompts}")
        _warn_short_answers(config, result)
    if config.collect is not None:
        _plan_collect(config, config.collect, where.child("collect"), result)
    if config.train is not None:
        plan_training(config.train, str(config.student_dir), config.train_data(), result, where.child("train"))
    if config.eval is not None:
        _plan_eval(config, config.eval, where.child("eval"), result)
    return result


def _warn_short_answers(config: CoTExperiment, plan: Plan) -> None:
    """The paper's answers had room for 4,096 tokens; a shorter budget cuts long solutions off."""
    for name, section in (("collect", config.collect), ("eval", config.eval)):
        if section is not None and section.sampling.max_new_tokens < PAPER_COT_MAX_NEW_TOKENS:
            plan.warn(
                f"{name}.sampling.max_new_tokens is {section.sampling.max_new_tokens}; the paper's CoT runs used "
                f"{PAPER_COT_MAX_NEW_TOKENS}"
            )


def _plan_collect(config: CoTExperiment, section: CoTCollectSection, where: Location, plan: Plan) -> None:
    parsed = check_policy(section.policy, section.policy_args, plan, where)
    rag = f"; QA questions with the top {section.top_k} retrieved documents" if config.rag else ""
    details = plan.step(f"Teacher chain-of-thought answers by {describe_policy(parsed)}{rag}")
    for entry, kwargs, tasks in _collect_jobs(config, section, where, plan):
        path = config.answers_path(entry)
        done = count_records(path)
        details.append(f"{entry.label}: {tasks} -> {path}" + (f" ({done} already there)" if done else ""))
        if config.rag and is_factual(entry.env) and kwargs.get("retriever") is None:
            details.append(f"{entry.label}: RAG searches the env's own paragraphs (BM25); set retriever for wiki-18")


def _collect_jobs(
    config: CoTExperiment, section: CoTCollectSection, where: Location, plan: Plan
) -> list[tuple[TaskEntry, dict[str, Any], str]]:
    jobs = []
    for index, entry in enumerate(section.tasks):
        place = where.child("tasks").child(index)
        kwargs = entry_env_kwargs(entry, data_root=config.data_root, retriever=config.retriever, where=place)
        probe = probe_env(entry.env, kwargs, place, plan)
        tasks = entry_tasks(entry, probe, plan, place)
        if tasks is None:
            description = f"every task from {entry_start(entry, probe.hub)} on, {probe.source}"
        else:
            description = describe_range(probe, tasks)
        jobs.append((entry, kwargs, description))
    return jobs


def _plan_eval(config: CoTExperiment, section: CoTEvalSection, where: Location, plan: Plan) -> None:
    env_ids = benchmark_ids(section.suite, section.tasks, where)
    if section.policy is None:
        who = f"the student trained above ({config.student_dir})"
    else:
        who = describe_policy(check_policy(section.policy, section.policy_args, plan, where))
    kwargs_by_env = benchmark_kwargs(
        env_ids, data_root=config.data_root, retriever=config.retriever, env_args=section.env_args,
        prompt_variant=None, where=where,
    )
    results = Path(config.out) / "eval"
    lines = plan_benchmarks(
        env_ids, kwargs_by_env, limit=section.limit, results_dir=results / config.method, plan=plan, where=where
    )
    plan.step(f"{'CoT + RAG' if config.rag else 'CoT'} answers of {who} on the benchmarks").extend(lines)
    plan.step(f"Results table: {results / config.method}/results.md, .csv, .json, .png")


def run(config: CoTExperiment, where: Location, write: Callable[[str], None]) -> None:
    if config.collect is not None:
        _run_collect(config, config.collect, where.child("collect"))
    if config.train is not None:
        from agentdistill.distill.cot import cot_dataset

        dataset = cot_dataset(config.train_data(), protocol=config.protocol)
        write(f"{len(dataset)} correct chain-of-thought answers to train on\n")
        if len(dataset) == 0:
            raise RuntimeError(f"no correct answer in {', '.join(config.train_data())}: nothing to train on")
        train(config.train, dataset, str(config.student_dir), write)
    if config.eval is not None:
        _run_eval(config, config.eval, where.child("eval"), write)


def _run_collect(config: CoTExperiment, section: CoTCollectSection, where: Location) -> None:
    import gymnasium as gym

    import agentdistill  # noqa: F401 - registers the env ids
    from agentdistill.distill.cot import collect_cot
    from agentdistill.policies import make_policy

    policy = make_policy(section.policy, **section.policy_args)
    try:
        for index, entry in enumerate(section.tasks):
            kwargs = entry_env_kwargs(
                entry, data_root=config.data_root, retriever=config.retriever, where=where.child("tasks").child(index)
            )
            env = gym.make(entry.env, **kwargs)
            try:
                start = entry_start(entry, from_hub(entry.env, kwargs))
                num_tasks = env.unwrapped.num_tasks
                tasks = task_range(num_tasks, start=start, episodes=entry.episodes, env_id=entry.env, clip=True)
                collect_cot(
                    policy, env, tasks, rag=config.rag and is_factual(entry.env), top_k=section.top_k,
                    sampling=section.sampling, out=config.answers_path(entry), batch_size=section.batch_size,
                    protocol=config.protocol, prompts_dir=config.prompts_dir,
                )
            finally:
                env.close()
    finally:
        policy.close()


def _run_eval(config: CoTExperiment, section: CoTEvalSection, where: Location, write: Callable[[str], None]) -> None:
    from agentdistill.distill.cot import evaluate_cot_suite
    from agentdistill.policies import make_policy

    env_ids = benchmark_ids(section.suite, section.tasks, where)
    kwargs_by_env = benchmark_kwargs(
        env_ids, data_root=config.data_root, retriever=config.retriever, env_args=section.env_args,
        prompt_variant=None, where=where,
    )
    policy = make_policy(config.eval_policy(), **section.policy_args)
    try:
        table = evaluate_cot_suite(
            policy, env_ids, env_kwargs_by_env=kwargs_by_env, limit=section.limit, rag=config.rag,
            out_dir=Path(config.out) / "eval", top_k=section.top_k, sampling=section.sampling,
            batch_size=section.batch_size, protocol=config.protocol, prompts_dir=config.prompts_dir,
        )
    finally:
        policy.close()
    write(table.to_markdown())


KIND = ExperimentKind(name="cot", schema=CoTExperiment, plan=plan, run=run)
