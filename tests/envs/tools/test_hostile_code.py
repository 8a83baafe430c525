"""Hostile cells run for real in the namespace-isolated sandbox: each gets a clear observation, the
same sandbox and the next episode still work, and the host is not touched.

Namespaces need root (CI runs as root); elsewhere these tests are skipped because the isolation they
check does not exist there, which the sandbox itself reports with a warning.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest

from agentdistill.envs.tools.sandbox import LocalSandbox, SandboxLimits
from agentdistill.envs.tools.sandbox.isolation import SANDBOX_UID_BASE

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="namespace isolation needs root")

OUTSIDE_FILE = Path.home() / "agentdistill-hostile-write-test.txt"
"""A host path outside the scratch dirs (the repo itself may sit under /tmp, which the sandbox shadows)."""
HOST_TMP_FILE = Path("/tmp/agentdistill-hostile-escape.txt")
SECRET = "agentdistill-test-secret-value"

HOSTILE_CELLS = {
    "infinite loop": ("while True:\n    pass", "timed out"),
    "allocate 50 GB": ("block = bytearray(50 * 1024**3)", "MemoryError"),
    "fork bomb": ("import os\nwhile True:\n    os.fork()", "BlockingIOError"),
    "write outside the work dir": (f"open({str(OUTSIDE_FILE)!r}, 'w').write('x')", "PermissionError"),
    "read the parent's environment": (
        f"import os\nprint(dict(os.environ))\nprint(open('/proc/{os.getpid()}/environ').read())",
        "FileNotFoundError",
    ),
    "kill the parent": (f"import os\nos.kill({os.getpid()}, 9)", "ProcessLookupError"),
    "kill the parent by ppid": ("import os\nos.kill(os.getppid(), 9)\nprint('still here')", "still here"),
    "ignore SIGTERM and spin": ("import signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nwhile True:\n    pass", "timed out"),
    "ctypes null read": ("import ctypes\nctypes.string_at(0)", "SIGSEGV"),
    "read stdin": ("input('name? ')", "EOFError"),
    "deep recursion": ("import sys\nsys.setrecursionlimit(10**6)\ndef f(n):\n    return f(n + 1)\nf(0)", "Error"),
    "print 1 GB": ("print('x' * 10**9)", "characters of output dropped"),
}


def _processes_of(worker_pids: list[int]) -> list[int]:
    """Host pids of live processes under the user ids of these sandbox workers (base + outer pid)."""
    uids = {SANDBOX_UID_BASE + pid for pid in worker_pids}
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        uid_line = next((line for line in status.splitlines() if line.startswith("Uid:")), "")
        if uids & {int(uid) for uid in uid_line.split()[1:]} and "State:\tZ" not in status:
            found.append(int(entry.name))
    return found


@pytest.fixture
def sandbox(monkeypatch: pytest.MonkeyPatch) -> LocalSandbox:
    monkeypatch.setenv("AGENTDISTILL_TEST_SECRET", SECRET)
    # 5 s per step: allocating the 1 GB string alone takes 0.6-1.8 s on a busy 2-core machine
    box = LocalSandbox(isolation="namespaces", limits=SandboxLimits(step_timeout_s=5.0, kill_grace_s=1.0))
    box.reset()
    assert box.isolation == "namespaces"
    yield box
    box.close()


@pytest.mark.parametrize("name", sorted(HOSTILE_CELLS))
def test_hostile_cell_is_contained(sandbox: LocalSandbox, name: str) -> None:
    code, expected = HOSTILE_CELLS[name]
    workers = [sandbox.worker_pid]
    result = sandbox.run(code)
    observed = f"{result.logs}\n{result.error}"
    assert expected in observed
    assert SECRET not in observed
    assert len(result.logs) <= sandbox.limits.output_chars + 100
    assert sandbox.run("1 + 1").value == "2", "the same episode must go on after a hostile cell"
    workers.append(sandbox.worker_pid)
    sandbox.reset()
    workers.append(sandbox.worker_pid)
    assert sandbox.run("'next episode'").value == "'next episode'"
    assert not OUTSIDE_FILE.exists()
    sandbox.close()
    survivors = _processes_of([pid for pid in workers if pid])
    deadline = time.monotonic() + 5  # SIGKILLed processes take a moment to be torn down by the kernel
    while survivors and time.monotonic() < deadline:
        time.sleep(0.05)
        survivors = _processes_of(survivors and [pid for pid in workers if pid])
    assert not survivors, "no process of the sandbox may outlive it"


def test_scratch_writes_stay_private(sandbox: LocalSandbox) -> None:
    result = sandbox.run(f"open({str(HOST_TMP_FILE)!r}, 'w').write('inside')\nopen('here.txt', 'w').write('ok')")
    assert result.error is None
    assert not HOST_TMP_FILE.exists(), "/tmp inside the sandbox is a private tmpfs"
    assert (sandbox.workdir / "here.txt").read_text() == "ok", "the work dir is the real one"


def test_no_network_not_even_loopback(sandbox: LocalSandbox) -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.5)
    port = server.getsockname()[1]
    try:
        local = sandbox.run(f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1)")
        assert "Network is unreachable" in (local.error or "")
        # a documentation address (RFC 5737): never routed; inside the namespace no packet leaves at all
        outside = sandbox.run("import socket\nsocket.create_connection(('192.0.2.1', 80), timeout=1)")
        assert "Network is unreachable" in (outside.error or "")
        with pytest.raises(socket.timeout):
            server.accept()
    finally:
        server.close()


def test_model_code_runs_as_an_unprivileged_user(sandbox: LocalSandbox) -> None:
    result = sandbox.run("import os\n(os.getuid() >= %d, os.getpid(), len(os.listdir('/proc')) < 60)" % SANDBOX_UID_BASE)
    assert result.value == "(True, 1, True)"
