"""Run directories and locks: a directory is claimed once, resumed by the same run, refused to any other."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from agentdistill.errors import OutputConflictError, UserError
from agentdistill.locking import OutputLockedError, lock_exclusively
from agentdistill.runs import (
    MANIFEST_FILENAME,
    canonical,
    claim_run_directory,
    identity_differences,
)


def test_a_new_directory_is_claimed_and_the_same_run_resumes_it(tmp_path: Path) -> None:
    out = tmp_path / "run"
    identity = {"policy": "hf:a", "sampling": {"temperature": 0.0}, "tasks": (1, 2)}
    with claim_run_directory(out, command="eval", identity=identity) as claim:
        assert not claim.resumed
    manifest = json.loads((out / MANIFEST_FILENAME).read_text())
    assert manifest["command"] == "eval" and manifest["identity"]["tasks"] == [1, 2]
    (out / "results.json").write_text("{}")
    with claim_run_directory(out, command="eval", identity=identity) as claim:
        assert claim.resumed


def test_another_identity_is_refused_naming_what_differs(tmp_path: Path) -> None:
    claim_run_directory(tmp_path / "run", command="eval", identity={"policy": "hf:a", "sag": {"n": 8}}).release()
    with pytest.raises(OutputConflictError) as caught:
        claim_run_directory(tmp_path / "run", command="eval", identity={"policy": "hf:b", "sag": {"n": 8}})
    message = str(caught.value)
    assert "policy: 'hf:a' before, 'hf:b' now" in message and "sag" not in message.split("(", 1)[1].split(")")[0]
    assert isinstance(caught.value, UserError)


def test_another_command_is_refused(tmp_path: Path) -> None:
    claim_run_directory(tmp_path / "run", command="distill", identity={"a": 1}).release()
    with pytest.raises(OutputConflictError, match="agentdistill distill"):
        claim_run_directory(tmp_path / "run", command="rl", identity={"a": 1})


def test_keys_that_may_change_are_accepted_and_recorded(tmp_path: Path) -> None:
    claim_run_directory(tmp_path / "run", command="rl", identity={"max_steps": 10, "lr": 1}).release()
    with claim_run_directory(tmp_path / "run", command="rl", identity={"max_steps": 20, "lr": 1}, may_change={"max_steps"}) as claim:
        assert claim.resumed
    assert json.loads((tmp_path / "run" / MANIFEST_FILENAME).read_text())["identity"]["max_steps"] == 20
    with pytest.raises(OutputConflictError, match="lr: 1 before, 2 now"):
        claim_run_directory(tmp_path / "run", command="rl", identity={"max_steps": 20, "lr": 2}, may_change={"max_steps"})


def test_a_directory_of_other_files_is_refused_and_left_as_it_was(tmp_path: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(OutputConflictError, match="notes.txt"):
        claim_run_directory(out, command="eval", identity={})
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    assert (out / "notes.txt").read_text() == "keep me"


def test_a_file_in_place_of_the_directory_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "file"
    path.write_text("x")
    with pytest.raises(OutputConflictError, match="not a directory"):
        claim_run_directory(path, command="eval", identity={})


def test_a_broken_manifest_is_refused_not_replaced(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / MANIFEST_FILENAME).write_text("{not json")
    with pytest.raises(OutputConflictError, match="not a readable run manifest"):
        claim_run_directory(out, command="eval", identity={})
    assert (out / MANIFEST_FILENAME).read_text() == "{not json"


def test_a_directory_in_use_by_another_process_names_that_process(tmp_path: Path) -> None:
    out = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from agentdistill.runs import claim_run_directory
            claim = claim_run_directory({str(out)!r}, command="eval", identity={{}})
            print("claimed", flush=True)
            time.sleep(60)
        """)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "claimed"
        with pytest.raises(OutputLockedError) as caught:
            claim_run_directory(out, command="eval", identity={})
        assert f"process {holder.pid}" in str(caught.value)
    finally:
        holder.kill()
        holder.wait()
    # the lock died with its holder: the directory can be resumed at once
    with claim_run_directory(out, command="eval", identity={}) as claim:
        assert claim.resumed


def test_two_handles_in_one_process_exclude_each_other(tmp_path: Path) -> None:
    path = tmp_path / "file"
    path.write_text("")
    with path.open("ab") as first, path.open("ab") as second:
        lock_exclusively(first.fileno(), path, "this file")
        with pytest.raises(OutputLockedError, match="this process"):
            lock_exclusively(second.fileno(), path, "this file")


def test_identity_differences_and_canonical_values() -> None:
    assert identity_differences({"a": {"b": 1}}, {"a": {"b": 1}}) == []
    assert identity_differences({"a": {"b": 1}}, {"a": {"c": 1}}) == [
        "a.b: 1 before, (absent) now",
        "a.c: (absent) before, 1 now",
    ]
    assert canonical({"p": Path("/x"), "t": (1,)}) == {"p": "/x", "t": [1]}
