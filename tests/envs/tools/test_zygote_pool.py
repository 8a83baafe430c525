"""Sandboxes of one process sharing zygotes (:class:`ZygotePool`): one zygote per distinct setting, every episode
still in a worker of its own, the zygote stopped with the last sandbox, a killed zygote replaced once for all of
them, and the rollout loop's envs sharing one. Real zygotes and workers; nothing is faked."""

from __future__ import annotations

import copy
import pickle
import signal

import psutil
import pytest

import agentdistill  # noqa: F401 - registers the env ids
from agentdistill.envs.tools.sandbox import LocalSandbox, SandboxLimits
from agentdistill.envs.tools.sandbox.local import ZygotePool
from agentdistill.policies import make_policy
from agentdistill.rollouts.loop import make_rollout_envs, run_rollouts
from agentdistill.rollouts.records import read_trajectories

LIMITS = SandboxLimits(step_timeout_s=5.0, kill_grace_s=1.0)


def zygotes() -> list[psutil.Process]:
    """This process's live zygote children."""
    return [
        child
        for child in psutil.Process().children()
        if child.status() != psutil.STATUS_ZOMBIE and any("zygote.py" in part for part in child.cmdline())
    ]


def test_sandboxes_of_one_setting_share_one_zygote_and_keep_their_episodes_apart() -> None:
    before = {child.pid for child in zygotes()}
    pool = ZygotePool()
    first = LocalSandbox(allowed_imports={"math"}, limits=LIMITS, zygotes=pool)
    second = LocalSandbox(allowed_imports={"math"}, limits=LIMITS, zygotes=pool)
    other = LocalSandbox(allowed_imports={"json"}, limits=LIMITS, zygotes=pool)
    try:
        assert (
            first.run("x = 1").error is None and second.run("x = 2").error is None and other.run("y = 3").error is None
        )
        assert pool.live_zygotes() == 2, "one zygote per distinct setting"
        assert len([z for z in zygotes() if z.pid not in before]) == 2
        assert first.worker_pid != second.worker_pid and first.workdir != second.workdir
        assert (first.run("x").value, second.run("x").value) == ("1", "2")
        first.close()
        assert second.run("x + 40").value == "42", "the zygote outlives one of its sandboxes"
        second.close()
        other.close()
        assert pool.live_zygotes() == 0
        assert not [z for z in zygotes() if z.pid not in before], "the last sandbox stopped the zygote"
    finally:
        for box in (first, second, other):
            box.close()


def test_a_killed_shared_zygote_is_replaced_once_and_only_its_episodes_are_lost() -> None:
    before = {child.pid for child in zygotes()}
    pool = ZygotePool()
    boxes = [LocalSandbox(allowed_imports={"math"}, limits=LIMITS, zygotes=pool) for _ in range(3)]
    try:
        for index, box in enumerate(boxes):
            assert box.run(f"x = {index}").error is None
        (victim,) = [z for z in zygotes() if z.pid not in before]
        workers = [psutil.Process(box.worker_pid) for box in boxes]
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=5)
        _, alive = psutil.wait_procs(workers, timeout=10)  # each worker notices its zygote's death and exits
        assert not alive, "episode workers outlived their zygote"
        for box in boxes:
            lost = box.run("x")
            assert lost.state_lost and lost.error is not None, "the episode died with its zygote"
            assert box.run("x = 6\nx * 7").value == "42", "a new zygote serves every sandbox"
        assert pool.live_zygotes() == 1
        (replacement,) = [z for z in zygotes() if z.pid not in before]
        assert replacement.pid != victim.pid
    finally:
        for box in boxes:
            box.close()
    assert pool.live_zygotes() == 0


def test_a_pool_is_shared_by_copies_and_pickled_empty() -> None:
    pool = ZygotePool()
    box = LocalSandbox(limits=LIMITS, zygotes=pool)
    try:
        box.run("pass")
        assert copy.deepcopy({"sandbox": pool})["sandbox"] is pool
        assert pickle.loads(pickle.dumps(pool)).live_zygotes() == 0 and pool.live_zygotes() == 1
    finally:
        box.close()


def test_the_rollout_loops_envs_share_one_zygote(tmp_path) -> None:
    before = {child.pid for child in zygotes()}
    envs = make_rollout_envs("AgentMath-Synthetic-v0", 6, max_steps=3)
    try:
        summary = run_rollouts(
            envs,
            make_policy("expert"),
            env_id="AgentMath-Synthetic-v0",
            task_indices=range(12),
            out=str(tmp_path / "t.jsonl"),
            progress=False,
        )
        started = [z for z in zygotes() if z.pid not in before]
        assert len(started) == 1, f"{len(started)} zygotes for 6 envs"
    finally:
        envs.close()
    records = list(read_trajectories(tmp_path / "t.jsonl"))
    assert len(records) == 12 and all(record["score"] == 1.0 for record in records), summary
    assert not [z for z in zygotes() if z.pid not in before], "closing the envs stopped the shared zygote"


def test_episodes_of_a_shared_zygote_each_have_their_own_process_limit() -> None:
    """SAG forks a candidate per sample from each episode; the process limit is per episode, so many envs sharing a
    zygote can all vote at once. Each isolated episode runs as a user id of its own (the limit counts processes per
    user id), and its files belong to that user alone."""
    pool = ZygotePool()
    limits = SandboxLimits(step_timeout_s=10.0, kill_grace_s=1.0, processes=12)
    boxes = [LocalSandbox(allowed_imports={"os"}, limits=limits, zygotes=pool) for _ in range(3)]
    try:
        assert boxes[0].run("x = 1").error is None
        if boxes[0].isolation != "namespaces":
            pytest.skip(f"user ids are per episode only under namespace isolation (root); here: {boxes[0].isolation}")
        owners = {box.run("import os\nos.getuid()").value for box in boxes}
        assert len(owners) == 3, f"one user id per episode, got {owners}"
        for box in boxes:  # 3 episodes x (2 processes + 8 candidates) > 12: fails if they shared one user id
            results = box.run_candidates([f"y = {n}\nprint(y)" for n in range(8)])
            assert [(r.error, r.state_lost, r.logs.strip()) for r in results] == [
                (None, False, str(n)) for n in range(8)
            ]
        for box in boxes:
            box.adopt(5)
            assert box.run("y").value == "5"
    finally:
        for box in boxes:
            box.close()
