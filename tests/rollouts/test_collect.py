"""Task ranges for collection runs, and the evaluation's SAG settings reaching the records."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentdistill.policies.expert import ExpertPolicy
from agentdistill.rollouts.collect import collect_trajectories, task_range
from agentdistill.rollouts.evaluate import evaluate
from agentdistill.rollouts.loop import SAGSettings
from agentdistill.rollouts.records import read_trajectories


def test_task_range_is_strict_unless_clipped() -> None:
    assert task_range(10, start=2, episodes=3, env_id="E") == range(2, 5)
    assert task_range(10, start=4, episodes=None, env_id="E") == range(4, 10)
    assert task_range(None, start=5, episodes=2, env_id="E") == range(5, 7)
    with pytest.raises(ValueError, match=r"E holds 998 tasks \(indices 0\.\.997\), but tasks 0\.\.999 were asked for"):
        task_range(998, start=0, episodes=1000, env_id="E")
    assert task_range(998, start=0, episodes=1000, env_id="E", clip=True) == range(998)
    with pytest.raises(ValueError, match="holds 10 tasks"):
        task_range(10, start=10, episodes=1, env_id="E", clip=True)
    with pytest.raises(ValueError, match="generates unlimited tasks"):
        task_range(None, start=0, episodes=None, env_id="E")
    with pytest.raises(ValueError, match="episodes must be a positive int"):
        task_range(10, start=0, episodes=0, env_id="E")


def test_collect_trajectories_runs_the_range_and_leaves_the_policy_open(tmp_path: Path) -> None:
    policy = ExpertPolicy()
    out = tmp_path / "t.jsonl"
    summary = collect_trajectories(policy, "AgentMath-Synthetic-v0", out=out, start=3, episodes=2, num_envs=2,
                                   progress=False)
    assert summary.episodes == 2 and [r["task_index"] for r in read_trajectories(out)] == [3, 4]
    again = collect_trajectories(policy, "AgentMath-Synthetic-v0", out=out, start=3, episodes=2, num_envs=2,
                                 progress=False)
    assert again.episodes == 0 and again.skipped == 2


def test_evaluate_takes_full_sag_settings(tmp_path: Path) -> None:
    sag = SAGSettings(n=3, temperature=0.7, top_p=0.9)
    table = evaluate("expert", ["AgentMath-Synthetic-v0"], limit=2, sag_settings=sag, num_envs=2, out_dir=tmp_path,
                     progress=False)
    assert table.sag_n == 3
    for record in read_trajectories(tmp_path / "trajectories" / "AgentMath-Synthetic-v0.jsonl"):
        assert record["sag"] == {"n": 3, "temperature": 0.7, "top_p": 0.9}
        assert (record["sampling"]["temperature"], record["sampling"]["n"]) == (0.7, 3)
