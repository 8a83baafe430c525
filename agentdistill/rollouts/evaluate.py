"""Evaluating a policy on the paper's benchmarks: one resumable rollout file per task, one results table.

:func:`evaluate` runs a policy (a spec string such as ``"hf:out/student"`` or a ready
:class:`~agentdistill.policies.base.Policy`) through :func:`~agentdistill.rollouts.loop.run_rollouts` on
each env id, writing ``out_dir/trajectories/<env_id>.jsonl``. Figures are computed from those files, not
from the live run, so an interrupted evaluation that is started again skips the finished episodes and
still reports every episode. The :class:`ResultsTable` it returns holds, per benchmark, the accuracy
(mean reward), the invalid-action rate, the mean number of steps and the tokens per episode, plus the
factual / math / overall averages the paper reports; :meth:`ResultsTable.write` saves it as Markdown, CSV,
JSON and a bar chart.

Local data. The full benchmarks come from the Hugging Face hub (pass no ``data_path``); without a hub,
:func:`suite_env_kwargs` maps each benchmark to files of the shared data folder (see :data:`SUITE_DATA`
for what each choice means and how it differs from the paper's setting).
"""

from __future__ import annotations

import csv
import json
import math
import os
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from agentdistill.envs.registration import ENV_ENTRIES, benchmark_name, domain_of, env_entry_for
from agentdistill.errors import OutputConflictError
from agentdistill.policies import make_policy
from agentdistill.policies.base import Policy, SamplingParams
from agentdistill.policies.judge import PaperJudge, as_paper_judge, judge_label
from agentdistill.rollouts.figures import invalid_action_rate, is_agent_episode, mean_steps, success_rate
from agentdistill.rollouts.loop import SAGSettings, check_executor, make_rollout_envs, run_rollouts
from agentdistill.rollouts.records import EpisodeRecord, latest_records, read_trajectories
from agentdistill.runs import RunDirectory, claim_run_directory

PAPER_FACTUAL: tuple[str, ...] = (
    "AgentQA-HotpotQA-v0",
    "AgentQA-Bamboogle-v0",
    "AgentQA-MuSiQue-v0",
    "AgentQA-2WikiMultiHopQA-v0",
)
PAPER_MATH: tuple[str, ...] = (
    "AgentMath-MATH500-v0",
    "AgentMath-GSMHard-v0",
    "AgentMath-AIME-v0",
    "AgentMath-OlymMATH-v0",
)
PAPER_SUITE: tuple[str, ...] = PAPER_FACTUAL + PAPER_MATH
"""The paper's eight benchmarks in its table order: four factual, then four math."""

SUITE_DATA: Mapping[str, Mapping[str, str]] = MappingProxyType(
    {entry.env_id: entry.local_data for entry in ENV_ENTRIES if entry.local_data}
)
"""For each benchmark with local data, env arguments naming files relative to the shared data folder
(``../shared/data``): each env's registry entry (:attr:`~agentdistill.envs.registration.EnvEntry.local_data`)
says what it holds and how it differs from the paper's setting."""

PAPER_TEST_SETS: Mapping[str, Mapping[str, str]] = MappingProxyType(
    {entry.env_id: entry.paper_data for entry in ENV_ENTRIES if entry.paper_data}
)
"""Under ``protocol="paper"``: the paper's own test lists for all eight benchmarks, relative to the shared data
folder (:attr:`~agentdistill.envs.registration.EnvEntry.paper_data`; the default protocol maps HotpotQA and
MuSiQue to local files that carry their paragraphs instead)."""

METRIC_NAMES: Mapping[str, str] = MappingProxyType(
    {
        "em": "exact match (EM)",
        "f1": "token F1",
        "judge": "LLM judge",
        "math": "answer equivalence (math-verify)",
    }
)
"""How the table names the metric behind each accuracy."""

JUDGED_KEY = "judged"
"""The record key in which :mod:`agentdistill.rollouts.rescore` says how a record was judged (the judge, the
input line judged, and ``status``: ``"failed"`` when no verdict could be had and the answer scored 0)."""

