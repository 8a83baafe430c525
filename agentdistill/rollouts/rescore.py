"""Re-scoring finished episodes with the paper's LLM judge, without running them again.

The paper's factual-QA figures are a gpt-4o-mini judge's verdicts on the agents' answers, given after the
runs (``score_answers.py``), and its HotpotQA teacher episodes were kept for SFT by those verdicts.
:func:`rescore` does the same for trajectory files: it reads one or more of them and writes a new file
with one record per input record, where each factual-QA record carries the judge's verdict as its
``score`` and as ``metrics["judge"]`` (0 or 1), the judge's explanation as ``metrics["judge_explanation"]``,
and its exact match and token F1 kept beside them. Math records are copied with their math score: the
paper judges factual QA only. Every output record also says under ``record["judged"]``
(:data:`~agentdistill.rollouts.evaluate.JUDGED_KEY`) which judge and prompt gave the verdict, which input
line it judged, and how it went (``status``).

The inputs are never written. The output is this rescore's own file: one that holds anything else (a
trajectory file, another judge's verdicts, verdicts on other inputs) is refused untouched. Running the
same rescore again resumes it: input lines already judged are skipped, lines added to an input since are
judged, and verdicts that failed are asked again (the new record supersedes the failed one, as a
replayed episode does in a trajectory file). Answers are judged in batches, each written as soon as it
is judged, so an interrupted run loses at most one batch.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from tqdm.auto import tqdm

from agentdistill.envs.graders.qa import exact_match, token_f1
from agentdistill.errors import OutputConflictError, UserError
from agentdistill.policies.base import Policy
from agentdistill.policies.judge import JudgeItem, PaperJudge, Verdict, as_paper_judge, judge_label
from agentdistill.rollouts.evaluate import (
    JUDGED_KEY,
    METRIC_NAMES,
    TaskResult,
    domain_of,
    metric_of,
    summarize_records,
)
from agentdistill.rollouts.records import (
    RECORD_KEYS,
    TrajectoryWriter,
    complete_lines,
    episode_key,
    excerpt,
    latest_by,
    read_trajectories,
)
from agentdistill.runs import describe_differences, identity_differences

JudgeStatus = Literal["judged", "failed", "no_answer", "not_factual", "policy_failed"]
"""What happened to one record: ``judged`` (a verdict), ``failed`` (no verdict after every attempt: scored
0, asked again on resume), ``no_answer`` (the episode gave none: scored 0, no judge call), ``not_factual``
(math: copied with its own score), ``policy_failed`` (the episode itself failed: copied)."""

PAPER_TASK_PREFIX = "New task:\n"
"""How the paper's task turn begins (the question follows, then the paper's instruction)."""

TASK_PREFIX = "Task: "
"""How this package's task turn begins (the question follows)."""

NO_ANSWER_EXPLANATION = "the episode ended without an answer"

_IDENTITY_KEYS = ("judge", "prompt_sha256")


@dataclass(frozen=True)
class _Source:
    """One input record and where it is: input number (0-based), file, line, digest of the line."""

    input: int
    path: Path
    line: int
    sha256: str
    record: dict[str, Any]

    @property
    def key(self) -> tuple[int, int]:
        return (self.input, self.line)

    def provenance(self) -> dict[str, Any]:
        return {"input": self.input, "path": str(self.path), "line": self.line, "sha256": self.sha256}

    def where(self) -> str:
        return f"{self.path}: line {self.line}"


@dataclass(frozen=True)
class RescoreSummary:
    """What a rescore file holds, per env (over the latest record of each episode of each input), and
    what this run did: ``judged_now`` answers sent to the judge, ``failed_now`` of them without a verdict."""

    out: Path
    judge: str
    rows: tuple[TaskResult, ...]
    judged_now: int
    failed_now: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "out": str(self.out),
            "judge": self.judge,
            "judged_now": self.judged_now,
            "failed_now": self.failed_now,
            "rows": [row.to_dict() for row in self.rows],
        }

    def to_text(self) -> str:
        """A few lines for the terminal: the run, then one line per env."""
        lines = [
            f"{self.out}: {judge_label(self.judge)}; {self.judged_now} answers judged in this run, "
            f"{self.failed_now} without a verdict (scored 0; a rerun asks again)"
        ]
        lines.extend(_row_line(row) for row in self.rows)
        return "\n".join(lines) + "\n"


