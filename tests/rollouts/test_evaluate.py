"""Evaluation: the scripted expert on the synthetic envs, a stand-in policy on the real local data."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from agentdistill.errors import OutputConflictError, UserError
from agentdistill.policies.base import Completion, PolicyRequest, SamplingParams
from agentdistill.policies.expert import ExpertPolicy
from agentdistill.policies.openai import OpenAIPolicy
from agentdistill.rollouts.evaluate import (
    PAPER_FACTUAL,
    PAPER_MATH,
    PAPER_SUITE,
    ResultsTable,
    TaskResult,
    benchmark_name,
    domain_of,
    evaluate,
    suite_env_kwargs,
)
from agentdistill.rollouts.loop import SAGSettings
from agentdistill.rollouts.records import read_trajectories
from tests.conftest import code_action
from tests.policies.fake_judge import JUDGE_MODEL, running_fake_judge, shared_prompts_dir

SYNTHETIC = ("AgentQA-Synthetic-v0", "AgentMath-Synthetic-v0")
TEST_SPLIT = {env_id: {"split": "test"} for env_id in SYNTHETIC}


class AlwaysX:
    """A stand-in for a student: answers "x" at once, whatever the task (so every row scores 0)."""

    name = "always-x"

    def generate(self, requests: Sequence[PolicyRequest], params: SamplingParams) -> list[list[Completion]]:
        return [[Completion(code_action('final_answer("x")'), prompt_tokens=50, completion_tokens=9)] for _ in requests]

    def close(self) -> None:
        pass


class Counting:
    """The expert, counting the conversations it is asked to continue."""

    def __init__(self) -> None:
        self.expert, self.requests, self.tasks, self.name = ExpertPolicy(), 0, set(), "expert"

    def generate(self, requests: Sequence[PolicyRequest], params: SamplingParams) -> list[list[Completion]]:
        self.requests += len(requests)
        self.tasks |= {request.context["task_index"] for request in requests}
        return self.expert.generate(requests, params)

    def close(self) -> None:
        pass


def _files_written(out: Path) -> dict:
    for name in ("results.md", "results.csv", "results.json", "results.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert (out / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return json.loads((out / "results.json").read_text())


def test_the_suite_is_the_papers_eight_benchmarks_and_maps_to_existing_local_files(shared_data: Path) -> None:
    assert PAPER_SUITE == PAPER_FACTUAL + PAPER_MATH and len(PAPER_SUITE) == 8
    assert [benchmark_name(env_id) for env_id in PAPER_SUITE] == [
        "HotpotQA", "Bamboogle", "MuSiQue", "2WikiMultiHopQA", "MATH500", "GSMHard", "AIME", "OlymMATH",
    ]
    local = suite_env_kwargs(shared_data)
    assert list(local) == list(PAPER_SUITE)
    for kwargs in local.values():
        assert kwargs["data_path"] and all(Path(path).is_file() for path in kwargs.values())
    assert suite_env_kwargs(None) == {env_id: {} for env_id in PAPER_SUITE}
    with pytest.raises(ValueError, match="no local data"):
        suite_env_kwargs(shared_data, ["AgentQA-Synthetic-v0"])


def test_expert_scores_full_marks_on_both_synthetic_envs(tmp_path: Path) -> None:
    table = evaluate(
        "expert", SYNTHETIC, env_kwargs_by_env=TEST_SPLIT, limit=4, num_envs=2, out_dir=tmp_path, progress=False
    )
    assert [row.env_id for row in table.rows] == list(SYNTHETIC)
    assert all(row.accuracy == 1.0 and row.episodes == 4 and row.invalid_action_rate == 0.0 for row in table.rows)
    assert all(row.mean_steps and row.mean_steps >= 2 and row.completion_tokens > 0 for row in table.rows)
    assert {group: means["accuracy"] for group, means in table.averages().items()} == {
        "factual": 1.0, "math": 1.0, "all": 1.0,
    }
    data = _files_written(tmp_path)
    assert data["policy"] == "expert" and data["sag"] is False and data["qa_metric"] == "em"
    assert ResultsTable.from_dict(data) == table
    markdown = (tmp_path / "results.md").read_text()
    assert "QA metric: exact match (EM)" in markdown and "SAG: off" in markdown
    for env_id in SYNTHETIC:
        assert len(list(read_trajectories(tmp_path / "trajectories" / f"{env_id}.jsonl"))) == 4


def test_a_stand_in_policy_on_real_local_data_gives_real_rows_with_accuracy_zero(
    tmp_path: Path, shared_data: Path
) -> None:
    env_ids = ["AgentQA-HotpotQA-v0", "AgentMath-AIME-v0"]
    table = evaluate(
        AlwaysX(), env_ids, env_kwargs_by_env=suite_env_kwargs(shared_data, env_ids), limit=3, out_dir=tmp_path,
        progress=False,
    )
    data = _files_written(tmp_path)
    assert [row["env_id"] for row in data["rows"]] == env_ids
    for row in data["rows"]:
        assert row["episodes"] == 3 and row["accuracy"] == 0.0 and row["mean_steps"] == 1.0
        assert row["completion_tokens"] == 9.0 and row["prompt_tokens"] == 50.0
    assert [row["metric"] for row in data["rows"]] == ["em", "math"]
    assert set(data["rows"][0]["grader_metrics"]) == {"em", "f1"}
    assert set(data["averages"]) == {"factual", "math", "all"}
    assert data["averages"]["all"]["accuracy"] == 0.0 and data["averages"]["all"]["benchmarks"] == 2
    markdown = (tmp_path / "results.md").read_text()
    assert "QA metric: exact match (EM)" in markdown and "| HotpotQA |" in markdown and "| AIME |" in markdown
    with (tmp_path / "results.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [row["benchmark"] for row in rows] == ["HotpotQA", "AIME", "avg:factual", "avg:math", "avg:all"]
    assert table.rows[0].benchmark == "HotpotQA"


def test_a_rerun_skips_finished_episodes_and_a_longer_one_runs_only_the_new_ones(tmp_path: Path) -> None:
    kwargs: dict[str, Any] = {"env_kwargs_by_env": TEST_SPLIT, "num_envs": 2, "out_dir": tmp_path, "progress": False}
    first = Counting()
    evaluate(first, ["AgentMath-Synthetic-v0"], limit=3, **kwargs)
    again = Counting()
    table = evaluate(again, ["AgentMath-Synthetic-v0"], limit=3, **kwargs)
    assert first.requests > 0 and again.requests == 0 and table.rows[0].episodes == 3
    more = Counting()
    table = evaluate(more, ["AgentMath-Synthetic-v0"], limit=5, **kwargs)
    records = list(read_trajectories(tmp_path / "trajectories" / "AgentMath-Synthetic-v0.jsonl"))
    assert sorted(record["task_index"] for record in records) == [0, 1, 2, 3, 4]
    assert first.tasks == {0, 1, 2} and more.tasks == {3, 4} and table.rows[0].episodes == 5


def test_resuming_a_file_written_with_other_data_is_refused(tmp_path: Path) -> None:
    evaluate("expert", ["AgentQA-Synthetic-v0"], limit=2, out_dir=tmp_path, progress=False)  # the train split
    with pytest.raises(ValueError, match="other data"):
        evaluate("expert", ["AgentQA-Synthetic-v0"], env_kwargs_by_env=TEST_SPLIT, limit=2, out_dir=tmp_path,
                 progress=False)


def test_sag_is_recorded_in_the_table(tmp_path: Path) -> None:
    table = evaluate("expert", ["AgentQA-Synthetic-v0"], limit=2, sag_n=3, num_envs=2, out_dir=tmp_path,
                     progress=False)
    assert table.sag_n == 3 and table.rows[0].accuracy == 1.0
    assert "SAG: on, N=3, vote on answer" in table.to_markdown()
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["sag"] is True and results["sag_vote"] == "answer"
    voted = evaluate("expert", ["AgentQA-Synthetic-v0"], limit=2, sag_settings=SAGSettings(n=3, vote="logs"),
                     num_envs=2, out_dir=tmp_path / "logs", progress=False)
    assert voted.sag_vote == "logs" and "vote on logs" in voted.to_markdown()
    before = {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()}
    # the same out_dir without SAG would mix the two settings in one table: refused, nothing touched
    with pytest.raises(OutputConflictError, match=r"holds another `agentdistill eval` run \(sag: \{'n': 3"):
        evaluate("expert", ["AgentQA-Synthetic-v0"], limit=2, num_envs=2, out_dir=tmp_path, progress=False)
    assert {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()} == before


def _row(env_id: str, metric: str, accuracy: float) -> TaskResult:
    return TaskResult(env_id, benchmark_name(env_id), domain_of(env_id), metric, 10, accuracy, 0.1, 2.0, 100.0, 500.0)


def test_the_table_names_the_qa_metric_and_averages_over_benchmarks() -> None:
    table = ResultsTable("student", (
        _row("AgentQA-HotpotQA-v0", "f1", 0.5), _row("AgentQA-MuSiQue-v0", "f1", 0.2),
        _row("AgentMath-AIME-v0", "math", 0.1),
    ))
    assert table.qa_metric == "f1" and "QA metric: token F1" in table.to_markdown()
    averages = table.averages()
    assert averages["factual"]["accuracy"] == pytest.approx(0.35)
    assert averages["all"]["accuracy"] == pytest.approx(0.8 / 3)
    judged = ResultsTable("student", (_row("AgentQA-HotpotQA-v0", "judge", 0.5),))
    assert "LLM judge" in judged.to_markdown() and "math" not in judged.averages()


def test_wandb_gets_the_table_and_chart_offline_under_out_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    for variable in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_CONFIG_DIR"):
        # start_wandb_run sets these for the process when unset; setting them here lets monkeypatch undo it
        monkeypatch.setenv(variable, str(tmp_path / "wandb"))
    evaluate("expert", ["AgentQA-Synthetic-v0"], limit=2, num_envs=2, out_dir=tmp_path, progress=False,
             wandb_project="agentdistill-test")
    runs = list((tmp_path / "wandb").rglob("offline-run-*"))
    assert runs, "no offline W&B run under out_dir/wandb"
    media = [path.name for path in runs[0].rglob("*") if path.is_file()]
    assert any(name.endswith(".table.json") for name in media) and any(name.endswith(".png") for name in media)


def test_synthetic_envs_are_scored_on_their_held_out_split_unless_asked_otherwise() -> None:
    from agentdistill.rollouts.evaluate import benchmark_env_kwargs

    kwargs = benchmark_env_kwargs([*SYNTHETIC, "AgentMath-MATH500-v0"], prompt_variant="short")
    assert kwargs["AgentMath-Synthetic-v0"] == {"split": "test", "prompt_variant": "short"}
    assert kwargs["AgentQA-Synthetic-v0"]["split"] == "test" and "split" not in kwargs["AgentMath-MATH500-v0"]
    given = benchmark_env_kwargs(SYNTHETIC, env_args={"split": "train", "max_steps": 3})
    assert given["AgentMath-Synthetic-v0"] == {"split": "train", "max_steps": 3}


def test_a_directory_of_the_users_files_is_refused_and_left_alone(tmp_path: Path) -> None:
    (tmp_path / "paper.tex").write_text("\\section{Results}")
    with pytest.raises(OutputConflictError, match=r"already holds files that no agentdistill run wrote here \(paper.tex\)"):
        evaluate("expert", ["AgentMath-Synthetic-v0"], limit=2, out_dir=tmp_path, progress=False)
    assert [path.name for path in tmp_path.iterdir()] == ["paper.tex"]


class ByTask:
    """A stand-in for a student with chosen answers per HotpotQA task (and "x" for anything else)."""

    name = "by-task"
    answers = {0: "the poet Denise Levertov", 1: "yes", 2: "Hong Kong"}

    def generate(self, requests: Sequence[PolicyRequest], params: SamplingParams) -> list[list[Completion]]:
        return [
            [Completion(code_action(f"final_answer({self.answers.get(request.context['task_index'], 'x')!r})"))]
            for request in requests
        ]

    def close(self) -> None:
        pass


def test_eval_with_the_paper_judge_grades_factual_rows_by_its_verdicts_and_counts_its_failures(
    tmp_path: Path, shared_data: Path
) -> None:
    """The judge is a fake OpenAI-compatible server on 127.0.0.1 (gpt-4o-mini cannot be reached from here)."""
    env_ids = ["AgentQA-HotpotQA-v0", "AgentMath-MATH500-v0"]
    options: dict[str, Any] = {
        "env_kwargs_by_env": suite_env_kwargs(shared_data, env_ids), "limit": 3, "num_envs": 2, "out_dir": tmp_path,
        "progress": False, "prompts_dir": shared_prompts_dir(),
    }
    with running_fake_judge() as (server, url), OpenAIPolicy(url, JUDGE_MODEL, retries=0) as judge:
        no_verdict = ["Both answers name places in Asia."]  # never a verdict: a judge failure
        server.scripts["Hong Kong"] = no_verdict
        table = evaluate(ByTask(), env_ids, judge=judge, **options)
        assert len(server.bodies) == 2 + 3, "tasks 0 and 1 once, task 2 three times; math is never judged"
        server.reset()
        server.scripts["Hong Kong"] = no_verdict
        again = evaluate(ByTask(), env_ids, judge=judge, **options)
        assert server.predictions() == ["Hong Kong"] * 3, "a rerun only asks the failed verdict again"

    qa, math = table.rows
    assert (qa.metric, qa.episodes, qa.accuracy, qa.judge_failures) == ("judge", 3, pytest.approx(2 / 3), 1)
    assert qa.grader_metrics["em"] == pytest.approx(1 / 3) and qa.grader_metrics["judge"] == pytest.approx(2 / 3)
    assert (math.metric, math.accuracy, math.judge_failures) == ("math", 0.0, 0)
    assert again == table
    data = _files_written(tmp_path)
    label = f"LLM judge (openai:{url}#{JUDGE_MODEL}, the paper's prompt)"
    assert (data["judge"], data["qa_metric"], data["qa_metric_name"], data["judge_failures"]) == (
        f"openai:{url}#{JUDGE_MODEL}", "judge", label, 1,
    )
    assert [row["judge_failures"] for row in data["rows"]] == [1, 0]
    assert ResultsTable.from_dict(data) == table
    assert f"QA metric: {label}; judge failures (scored 0): 1;" in (tmp_path / "results.md").read_text()
    with (tmp_path / "results.csv").open() as handle:
        assert [row["judge_failures"] for row in csv.DictReader(handle)][:2] == ["1", "0"]
    assert sorted(path.name for path in (tmp_path / "judged").iterdir()) == ["AgentQA-HotpotQA-v0.jsonl"]
    rolled_out = list(read_trajectories(tmp_path / "trajectories" / "AgentQA-HotpotQA-v0.jsonl"))
    assert [record["score"] for record in rolled_out] == [0.0, 1.0, 0.0], "the trajectories keep the env's EM"


def test_a_judge_without_prompts_is_refused_before_anything_runs(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"the paper's judge needs prompts_dir=DIR"):
        evaluate("expert", ["AgentQA-Synthetic-v0"], limit=1, out_dir=tmp_path / "out", progress=False,
                 judge="openai:http://127.0.0.1:9/v1#gpt-4o-mini")
    assert not (tmp_path / "out").exists()