_GROUPS: tuple[str, ...] = ("factual", "math", "all")
_AVERAGED = ("accuracy", "invalid_action_rate", "mean_steps", "completion_tokens", "prompt_tokens")
_DOMAIN_COLOURS = MappingProxyType({"factual": "#4C72B0", "math": "#DD8452", "other": "#8C8C8C"})


def suite_env_kwargs(
    data_root: str | os.PathLike[str] | None, env_ids: Iterable[str] = PAPER_SUITE, *, protocol: str = "agentdistill"
) -> dict[str, dict[str, Any]]:
    """Env arguments for each of ``env_ids``: local files under ``data_root`` (:data:`SUITE_DATA`, or
    :data:`PAPER_TEST_SETS` under the paper's protocol), or nothing when ``data_root`` is ``None`` (the envs
    then load the benchmarks from the hub)."""
    mapping = PAPER_TEST_SETS if protocol == "paper" else SUITE_DATA
    result: dict[str, dict[str, Any]] = {}
    for env_id in env_ids:
        if data_root is None:
            result[env_id] = {}
            continue
        if env_id not in mapping:
            raise ValueError(f"no local data is mapped for {env_id!r}; mapped ids: {', '.join(mapping)}")
        result[env_id] = {key: str(Path(data_root) / relative) for key, relative in mapping[env_id].items()}
    return result


HELD_OUT_SPLIT = "test"
"""The split the synthetic envs are evaluated on: their default, ``train``, is where teachers collect."""


def benchmark_env_kwargs(
    env_ids: Iterable[str],
    *,
    data_root: str | os.PathLike[str] | None = None,
    prompt_variant: str | None = None,
    env_args: Mapping[str, Any] | None = None,
    protocol: str | None = None,
) -> dict[str, dict[str, Any]]:
    """Constructor arguments for each env of an evaluation: the suite's local files under ``data_root``
    (:func:`suite_env_kwargs`, for ``protocol`` or else the ``protocol`` of ``env_args``; ids outside
    :data:`PAPER_SUITE`, such as the synthetic envs, need none), the
    system prompt variant (``"short"`` for students trained by ``agentdistill distill``) and ``env_args`` for
    every env. The synthetic envs are evaluated on their held-out split (:data:`HELD_OUT_SPLIT`) unless
    ``env_args`` names one: their default split is the one teacher trajectories, and so students, come from."""
    protocol = protocol or str((env_args or {}).get("protocol", "agentdistill"))
    result: dict[str, dict[str, Any]] = {}
    for env_id in env_ids:
        local = suite_env_kwargs(data_root, (env_id,), protocol=protocol)[env_id] if env_id in PAPER_SUITE else {}
        held_out = {"split": HELD_OUT_SPLIT} if is_synthetic(env_id) else {}
        variant = {"prompt_variant": prompt_variant} if prompt_variant is not None else {}
        result[env_id] = {**local, **held_out, **variant, **dict(env_args or {})}
    return result


def is_synthetic(env_id: str) -> bool:
    """Whether ``env_id`` generates its tasks (and so has a train and a held-out split)."""
    return env_entry_for(env_id).synthetic


def metric_of(env_id: str, env_kwargs: Mapping[str, Any]) -> str:
    """The metric an env's reward is: its ``reward=`` setting for QA envs (EM by default), equivalence for math."""
    if domain_of(env_id) == "math":
        return "math"
    return str(env_kwargs.get("reward", "em"))


