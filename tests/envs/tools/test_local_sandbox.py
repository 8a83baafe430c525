"""The local sandbox: a real worker process per episode, real timeouts, real tools across the pipe."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from agentdistill.envs.tools.sandbox import (
    LocalSandbox,
    SandboxIsolationError,
    SandboxIsolationWarning,
    SandboxLimits,
    make_sandbox,
)


@pytest.fixture
def sandbox() -> LocalSandbox:
    box = LocalSandbox(
        tools={"shout": lambda text: text.upper(), "fail": lambda: 1 / 0},
        limits=SandboxLimits(step_timeout_s=1.0, kill_grace_s=1.0),
    )
    yield box
    box.close()


def _process_is_gone(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "State:\tZ" in status


def _gone_soon(pid: int, within_s: float = 5.0) -> bool:
    """Whether ``pid`` ends within ``within_s``: SIGKILLed processes take a moment to be torn down."""
    deadline = time.monotonic() + within_s
    while not _process_is_gone(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_variables_persist_and_last_value_and_prints_are_returned(sandbox: LocalSandbox) -> None:
    first = sandbox.run("x = 20\nprint('set x')")
    assert first.logs == "set x\n" and first.value is None and first.error is None
    second = sandbox.run("x + 22")
    assert second.value == "42"


def test_exception_names_the_failing_line(sandbox: LocalSandbox) -> None:
    result = sandbox.run("a = 1\nb = a / 0\nprint('never')")
    assert result.error == "Code execution failed at line 'b = a / 0' due to: ZeroDivisionError: division by zero"
    assert result.logs == ""


def test_syntax_error_is_reported_not_raised(sandbox: LocalSandbox) -> None:
    result = sandbox.run("def broken(:\n    pass")
    assert result.error is not None and "SyntaxError" in result.error and "line 1" in result.error


def test_final_answer_stops_the_cell_and_carries_the_answer(sandbox: LocalSandbox) -> None:
    result = sandbox.run("print('before')\nfinal_answer(6 * 7)\nprint('after')")
    assert result.is_final and result.final_answer == "42"
    assert result.logs == "before\n"


def test_python_loop_timeout_keeps_the_episode_state(sandbox: LocalSandbox) -> None:
    sandbox.run("kept = 'yes'")
    started = time.monotonic()
    result = sandbox.run("i = 0\nwhile True:\n    i += 1")
    assert result.timed_out and not result.state_lost
    assert time.monotonic() - started < 1.9  # stopped by the in-worker alarm, before the kill deadline
    assert sandbox.run("kept").value == "'yes'"


def test_uninterruptible_code_is_killed_and_the_next_step_works(sandbox: LocalSandbox) -> None:
    sandbox.run("kept = 1")
    pid = sandbox.worker_pid
    result = sandbox.run("sum(range(10**13))")  # one long C call: the alarm cannot interrupt it
    assert result.timed_out and result.state_lost
    assert "timed out" in (result.error or "") and "reset" in (result.error or "")
    assert pid is not None and _gone_soon(pid)
    after = sandbox.run("1 + 1")
    assert after.value == "2"
    assert "NameError" in (sandbox.run("kept").error or "")


def test_swallowed_timeout_is_still_stopped(sandbox: LocalSandbox) -> None:
    code = "import time\nwhile True:\n    try:\n        time.sleep(10)\n    except BaseException:\n        pass"
    result = sandbox.run(code)
    assert result.timed_out
    assert sandbox.run("'alive'").value == "'alive'"


def test_worker_killed_mid_step_becomes_an_error_and_a_fresh_worker_follows(sandbox: LocalSandbox) -> None:
    sandbox.run("kept = 1")
    pid = sandbox.worker_pid
    assert pid is not None
    killer = threading.Timer(0.3, os.kill, (pid, signal.SIGKILL))  # the fault comes from outside, mid-step
    killer.start()
    result = sandbox.run("import time\ntime.sleep(0.9)")
    killer.join()
    assert result.state_lost and "SIGKILL" in (result.error or "") and not result.timed_out
    assert sandbox.run("3 * 3").value == "9"
    assert "NameError" in (sandbox.run("kept").error or "")


def test_tools_run_in_the_parent_and_their_errors_raise_in_model_code(sandbox: LocalSandbox) -> None:
    result = sandbox.run("print(shout('hello'))\nimport os\nos.getpid()")
    assert result.logs == "HELLO\n"
    assert int(result.value or "0") != os.getpid()
    assert [call.name for call in result.tool_calls] == ["shout"]
    failed = sandbox.run("try:\n    fail()\nexcept RuntimeError as error:\n    print('caught:', error)")
    assert "caught: fail failed: ZeroDivisionError" in failed.logs
    assert failed.tool_calls[0].error is not None
    unsupported = sandbox.run("shout([1, 2])")
    assert "TypeError" in (unsupported.error or "")


def test_import_allowlist_applies_to_model_code_only() -> None:
    box = LocalSandbox(allowed_imports={"math", "json"})
    try:
        assert box.run("import math\nmath.factorial(5)").value == "120"
        blocked = box.run("import subprocess")
        assert "ImportError" in (blocked.error or "") and "not allowed" in (blocked.error or "")
        assert "ImportError" in (box.run("from os import path").error or "")
        assert box.run("import json\njson.dumps({'a': 1})").value == "'{\"a\": 1}'"  # json imports re etc. itself
    finally:
        box.close()


def test_parent_environment_is_not_inherited(sandbox: LocalSandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    sandbox.reset()
    monkeypatch.setenv("AGENTDISTILL_TEST_SECRET", "s3cret")
    result = sandbox.run("import os\n(os.environ.get('AGENTDISTILL_TEST_SECRET'), os.getcwd() == os.environ['HOME'])")
    assert result.value == "(None, True)"


def test_private_workdir_is_removed_and_state_dropped_on_reset(sandbox: LocalSandbox) -> None:
    sandbox.run("open('notes.txt', 'w').write('x')\ny = 5")
    workdir = sandbox.workdir
    assert workdir is not None and (workdir / "notes.txt").exists()
    sandbox.reset()
    assert not workdir.exists()
    assert "NameError" in (sandbox.run("y").error or "")
    assert sandbox.workdir != workdir


def _pids_running(argument: str) -> list[int]:
    """Host pids of live processes whose command line contains ``argument`` (namespaces hide theirs)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if argument in (entry / "cmdline").read_bytes().decode(errors="replace") and not _process_is_gone(int(entry.name)):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@pytest.mark.parametrize("detach", [False, True])
