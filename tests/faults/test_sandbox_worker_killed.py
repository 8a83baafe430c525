"""Fault: the sandbox process running an env's code is SIGKILLed mid-step (the OOM killer, an operator).

The kill comes from outside, as the kernel's OOM killer would deliver it: the victim's cell fills a
few hundred MB and sleeps, and a thread of this test picks, among this test's sandbox processes, the
one holding that much memory (the OOM killer's own choice) and SIGKILLs it while the step waits.
Nothing in the sandbox is told in advance. Also: the zygote that forks an env's workers killed
between steps (the env must start a new one rather than fail every later reset).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import psutil

import agentdistill  # noqa: F401 - registers the env ids
from agentdistill.envs.tools.sandbox import LocalSandbox, SandboxLimits
from agentdistill.policies.base import Completion, PolicyRequest, SamplingParams
from agentdistill.policies.expert import ExpertPolicy
from agentdistill.rollouts.loop import make_rollout_envs, run_rollouts
from tests.conftest import code_action
from tests.faults.support import assert_one_record_per_task, descendants, gone_within

ENV_ID = "AgentQA-Synthetic-v0"
VICTIM_TASK = 1
VICTIM_BYTES = 256 * 1024**2
VICTIM_CELL = f"ballast = b'x' * {VICTIM_BYTES}\nimport time\ntime.sleep(60)"
"""Holds far more memory than any other sandbox process here (tens of MB), then waits to be killed."""


class SabotagedExpert:
    """The scripted expert, except that the victim task's first action is the marked, sleeping cell."""

    name = "expert"

    def __init__(self, victim_task_index: int) -> None:
        self.expert = ExpertPolicy()
        self.victim_task_index = victim_task_index

    def generate(self, requests: Sequence[PolicyRequest], params: SamplingParams) -> list[list[Completion]]:
        answers = self.expert.generate(requests, params)
        for index, request in enumerate(requests):
            first_turn = not any(message["role"] == "assistant" for message in request.messages)
            if request.context["task_index"] == self.victim_task_index and first_turn:
                answers[index] = [Completion(text=code_action(VICTIM_CELL, "I will wait."), completion_tokens=1)]
        return answers

    def close(self) -> None:
        pass


class OOMKiller(threading.Thread):
    """SIGKILLs, once, the sandbox process below this test that holds most of :data:`VICTIM_BYTES`."""

    def __init__(self, within_s: float = 60.0) -> None:
        super().__init__(name="oom-killer", daemon=True)
        self.within_s = within_s
        self.killed: list[int] = []

    def run(self) -> None:
        deadline = time.monotonic() + self.within_s
        while time.monotonic() < deadline:
            for process in psutil.Process().children(recursive=True):
                try:
                    fat = process.memory_info().rss > VICTIM_BYTES * 0.9
                    if fat and any("zygote.py" in part for part in process.cmdline()):
                        process.send_signal(signal.SIGKILL)
                        self.killed.append(process.pid)
                        return
                except psutil.NoSuchProcess:
                    continue
            time.sleep(0.01)


def test_worker_sigkilled_mid_step_fails_that_step_only_and_the_episode_ends_cleanly(tmp_path: Path) -> None:
    out = tmp_path / "t.jsonl"
    envs = make_rollout_envs(ENV_ID, 4, vectorization_mode="async")
    killer = OOMKiller()
    killer.start()
    try:
        summary = run_rollouts(
            envs, SabotagedExpert(VICTIM_TASK), env_id=ENV_ID, task_indices=range(8), out=str(out),
            progress=False,
        )
        sandbox_processes = [process for worker in envs.processes for process in descendants(worker.pid)]
    finally:
        envs.close()
    killer.join(timeout=5)

    assert len(killer.killed) == 1, "the victim's cell never ran, so nothing was killed"
    assert summary.episodes == 8 and summary.metrics["failed_episodes"] == 0
    records = {record["task_index"]: record for record in assert_one_record_per_task(out, ENV_ID, 8)}

    victim = records.pop(VICTIM_TASK)
    killed_step = victim["steps"][0]
    assert killed_step["state_lost"] and "SIGKILL" in killed_step["observation"]
    assert "variables from earlier steps are gone" in killed_step["observation"]
    assert victim["terminated"] and victim["failed"] is None  # the episode went on and answered
    assert all(not step["state_lost"] for step in victim["steps"][1:])

    for record in records.values():  # the other envs of the same vector env never noticed
        assert record["score"] == 1.0 and record["failed"] is None
        assert all(not step["state_lost"] and step["execution_error"] is None for step in record["steps"])

    assert not gone_within([psutil.Process(pid) for pid in killer.killed if psutil.pid_exists(pid)], 5.0)
    assert not gone_within(sandbox_processes, 10.0), "sandbox processes outlived envs.close()"


def _zygote_of(sandbox_pid_owner: int, before: set[int]) -> psutil.Process:
    """The one zygote child of this process that was not there before the sandbox started."""
    started = [
        child for child in psutil.Process(sandbox_pid_owner).children()
        if child.pid not in before and any("zygote.py" in part for part in child.cmdline())
    ]
    assert len(started) == 1, started
    return started[0]


def test_killed_zygote_is_replaced_and_the_next_episode_runs() -> None:
    before = {child.pid for child in psutil.Process().children()}
    box = LocalSandbox(allowed_imports={"math"}, limits=SandboxLimits(step_timeout_s=5.0, kill_grace_s=1.0))
    try:
        assert box.run("x = 6").error is None
        zygote = _zygote_of(os.getpid(), before)
        worker = psutil.Process(box.worker_pid)
        zygote.send_signal(signal.SIGKILL)
        zygote.wait(timeout=5)
        assert not gone_within([worker], 5.0), "the episode worker outlived its zygote"

        lost = box.run("x")  # the episode died with its zygote: an error observation, not an exception
        assert lost.state_lost and lost.error is not None and lost.value is None
        assert box.run("x = 7\nx * 6").value == "42"  # a new zygote serves the same env
        box.reset()  # and its later episodes
        assert box.run("import math\nmath.factorial(5)").value == "120"
        assert _zygote_of(os.getpid(), before).pid != zygote.pid
    finally:
        box.close()
    assert not [child for child in psutil.Process().children() if child.pid not in before and child.is_running()
                and child.status() != psutil.STATUS_ZOMBIE]