def _row_line(row: TaskResult) -> str:
    if row.metric != "judge":
        metric = METRIC_NAMES.get(row.metric, row.metric)
        return (
            f"{row.env_id}: {row.episodes} episodes; {metric} {_percent(row.accuracy)} "
            "(not judged: the paper judges factual QA only)"
        )
    em, f1 = row.grader_metrics.get("em"), row.grader_metrics.get("f1")
    return (
        f"{row.env_id}: {row.episodes} episodes; judged accuracy {_percent(row.accuracy)}, EM {_percent(em)}, "
        f"F1 {_percent(f1)}; judge failures {row.judge_failures}"
    )


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def rescore(
    inputs: Sequence[str | os.PathLike[str]],
    judge: str | Policy | PaperJudge,
    *,
    out: str | os.PathLike[str],
    prompts_dir: str | os.PathLike[str] | None = None,
    batch_size: int = 64,
    progress: bool = True,
) -> RescoreSummary:
    """Judge the factual-QA answers of the trajectory files ``inputs`` into the new file ``out``.

    Args:
        inputs: trajectory files (rollout, eval or collect output, or an earlier rescore's).
        judge: a policy spec (``"openai:https://api.openai.com/v1#gpt-4o-mini"``), a policy, or a
            :class:`~agentdistill.policies.judge.PaperJudge`; a spec's policy is built here and closed at the end.
        out: the file to write; a missing one is created, this rescore's own is resumed (see the module).
        prompts_dir: the paper's prompt files (``judge_prompt.txt`` among them); not needed with a PaperJudge.
        batch_size: answers sent to the judge in one policy call.
        progress: show a progress bar.

    Raises:
        UserError: no inputs, an input that is missing or not a trajectory file (file and line named), or
            ``out`` being one of the inputs; all before any judge is built.
        OutputConflictError: ``out`` holds anything but this rescore's records.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise UserError(f"batch_size must be a positive int, got {batch_size!r}")
    target = Path(out)
    sources = _read_inputs(_input_paths(inputs, target))
    by_key = {source.key: source for source in sources}
    _verdicts_held(target, by_key, identity=None)  # refuse another file before the judge is even built
    paper_judge = as_paper_judge(judge, prompts_dir)
    try:
        identity = {"judge": paper_judge.name, "prompt_sha256": paper_judge.prompt_sha256}
        with TrajectoryWriter(target) as writer:
            done = _verdicts_held(target, by_key, identity=identity)  # now that the file is ours, and this judge's
            todo = [source for source in sources if source.key not in done]
            items = {
                source.key: _judge_item(source, paper_judge) for source in todo if _status_without_judge(source) is None
            }
            judged_now, failed_now = _judge_into(writer, todo, items, paper_judge, identity, batch_size, progress)
    finally:
        if paper_judge is not judge:
            paper_judge.close()
    rows = summarize_rescored(target)
    return RescoreSummary(out=target, judge=paper_judge.name, rows=rows, judged_now=judged_now, failed_now=failed_now)


def _judge_into(
    writer: TrajectoryWriter,
    todo: list[_Source],
    items: Mapping[tuple[int, int], JudgeItem],
    judge: PaperJudge,
    identity: Mapping[str, str],
    batch_size: int,
    progress: bool,
) -> tuple[int, int]:
    """Judge ``todo`` batch by batch, writing each batch's records in input order; returns how many answers
    went to the judge and how many of them got no verdict."""
    judged = failed = 0
    with tqdm(total=len(todo), disable=not progress, desc="rescore", unit="record") as bar:
        for start in range(0, len(todo), batch_size):
            batch = todo[start : start + batch_size]
            asked = [source for source in batch if source.key in items]
            answers = judge.judge([items[source.key] for source in asked])
            verdicts = dict(zip((source.key for source in asked), answers))
            for source in batch:
                writer.write(_rescored_record(source, verdicts.get(source.key), identity))
            judged += len(asked)
            failed += sum(1 for verdict in verdicts.values() if verdict.failed)
            bar.update(len(batch))
    return judged, failed


def _rescored_record(source: _Source, verdict: Verdict | None, identity: Mapping[str, str]) -> dict[str, Any]:
    """The output record for one input record: the input record, its judge verdict as ``score`` and
    metrics (factual QA only), and ``record["judged"]`` saying how it was judged."""
    record = dict(source.record)
    status = _status_without_judge(source) or ("failed" if verdict is not None and verdict.failed else "judged")
    judged: dict[str, Any] = {**identity, "source": source.provenance(), "status": status}
    if status in ("not_factual", "policy_failed"):
        return {**record, JUDGED_KEY: judged}
    metrics = _match_metrics(record)
    if verdict is None:
        score, explanation = 0, NO_ANSWER_EXPLANATION
    else:
        score, explanation = verdict.score, verdict.explanation
        judged["attempts"] = verdict.attempts
        if verdict.failure is not None:
            judged["failure"] = verdict.failure
    metrics.update(judge=float(score), judge_explanation=explanation)
    return {**record, "score": float(score), "metrics": metrics, JUDGED_KEY: judged}


def _status_without_judge(source: _Source) -> JudgeStatus | None:
    """Why a record needs no judge call, or ``None`` when it does."""
    record = source.record
    if record.get("failed"):
        return "policy_failed"
    if domain_of(str(record.get("env_id"))) != "factual":
        return "not_factual"
    if record.get("answer") is None:
        return "no_answer"
    return None


def _match_metrics(record: Mapping[str, Any]) -> dict[str, Any]:
    """The record's grader metrics, with EM and F1 against its gold answer where the env reported none
    (an episode cut at the step limit has no metrics)."""
    metrics = dict(record.get("metrics") or {})
    answer, gold = record.get("answer"), record.get("gold")
    golds = [str(gold)] if gold is not None else []
    predicted = "" if answer is None else str(answer)
    metrics.setdefault("em", exact_match(predicted, golds) if answer is not None else 0.0)
    metrics.setdefault("f1", token_f1(predicted, golds) if answer is not None else 0.0)
    return metrics


def _judge_item(source: _Source, judge: PaperJudge) -> JudgeItem:
    """What the judge is shown for one record: the raw question, the answer, the gold answer."""
    gold = source.record.get("gold")
    if gold is None:
        raise UserError(
            f"{source.where()} has no gold answer to judge against; rescore trajectory files whose records carry 'gold'"
        )
    question = record_question(source.record, judge.prompts.task_instruction)
    if question is None:
        raise UserError(
            f"{source.where()} has no task turn to read the question from (messages[1] should begin "
            f"{TASK_PREFIX!r} or {PAPER_TASK_PREFIX!r}); rescore trajectory files written by agentdistill"
        )
    return JudgeItem(question=question, predicted=str(source.record["answer"]), gold=str(gold))


def record_question(record: Mapping[str, Any], task_instruction: str) -> str | None:
    """The raw question of an episode, without any instruction: ``record["question"]`` when the record has
    it, else read back from its task turn (``"Task: <question>"``, or the paper's ``"New task:\\n<question>"``
    followed by ``task_instruction``)."""
    if isinstance(record.get("question"), str):
        return str(record["question"])
    messages = record.get("messages") or []
    if len(messages) < 2 or not isinstance(messages[1], Mapping) or messages[1].get("role") != "user":
        return None
    turn = messages[1].get("content")
    if not isinstance(turn, str):
        return None
    if turn.startswith(PAPER_TASK_PREFIX):
        body = turn[len(PAPER_TASK_PREFIX) :]
        if task_instruction and body.endswith(task_instruction):
            return body[: -len(task_instruction)]
        return body.split("\n\nIMPORTANT:")[0]  # how the paper's own code cuts the instruction off a task
    if turn.startswith(TASK_PREFIX):
        return turn[len(TASK_PREFIX) :]
    return None


# --- files -----------------------------------------------------------------------------------------


def _input_paths(inputs: Sequence[str | os.PathLike[str]], out: Path) -> list[Path]:
    if isinstance(inputs, (str, os.PathLike)) or not inputs:
        raise UserError("rescore needs a list of trajectory files to judge; give at least one")
    paths = [Path(path) for path in inputs]
    for path in paths:
        if not path.is_file():
            raise UserError(f"{path}: no such trajectory file; give the .jsonl files rollout, eval or collect wrote")
        if out.exists() and os.path.samefile(path, out):
            raise UserError(f"--out {out} is one of the inputs; rescore never writes into its inputs: give a new file")
    if out.is_dir():
        raise OutputConflictError(out, "is a directory; give a file path for the rescored records")
    return paths


def _read_inputs(paths: Sequence[Path]) -> list[_Source]:
    return [source for index, path in enumerate(paths) for source in _read_input(index, path)]


def _read_input(index: int, path: Path) -> list[_Source]:
    sources = []
    for number, line in complete_lines(path):
        record = _parse(line)
        if record is None or any(key not in record for key in RECORD_KEYS):
            raise UserError(
                f"{path}: line {number} is not a trajectory record ({excerpt(line)}); give trajectory files "
                "written by rollout, eval or collect"
            )
        digest = hashlib.sha256(line.rstrip(b"\n")).hexdigest()
        sources.append(_Source(input=index, path=path.resolve(), line=number, sha256=digest, record=record))
    return sources


def _verdicts_held(
    out: Path, sources: Mapping[tuple[int, int], _Source], *, identity: Mapping[str, str] | None
) -> set[tuple[int, int]]:
    """The input lines ``out`` already holds a verdict for (failed verdicts excepted: they are asked
    again), after checking that every record of ``out`` is this rescore's: written by rescore, by this judge
    with this prompt (when ``identity`` is given), on these inputs as they are now."""
    if not out.is_file():
        return set()
    held: set[tuple[int, int]] = set()
    for number, line in complete_lines(out):
        record = _parse(line)
        judged = record.get(JUDGED_KEY) if record is not None else None
        if not isinstance(judged, Mapping) or not isinstance(judged.get("source"), Mapping):
            raise OutputConflictError(
                out, f"line {number} is not a record rescore wrote ({excerpt(line)}); rescore writes only into a "
                "new file or its own earlier output: give another --out"
            )
        if identity is not None:
            _check_same_judge(out, number, judged, identity)
        key = _check_same_input(out, number, judged["source"], sources)
        if judged.get("status") != "failed":
            held.add(key)
    return held


def _check_same_judge(out: Path, number: int, judged: Mapping[str, Any], identity: Mapping[str, str]) -> None:
    differences = identity_differences({key: judged.get(key) for key in _IDENTITY_KEYS}, identity)
    if differences:
        raise OutputConflictError(
            out, f"holds verdicts of another judge (line {number}: {describe_differences(differences)}); rerun "
            "with the same judge and prompts to resume it, or give another --out"
        )


def _check_same_input(
    out: Path, number: int, recorded: Mapping[str, Any], sources: Mapping[tuple[int, int], _Source]
) -> tuple[int, int]:
    try:
        key = (int(recorded["input"]), int(recorded["line"]))
    except (KeyError, TypeError, ValueError):
        raise OutputConflictError(
            out, f"line {number} does not say which input record it judged; give another --out"
        ) from None
    source = sources.get(key)
    if source is None or source.sha256 != recorded.get("sha256"):
        what = "is not among the inputs given now" if source is None else "holds another record now"
        raise OutputConflictError(
            out, f"line {number} judged line {key[1]} of input {key[0] + 1} ({recorded.get('path')}), which {what}: "
            "it is a rescore of other inputs; give the same inputs to resume it, or another --out"
        )
    return key


def _parse(line: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(line)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


# --- summary ---------------------------------------------------------------------------------------


def summarize_rescored(path: str | os.PathLike[str]) -> tuple[TaskResult, ...]:
    """One row per env of a rescore file, in order of first appearance, over the latest record of each
    episode of each input (a verdict asked again supersedes the failed one)."""
    by_env: dict[str, list[dict[str, Any]]] = {}
    for record in latest_by(read_trajectories(path), _judged_episode):
        by_env.setdefault(str(record.get("env_id")), []).append(record)
    return tuple(
        summarize_records(env_id, records, metric="judge" if domain_of(env_id) == "factual" else metric_of(env_id, {}))
        for env_id, records in by_env.items()
    )


def _judged_episode(record: Mapping[str, Any]) -> tuple[Any, ...]:
    """Which episode of which input a rescored record is about."""
    source = (record.get(JUDGED_KEY) or {}).get("source") or {}
    return (source.get("input"), *episode_key(record))
