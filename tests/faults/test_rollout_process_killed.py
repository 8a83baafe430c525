"""Fault: the rollout process itself is SIGKILLed (the OOM killer, a preempted node), several times.

A real ``agentdistill rollout`` process is started, SIGKILLed at a random moment after it has written
some episodes, and restarted with the same ``--out``, three times over (sync and async vector envs in
turn), then run to the end. The file must then hold exactly one complete, valid JSON record per task,
and the sandboxes of each killed run must not outlive it. (``tests/rollouts/test_loop.py`` covers an
interrupted run in process and a partial last line; this is the real kill, from outside.)
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.faults.support import assert_one_record_per_task, descendants, gone_within

ENV_ID = "AgentQA-Synthetic-v0"
TASKS = 60
KILLS = 3


def complete_lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def rollout_command(out: Path, mode: str) -> list[str]:
    return [
        sys.executable, "-m", "agentdistill.cli", "rollout", "--env", ENV_ID, "--policy", "expert",
        "--episodes", str(TASKS), "--num-envs", "4", "--mode", mode, "--out", str(out), "--no-progress",
    ]


def kill_after_progress(out: Path, mode: str, rng: random.Random) -> int:
    """Start a rollout, SIGKILL it a random moment after it wrote a new episode; returns its pid."""
    before = complete_lines(out)
    process = subprocess.Popen(rollout_command(out, mode), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while complete_lines(out) <= before:
            assert process.poll() is None, f"the rollout exited before it could be killed: {process.stderr.read()!r}"
            assert time.monotonic() < deadline, "the rollout wrote nothing in 120 s"
            time.sleep(0.005)
        time.sleep(rng.uniform(0.0, 0.2))
        assert process.poll() is None, "the rollout finished before it could be killed: raise TASKS"
        sandboxes = descendants(process.pid)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        assert process.stderr is not None
        process.stderr.close()
    assert process.returncode == -signal.SIGKILL
    assert sandboxes and not gone_within(sandboxes, 15.0), "processes of the killed rollout outlived it"
    return process.pid


@pytest.mark.timeout(300)
def test_rollout_sigkilled_at_random_moments_then_resumed_holds_each_task_once(tmp_path: Path) -> None:
    out = tmp_path / "t.jsonl"
    rng = random.Random(9)
    for round_index in range(KILLS):
        kill_after_progress(out, "async" if round_index % 2 else "sync", rng)
    written = sum(1 for line in out.read_bytes().splitlines(keepends=True) if line.endswith(b"\n"))
    assert 0 < written < TASKS

    final = subprocess.run(rollout_command(out, "sync"), capture_output=True, text=True, timeout=240)
    assert final.returncode == 0, final.stderr
    report = json.loads(final.stdout)
    assert report["skipped (already in the file)"] == written and report["episodes"] == TASKS - written

    for record in assert_one_record_per_task(out, ENV_ID, TASKS):
        assert record["score"] == 1.0 and record["terminated"] and record["failed"] is None
        roles = [message["role"] for message in record["messages"]]
        assert roles == ["system", "user", *["assistant", "user"] * record["num_steps"]]
