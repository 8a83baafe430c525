"""Real ``agentdistill run`` experiments on this CPU: the scripted expert as teacher, a scratch student.

The same configs a GPU run uses, shrunk: collect (with first-thought prefixes) and eval through the
console script, and the sft and cot kinds end to end in process (tiny student, a few optimizer steps).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agentdistill.experiments import run_experiment
from agentdistill.rollouts.records import read_trajectories
from tests.conftest import SHARED_DATA

REPO = Path(__file__).resolve().parents[2]
TINY_SFT = REPO / "configs" / "distill" / "sft_cpu_tiny.yaml"


def _command() -> list[str]:
    script = Path(sys.executable).with_name("agentdistill")
    return [str(script)] if script.exists() else [sys.executable, "-m", "agentdistill.cli"]


def _environment(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HOME": str(tmp_path / "home")}


@pytest.fixture
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in _environment(tmp_path).items():
        monkeypatch.setenv(key, value)


def test_collect_with_ftp_then_eval_on_local_benchmark_data_through_the_cli(tmp_path: Path) -> None:
    collect = tmp_path / "collect.yaml"
    collect.write_text(f"""
kind: collect
policy: expert
out: {tmp_path / 'teacher'}
num_envs: 2
progress: false
ftp: {{build: true}}
tasks:
  - {{env: AgentMath-Synthetic-v0, name: math, episodes: 4, env_args: {{split: train}}}}
""")
    run = subprocess.run([*_command(), "run", str(collect)], check=False, capture_output=True, text=True, timeout=600,
                         env=_environment(tmp_path))
    assert run.returncode == 0, run.stderr
    assert "First-thought prefixes" in run.stdout
    report = json.loads(run.stdout[run.stdout.index("{"):])
    assert report["math"]["episodes"] == 4 and report["math"]["success_rate"] == 1.0
    prefixes = json.loads((tmp_path / "teacher" / "ftp" / "math.json").read_text())
    records = list(read_trajectories(tmp_path / "teacher" / "trajectories" / "math.jsonl"))
    assert len(prefixes) == 4 and len(records) == 4
    for record in records:
        assert record["score"] == 1.0
        assert record["messages"][2]["content"].startswith("Thought: " + prefixes[record["task_id"]])
    again = subprocess.run([*_command(), "run", str(collect)], check=False, capture_output=True, text=True, timeout=600,
                           env=_environment(tmp_path))
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout[again.stdout.index("{"):])["math"]["skipped"] == 4

    evaluation = tmp_path / "eval.yaml"
    evaluation.write_text(f"""
kind: eval
policy: expert
out: {tmp_path / 'eval'}
tasks: [AgentMath-Synthetic-v0, AgentMath-MATH500-v0]
data_root: {SHARED_DATA}
limit: 5
num_envs: 2
progress: false
""")
    run = subprocess.run([*_command(), "run", str(evaluation), "--override", "limit=1"], check=False,
                         capture_output=True, text=True, timeout=600, env=_environment(tmp_path))
    assert run.returncode == 0, run.stderr
    assert "math500_test" not in run.stdout and "math_500_20250414.json" in run.stdout  # the paper's list, local
    assert "cannot solve AgentMath-MATH500-v0" in run.stdout
    rows = {row["env_id"]: row for row in json.loads((tmp_path / "eval" / "results.json").read_text())["rows"]}
    assert rows["AgentMath-Synthetic-v0"]["episodes"] == 1 and rows["AgentMath-Synthetic-v0"]["accuracy"] == 1.0
    assert rows["AgentMath-MATH500-v0"]["episodes"] == 1 and rows["AgentMath-MATH500-v0"]["accuracy"] == 0.0


def test_sft_experiment_trains_a_scratch_student_on_collected_trajectories(tmp_path: Path, offline: None) -> None:
    collect = tmp_path / "collect.yaml"
    collect.write_text(f"""
kind: collect
policy: expert
out: {tmp_path / 'teacher'}
progress: false
tasks: [{{env: AgentMath-Synthetic-v0, name: math, episodes: 6}}]
""")
    run_experiment(collect, write=lambda _: None)
    sft = tmp_path / "sft.yaml"
    sft.write_text(f"""
kind: sft
student: scratch:tiny
out: {tmp_path / 'student'}
trajectories: [{tmp_path / 'teacher' / 'trajectories' / 'math.jsonl'}]
settings: {{base: {TINY_SFT}, max_steps: 2}}
""")
    printed: list[str] = []
    run_experiment(sft, write=printed.append)
    text = "".join(printed)
    assert "kept" in text and "load it with --policy hf:" in text
    assert (tmp_path / "student" / "model.safetensors").exists()
    assert (tmp_path / "student" / "sft_data.jsonl").read_text().count("\n") == 6
    result = json.loads((tmp_path / "student" / "sft_result.json").read_text())
    assert result["global_step"] == 2


def test_cot_experiment_collects_trains_and_evaluates(tmp_path: Path, offline: None) -> None:
    config = tmp_path / "cot.yaml"
    config.write_text(f"""
kind: cot
out: {tmp_path / 'cot'}
collect:
  policy: expert
  tasks: [{{env: AgentMath-Synthetic-v0, name: math, episodes: 6, env_args: {{split: train}}}}]
