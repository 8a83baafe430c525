"""Trajectory files: one JSON object per finished episode, appended so that a crash loses nothing.

Every producer (teacher collection, evaluation, RL, the import of the paper's released trajectories)
writes this format and every trainer reads only it. A line is written in one ``write`` and flushed to
disk before the episode counts as done; a run killed mid-write leaves at most a partial last line,
which :class:`TrajectoryWriter` cuts off when the file is reopened, so resuming neither loses nor
duplicates an episode.

A file holds one run. Each record carries the identity of the run that wrote it (``record["run"]``:
env id and arguments, policy, sampling, SAG, FTP prefixes, protocol), and reopening a file for another
run is refused with what differs, unless the caller asks to append. Nothing else is ever cut from a
file: a line that is not a complete record of ours (a file given by mistake, a line edited by hand) is
refused with the file and line, and the file is left as it was. One writer holds a file at a time.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Required, TypedDict, TypeGuard

from agentdistill.errors import OutputConflictError, UserError
from agentdistill.locking import lock_exclusively
from agentdistill.runs import canonical, describe_differences, identity_differences

RECORD_VERSION = 1
PROTOCOL = "agentdistill"
"""The default protocol recorded in a run's identity (how prompts, observations and SAG behave); the envs'
``protocol="paper"`` is the other."""

RECORD_PREFIX = b'{"version": '
"""How every line :class:`TrajectoryWriter` writes begins: only a torn tail that begins so is ours to cut."""

RECORD_KEYS = ("env_id", "task_index", "messages")
"""Keys every trajectory record has: a JSON object without them is not a record."""

_LEGACY_IDENTITY_KEYS = ("env_id", "policy", "sampling", "sag", "rag")
"""What records written before run identities existed may say about their run (agent records name the
sampling and SAG; chain-of-thought records name neither, but say whether RAG was on)."""

_EXCERPT_CHARS = 60


class StepRecord(TypedDict, total=False):
    """One step of an episode as ``record["steps"]`` holds it: what the policy returned, then what the env did.

    A step whose policy call failed holds only ``policy_error``: the env never ran it, so it is no action.
    """

    policy_error: str
    """Why the policy returned nothing usable (an exception, a server error); the episode ends failed."""

    prompt_tokens: int
    completion_tokens: list[int]
    finish_reason: list[str]
    token_ids: list[list[int]]
    logprobs: list[list[float]]
    prompt_token_ids: list[int]
    """From the policy: token counts and finish reasons per candidate (one without SAG); ids and logprobs
    only when the run records them."""

    thought: str | None
    code: str | None
    parse_error: bool
    execution_error: str | None
    timed_out: bool
    state_lost: bool
    tool_calls: list[dict[str, Any]]
    execution_seconds: float
    sag: dict[str, Any]
    observation: str | None
    """From the env: the parsed action, whether it failed to parse or raised (an invalid action), its tool
    calls, SAG's vote (``candidates``, ``valid``, ``winner``, ``votes``) and the observation it returned."""


class EpisodeRecord(TypedDict, total=False):
    """One line of a trajectory file: one finished episode (or one chain-of-thought answer).

    A plain dict at runtime, as JSON reads it; this type names every key that a producer writes (the rollout
    loop, chain-of-thought answers, the import of the paper's trajectories, the judge's rescoring), so a
    reader knows what it may find. Only :data:`RECORD_KEYS` are in every record.
    """

    env_id: Required[str]
    task_index: Required[int]
    messages: Required[list[dict[str, str]]]
    """Which env and which of its tasks, and the conversation: system prompt, task, then one assistant turn
    and one observation turn per step."""

    sample: int
    task_id: str | None
    question: str | None
    """Which episode of the task (``sample`` 0..G-1 when a task is played G times; 0 when absent) and the
    task as the env names and asks it."""

    version: int
    run: dict[str, Any]
    policy: str
    sampling: dict[str, Any]
    sag: dict[str, Any] | None
    ftp_prefix: str | None
    rag: bool
    source: str
    """Who played and how: the format version, the run's identity (:func:`run_identity`), the policy, its
    sampling, SAG and first-thought prefix; ``rag`` for chain-of-thought answers, ``source`` for imported
    trajectories."""

    steps: list[StepRecord]
    num_steps: int
    terminated: bool
    truncated: bool
    final_answer_call: dict[str, Any] | None
    finish_reason: str
    isolation: str | None
    token_trace: dict[str, list[int] | list[float]]
    """How the episode went: its steps (agent episodes only: a chain-of-thought answer has none), whether it
    answered or hit the step limit, the paper's extra answer call, the sandbox's isolation, and with
    ``token_trace`` the exact ids the model saw and sampled (:mod:`agentdistill.rollouts.tokens`)."""

    answer: Any
    gold: Any
    score: float | None
    metrics: dict[str, Any] | None
    failed: str | None
    judged: dict[str, Any]
    """The outcome: the answer given and the gold one (text, number or aliases), the grader's score (``None``
    in imported rows that carry none) and metrics, why the policy failed the episode (``None``: it did not),
    and how an LLM judge rescored it (:mod:`agentdistill.rollouts.rescore`)."""

    tokens: dict[str, int]
    timing: dict[str, float]
    """What it cost: prompt and completion tokens, and seconds in all, in the policy and in the env."""


