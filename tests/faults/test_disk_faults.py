"""Fault: the output disk is full or read-only.

Where it can be known in advance, every command that writes output refuses at once, naming the path
and the problem, before it loads a model or starts an env (:mod:`agentdistill.preflight`). The real
cases run on real file systems: a 64 KiB tmpfs and a read-only tmpfs, mounted in a private mount
namespace (``unshare --mount``, the same privilege the code sandbox's namespaces need). A disk that
fills up *during* a rollout cannot be foreseen: the run must then stop with the system's error,
lose no finished episode, and resume once there is room.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agentdistill import preflight
from agentdistill.preflight import OutputPathError, check_output_path
from tests.faults.support import assert_one_record_per_task

# --- the preflight check, on this machine's own file systems --------------------------------------------


def test_missing_directories_are_fine_and_nothing_is_created(tmp_path: Path) -> None:
    target = tmp_path / "runs" / "today" / "t.jsonl"
    assert check_output_path(target, kind="file") == target
    assert check_output_path(tmp_path / "results", kind="directory") == tmp_path / "results"
    assert list(tmp_path.iterdir()) == []


def test_wrong_kinds_of_path_are_refused_by_name(tmp_path: Path) -> None:
    a_file = tmp_path / "notes.txt"
    a_file.write_text("x")
    with pytest.raises(OutputPathError, match=rf"cannot write {tmp_path}: it is a directory; a file path"):
        check_output_path(tmp_path, kind="file")
    with pytest.raises(OutputPathError, match=rf"cannot write {a_file}: it exists and is not a directory"):
        check_output_path(a_file, kind="directory")
    with pytest.raises(OutputPathError, match=rf"{a_file} is not a directory"):
        check_output_path(a_file / "sub" / "t.jsonl", kind="file")


def test_a_nearly_full_disk_is_refused_with_the_free_space(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """At the boundary the check reads (``shutil.disk_usage``), for machines where no tmpfs can be mounted."""
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(preflight.shutil, "disk_usage", lambda path: usage._replace(free=3 * 1024**2))
    with pytest.raises(OutputPathError, match=r"only 3.0 MiB free on the file system of .*, at least 64.0 MiB needed"):
        check_output_path(tmp_path / "t.jsonl", kind="file")
    assert check_output_path(tmp_path / "t.jsonl", kind="file", min_free_bytes=1024**2)


# --- real full and read-only file systems ------------------------------------------------------------


def in_private_mounts(mounts: dict[Path, str], script: str, arguments: list[str], tmp_path: Path) -> Any:
    """Run the Python ``script`` with ``arguments`` where tmpfs ``mounts`` ({directory: mount options})
    exist for it alone (they vanish with it); returns the JSON it prints last."""
    program = tmp_path / "driver.py"
    program.write_text(script, encoding="utf-8")
    steps = []
    for directory, options in mounts.items():
        directory.mkdir(parents=True, exist_ok=True)
        steps.append(f"mount -t tmpfs -o {shlex.quote(options)} tmpfs {shlex.quote(str(directory))}")
    steps.append(shlex.join([sys.executable, str(program), *arguments]))
    result = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", " && ".join(steps)],
        capture_output=True, text=True, timeout=240, cwd=Path(__file__).resolve().parents[2],
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


CLI_CASES = {
    "rollout into a full disk": (
        ["rollout", "--env", "AgentMath-Synthetic-v0", "--policy", "expert", "--episodes", "4", "--out", "{full}/t.jsonl"],
        "only 64.0 KiB free on the file system of {full}, at least 64.0 MiB needed",
    ),
    "rollout into a read-only disk": (
        ["rollout", "--env", "AgentMath-Synthetic-v0", "--policy", "expert", "--episodes", "4", "--out", "{ro}/a/t.jsonl"],
        "{ro} is not writable (Read-only file system)",
    ),
    "ftp build into a read-only disk": (
        ["ftp", "build", "--env", "AgentMath-Synthetic-v0", "--policy", "expert", "--episodes", "4", "--out", "{ro}/f.json"],
        "{ro} is not writable (Read-only file system)",
    ),
    "eval into a full disk": (
        ["eval", "--policy", "expert", "--tasks", "AgentMath-Synthetic-v0", "--limit", "2", "--out", "{full}/results"],
        "only 64.0 KiB free",
    ),
    "distill into a full disk": (
        ["distill", "--trajectories", "{tmp}/none.jsonl", "--student", "scratch:tiny", "--out", "{full}/student"],
        "at least 1.0 GiB needed",
    ),
    "index build into a read-only disk": (
        ["index", "build", "--corpus", "{tmp}/none.jsonl", "--out", "{ro}/index"],
        "{ro} is not writable (Read-only file system)",
    ),
}

CLI_DRIVER = """
import json, subprocess, sys
results = {}
for name, argv in json.loads(open(sys.argv[1]).read()).items():
    done = subprocess.run([sys.executable, "-m", "agentdistill.cli", *argv], capture_output=True, text=True)
    written = {place: sorted(__import__("os").listdir(place)) for place in sys.argv[2:]}
    results[name] = {"code": done.returncode, "stderr": done.stderr, "written": written}