def test_close_kills_grandchildren_even_detached_ones(sandbox: LocalSandbox, detach: bool) -> None:
    marker = f"{1000 + os.getpid() % 1000}.{int(detach) + 1}"
    code = f"import subprocess\nsubprocess.Popen(['sleep', '{marker}'], start_new_session={detach})\n'started'"
    assert sandbox.run(code).value == "'started'"
    time.sleep(0.2)
    assert _pids_running(marker), "the grandchild should be running before close()"
    sandbox.close()
    deadline = time.monotonic() + 5
    while _pids_running(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _pids_running(marker)


def test_huge_output_is_bounded() -> None:
    box = LocalSandbox(limits=SandboxLimits(output_chars=1_000))
    try:
        result = box.run("for i in range(200_000):\n    print('line', i)")
        assert len(result.logs) < 1_100
        assert result.logs.startswith("line 0\n") and result.logs.rstrip().endswith("line 199999")
        assert "characters of output dropped" in result.logs
    finally:
        box.close()


def test_memory_limit_turns_into_memory_error() -> None:
    box = LocalSandbox(limits=SandboxLimits(memory_bytes=512 * 1024**2))
    try:
        result = box.run("block = bytearray(2 * 1024**3)")
        assert "MemoryError" in (result.error or "")
        assert box.run("'still here'").value == "'still here'"
    finally:
        box.close()


def test_make_sandbox_rejects_unknown_backends() -> None:
    with pytest.raises(ValueError, match="unknown sandbox 'docker'"):
        make_sandbox("docker", tools={}, allowed_imports=None, limits=SandboxLimits())


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError, match="step_timeout_s"):
        SandboxLimits(step_timeout_s=0)
    with pytest.raises(ValueError, match="memory_bytes"):
        SandboxLimits(memory_bytes=-1)


def test_process_mode_runs_without_namespaces_and_says_so() -> None:
    box = LocalSandbox(isolation="process")
    try:
        box.reset()
        assert box.isolation == "process"
        assert box.run("import os\nos.getpid() > 1").value == "True", "no PID namespace in process mode"
    finally:
        box.close()


def test_weaker_isolation_than_asked_warns_or_refuses() -> None:
    # Producing a real non-root sandbox needs a non-root interpreter install; the decision itself is
    # what matters here: "auto" warns loudly, "namespaces" refuses.
    with pytest.warns(SandboxIsolationWarning, match="without namespace isolation \\(namespaces need root"):
        LocalSandbox(isolation="auto")._check_isolation("process", "namespaces need root (euid 0)")
    with pytest.raises(SandboxIsolationError, match="without namespace isolation"):
        LocalSandbox(isolation="namespaces")._check_isolation("process", "unshare refused")


@pytest.mark.skipif(os.geteuid() != 0, reason="namespace isolation needs root")
def test_env_reports_the_isolation_in_force() -> None:
    import gymnasium as gym

    import agentdistill  # noqa: F401 - registers the env ids

    env = gym.make("AgentMath-Synthetic-v0")
    try:
        _, info = env.reset(seed=0)
        assert info["isolation"] == "namespaces"
    finally:
        env.close()



_OWNER_SCRIPT = """
import sys, time
from agentdistill.envs.tools.sandbox import LocalSandbox
box = LocalSandbox()
box.run("open('notes.txt', 'w').write('x')")
print(box.workdir, box.worker_pid, flush=True)
time.sleep(60)
"""


@pytest.mark.parametrize("kill_signal", [signal.SIGKILL, signal.SIGTERM])
def test_a_killed_owner_leaves_no_episode_directory_or_process(kill_signal: signal.Signals) -> None:
    """A run killed outright never calls close(): its zygote sees the control socket close and cleans up."""
    import subprocess
    import sys

    owner = subprocess.Popen([sys.executable, "-c", _OWNER_SCRIPT], stdout=subprocess.PIPE, text=True)
    try:
        workdir_text, pid_text = owner.stdout.readline().split()
        workdir, episode_pid = Path(workdir_text), int(pid_text)
        assert (workdir / "notes.txt").exists() and not _process_is_gone(episode_pid)
        owner.send_signal(kill_signal)
        owner.wait(timeout=10)
    finally:
        owner.kill()
        owner.stdout.close()
    deadline = time.monotonic() + 5
    while workdir.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not workdir.exists(), f"{workdir} outlived its killed owner"
    assert _gone_soon(episode_pid)
