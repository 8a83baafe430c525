"""``kind: eval``: a policy on the paper's benchmarks (or chosen env ids), greedy or with SAG, one results table.

Runs :func:`agentdistill.rollouts.evaluate.evaluate`, the code behind ``agentdistill eval``: one resumable
trajectory file per benchmark under ``OUT/trajectories/`` and ``OUT/results.{md,csv,json,png}``. With
``data_root`` the benchmarks are read from local files (:data:`~agentdistill.rollouts.evaluate.SUITE_DATA`,
relative to a folder laid out like ``../shared/data``); without it, from the hub. ``retriever`` (for the
QA benchmarks) is the paper's wiki-18 search, e.g. the URL of ``agentdistill serve-retriever``. With
``judge`` (a policy spec) and ``prompts_dir``, the factual benchmarks are graded as in the paper's tables, by
its LLM judge (:class:`~agentdistill.policies.judge.PaperJudge`), into ``OUT/judged/``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from agentdistill.envs.paper import ProtocolName
from agentdistill.errors import UserError
from agentdistill.experiments.checks import (
    check_model,
    check_policy,
    count_records,
    describe_policy,
    env_entry,
    is_factual,
    probe_env,
    warn_if_expert_on_benchmarks,
    with_retriever,
)
from agentdistill.experiments.fields import Location
from agentdistill.experiments.plan import Plan
from agentdistill.experiments.protocol import check_protocol, describe_prompts_dir, with_resolved_prompts_dir
from agentdistill.experiments.registry import ExperimentKind
from agentdistill.experiments.schema import check_benchmarks, check_positive, check_sag
from agentdistill.policies import parse_policy_spec
from agentdistill.policies.base import SamplingParams
from agentdistill.rollouts.loop import SAGSettings, check_executor, describe_executor


@dataclass(frozen=True, kw_only=True)
class EvalExperiment:
    """``policy`` on ``suite`` (or ``tasks``), first ``limit`` tasks of each (see the module docstring)."""

    out: str
    policy: str
    policy_args: Mapping[str, Any] = field(default_factory=dict)
    suite: Literal["paper", "factual", "math"] | None = None
    tasks: tuple[str, ...] = ()
    """Explicit env ids instead of a suite (e.g. ``[AgentMath-Synthetic-v0]``)."""
    data_root: str | None = None
    retriever: str | None = None
    env_args: Mapping[str, Any] = field(default_factory=dict)
    """Constructor arguments for every env (e.g. ``max_steps``, ``reward: f1``)."""
    limit: int | None = None
    sag: SAGSettings | None = None
    prompt_variant: Literal["full", "short"] = "full"
    """``short`` for students trained by the sft kind (the paper's student prompt); ``full`` for teachers."""
    num_envs: int = 8
    vectorization_mode: Literal["sync", "async"] = "sync"
    executor: Literal["local", "ray"] = "local"
    """``ray``: the envs run as Ray actors over the cluster at ``ray_address`` (``pip install -e ".[ray]"``)."""
    ray_address: str | None = None
    """With ``executor: ray``, the cluster's head, ``HOST:PORT`` (``null``: ``RAY_ADDRESS``, else a local Ray)."""
    sampling: SamplingParams = field(default_factory=SamplingParams)
    wandb_project: str | None = None
    progress: bool = True
    judge: str | None = None
    """Grade the factual benchmarks by the paper's LLM judge: a policy spec, e.g.
    ``openai:https://api.openai.com/v1#gpt-4o-mini`` (math is never judged)."""
    prompts_dir: str | None = None
    """The directory of the paper's prompt files (``judge_prompt.txt`` among them); a relative path is read under
    ``data_root`` when that is set (:func:`~agentdistill.experiments.protocol.resolve_prompts_dir`)."""
    protocol: ProtocolName = "agentdistill"
    """``paper``: the envs speak the paper's agent texts and rules and read its test lists (with ``data_root``)."""

    def __post_init__(self) -> None:
        with_resolved_prompts_dir(self)
        check_protocol(self.protocol, self.prompts_dir)
        check_benchmarks(self.suite, self.tasks)
        check_sag(self.sag)
        check_positive(limit=self.limit, num_envs=self.num_envs)
        check_executor(self.executor, self.ray_address, self.vectorization_mode)


def benchmark_ids(suite: str | None, tasks: tuple[str, ...], where: Location) -> list[str]:
    """The env ids of a suite, or the given ones (each checked to be registered)."""
    from agentdistill.rollouts.evaluate import PAPER_FACTUAL, PAPER_MATH, PAPER_SUITE

    if suite is not None:
        return list({"paper": PAPER_SUITE, "factual": PAPER_FACTUAL, "math": PAPER_MATH}[suite])
    for index, env_id in enumerate(tasks):
        env_entry(env_id, where.child("tasks").child(index))
    return list(tasks)


def benchmark_kwargs(
    env_ids: list[str],
    *,
    data_root: str | None,
    retriever: str | None,
    env_args: Mapping[str, Any],
    prompt_variant: str | None,
    where: Location,
    protocol: str = "agentdistill",
    prompts_dir: str | None = None,
) -> dict[str, dict[str, Any]]:
    """Constructor arguments per benchmark: local files (with ``data_root``; the paper's test lists under its
    protocol), ``env_args``, the retriever, and the protocol."""
    from agentdistill.rollouts.evaluate import benchmark_env_kwargs

    if data_root is not None and not Path(data_root).is_dir():
        raise where.child("data_root").error(f"{data_root!r} is not a directory")
    local = benchmark_env_kwargs(env_ids, data_root=data_root, prompt_variant=prompt_variant, protocol=protocol)
    paper = {"protocol": "paper", "prompts_dir": prompts_dir} if protocol == "paper" else {}
    return {env_id: with_retriever(env_id, {**local[env_id], **env_args, **paper}, retriever) for env_id in env_ids}


def check_judge(judge: str, prompts_dir: str | None, plan: Plan, where: Location) -> str:
    """Check a ``judge`` spec and its ``prompts_dir`` as a run would use them (nothing is built, nothing is
    connected to), note what the judge needs, and return how results will name its metric."""
    from agentdistill.policies.judge import judge_label, load_judge_prompts

    try:
        parsed = parse_policy_spec(judge)
    except ValueError as error:
        raise where.child("judge").error(str(error)) from None
    try:
        load_judge_prompts(prompts_dir)
    except UserError as error:
        raise where.child("prompts_dir").error(str(error)) from None
    if parsed.kind == "openai":
        plan.need(f"an OpenAI-compatible server at {parsed.base_url} serving the judge {parsed.model}")
    elif parsed.kind in ("hf", "vllm"):
        check_model(parsed.model, plan, what="judge model")
    return judge_label(judge)


def metric_label(env_id: str, env_kwargs: Mapping[str, Any], judge: str | None) -> str:
    """How a benchmark will be graded: the judge for factual benchmarks when there is one, else its reward."""
    from agentdistill.policies.judge import judge_label
    from agentdistill.rollouts.evaluate import METRIC_NAMES, metric_of

    if judge is not None and is_factual(env_id):
        return judge_label(judge)
    metric = metric_of(env_id, env_kwargs)
    return METRIC_NAMES.get(metric, metric)


def plan_benchmarks(
    env_ids: list[str],
    kwargs_by_env: Mapping[str, Mapping[str, Any]],
    *,
    limit: int | None,
    results_dir: Path,
    plan: Plan,
    where: Location,
    judge: str | None = None,
) -> list[str]:
    """Build (or describe) every benchmark env and return one detail line each, with its grading metric."""
    lines = []
    for env_id in env_ids:
        probe = probe_env(env_id, kwargs_by_env[env_id], where, plan)
        if probe.num_tasks is None and limit is None and not probe.hub:
            raise where.child("limit").error(f"{env_id} generates unlimited tasks: set limit")
        if probe.num_tasks is not None:
            count = f"{min(limit, probe.num_tasks) if limit else probe.num_tasks} of {probe.num_tasks} tasks"
        else:
            count = f"first {limit} tasks" if limit else "every task"
        done = count_records(results_dir / f"{env_id}.jsonl")
        metric = metric_label(env_id, kwargs_by_env[env_id], judge)
        lines.append(
            f"{env_id}: {count} from {probe.source}; metric: {metric}"
            + (f"; {done} episodes already there" if done else "")
        )
    return lines


def plan(config: EvalExperiment, where: Location) -> Plan:
    result = Plan(f"eval: {config.policy} on the benchmarks ({where.file})")
    parsed = check_policy(config.policy, config.policy_args, result, where)
    env_ids = benchmark_ids(config.suite, config.tasks, where)
    details = result.step(f"Policy: {describe_policy(parsed)}; system prompt: {config.prompt_variant}")
    details.append(f"protocol: {config.protocol}" + (
        f" ({describe_prompts_dir(config.prompts_dir or '', where.child('prompts_dir'))})"
        if config.protocol == "paper" else ""
    ))
    sampling = config.sampling
    if config.sag is not None:
        details.append(f"SAG: {config.sag.n} candidates per step, temperature {config.sag.temperature}, "
                       f"top-p {config.sag.top_p}, vote on {config.sag.vote}")
    else:
        details.append(f"no SAG: temperature {sampling.temperature}, top-p {sampling.top_p}")
    details.append(
        f"max {sampling.max_new_tokens} new tokens per step; {config.num_envs} envs "
        f"({describe_executor(config.executor, config.vectorization_mode, config.ray_address)})"
    )
    kwargs_by_env = benchmark_kwargs(
        env_ids, data_root=config.data_root, retriever=config.retriever, env_args=config.env_args,
        prompt_variant=config.prompt_variant, where=where, protocol=config.protocol, prompts_dir=config.prompts_dir,
    )
    if config.judge is not None:
        label = check_judge(config.judge, config.prompts_dir, result, where)
    lines = plan_benchmarks(
        env_ids, kwargs_by_env, limit=config.limit, results_dir=Path(config.out) / "trajectories", plan=result,
        where=where, judge=config.judge,
    )
    result.step(f"Roll out into {Path(config.out) / 'trajectories'}/<env id>.jsonl (resumable)").extend(lines)
    if config.judge is not None:
        factual = [env_id for env_id in env_ids if is_factual(env_id)]
        judged = result.step(f"Judge the factual answers into {Path(config.out) / 'judged'}/<env id>.jsonl (resumable)")
        judged.append(f"{label}; the rows of {', '.join(factual) if factual else 'no benchmark (none is factual)'}")
        if not factual:
            result.warn("judge is set, but no benchmark is factual QA: the paper judges factual QA only")
    warn_if_expert_on_benchmarks(parsed, env_ids, result)
    result.step(f"Results table and chart: {Path(config.out)}/results.md, .csv, .json, .png")
    return result


def run(config: EvalExperiment, where: Location, write: Callable[[str], None]) -> None:
    from agentdistill.policies import make_policy
    from agentdistill.rollouts.evaluate import evaluate

    env_ids = benchmark_ids(config.suite, config.tasks, where)
    kwargs_by_env = benchmark_kwargs(
        env_ids, data_root=config.data_root, retriever=config.retriever, env_args=config.env_args,
        prompt_variant=config.prompt_variant, where=where, protocol=config.protocol, prompts_dir=config.prompts_dir,
    )
    policy = make_policy(config.policy, **config.policy_args)
    try:
        table = evaluate(
            policy,
            env_ids,
            env_kwargs_by_env=kwargs_by_env,
            limit=config.limit,
            sag_settings=config.sag,
            num_envs=config.num_envs,
            out_dir=config.out,
            sampling=config.sampling,
            vectorization_mode=config.vectorization_mode,
            executor=config.executor,
            ray_address=config.ray_address,
            wandb_project=config.wandb_project,
            progress=config.progress,
            judge=config.judge,
            prompts_dir=config.prompts_dir,
        )
    finally:
        policy.close()
    write(table.to_markdown())


KIND = ExperimentKind(name="eval", schema=EvalExperiment, plan=plan, run=run)