# --- results ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskResult:
    """The figures of one benchmark (one row of the table).

    ``accuracy`` is the mean reward over the episodes (for QA, the metric in ``metric``);
    ``completion_tokens`` and ``prompt_tokens`` are per episode; ``grader_metrics`` holds the mean of every
    metric the grader reported (EM and F1 for QA, whichever rewards), so a table in EM can still show F1.
    ``invalid_action_rate`` is ``None`` where no episode took an action (CoT answers; agents whose policy failed
    before acting), and ``mean_steps`` for methods without steps (CoT).
    ``judge_failures`` counts the answers an LLM judge gave no verdict on (scored 0).
    """

    env_id: str
    benchmark: str
    domain: str
    metric: str
    episodes: int
    accuracy: float
    invalid_action_rate: float | None
    mean_steps: float | None
    completion_tokens: float
    prompt_tokens: float
    failed_episodes: int = 0
    grader_metrics: Mapping[str, float] = field(default_factory=dict)
    judge_failures: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "grader_metrics": dict(self.grader_metrics)}


def summarize_records(env_id: str, records: Iterable[EpisodeRecord], *, metric: str) -> TaskResult:
    """A :class:`TaskResult` from trajectory records (agent episodes or CoT answers) of one env.

    Success, invalid actions and steps are counted by :mod:`agentdistill.rollouts.figures`, as everywhere else
    episodes are read.
    """
    records = list(records)
    acted = any(is_agent_episode(record) for record in records)
    return TaskResult(
        env_id=env_id,
        benchmark=benchmark_name(env_id),
        domain=domain_of(env_id),
        metric=metric,
        episodes=len(records),
        accuracy=success_rate(records),
        invalid_action_rate=invalid_action_rate(records),
        mean_steps=mean_steps(records) if acted else None,
        completion_tokens=_mean_tokens(records, "completion"),
        prompt_tokens=_mean_tokens(records, "prompt"),
        failed_episodes=sum(1 for record in records if record.get("failed")),
        grader_metrics=_grader_metric_means(records),
        judge_failures=sum(1 for record in records if (record.get(JUDGED_KEY) or {}).get("status") == "failed"),
    )


def _mean_tokens(records: Sequence[EpisodeRecord], kind: str) -> float:
    """The ``kind`` (``"prompt"`` or ``"completion"``) tokens per episode."""
    counts = [float((record.get("tokens") or {}).get(kind, 0)) for record in records]
    return sum(counts) / len(counts) if counts else 0.0


def _grader_metric_means(records: Sequence[EpisodeRecord]) -> dict[str, float]:
    """The mean of every numeric metric the grader reported, over the records that report it, by name."""
    values: dict[str, list[float]] = {}
    for record in records:
        for name, value in (record.get("metrics") or {}).items():
            if isinstance(value, (int, float)):
                values.setdefault(name, []).append(float(value))
    return {name: sum(values[name]) / len(values[name]) for name in sorted(values)}