def run_identity(
    *,
    env_id: str,
    env_args: Mapping[str, Any] | None,
    policy: str,
    sampling: Mapping[str, Any],
    sag: Mapping[str, Any] | None,
    ftp_prefixes: Mapping[str, str] | None,
    protocol: str = PROTOCOL,
) -> dict[str, Any]:
    """What decides the episodes a run writes, as recorded in each record's ``run`` key.

    ``env_args`` are the env's constructor arguments (``None``: not known to the caller); FTP prefixes
    are recorded by digest, since thousands of them would double every record's size.
    """
    return canonical(
        {
            "env_id": env_id,
            "env_args": dict(env_args) if env_args is not None else None,
            "policy": policy,
            "sampling": dict(sampling),
            "sag": dict(sag) if sag is not None else None,
            "ftp": prefixes_digest(ftp_prefixes) if ftp_prefixes else None,
            "protocol": protocol,
        }
    )


def prefixes_digest(prefixes: Mapping[str, str]) -> str:
    """A SHA-256 of a prefix mapping, independent of its order."""
    text = json.dumps(dict(prefixes), sort_keys=True, ensure_ascii=True)
    return "sha256:" + hashlib.sha256(text.encode("ascii")).hexdigest()


def complete_lines(path: str | os.PathLike[str]) -> Iterator[tuple[int, bytes]]:
    """``(line number, line)`` of every complete non-blank line of a JSON Lines file; a partial last line (its
    writer still writing, or killed mid-line) is left out."""
    with Path(path).open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.endswith(b"\n"):
                return
            if line.strip():
                yield number, line


def read_trajectories(path: str | os.PathLike[str]) -> Iterator[EpisodeRecord]:
    """Every complete record of a trajectory file, in file order (a partial last line is skipped).

    A line that is not a JSON object with the :data:`RECORD_KEYS` raises :class:`~agentdistill.errors.UserError`
    naming the file and line.
    """
    for number, line in complete_lines(path):
        try:
            record = json.loads(line)
        except ValueError:
            raise UserError(f"{path}: line {number} is not JSON: {excerpt(line)}") from None
        if not is_record(record):
            raise UserError(f"{path}: line {number} is not a trajectory record: {excerpt(line)}")
        yield record


def is_record(value: object) -> TypeGuard[EpisodeRecord]:
    """Whether a parsed JSON value is a trajectory record: an object with every key of :data:`RECORD_KEYS`."""
    return isinstance(value, dict) and all(key in value for key in RECORD_KEYS)


def latest_records(path: str | os.PathLike[str]) -> list[EpisodeRecord]:
    """The records of a file, one per episode: an episode the policy failed and a resumed run played again
    is there twice, and the later record supersedes the earlier."""
    return latest_by(read_trajectories(path), episode_key)


def latest_by(records: Iterable[EpisodeRecord], key: Callable[[EpisodeRecord], Hashable]) -> list[EpisodeRecord]:
    """The last record of each ``key``, in the order of those last records."""
    latest: dict[Hashable, EpisodeRecord] = {}
    for record in records:
        name = key(record)
        latest.pop(name, None)
        latest[name] = record
    return list(latest.values())


def episode_key(record: Mapping[str, Any]) -> tuple[str, int, int]:
    """What identifies an episode in a file: env id, task index and sample number (a task can be run
    several times, e.g. the group of G episodes GRPO samples per task; records without ``sample`` are 0)."""
    return str(record.get("env_id")), int(record.get("task_index", -1)), int(record.get("sample", 0) or 0)


def recorded_identity(record: Mapping[str, Any]) -> dict[str, Any]:
    """The run identity a record carries (for records older than identities: the parts they record)."""
    if isinstance(record.get("run"), Mapping):
        return dict(record["run"])
    return {key: record[key] for key in _LEGACY_IDENTITY_KEYS if key in record}