train:
  student: scratch:tiny
  settings: {{base: {TINY_SFT}, max_steps: 2}}
eval:
  tasks: [AgentMath-Synthetic-v0]
  env_args: {{split: test}}
  limit: 2
  sampling: {{max_new_tokens: 16, stop: []}}
""")
    printed: list[str] = []
    plan = run_experiment(config, write=printed.append)
    assert [text.split(" ")[0] for text, _ in plan.steps] == ["Teacher", "SFT", "CoT", "Results"]
    answers = list(read_trajectories(tmp_path / "cot" / "answers" / "math.jsonl"))
    assert len(answers) == 6 and all(record["score"] == 1.0 for record in answers)
    assert "6 correct chain-of-thought answers to train on" in "".join(printed)
    assert (tmp_path / "cot" / "student" / "model.safetensors").exists()
    table = json.loads((tmp_path / "cot" / "eval" / "cot" / "results.json").read_text())
    assert table["method"] == "CoT" and table["rows"][0]["episodes"] == 2
    assert table["policy"].endswith(str(tmp_path / "cot" / "student"))


def test_an_output_that_cannot_be_written_is_refused_before_the_plan(tmp_path: Path, offline: None) -> None:
    from agentdistill.experiments import ConfigError

    taken = tmp_path / "results"
    taken.write_text("a file of the user's, where the config wants a directory\n")
    config = tmp_path / "eval.yaml"
    config.write_text(f"kind: eval\npolicy: expert\ntasks: [AgentMath-Synthetic-v0]\nlimit: 1\nout: {taken}\n")
    printed: list[str] = []
    for dry_run in (True, False):
        with pytest.raises(ConfigError, match=rf"{config}: out: cannot write {taken}: it exists and is not a directory"):
            run_experiment(config, dry_run=dry_run, write=printed.append)
    assert printed == [] and taken.read_text().startswith("a file of the user's")


def test_collect_and_eval_with_the_paper_judge_keep_the_judges_verdicts(tmp_path: Path, offline: None) -> None:
    """The judge is a fake OpenAI-compatible server on 127.0.0.1 (gpt-4o-mini cannot be reached from here)."""
    from agentdistill.distill.sft.trajectories import trajectories_to_dataset
    from tests.policies.fake_judge import judge_spec, running_fake_judge, shared_prompts_dir, verdict_json

    base = f"""
kind: collect
policy: expert
out: {tmp_path / 'teacher'}
num_envs: 2
progress: false
tasks:
  - {{env: AgentQA-Synthetic-v0, name: qa, episodes: 4, env_args: {{split: train}}}}
  - {{env: AgentMath-Synthetic-v0, name: math, episodes: 2, env_args: {{split: train}}}}
"""
    config = tmp_path / "collect.yaml"
    config.write_text(base)
    run_experiment(config, write=lambda _: None)
    teacher = tmp_path / "teacher" / "trajectories"
    collected = list(read_trajectories(teacher / "qa.jsonl"))
    assert all(record["score"] == 1.0 for record in collected)
    with running_fake_judge() as (server, url):
        server.scripts[str(collected[0]["answer"])] = [verdict_json(0, "the judge disagrees")]
        config.write_text(base + f"judge: '{judge_spec(url)}'\nprompts_dir: {shared_prompts_dir()}\n")
        printed: list[str] = []
        plan = run_experiment(config, write=printed.append)
        assert sorted(server.predictions()) == sorted(str(record["answer"]) for record in collected)

        evaluation = tmp_path / "eval.yaml"
        evaluation.write_text(f"""
kind: eval
policy: expert
out: {tmp_path / 'eval'}
tasks: [AgentQA-Synthetic-v0, AgentMath-Synthetic-v0]
limit: 2
num_envs: 2
progress: false
judge: '{judge_spec(url)}'
prompts_dir: {shared_prompts_dir()}
""")
        run_experiment(evaluation, write=lambda _: None)

    assert any(text.startswith("Judge the episodes into") for text, _ in plan.steps)
    output = "".join(printed)
    report = json.loads(output[output.index("{"):])
    assert report["qa"]["skipped"] == 4 and report["qa"]["judged"]["accuracy"] == 0.75
    assert report["math"]["judged"]["metric"] == "math" and report["math"]["judged"]["judged_now"] == 0
    judged = tmp_path / "teacher" / "judged"
    rejected = [record for record in read_trajectories(judged / "qa.jsonl") if record["score"] == 0.0]
    assert [record["task_id"] for record in rejected] == [collected[0]["task_id"]]
    assert (rejected[0]["metrics"]["em"], rejected[0]["metrics"]["judge_explanation"]) == (1.0, "the judge disagrees")
    _, by_match = trajectories_to_dataset([teacher / "qa.jsonl"], report=False)
    _, by_judge = trajectories_to_dataset([judged / "qa.jsonl"], report=False)
    assert (by_match.kept, by_judge.kept) == (4, 3), "the SFT filter keeps what the judge accepted"
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert results["judge"] == judge_spec(url) and [row["metric"] for row in results["rows"]] == ["judge", "math"]
