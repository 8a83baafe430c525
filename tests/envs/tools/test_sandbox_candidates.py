"""SAG snapshots: candidates run from one episode state without changing it; one can be adopted."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from agentdistill.envs.tools.sandbox import LocalSandbox, SandboxLimits


@pytest.fixture
def sandbox() -> LocalSandbox:
    box = LocalSandbox(
        tools={"lookup": lambda key: f"value-of-{key}"},
        limits=SandboxLimits(step_timeout_s=1.0, kill_grace_s=1.0),
        max_parallel=2,
    )
    box.reset()
    yield box
    box.close()


def _session_members(session_id: int) -> list[int]:
    """Live host processes whose session id is ``session_id`` (an episode and all it started)."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if fields[0] != "Z" and int(fields[3]) == session_id:
                members.append(int(entry.name))
    return members


def test_candidates_start_from_the_same_state_and_leave_it_unchanged(sandbox: LocalSandbox) -> None:
    sandbox.run("x = 1")
    results = sandbox.run_candidates(["x += 10\nx", "x += 20\nprint(lookup('a'))\nx", "final_answer(x * 100)"])
    assert [r.value for r in results] == ["11", "21", None]
    assert results[1].logs == "value-of-a\n" and [c.name for c in results[1].tool_calls] == ["lookup"]
    assert results[2].final_answer == "100"
    assert sandbox.run("x").value == "1", "running candidates must not change the episode state"


def test_adopting_a_candidate_keeps_its_state_without_rerunning_it(sandbox: LocalSandbox) -> None:
    sandbox.run("x = 1\ncount = 0")
    results = sandbox.run_candidates(["x = 5\ncount += 1", "x = 6\ncount += 1"])
    assert all(result.error is None for result in results)
    sandbox.adopt(1)
    assert sandbox.run("(x, count)").value == "(6, 1)", "the adopted cell ran exactly once"
    # a second round from the adopted state, adopted again
    sandbox.run_candidates(["x *= 2", "x *= 3"])
    sandbox.adopt(0)
    assert sandbox.run("x").value == "12"


def test_at_most_max_parallel_candidates_run_at_once(sandbox: LocalSandbox) -> None:
    code = (
        "import os, time, glob\n"
        "marker = 'running-{}'\n"
        "open(marker, 'w').close()\n"
        "time.sleep(0.3)\n"
        "seen = len(glob.glob('running-*'))\n"
        "os.remove(marker)\n"
        "seen"
    )
    results = sandbox.run_candidates([code.format(i) for i in range(4)])
    seen = [int(result.value or "0") for result in results]
    assert max(seen) == 2, f"two candidates of a batch run together, never more: {seen}"


def test_failed_candidates_are_reported_and_cannot_be_adopted(sandbox: LocalSandbox) -> None:
    sandbox.run("kept = 'yes'")
    results = sandbox.run_candidates(["sum(range(10**13))", "import os\nos._exit(3)", "1/0", "kept"])
    assert results[0].timed_out and results[0].state_lost
    assert results[1].state_lost
    assert "ZeroDivisionError" in (results[2].error or "") and not results[2].state_lost
    assert results[3].value == "'yes'"
    for index in (0, 1):
        with pytest.raises(ValueError, match=f"candidate {index} cannot be adopted"):
            sandbox.adopt(index)
    assert sandbox.run("kept").value == "'yes'", "the episode survives its candidates' failures"
    with pytest.raises(ValueError, match="no candidate 7"):
        sandbox.adopt(7)


def test_reset_and_close_end_candidates_and_replaced_workers(sandbox: LocalSandbox) -> None:
    sandbox.run_candidates(["a = 1", "a = 2"])
    sandbox.adopt(0)
    sandbox.run_candidates(["import time\ntime.sleep(0.1)", "b = 2"])
    session = sandbox.worker_pid
    assert session is not None and len(_session_members(session)) >= 3
    sandbox.close()
    for _ in range(100):  # SIGKILLed processes take a moment to be torn down
        if not _session_members(session):
            break
        time.sleep(0.05)
    assert not _session_members(session)


def test_an_episode_lost_between_candidate_batches_loses_every_candidates_state() -> None:
    """Candidates run ``max_parallel`` at a time; when the episode's worker cannot fork a later batch (here: its
    process limit, reached because the first batch's candidates stay alive to be adopted), the episode is gone. The
    first batch's results keep what they printed but report the state as lost, so nothing tries to adopt a state
    that no longer belongs to any episode, and the next cell runs in a fresh episode."""
    box = LocalSandbox(limits=SandboxLimits(step_timeout_s=5.0, kill_grace_s=1.0, processes=4), max_parallel=2)
    try:
        box.run("x = 1")
        if box.isolation != "namespaces":
            pytest.skip(
                f"the process limit binds only an episode dropped to its own user id (root); here: {box.isolation}"
            )
        results = box.run_candidates([f"print({n})" for n in range(4)])
        assert [(r.logs.strip(), r.state_lost) for r in results[:2]] == [("0", True), ("1", True)]
        assert all(r.state_lost and "stopped unexpectedly" in (r.error or "") for r in results[2:])
        for index in range(4):
            with pytest.raises(ValueError, match=f"no candidate {index} to adopt"):
                box.adopt(index)
        fresh = box.run("'x' in globals()")
        assert fresh.value == "False" and fresh.error is None
    finally:
        box.close()
