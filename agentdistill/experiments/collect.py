"""``kind: collect``: a teacher's trajectories on training tasks, optionally started from first-thought prefixes.

For each task entry, ``OUT/trajectories/<name>.jsonl`` (resumable) through
:func:`agentdistill.rollouts.collect.collect_trajectories`, the code behind ``agentdistill rollout``.
With ``ftp: {build: true}`` the teacher first answers each task with plain chain-of-thought and the first
paragraphs become ``OUT/ftp/<name>.json`` (:func:`agentdistill.rollouts.ftp.build_prefix_file`, as
``agentdistill ftp build``; a prefix file already there is reused); ``ftp: {files: {NAME: PATH}}`` uses
prefix files built before. One teacher serves every entry.

With ``judge`` (a policy spec) and ``prompts_dir``, each entry's episodes are then judged as the paper judged
its teacher's (:func:`agentdistill.rollouts.rescore.rescore`) into ``OUT/judged/<name>.jsonl``: the factual
episodes' score becomes the LLM judge's verdict, so an ``sft`` experiment trained on these files keeps the
episodes the judge accepted (the paper's filter), not those that matched exactly. Math keeps its score.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from agentdistill.envs.paper import ProtocolName
from agentdistill.experiments.checks import (
    check_file,
    check_policy,
    count_records,
    describe_policy,
    describe_range,
    entry_env_kwargs,
    entry_start,
    entry_tasks,
    probe_env,
    warn_if_expert_on_benchmarks,
    with_retriever,
)
from agentdistill.experiments.evaluation import check_judge
from agentdistill.experiments.fields import Location
from agentdistill.experiments.plan import Plan
from agentdistill.experiments.protocol import check_protocol, describe_prompts_dir, with_resolved_prompts_dir
from agentdistill.experiments.registry import ExperimentKind
from agentdistill.experiments.schema import TaskEntry, check_positive, check_sag, check_task_entries
from agentdistill.policies.base import SamplingParams
from agentdistill.policies.judge import PaperJudge
from agentdistill.rollouts.collect import task_range
from agentdistill.rollouts.loop import SAGSettings, check_executor, describe_executor


def _cot_sampling() -> SamplingParams:
    return SamplingParams(stop=())  # a chain-of-thought answer has no code block to stop after


@dataclass(frozen=True, kw_only=True)
class FTPSection:
    """First-thought prefixes: build them with the teacher (``build: true``) or read ``files`` by entry name."""

    build: bool = False
    files: Mapping[str, str] = field(default_factory=dict)
    """Prefix files (``{task_id: prefix}`` JSON from ``agentdistill ftp build``) by task entry name."""
    policy: str | None = None
    """The model that writes the chain-of-thought answers (default: the experiment's policy)."""
    sampling: SamplingParams = field(default_factory=_cot_sampling)
    batch_size: int = 64

    def __post_init__(self) -> None:
        if self.build == bool(self.files):
            raise ValueError("ftp needs exactly one of build: true (prefixes made here) or files: {NAME: PATH}")
        check_positive(batch_size=self.batch_size)


@dataclass(frozen=True, kw_only=True)
class CollectExperiment:
    """Teacher trajectories on ``tasks`` with ``policy`` (see the module docstring)."""

    out: str
    policy: str
    policy_args: Mapping[str, Any] = field(default_factory=dict)
    """Constructor arguments of the policy (e.g. ``max_concurrency`` of an OpenAI-compatible client)."""
    tasks: tuple[TaskEntry, ...]
    data_root: str | None = None
    """A folder laid out like ``../shared/data`` (the paper's question lists); ``null``: the hub."""
    retriever: str | None = None
    """For QA envs: a retrieval server URL, an index directory, ``bm25`` or ``dense`` (``null``: the env's
    default, BM25 over the split's paragraphs)."""
    num_envs: int = 8
    vectorization_mode: Literal["sync", "async"] = "sync"
    executor: Literal["local", "ray"] = "local"
    """``ray``: the envs run as Ray actors over the cluster at ``ray_address`` (``pip install -e ".[ray]"``)."""
    ray_address: str | None = None
    """With ``executor: ray``, the cluster's head, ``HOST:PORT`` (``null``: ``RAY_ADDRESS``, else a local Ray)."""
    sampling: SamplingParams = field(default_factory=SamplingParams)
    sag: SAGSettings | None = None
    ftp: FTPSection | None = None
    wandb_project: str | None = None
    progress: bool = True
    judge: str | None = None
    """Judge each entry's factual episodes by the paper's LLM judge, this policy spec (e.g.
    ``openai:https://api.openai.com/v1#gpt-4o-mini``), into ``OUT/judged/<name>.jsonl``."""
    prompts_dir: str | None = None
    """The directory of the paper's prompt files (``judge_prompt.txt`` among them); a relative path is read under
    ``data_root`` when that is set (:func:`~agentdistill.experiments.protocol.resolve_prompts_dir`)."""
    protocol: ProtocolName = "agentdistill"
    """``paper``: the teacher acts under the paper's agent texts and rules, and FTP prefixes are cut its way."""

    def __post_init__(self) -> None:
        with_resolved_prompts_dir(self)
        check_protocol(self.protocol, self.prompts_dir)
        check_task_entries(self.tasks)
        check_sag(self.sag)
        check_positive(num_envs=self.num_envs)
        check_executor(self.executor, self.ray_address, self.vectorization_mode)
        if self.ftp is not None and self.ftp.files:
            names = {entry.label for entry in self.tasks}
            unknown = sorted(set(self.ftp.files) - names)
            missing = sorted(names - set(self.ftp.files))
            if unknown or missing:
                raise ValueError(
                    f"ftp.files must name one prefix file per task entry ({', '.join(sorted(names))}); "
                    + (f"unknown: {', '.join(unknown)}" if unknown else f"missing: {', '.join(missing)}")
                )


@dataclass(frozen=True)
class _Job:
    """One task entry, resolved: its env arguments and task indices."""

    entry: TaskEntry
    env_kwargs: dict[str, Any]
    tasks: range | None
    """``None`` when the tasks come from the hub and the split's size is known only once it is loaded."""
    start: int


def trajectories_path(out: str, name: str) -> Path:
    return Path(out) / "trajectories" / f"{name}.jsonl"


def judged_path(out: str, name: str) -> Path:
    """Where an entry's judged copy goes (the file an sft experiment trains on to filter by the judge)."""
    return Path(out) / "judged" / f"{name}.jsonl"


def prefixes_path(config: CollectExperiment, name: str) -> Path:
    assert config.ftp is not None
    return Path(config.ftp.files[name]) if config.ftp.files else Path(config.out) / "ftp" / f"{name}.json"


def _jobs(config: CollectExperiment, where: Location, plan: Plan) -> list[_Job]:
    """Resolve every entry, building the envs whose tasks are local, and describe them in the plan."""
    details = plan.step(f"Teacher trajectories into {Path(config.out) / 'trajectories'}/<name>.jsonl (resumable)")
    jobs = []
    for index, entry in enumerate(config.tasks):
        place = where.child("tasks").child(index)
        kwargs = entry_env_kwargs(entry, data_root=config.data_root, retriever=config.retriever, where=place)
        if config.protocol == "paper":
            kwargs.update(protocol="paper", prompts_dir=config.prompts_dir)
            kwargs = with_retriever(entry.env, kwargs, config.retriever)  # the paper's math agents search too
        probe = probe_env(entry.env, kwargs, place, plan)
        start = entry_start(entry, probe.hub)
        tasks = entry_tasks(entry, probe, plan, place)
        path = trajectories_path(config.out, entry.label)
        done = count_records(path)
        if tasks is None:
            what = f"{entry.env}: every task from {start} on, {probe.source}"
        else:
            what = describe_range(probe, tasks)
        details.append(f"{entry.label}: {what}" + (f"; {done} episodes already in {path}" if done else ""))
        jobs.append(_Job(entry, kwargs, tasks, start))
    return jobs


def plan(config: CollectExperiment, where: Location) -> Plan:
    result = Plan(f"collect: teacher trajectories ({where.file})")
    parsed = check_policy(config.policy, config.policy_args, result, where)
    teacher = result.step(f"Teacher: {describe_policy(parsed)}")
    teacher.append(f"protocol: {config.protocol}" + (
        f" ({describe_prompts_dir(config.prompts_dir or '', where.child('prompts_dir'))})"
        if config.protocol == "paper" else ""
    ))
    sampling = config.sampling
    teacher.append(
        f"sampling: temperature {sampling.temperature}, top-p {sampling.top_p}, max {sampling.max_new_tokens} "
        f"new tokens, seed {sampling.seed}; {config.num_envs} envs "
        f"({describe_executor(config.executor, config.vectorization_mode, config.ray_address)})"
    )
    if config.sag is not None:
        sag = config.sag
        teacher.append(f"SAG: {sag.n} candidates, temperature {sag.temperature}, top-p {sag.top_p}, vote on {sag.vote}")
    if config.ftp is not None:
        _plan_ftp(config, where, result)
    jobs = _jobs(config, where, result)
    if config.judge is not None:
        _plan_judge(config, jobs, where, result)
    warn_if_expert_on_benchmarks(parsed, [job.entry.env for job in jobs], result)
    if config.wandb_project:
        result.step(f"W&B project {config.wandb_project} (offline without credentials)")
    return result


def _plan_judge(config: CollectExperiment, jobs: list[_Job], where: Location, plan: Plan) -> None:
    assert config.judge is not None
    label = check_judge(config.judge, config.prompts_dir, plan, where)
    judged = Path(config.out) / "judged"
    details = plan.step(f"Judge the episodes into {judged}/<name>.jsonl (resumable): the files to train on")
    details.append(f"{label}: factual episodes scored by the judge's verdict; math keeps its own score")
    for job in jobs:
        details.append(f"{job.entry.label}: {judged_path(config.out, job.entry.label)}")


def _plan_ftp(config: CollectExperiment, where: Location, plan: Plan) -> None:
    assert config.ftp is not None
    if config.ftp.files:
        details = plan.step("First-thought prefixes from existing files")
        for name in config.ftp.files:
            path = check_file(config.ftp.files[name], where.child("ftp").child("files").child(name), what="prefix file")
            details.append(f"{name}: {path}")
        return
    if config.ftp.policy is not None:
        parsed = check_policy(config.ftp.policy, {}, plan, where.child("ftp"))
        writer = describe_policy(parsed)
    else:
        writer = "the teacher"
    details = plan.step(f"First-thought prefixes: {writer} answers each task by chain-of-thought; first paragraphs")
    for entry in config.tasks:
        path = prefixes_path(config, entry.label)
        details.append(f"{entry.label}: {path}" + (" (exists: reused)" if path.exists() else ""))


def run(config: CollectExperiment, where: Location, write: Callable[[str], None]) -> None:
    from agentdistill.policies import make_policy
    from agentdistill.rollouts.collect import collect_trajectories
    from agentdistill.rollouts.ftp import build_prefix_file, load_prefixes

    jobs = _jobs(config, where, Plan(""))
    policy = make_policy(config.policy, **config.policy_args)
    ftp_writer = make_policy(config.ftp.policy) if config.ftp is not None and config.ftp.policy else policy
    judge = PaperJudge.from_spec(config.judge, config.prompts_dir) if config.judge is not None else None
    reports: dict[str, Any] = {}
    try:
        for job in jobs:
            prefixes = None
            if config.ftp is not None:
                path = prefixes_path(config, job.entry.label)
                if config.ftp.build and not path.exists():
                    indices = job.tasks if job.tasks is not None else _all_tasks(job)
                    build_prefix_file(
                        ftp_writer, job.entry.env, indices, path, env_kwargs=job.env_kwargs,
                        sampling=config.ftp.sampling, batch_size=config.ftp.batch_size,
                        protocol=config.protocol, prompts_dir=config.prompts_dir,
                    )
                prefixes = load_prefixes(path)
            summary = collect_trajectories(
                policy,
                job.entry.env,
                out=trajectories_path(config.out, job.entry.label),
                start=job.start,
                episodes=job.entry.episodes,
                clip=True,
                num_envs=config.num_envs,
                vectorization_mode=config.vectorization_mode,
                executor=config.executor,
                ray_address=config.ray_address,
                env_kwargs=job.env_kwargs,
                sampling=config.sampling,
                sag=config.sag,
                ftp_prefixes=prefixes,
                wandb_project=config.wandb_project,
                wandb_config={"experiment": where.file, "task": job.entry.label, "policy": config.policy},
                progress=config.progress,
            )
            reports[job.entry.label] = {"episodes": summary.episodes, "skipped": summary.skipped, **summary.metrics}
            if judge is not None:
                reports[job.entry.label]["judged"] = _judge_entry(config, job, judge)
    finally:
        if judge is not None:
            judge.close()
        if ftp_writer is not policy:
            ftp_writer.close()
        policy.close()
    write(json.dumps(reports, indent=1) + "\n")


def _judge_entry(config: CollectExperiment, job: _Job, judge: PaperJudge) -> dict[str, Any]:
    """Judge one entry's trajectory file into its judged copy; what the report says about it."""
    from agentdistill.rollouts.rescore import rescore

    path = judged_path(config.out, job.entry.label)
    summary = rescore([trajectories_path(config.out, job.entry.label)], judge, out=path, progress=config.progress)
    report: dict[str, Any] = {"file": str(path), "judge": summary.judge, "judged_now": summary.judged_now}
    for row in summary.rows:
        report.update(metric=row.metric, accuracy=row.accuracy, judge_failures=row.judge_failures,
                      em=row.grader_metrics.get("em"), f1=row.grader_metrics.get("f1"))
    return report


def _all_tasks(job: _Job) -> range:
    """The task range of an entry whose size is known only once its hub split is loaded."""
    import gymnasium as gym

    import agentdistill  # noqa: F401 - registers the env ids

    env = gym.make(job.entry.env, **job.env_kwargs)
    try:
        num_tasks = env.unwrapped.num_tasks
        return task_range(num_tasks, start=job.start, episodes=job.entry.episodes, env_id=job.entry.env, clip=True)
    finally:
        env.close()


KIND = ExperimentKind(name="collect", schema=CollectExperiment, plan=plan, run=run)