@dataclass(frozen=True)
class ResultsTable:
    """Per-benchmark results of one policy and method, with the paper's factual / math / overall averages.

    Args:
        policy: the policy's name (as trajectory records hold it).
        rows: one :class:`TaskResult` per benchmark, in table order.
        method: what produced the rows: ``"agent"`` (CodeAct episodes), ``"CoT"`` or ``"CoT+RAG"``.
        sag_n: candidates per step with self-consistent action generation (0: off).
        limit: the number of tasks per benchmark, when the run was cut to the first ``limit``.
        judge: the LLM judge behind the ``"judge"`` rows (the paper's prompt), by its policy name.
    """

    policy: str
    rows: tuple[TaskResult, ...]
    method: str = "agent"
    sag_n: int = 0
    limit: int | None = None
    judge: str | None = None
    sag_vote: str = "answer"
    """What SAG's candidates voted with (``answer`` or ``logs``, the paper's)."""

    @property
    def qa_metric(self) -> str:
        """The metric behind the factual accuracies ("em", "f1", "judge"; comma-joined when rows differ)."""
        metrics = sorted({row.metric for row in self.rows if row.domain == "factual"})
        return ", ".join(metrics) if metrics else "none"

    def averages(self) -> dict[str, dict[str, float | None]]:
        """Unweighted means over benchmarks (as the paper's "Avg" columns) for factual, math and all rows."""
        result: dict[str, dict[str, float | None]] = {}
        for group in _GROUPS:
            rows = [row for row in self.rows if group == "all" or row.domain == group]
            if not rows:
                continue
            means: dict[str, float | None] = {"benchmarks": float(len(rows))}
            for name in _AVERAGED:
                values = [getattr(row, name) for row in rows if getattr(row, name) is not None]
                means[name] = sum(values) / len(values) if values else None
            result[group] = means
        return result

    def to_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "method": self.method,
            "sag_n": self.sag_n,
            "sag": self.sag_n > 1,
            "sag_vote": self.sag_vote if self.sag_n > 1 else None,
            "limit": self.limit,
            "qa_metric": self.qa_metric,
            "qa_metric_name": self._qa_metric_name(),
            "judge": self.judge,
            "judge_failures": self.judge_failures,
            "rows": [row.to_dict() for row in self.rows],
            "averages": self.averages(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ResultsTable:
        """The table :meth:`to_dict` (or ``results.json``) describes."""
        return cls(
            policy=str(data["policy"]),
            rows=tuple(TaskResult(**row) for row in data["rows"]),
            method=str(data.get("method", "agent")),
            sag_n=int(data.get("sag_n", 0)),
            sag_vote=str(data.get("sag_vote") or "answer"),
            limit=data.get("limit"),
            judge=data.get("judge"),
        )

    @property
    def judge_failures(self) -> int:
        """Answers the LLM judge gave no verdict on, over every row (each scored 0)."""
        return sum(row.judge_failures for row in self.rows)

    def metric_name(self, metric: str) -> str:
        """How the table names ``metric``: the paper judge by its model (``LLM judge (openai:...#gpt-4o-mini,
        the paper's prompt)``), the others as in :data:`METRIC_NAMES`."""
        if metric == "judge" and self.judge is not None:
            return judge_label(self.judge)
        return METRIC_NAMES.get(metric, metric)

    def _qa_metric_name(self) -> str:
        names = [self.metric_name(name) for name in self.qa_metric.split(", ") if name != "none"]
        return ", ".join(names) if names else "none (no factual benchmark)"

    def _settings_line(self) -> str:
        parts = [f"QA metric: {self._qa_metric_name()}"]
        if self.judge is not None:
            parts.append(f"judge failures (scored 0): {self.judge_failures}")
        if any(row.domain == "math" for row in self.rows):
            parts.append(f"math metric: {METRIC_NAMES['math']}")
        parts.append(f"SAG: {f'on, N={self.sag_n}, vote on {self.sag_vote}' if self.sag_n > 1 else 'off'}")
        parts.append(f"tasks per benchmark: {'first ' + str(self.limit) if self.limit else 'all'}")
        return "; ".join(parts) + "."

    def to_markdown(self) -> str:
        """The table as Markdown, with a line saying which QA metric and whether SAG was used."""
        header = (
            "| Benchmark | Domain | Metric | Episodes | Accuracy (%) | Invalid actions (%) | Mean steps "
            "| Completion tokens / ep. | Prompt tokens / ep. |"
        )
        lines = [
            f"## {self.method} - {self.policy}",
            "",
            self._settings_line(),
            "",
            header,
            "|" + "---|" * (header.count("|") - 1),
        ]
        for row in self.rows:
            lines.append(
                f"| {row.benchmark} | {row.domain} | {row.metric} | {row.episodes} | {_percent(row.accuracy)} "
                f"| {_percent(row.invalid_action_rate)} | {_number(row.mean_steps)} | {_number(row.completion_tokens)} "
                f"| {_number(row.prompt_tokens)} |"
            )
        for group, means in self.averages().items():
            lines.append(
                f"| **Avg ({group})** | {group} | | {_plural(int(means['benchmarks'] or 0), 'benchmark')} "
                f"| **{_percent(means['accuracy'])}** | {_percent(means['invalid_action_rate'])} "
                f"| {_number(means['mean_steps'])} | {_number(means['completion_tokens'])} "
                f"| {_number(means['prompt_tokens'])} |"
            )
        return "\n".join(lines) + "\n"

    def csv_rows(self) -> list[dict[str, Any]]:
        """One flat dict per benchmark and per average (``benchmark`` = ``avg:<group>``)."""
        settings = {
            "policy": self.policy, "method": self.method, "sag_n": self.sag_n, "limit": self.limit, "judge": self.judge,
        }
        rows: list[dict[str, Any]] = []
        for row in self.rows:
            flat = {key: value for key, value in row.to_dict().items() if key != "grader_metrics"}
            flat.update({f"grader_{name}": value for name, value in row.grader_metrics.items()})
            rows.append({**settings, **flat})
        for group, means in self.averages().items():
            rows.append({**settings, "env_id": "", "benchmark": f"avg:{group}", "domain": group, **means})
        return rows

    def write(self, out_dir: str | os.PathLike[str], *, chart: bool = True) -> dict[str, Path]:
        """Write ``results.md``, ``results.csv``, ``results.json`` and ``results.png`` into ``out_dir``.

        The chart needs matplotlib; without it the other three are written and a warning says so.
        """
        directory = Path(out_dir)
        directory.mkdir(parents=True, exist_ok=True)
        paths = {"md": directory / "results.md", "csv": directory / "results.csv", "json": directory / "results.json"}
        paths["md"].write_text(self.to_markdown())
        paths["json"].write_text(json.dumps(self.to_dict(), indent=1, ensure_ascii=False) + "\n")
        rows = self.csv_rows()
        columns = list(dict.fromkeys(key for row in rows for key in row))
        with paths["csv"].open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)
        if chart:
            try:
                paths["png"] = self.plot(directory / "results.png")
            except ImportError:
                warnings.warn("matplotlib is not installed: results.png was not written", stacklevel=2)
        return paths

    def plot(self, path: str | os.PathLike[str]) -> Path:
        """A bar chart of the accuracy per benchmark and the averages, coloured by domain."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        labels = [row.benchmark for row in self.rows]
        values = [100 * row.accuracy for row in self.rows]
        colours = [_DOMAIN_COLOURS.get(row.domain, _DOMAIN_COLOURS["other"]) for row in self.rows]
        hatches = [""] * len(labels)
        for group, means in self.averages().items():
            labels.append(f"Avg ({group})")
            values.append(100 * float(means["accuracy"] or 0.0))
            colours.append(_DOMAIN_COLOURS.get(group, "#55A868"))
            hatches.append("//")
        figure = Figure(figsize=(max(6.0, 0.8 * len(labels) + 2), 4.5), layout="constrained")
        FigureCanvasAgg(figure)  # the Agg canvas: no display, no global pyplot state
        axes = figure.add_subplot()
        bars = axes.bar(range(len(labels)), values, color=colours, hatch=hatches, edgecolor="white")
        axes.bar_label(bars, labels=[f"{value:.1f}" for value in values], fontsize=8)
        axes.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
        axes.set_ylim(0, 105)
        axes.set_ylabel("accuracy (%)")
        sag = f"SAG N={self.sag_n}" if self.sag_n > 1 else "no SAG"
        tasks = f"first {self.limit} tasks" if self.limit else "all tasks"
        axes.set_title(f"{self.method} - {self.policy}\nQA metric: {self.qa_metric}; {sag}; {tasks}", fontsize=9)
        figure.savefig(path, dpi=120)
        return Path(path)


def _percent(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{100 * value:.1f}"


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def _number(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.1f}"


# --- running ----------------------------------------------------------------------------------------


def evaluate(
    policy: str | Policy,
    env_ids: Sequence[str] = PAPER_SUITE,
    *,
    env_kwargs_by_env: Mapping[str, Mapping[str, Any]] | None = None,
    limit: int | None = None,
    sag_n: int = 0,
    sag_settings: SAGSettings | None = None,
    num_envs: int = 8,
    out_dir: str | os.PathLike[str],
    sampling: SamplingParams | None = None,
    vectorization_mode: str = "sync",
    executor: str = "local",
    ray_address: str | None = None,
    wandb_project: str | None = None,
    progress: bool = True,
    judge: str | Policy | PaperJudge | None = None,
    prompts_dir: str | os.PathLike[str] | None = None,
) -> ResultsTable:
    """Run ``policy`` on the first ``limit`` tasks (all when ``None``) of each env and tabulate the results.

    Trajectories go to ``out_dir/trajectories/<env_id>.jsonl`` and a rerun with the same ``out_dir``
    only runs the missing episodes; the table (written to ``out_dir/results.*`` after every benchmark)
    covers every episode of the requested tasks in those files.

    Args:
        policy: a spec for :func:`~agentdistill.policies.make_policy` (built here and closed at the end)
            or a policy object (left open).
        env_ids: the benchmarks, in table order (default: :data:`PAPER_SUITE`).
        env_kwargs_by_env: constructor arguments per env id (e.g. from :func:`suite_env_kwargs`); an id
            without an entry is built with none (hub data).
        limit: tasks per benchmark; needed for envs with unlimited tasks (the synthetic ones).
        sag_n: self-consistent action generation with this many candidates per step (off below 2).
        sag_settings: SAG with these settings (candidates, temperature, top-p) instead of ``sag_n``'s
            defaults (the paper's T=0.4, top-p 0.8).
        num_envs: envs stepped together (fewer when fewer tasks are asked for).
        out_dir: where trajectories, results and W&B files go.
        sampling: sampling settings (greedy by default; SAG overrides temperature and top-p).
        vectorization_mode: ``"sync"`` or ``"async"`` (envs in worker processes).
        executor: ``"local"`` (this machine) or ``"ray"`` (Ray actors over the cluster at ``ray_address``; see
            :mod:`agentdistill.rollouts.ray_envs`). The records are the same either way.
        ray_address: the Ray cluster's head, ``HOST:PORT`` (``None``: ``RAY_ADDRESS``, else a local Ray).
        wandb_project: also log live metrics, the table and the chart to this W&B project (offline
            without credentials; files under ``out_dir/wandb``).
        progress: show progress bars.
        judge: grade the factual benchmarks as the paper does, by its LLM judge: a policy spec
            (``"openai:https://api.openai.com/v1#gpt-4o-mini"``, built here and closed at the end), a policy
            or a :class:`~agentdistill.policies.judge.PaperJudge`. After each factual benchmark's rollouts,
            its answers are judged into ``out_dir/judged/<env_id>.jsonl``
            (:func:`~agentdistill.rollouts.rescore.rescore`, resumable) and its row is the judged accuracy,
            with EM and F1 beside it and the answers the judge failed on counted. Math is never judged.
        prompts_dir: the paper's prompt files, for a ``judge`` given as a spec or a policy.
    """
    _check_limit(limit)
    check_executor(executor, ray_address, vectorization_mode)
    if not env_ids:
        raise ValueError("env_ids is empty: name at least one env id")
    kwargs_by_env = env_kwargs_by_env or {}
    out = Path(out_dir)
    sag = sag_settings if sag_settings is not None else (SAGSettings(n=sag_n) if sag_n > 1 else None)
    sag_n = sag.n if sag is not None else 0
    with ExitStack() as resources:
        runner = _opened(policy, resources)
        paper_judge = _opened_judge(judge, prompts_dir, resources) if judge is not None else None
        claim = claim_evaluation_directory(out, policy=runner.name, method="agent", sampling=sampling, sag=sag)
        resources.callback(claim.release)
        run = None
        if wandb_project:
            from agentdistill.tracking import start_wandb_run

            config = {"policy": runner.name, "env_ids": list(env_ids), "limit": limit, "sag_n": sag_n,
                      "num_envs": num_envs, "sampling": asdict(sampling or SamplingParams()),
                      "judge": paper_judge.name if paper_judge is not None else None}
            run = start_wandb_run(wandb_project, out, config, name=f"eval {runner.name}")
            resources.callback(run.finish)
        table = ResultsTable(
            policy=runner.name, rows=(), sag_n=sag_n if sag else 0, limit=limit, sag_vote=sag.vote if sag else "answer",
            judge=paper_judge.name if paper_judge is not None else None,
        )
        for env_id in env_ids:
            env_kwargs = dict(kwargs_by_env.get(env_id, {}))
            log = _prefixed_logger(run.log, env_id) if run is not None else None
            path, indices = _roll_out_env(
                runner, env_id, env_kwargs, limit=limit, sag=sag, num_envs=num_envs, out=out,
                sampling=sampling, vectorization_mode=vectorization_mode, executor=executor, ray_address=ray_address,
                progress=progress, log=log,
            )
            row = _summarize_env(env_id, env_kwargs, path, indices, judge=paper_judge, out=out, progress=progress)
            table = replace(table, rows=(*table.rows, row))
            paths = table.write(out)
        if run is not None:
            _log_table(run, table, paths)
    return table


def _opened(policy: str | Policy, resources: ExitStack) -> Policy:
    """The policy a spec names, built and closed with ``resources``; a policy object as is (its caller's)."""
    if not isinstance(policy, str):
        return policy
    built = make_policy(policy)
    resources.callback(built.close)
    return built


def _opened_judge(
    judge: str | Policy | PaperJudge, prompts_dir: str | os.PathLike[str] | None, resources: ExitStack
) -> PaperJudge:
    """``judge`` as a paper judge; one built here is closed with ``resources``."""
    paper_judge = as_paper_judge(judge, prompts_dir)
    if paper_judge is not judge:
        resources.callback(paper_judge.close)
    return paper_judge


def claim_evaluation_directory(
    out_dir: str | os.PathLike[str],
    *,
    policy: str,
    method: str,
    sampling: SamplingParams | None,
    sag: SAGSettings | None = None,
    extra: Mapping[str, Any] | None = None,
) -> RunDirectory:
    """Make ``out_dir`` this evaluation's directory, or resume it: one policy, method and decoding per
    directory, so a results table never mixes two of them.

    The benchmarks and ``limit`` are not part of the identity: adding a benchmark or raising the limit
    continues the same evaluation. Each benchmark's trajectory file checks its own env arguments.
    """
    identity = {
        "policy": policy,
        "method": method,
        "sampling": asdict(sampling or SamplingParams()),
        "sag": sag.as_record() if sag is not None else None,
        **dict(extra or {}),
    }
    return claim_run_directory(out_dir, command="eval", identity=identity)


def _prefixed_logger(log: Callable[[dict[str, float]], None], env_id: str) -> Callable[[dict[str, float]], None]:
    return lambda metrics: log({f"{env_id}/{name}": value for name, value in metrics.items()})


def _roll_out_env(
    policy: Policy,
    env_id: str,
    env_kwargs: dict[str, Any],
    *,
    limit: int | None,
    sag: SAGSettings | None,
    num_envs: int,
    out: Path,
    sampling: SamplingParams | None,
    vectorization_mode: str,
    executor: str = "local",
    ray_address: str | None = None,
    progress: bool,
    log: Callable[[dict[str, float]], None] | None,
) -> tuple[Path, list[int]]:
    """Roll out the missing episodes of one benchmark; returns its trajectory file and task indices."""
    size = max(1, min(num_envs, limit)) if limit is not None else num_envs
    envs = make_rollout_envs(
        env_id, size, vectorization_mode=vectorization_mode, executor=executor, ray_address=ray_address, **env_kwargs
    )
    path = out / "trajectories" / f"{env_id}.jsonl"
    try:
        indices = task_indices(envs.get_attr("num_tasks")[0], limit, env_id)
        check_task_ids(path, env_id, indices, lambda index: envs.call("task_at", index)[0].task_id)
        run_rollouts(
            envs, policy, env_id=env_id, task_indices=indices, out=str(path), sampling=sampling, sag=sag,
            progress=progress, log=log, env_args=env_kwargs,
        )
    finally:
        envs.close()
    return path, indices


def _summarize_env(
    env_id: str,
    env_kwargs: Mapping[str, Any],
    path: Path,
    indices: list[int],
    *,
    judge: PaperJudge | None,
    out: Path,
    progress: bool,
) -> TaskResult:
    """One benchmark's row: from its trajectory file, or, for a factual benchmark with a judge, from its
    judged copy (brought up to date first)."""
    if judge is None or domain_of(env_id) != "factual":
        return summarize_records(env_id, episodes_of(path, env_id, indices), metric=metric_of(env_id, env_kwargs))
    from agentdistill.rollouts.rescore import rescore  # rescore builds on this module's summaries

    judged = out / "judged" / f"{env_id}.jsonl"
    rescore([path], judge, out=judged, progress=progress)
    return summarize_records(env_id, episodes_of(judged, env_id, indices), metric="judge")


def episodes_of(path: str | os.PathLike[str], env_id: str, indices: Iterable[int]) -> list[dict[str, Any]]:
    """The latest record of each episode of ``env_id``'s tasks ``indices`` in a trajectory file (a task the
    policy failed and a rerun played again counts once, as its retry)."""
    wanted = set(indices)
    return [r for r in latest_records(path) if r.get("env_id") == env_id and r.get("task_index") in wanted]


def task_indices(num_tasks: int | None, limit: int | None, env_id: str) -> list[int]:
    """The first ``limit`` task indices of an env (all of them when ``limit`` is ``None``)."""
    _check_limit(limit)
    if num_tasks is None:
        if limit is None:
            raise ValueError(f"{env_id} generates unlimited tasks: pass limit=")
        return list(range(limit))
    return list(range(num_tasks if limit is None else min(limit, num_tasks)))


def _check_limit(limit: int | None) -> None:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive int or None, got {limit!r}")


def check_task_ids(
    path: str | os.PathLike[str], env_id: str, indices: Iterable[int], task_id_at: Callable[[int], str]
) -> None:
    """Refuse to resume a file whose finished episodes are of other tasks than the env's at those indices.

    Resuming recognises episodes by task index; the run identity in each record catches other env
    arguments, and this catches the rest: a data file at the same path whose content has changed.
    """
    if not Path(path).exists():
        return
    wanted = set(indices)
    for record in read_trajectories(path):
        index = record.get("task_index")
        if record.get("env_id") != env_id or index not in wanted:
            continue
        expected = str(task_id_at(index))
        if str(record.get("task_id")) != expected:
            raise OutputConflictError(
                path,
                f"holds task {record.get('task_id')!r} at index {index} of {env_id}, but the env's task there is "
                f"{expected!r}: it was written with other data or env arguments; use another output directory",
            )


def _log_table(run: Any, table: ResultsTable, paths: Mapping[str, Path]) -> None:
    """Log the table (a ``wandb.Table``), the chart and the averages to a W&B run."""
    import wandb

    rows = table.csv_rows()
    columns = list(dict.fromkeys(key for row in rows for key in row))
    payload: dict[str, Any] = {
        "results": wandb.Table(columns=columns, data=[[_plain(row.get(column)) for column in columns] for row in rows])
    }
    if "png" in paths:
        payload["results_chart"] = wandb.Image(str(paths["png"]))
    for group, means in table.averages().items():
        payload[f"avg/{group}/accuracy"] = means["accuracy"]
    for row in table.rows:
        payload[f"{row.env_id}/accuracy"] = row.accuracy
    run.log(payload)
    run.summary["qa_metric"] = table.qa_metric
    run.summary["sag_n"] = table.sag_n


def _plain(value: Any) -> Any:
    """W&B tables want one type per column: ``None`` stays, everything else is a str, int or float."""
    return value if value is None or isinstance(value, (int, float, str)) else str(value)
