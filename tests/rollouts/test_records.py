"""Trajectory files hold one run, lose nothing, and never destroy a file that is not theirs.

Real files, the real rollout loop with the scripted expert, a real second process for the lock.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import agentdistill  # noqa: F401 - registers the env ids
from agentdistill.errors import OutputConflictError, UserError
from agentdistill.locking import OutputLockedError
from agentdistill.policies.base import Completion, PolicyRequest, SamplingParams
from agentdistill.policies.expert import ExpertPolicy
from agentdistill.rollouts.collect import collect_trajectories
from agentdistill.rollouts.records import TrajectoryWriter, latest_records, read_trajectories

REPO = Path(__file__).resolve().parents[2]
MATH = "AgentMath-Synthetic-v0"


def _collect(out: Path, episodes: int = 4, **kwargs: object) -> object:
    options: dict = {"episodes": episodes, "num_envs": 2, "progress": False, **kwargs}
    policy = options.pop("policy", ExpertPolicy())
    return collect_trajectories(policy, MATH, out=out, **options)


def test_a_text_file_given_as_output_is_refused_and_left_as_it_was(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    text = (REPO / "README.md").read_bytes()
    readme.write_bytes(text)
    with pytest.raises(OutputConflictError, match=r"README.md: line 1 is not JSON \('# agentdistill'\)"):
        _collect(readme)
    assert readme.read_bytes() == text


def test_a_text_file_without_a_final_newline_is_not_taken_for_a_torn_record(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_bytes(b"remember to buy milk")
    with pytest.raises(OutputConflictError, match="line 1 is not a trajectory record"):
        _collect(notes)
    assert notes.read_bytes() == b"remember to buy milk"


def test_a_bad_line_in_the_middle_is_refused_not_cut_and_readers_name_it(tmp_path: Path) -> None:
    out = tmp_path / "t.jsonl"
    _collect(out, episodes=4)
    lines = out.read_bytes().splitlines(keepends=True)
    damaged = b"".join([lines[0], b'{"oops": \n', *lines[1:]])
    out.write_bytes(damaged)
    with pytest.raises(OutputConflictError, match=r"line 2 is not JSON"):
        _collect(out, episodes=6)
    assert out.read_bytes() == damaged
    with pytest.raises(UserError, match=rf"{out}: line 2 is not JSON"):
        list(read_trajectories(out))


def test_a_data_file_given_as_output_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "gsm8k.jsonl"
    data.write_text('{"question": "1+1?", "answer": "2"}\n')
    with pytest.raises(OutputConflictError, match="line 1 is not a trajectory record"):
        _collect(data)
    assert data.read_text() == '{"question": "1+1?", "answer": "2"}\n'


def test_only_a_torn_tail_of_our_own_is_cut(tmp_path: Path) -> None:
    out = tmp_path / "t.jsonl"
    _collect(out, episodes=3)
    whole = out.read_bytes()
    out.write_bytes(whole + b'{"version": 1, "env_id": "AgentMath-Synth')  # a writer killed mid-line
    summary = _collect(out, episodes=3)
    assert summary.skipped == 3 and out.read_bytes() == whole  # type: ignore[attr-defined]


def test_resuming_with_another_run_is_refused_with_what_differs(tmp_path: Path) -> None:
    out = tmp_path / "t.jsonl"
    _collect(out, episodes=3)
    before = out.read_bytes()
    with pytest.raises(OutputConflictError, match=r"env_args.max_ops: \(absent\) before, 2 now"):
        _collect(out, episodes=3, env_kwargs={"max_ops": 2})
    with pytest.raises(OutputConflictError, match=r"policy: 'expert' before, 'expert\(error_rate=0.5\)' now"):
        _collect(out, episodes=3, policy=ExpertPolicy(error_rate=0.5))
    with pytest.raises(OutputConflictError, match=r"sampling.temperature: 0.0 before, 0.7 now"):
        _collect(out, episodes=3, sampling=SamplingParams(temperature=0.7))
    with pytest.raises(OutputConflictError, match=r"env_id: 'AgentMath-Synthetic-v0' before, 'AgentQA-Synthetic-v0'"):
        collect_trajectories(ExpertPolicy(), "AgentQA-Synthetic-v0", out=out, episodes=2, progress=False)
    assert out.read_bytes() == before
    # asked for on purpose, the other run's episodes go into the same file, and none of them is skipped
    summary = _collect(out, episodes=3, env_kwargs={"max_ops": 2}, append=True)
    assert summary.skipped == 0  # type: ignore[attr-defined]
    records = list(read_trajectories(out))
    assert len(records) == 6 and {json.dumps(r["run"]["env_args"]) for r in records} == {"{}", '{"max_ops": 2}'}


def test_files_written_before_run_identities_still_resume(tmp_path: Path) -> None:
    out = tmp_path / "t.jsonl"
    _collect(out, episodes=3)
    legacy = [json.loads(line) for line in out.read_text().splitlines()]
    for record in legacy:
        del record["run"]
    out.write_text("".join(json.dumps(record) + "\n" for record in legacy))
    assert _collect(out, episodes=4).skipped == 3  # type: ignore[attr-defined]
    with pytest.raises(OutputConflictError, match=r"policy: 'expert' before, 'expert\(error_rate=0.5\)' now"):
        _collect(out, episodes=4, policy=ExpertPolicy(error_rate=0.5))


class DownThenUp(ExpertPolicy):
    """The teacher's server is down for the first run (every request fails), then back."""

    def __init__(self, down: bool) -> None:
        super().__init__()
        self.down = down

    def generate(self, requests: list[PolicyRequest], params: SamplingParams) -> list[list[Completion]]:
        if self.down:
            return [[Completion.failed("ConnectError: connection refused")] for _ in requests]
        return super().generate(requests, params)


def test_episodes_the_policy_failed_are_played_again_on_resume(tmp_path: Path) -> None:
    out = tmp_path / "t.jsonl"
    first = _collect(out, episodes=3, policy=DownThenUp(down=True))
    assert first.metrics["failed_episodes"] == 3.0  # type: ignore[attr-defined]
    second = _collect(out, episodes=3, policy=DownThenUp(down=False))
    assert second.skipped == 0 and second.episodes == 3  # type: ignore[attr-defined]
    episodes = latest_records(out)
    assert len(list(read_trajectories(out))) == 6 and len(episodes) == 3
    assert all(record["score"] == 1.0 and not record["failed"] for record in episodes)
    assert _collect(out, episodes=3).skipped == 3  # type: ignore[attr-defined]


def test_a_second_writer_is_refused_naming_the_first(tmp_path: Path) -> None:
    out = tmp_path / "t.jsonl"
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import time
            from agentdistill.rollouts.records import TrajectoryWriter
            writer = TrajectoryWriter({str(out)!r})
            print("open", flush=True)
            time.sleep(60)
        """)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
        with pytest.raises(OutputLockedError, match=rf"being written by process {holder.pid} \("):
            _collect(out, episodes=2)
    finally:
        holder.kill()
        holder.wait()
    assert _collect(out, episodes=2).episodes == 2  # type: ignore[attr-defined]
    with TrajectoryWriter(out), pytest.raises(OutputLockedError, match="this process"):
        TrajectoryWriter(out)


def test_a_directory_given_as_output_is_refused(tmp_path: Path) -> None:
    with pytest.raises(OutputConflictError, match="is a directory"):
        TrajectoryWriter(tmp_path)