def recorded_protocol(record: Mapping[str, Any]) -> str:
    """The protocol a record was played under (records that say none are of the default, :data:`PROTOCOL`)."""
    return str(recorded_identity(record).get("protocol") or PROTOCOL)


class TrajectoryWriter:
    """Appends records to ``path`` and knows which episodes it already holds (for resuming).

    Args:
        path: the trajectory file; created (with its directory) when missing.
        identity: this run's identity (:func:`run_identity`), written into every record; existing
            records of another identity make the constructor raise, unless ``append``.
        append: add this run's episodes to a file of other runs (their episodes are not skipped).

    Opening an existing file keeps every complete record and cuts only a partial last line left by a
    crash of a writer like this one. Anything else that is not a record raises
    :class:`~agentdistill.errors.OutputConflictError` and leaves the file untouched; so does a file another
    writer holds (:class:`~agentdistill.locking.OutputLockedError`). Policy-failed episodes (``failed``)
    do not count as done: a resumed run plays them again.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, identity: Mapping[str, Any] | None = None, append: bool = False
    ) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            raise OutputConflictError(self.path, "is a directory; give a file path for the trajectories")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.identity = canonical(dict(identity)) if identity is not None else None
        self.append = append
        self._done: set[tuple[str, int, int]] = set()
        self._handle = self.path.open("ab")  # never truncates: the file is only read until it checks out
        try:
            lock_exclusively(self._handle.fileno(), self.path, "this trajectory file")
            complete = self._check_and_index()
            if complete != os.fstat(self._handle.fileno()).st_size:
                os.ftruncate(self._handle.fileno(), complete)  # the torn tail of a writer killed mid-line
        except BaseException:
            self._handle.close()
            raise

    def _check_and_index(self) -> int:
        """Check every line and note the finished episodes; returns the size of the complete records."""
        complete = 0
        with self.path.open("rb") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.endswith(b"\n"):
                    if line.startswith(RECORD_PREFIX):
                        break
                    self._refuse(number, line, "is not a trajectory record")
                if line.strip():
                    self._index(number, line)
                complete += len(line)
        return complete

    def _index(self, number: int, line: bytes) -> None:
        try:
            record = json.loads(line)
        except ValueError:
            self._refuse(number, line, "is not JSON")
        if not is_record(record):
            self._refuse(number, line, "is not a trajectory record")
        differences = self._differences(record)
        if differences and not self.append:
            raise OutputConflictError(
                self.path,
                f"holds episodes of another run (line {number}: {describe_differences(differences)}); resume it "
                "with the same settings, choose another output file, or append to it on purpose (--append)",
            )
        if not differences and not record.get("failed"):
            self._done.add(episode_key(record))  # another run's episode, appended to, is not this run's

    def _differences(self, record: Mapping[str, Any]) -> list[str]:
        if self.identity is None:
            return []
        recorded = recorded_identity(record)
        wanted = self.identity if "run" in record else {key: self.identity.get(key) for key in recorded}
        return identity_differences(recorded, wanted)

    def _refuse(self, number: int, line: bytes, problem: str) -> None:
        raise OutputConflictError(
            self.path,
            f"line {number} {problem} ({excerpt(line)}): this is not a trajectory file, or it was edited; "
            "it was left unchanged: choose another output file",
        )

    def is_done(self, env_id: str, task_index: int, sample: int = 0) -> bool:
        """Whether the file already holds sample ``sample`` of this task (a policy-failed one does not count)."""
        return (env_id, task_index, sample) in self._done

    def write(self, record: Mapping[str, Any]) -> None:
        """Append one episode (with this run's identity) and make it durable before returning."""
        full = {"version": RECORD_VERSION, **record}
        if self.identity is not None:
            full.setdefault("run", self.identity)
        # ASCII escapes keep the file valid UTF-8 even when a model wrote a lone surrogate
        line = (json.dumps(full, ensure_ascii=True) + "\n").encode("ascii")
        self._handle.write(line)
        self._handle.flush()
        os.fsync(self._handle.fileno())
        if not record.get("failed"):
            self._done.add(episode_key(record))

    def close(self) -> None:
        """Close the file and release its lock (idempotent)."""
        self._handle.close()

    def __enter__(self) -> TrajectoryWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def excerpt(line: bytes) -> str:
    """The start of a line, quoted, for an error message that shows what a file holds there."""
    text = line.decode("utf-8", errors="replace").strip()
    return repr(text if len(text) <= _EXCERPT_CHARS else text[:_EXCERPT_CHARS] + "...")
