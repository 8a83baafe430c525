"""Rollouts with a real (tiny, locally built) transformers student: batching changes nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest
import torch

import agentdistill  # noqa: F401 - registers the env ids
from agentdistill.distill.students import TINY, build_student, save_student, train_tokenizer
from agentdistill.envs.synthetic.math import generate_math_task
from agentdistill.policies.base import SamplingParams
from agentdistill.policies.expert import expert_action
from agentdistill.policies.hf import HFPolicy
from agentdistill.rollouts.loop import make_rollout_envs, run_rollouts
from agentdistill.rollouts.records import read_trajectories

ENV_ID = "AgentMath-Synthetic-v0"


@pytest.fixture(scope="module")
def student_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained TINY student whose tokenizer knows the synthetic math env's text."""
    texts = []
    for seed in range(60):
        task = generate_math_task(seed)
        texts += [task.question, *(expert_action(task.plan, step) for step in range(len(task.plan)))]
    tokenizer = train_tokenizer(texts, vocab_size=1200)
    out = tmp_path_factory.mktemp("student")
    save_student(build_student(tokenizer, TINY, seed=1), tokenizer, out)
    return out


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops gain nothing from more threads on a shared 2-core machine
    yield
    torch.set_num_threads(threads)


def _messages_by_task(path: Path) -> dict[int, list[dict[str, str]]]:
    return {record["task_index"]: record["messages"] for record in read_trajectories(path)}


def test_batched_rollout_equals_one_env_at_a_time(student_dir: Path, tmp_path: Path) -> None:
    greedy = SamplingParams(max_new_tokens=24)
    outputs = {}
    for num_envs in (1, 4):
        envs = make_rollout_envs(ENV_ID, num_envs, max_steps=2)
        with HFPolicy(str(student_dir)) as policy:
            summary = run_rollouts(
                envs, policy, env_id=ENV_ID, task_indices=range(6), out=str(tmp_path / f"{num_envs}.jsonl"),
                sampling=greedy, progress=False,
            )
        envs.close()
        assert summary.episodes == 6
        outputs[num_envs] = _messages_by_task(tmp_path / f"{num_envs}.jsonl")
    assert outputs[1] == outputs[4]
    assert all(len(messages) == 2 + 2 * 2 for messages in outputs[4].values()), "two steps each, then truncated"


def test_rollout_cli_with_a_local_hf_student(student_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "t.jsonl"
    script = Path(sys.executable).with_name("agentdistill")
    result = subprocess.run(
        [str(script), "rollout", "--env", ENV_ID, "--policy", f"hf:{student_dir}", "--episodes", "4",
         "--num-envs", "2", "--max-new-tokens", "16", "--env-arg", "max_steps=2", "--out", str(out), "--no-progress"],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["episodes"] == 4
    records = list(read_trajectories(out))
    assert len(records) == 4 and all(record["policy"].startswith("hf:") for record in records)
