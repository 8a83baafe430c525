"""`agentdistill rescore` and `agentdistill eval --judge` as a user runs them, against a fake OpenAI-compatible
judge on 127.0.0.1 (it stands in for gpt-4o-mini behind the OpenAI API: no network here)."""

from __future__ import annotations

import json
from pathlib import Path

from agentdistill.cli import main
from agentdistill.rollouts.records import read_trajectories
from tests.policies.fake_judge import judge_spec, running_fake_judge, shared_prompts_dir


def test_rescore_and_judged_eval_through_the_cli(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    teacher = tmp_path / "qa.jsonl"
    assert main(["rollout", "--env", "AgentQA-Synthetic-v0", "--policy", "expert", "--episodes", "3",
                 "--num-envs", "3", "--out", str(teacher), "--no-progress"]) == 0
    with running_fake_judge() as (server, url):
        spec = judge_spec(url)
        out = tmp_path / "judged.jsonl"
        capsys.readouterr()
        assert main(["rescore", str(teacher), "--judge", spec, "--prompts-dir", str(shared_prompts_dir()),
                     "--out", str(out), "--no-progress"]) == 0
        printed = capsys.readouterr().out
        assert "AgentQA-Synthetic-v0: 3 episodes; judged accuracy 100.0%" in printed
        judged = list(read_trajectories(out))
        assert [record["metrics"]["judge"] for record in judged] == [1.0, 1.0, 1.0]
        assert len(server.prompts()) == 3

        assert main(["eval", "--policy", "expert", "--tasks", "AgentQA-Synthetic-v0", "--limit", "2",
                     "--judge", spec, "--prompts-dir", str(shared_prompts_dir()), "--out", str(tmp_path / "eval"),
                     "--no-progress"]) == 0
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert results["rows"][0]["metric"] == "judge" and results["rows"][0]["judge_failures"] == 0
    assert spec in results["qa_metric_name"]
    # a judge without the paper's prompt files is refused before anything runs
    assert main(["rescore", str(teacher), "--judge", spec, "--prompts-dir", str(tmp_path / "none"),
                 "--out", str(tmp_path / "again.jsonl"), "--no-progress"]) == 1
    assert "lacks code_agent.yaml" in capsys.readouterr().err and not (tmp_path / "again.jsonl").exists()
