"""Fault: SFT training is killed and restarted with the same output directory.

``tests/distill/test_sft.py::test_rerun_resumes_from_the_last_checkpoint`` covers a run that *finished*
and is continued with more steps. Here the run is really interrupted: ``agentdistill distill`` is
SIGKILLed between two checkpoints, and the rerun must resume from the last one and run only the
missing steps; the killed run's claim on the directory (its manifest and lock) must let its own rerun in.
A kill can also land while a checkpoint is being written (the Trainer writes the model first and
``trainer_state.json`` last, so the newest directory is then incomplete); the rerun must then resume
from the checkpoint before it instead of failing.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import agentdistill  # noqa: F401 - registers the env ids
from agentdistill.distill.sft.conversations import load_conversations
from agentdistill.distill.sft.launch import run_sft
from agentdistill.distill.sft.settings import SFTSettings
from agentdistill.distill.sft.train import train_sft
from agentdistill.distill.sft.trajectories import trajectories_to_dataset
from agentdistill.policies.expert import ExpertPolicy
from agentdistill.rollouts.loop import make_rollout_envs, run_rollouts

REPO = Path(__file__).resolve().parents[2]
CPU_TINY = REPO / "configs" / "distill" / "sft_cpu_tiny.yaml"
TRAINER_STATE = "trainer_state.json"


@pytest.fixture(scope="module")
def expert_trajectories(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Eight expert episodes of synthetic math tasks, as ``agentdistill rollout`` writes them."""
    trajectories = tmp_path_factory.mktemp("trajectories") / "expert.jsonl"
    envs = make_rollout_envs("AgentMath-Synthetic-v0", 4)
    try:
        run_rollouts(envs, ExpertPolicy(), env_id="AgentMath-Synthetic-v0", task_indices=range(8),
                     out=str(trajectories), progress=False)
    finally:
        envs.close()
    return trajectories


@pytest.fixture(scope="module")
def conversations_file(expert_trajectories: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The expert episodes' conversations as a JSONL file of ``{"messages": [...]}`` rows."""
    dataset, _ = trajectories_to_dataset([expert_trajectories], report=False)
    path = tmp_path_factory.mktemp("sft-data") / "conversations.jsonl"
    path.write_text("".join(json.dumps({"messages": row}) + "\n" for row in dataset["messages"]), encoding="utf-8")
    return path


def settings(**changes: object) -> SFTSettings:
    """The CPU tiny settings, checkpointing every step (one batch a step)."""
    return SFTSettings.from_yaml(CPU_TINY).replace(
        save_strategy="steps", save_steps=1, per_device_batch_size=1, **changes
    )


def complete_checkpoints(out: Path) -> list[int]:
    """Steps of the checkpoints whose trainer state (written last) is there and readable."""
    steps = []
    for directory in out.glob("checkpoint-*"):
        try:
            state = json.loads((directory / TRAINER_STATE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        steps.append(int(state["global_step"]))
    return sorted(steps)


def quiet_environment(home: Path) -> dict[str, str]:
    return {**os.environ, "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1", "HOME": str(home), "TOKENIZERS_PARALLELISM": "false"}


@pytest.mark.timeout(300)
def test_training_sigkilled_between_checkpoints_resumes_from_the_last_one(
    expert_trajectories: Path, tmp_path: Path
) -> None:
    out = tmp_path / "student"
    config = tmp_path / "sft.yaml"
    settings(max_steps=200).to_yaml(config)
    command = [
        str(Path(sys.executable).with_name("agentdistill")), "distill", "--trajectories", str(expert_trajectories),
        "--student", "scratch:tiny", "--out", str(out), "--config", str(config), "--no-wandb",
    ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=quiet_environment(tmp_path))
    try:
        deadline = time.monotonic() + 240
        while len(complete_checkpoints(out)) < 2:
            assert process.poll() is None, f"training stopped by itself: {process.stderr.read()!r}"  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "no checkpoint after 240 s"
            time.sleep(0.005)
        time.sleep(random.Random(3).uniform(0.0, 0.05))  # inside the next step, before its checkpoint
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == -signal.SIGKILL
    last = complete_checkpoints(out)[-1]
    history = json.loads((out / f"checkpoint-{last}" / TRAINER_STATE).read_text(encoding="utf-8"))["log_history"]
    assert not (out / "sft_result.json").exists()  # it really died mid-run

    dataset, _ = trajectories_to_dataset([expert_trajectories], report=False)  # what `agentdistill distill` trains on
    resumed = run_sft(dataset, "scratch:tiny", out, settings=settings(max_steps=last + 2))
    assert resumed.resumed_from == str(out.resolve() / f"checkpoint-{last}")
    assert resumed.global_step == last + 2
    assert json.loads((out / "ranks" / "rank-0.json").read_text())["steps"] == 2  # only the missing steps ran
    assert list(resumed.losses[:last]) == [entry["loss"] for entry in history if "loss" in entry]


@pytest.mark.timeout(300)
def test_training_killed_while_writing_a_checkpoint_resumes_from_the_one_before(
    conversations_file: Path, tmp_path: Path
) -> None:
    """A checkpoint without ``trainer_state.json`` (written last) is incomplete: the rerun skips it."""
    out = tmp_path / "student"
    data = load_conversations(conversations_file)
    first = train_sft(data, "scratch:tiny", out, settings(max_steps=2))
    assert first.global_step == 2 and complete_checkpoints(out) == [1, 2]
    # What a SIGKILL during the Trainer's save of step 2 leaves: the weights, not the optimizer or the state.
    for name in (TRAINER_STATE, "optimizer.pt", "scheduler.pt", "rng_state.pth"):
        (out / "checkpoint-2" / name).unlink(missing_ok=True)
    (out / "sft_result.json").unlink()

    resumed = train_sft(data, "scratch:tiny", out, settings(max_steps=3))
    assert resumed.resumed_from == str(out.resolve() / "checkpoint-1")
    assert resumed.global_step == 3