print(json.dumps(results))
"""


@pytest.mark.timeout(300)
def test_commands_refuse_a_full_or_read_only_output_before_any_work(tmp_path: Path) -> None:
    full, read_only = tmp_path / "full", tmp_path / "ro"
    places = {"full": str(full), "ro": str(read_only), "tmp": str(tmp_path)}
    cases = {name: [part.format(**places) for part in argv] for name, (argv, _) in CLI_CASES.items()}
    (tmp_path / "cases.json").write_text(json.dumps(cases), encoding="utf-8")
    mounts = {full: "size=64k", read_only: "ro,size=1m"}
    results = in_private_mounts(mounts, CLI_DRIVER, [str(tmp_path / "cases.json"), str(full), str(read_only)], tmp_path)
    for name, (_, expected) in CLI_CASES.items():
        result = results[name]
        out = cases[name][cases[name].index("--out") + 1]
        assert result["code"] == 1, (name, result)
        command = " ".join(cases[name][:2]) if cases[name][0] in ("ftp", "index") else cases[name][0]
        assert result["stderr"].strip().startswith(f"agentdistill {command}: cannot write {out}: "), (name, result)
        assert expected.format(**places) in result["stderr"], (name, result)
        assert result["written"] == {str(full): [], str(read_only): []}, (name, result)  # refused before any work


FILL_DRIVER = """
import errno, json, os, shutil, sys
import agentdistill
from agentdistill.policies.expert import ExpertPolicy
from agentdistill.rollouts.loop import make_rollout_envs, run_rollouts

ENV_ID, DISK, COPY = "AgentMath-Synthetic-v0", sys.argv[1], sys.argv[2]
out, ballast = os.path.join(DISK, "t.jsonl"), os.path.join(DISK, "ballast")

def fill_after(episodes):
    def log(metrics):
        if metrics["episodes"] == episodes and not os.path.exists(ballast):
            fd = os.open(ballast, os.O_CREAT | os.O_WRONLY)
            os.posix_fallocate(fd, 0, shutil.disk_usage(DISK).free)  # another program takes all the room
            os.close(fd)
    return log

def rollout(log=None):
    envs = make_rollout_envs(ENV_ID, 2)
    try:
        return run_rollouts(envs, ExpertPolicy(), env_id=ENV_ID, task_indices=range(12), out=out, progress=False, log=log)
    finally:
        envs.close()

try:
    rollout(fill_after(4))
    failure = None
except OSError as error:
    failure = errno.errorcode.get(error.errno, str(error.errno))
with open(out, "rb") as handle:
    kept = handle.read().count(b"\\n")
os.remove(ballast)  # room again
summary = rollout()
shutil.copy(out, COPY)
print(json.dumps({"failure": failure, "kept": kept, "skipped": summary.skipped, "episodes": summary.episodes}))
"""


@pytest.mark.timeout(300)
def test_disk_filling_up_mid_rollout_stops_it_and_a_resume_loses_nothing(tmp_path: Path) -> None:
    disk, copy = tmp_path / "disk", tmp_path / "resumed.jsonl"
    result = in_private_mounts({disk: "size=96m"}, FILL_DRIVER, [str(disk), str(copy)], tmp_path)
    assert result["failure"] == "ENOSPC"  # the system's own error, raised, not swallowed
    assert result["kept"] >= 4 and result["skipped"] == result["kept"]  # every episode written before it survived
    assert result["episodes"] == 12 - result["kept"]
    assert_one_record_per_task(copy, "AgentMath-Synthetic-v0", 12)
