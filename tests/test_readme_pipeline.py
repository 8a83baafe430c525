"""The README's distillation commands, run in order as a user runs them (fewer episodes): the student is scored
on held-out tasks, and the training run is tracked (W&B offline, no login) under its output directory.

Real console script in subprocesses, real scripted teacher, real TRL SFT of a scratch student on CPU. Only the
network is absent: `HF_HUB_OFFLINE=1`, and no W&B credentials (so W&B writes offline, as on a fresh machine).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _agentdistill(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).with_name("agentdistill")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "agentdistill.cli"]
    environment = {key: value for key, value in os.environ.items() if not key.startswith("WANDB_")}
    environment.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HOME": str(cwd / "home")})
    return subprocess.run([*command, *argv], capture_output=True, text=True, timeout=900, cwd=cwd, env=environment)


@pytest.mark.timeout(900)
def test_rollout_distill_eval_as_the_readme_says(tmp_path: Path) -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    for command in ("agentdistill rollout --env AgentMath-Synthetic-v0 --policy expert --episodes 400",
                    "agentdistill distill --trajectories teacher.jsonl --student scratch:tiny --out students/tiny",
                    "agentdistill eval --policy hf:students/tiny --tasks AgentMath-Synthetic-v0 --limit 100"):
        assert command in readme, f"the README no longer shows {command!r}: update this test with it"

    rollout = _agentdistill("rollout", "--env", "AgentMath-Synthetic-v0", "--policy", "expert", "--episodes", "16",
                            "--num-envs", "4", "--out", "teacher.jsonl", "--no-progress", cwd=tmp_path)
    assert rollout.returncode == 0, rollout.stderr
    distill = _agentdistill("distill", "--trajectories", "teacher.jsonl", "--student", "scratch:tiny",
                            "--out", "students/tiny", "--config", str(REPO / "configs/distill/sft_cpu_tiny.yaml"),
                            cwd=tmp_path)
    assert distill.returncode == 0, distill.stderr[-3000:]
    runs = list((tmp_path / "students/tiny/wandb").glob("**/offline-run-*"))
    assert runs, "distill tracks its run with W&B by default, offline without a login, under OUT/wandb"
    evaluation = _agentdistill("eval", "--policy", "hf:students/tiny", "--tasks", "AgentMath-Synthetic-v0",
                               "--limit", "4", "--prompt-variant", "short", "--num-envs", "4", "--max-new-tokens", "48",
                               "--out", "results/tiny", "--no-progress", cwd=tmp_path)
    assert evaluation.returncode == 0, evaluation.stderr[-3000:]

    trained = {json.loads(line)["task_id"] for line in (tmp_path / "teacher.jsonl").read_text().splitlines()}
    scored = [json.loads(line) for line in
              (tmp_path / "results/tiny/trajectories/AgentMath-Synthetic-v0.jsonl").read_text().splitlines()]
    assert len(scored) == 4 and not trained & {record["task_id"] for record in scored}
    assert all(record["run"]["env_args"]["split"] == "test" for record in scored)
    assert json.loads((tmp_path / "results/tiny/results.json").read_text())["rows"][0]["episodes"] == 4
