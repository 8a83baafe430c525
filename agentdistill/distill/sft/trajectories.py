"""Teacher trajectories to SFT conversations: the paper's filter and its student format, in two protocols.

A trajectory record (see :mod:`agentdistill.rollouts.records`) holds what the teacher saw: its long
system prompt, the task, and one assistant turn and one observation per step, the last observation
being the env's reply to ``final_answer``. A student is trained on a different view of the same
episode, as in Kang et al.:

* the system prompt is the *short* variant (same tools, no examples or rules): a fine-tuned student
  carries the format in its weights, and it is evaluated with the short prompt, so it must be trained
  with it too;
* observations stay user turns, but the final one is dropped: the conversation ends on an assistant
  turn (the only turns the loss sees are assistant turns, and a trailing user turn would teach nothing);
* only good episodes are kept: a correct answer and no unreadable action. An episode that hit an
  execution error and then recovered is kept on purpose: recovering from a traceback is behaviour the
  student should learn.

Two protocols (``protocol=``) say what exactly that means:

* ``"agentdistill"`` (the default) converts this package's records for its own envs: the short prompt is
  rebuilt from the teacher's, the episode must end in ``final_answer`` within the step budget, and exact
  duplicates go;
* ``"paper"`` reproduces the paper's preprocessing (``exps_research/train_utils/preprocess.py``) on records
  of ``protocol="paper"`` runs: the system prompt becomes the paper's rendered ``system_prompt_short``
  (from ``prompts_dir``), call ids and the task instruction stay, consecutive turns of one role are joined
  with no separator, and a correct episode that ran out of steps is kept, with one more conversation: the
  final-answer call the agent made after its last step, answered (that one keeps its own system prompt).

Both also read the paper's released teacher trajectories (the rows of
``agent-distillation/Qwen2.5-32B-Instruct_agent_trajectories_2k``: ``question``, ``true_answer``,
``generated_answer``, ``score``, ``log_data``), recognised by their content: ``"paper"`` converts their
smolagents logs by the paper's rules, ``"agentdistill"`` imports them as records of this package's envs
(:func:`import_paper_trajectories`) and converts those.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import datasets

from agentdistill.distill.sft.messages import Message, calls_final_answer, check_paper_structure, paper_clean
from agentdistill.distill.sft.paper_import import (
    RELEASED_KEYS,
    import_row,
    is_released_row,
    released_row_conversations,
    released_row_record,
)
from agentdistill.envs.paper import ProtocolName, check_protocol_name
from agentdistill.envs.paper.prompts import PaperPrompts
from agentdistill.envs.prompts import PromptVariant, ToolSpec, build_system_prompt
from agentdistill.errors import UserError
from agentdistill.rollouts.records import RECORD_KEYS, RECORD_PREFIX, recorded_protocol

logger = logging.getLogger(__name__)


Record = Mapping[str, Any]


TrajectorySource = str | os.PathLike[str] | Record


DROP_REASONS: tuple[str, ...] = (
    "failed",
    "truncated",
    "unscored",
    "low_score",
    "parse_error",
    "execution_error",
    "malformed",
    "no_final_answer",
    "duplicate",
)
"""Why an episode can be dropped, in the order they are checked: each dropped episode is counted once,
under the first reason that applies (a truncated episode also scores 0 but counts as truncated)."""


KEPT_NOTES: tuple[str, ...] = ("execution_error", "max_steps")
"""What a kept episode may have been through, counted in :attr:`FilterReport.kept_notes`: an execution error
it recovered from, or running out of steps (kept under the paper's protocol when its final-answer call was
right)."""


SFT_FEATURES = datasets.Features(
    {
        "messages": datasets.List({"role": datasets.Value("string"), "content": datasets.Value("string")}),
        "task_id": datasets.Value("string"),
        "env_id": datasets.Value("string"),
        "task_index": datasets.Value("int64"),
        "score": datasets.Value("float64"),
        "num_steps": datasets.Value("int64"),
    }
)
"""The schema of an SFT dataset, fixed so an empty result or a column of nulls keeps its types."""


_TOOLS_HEADER = "You can call these tools from your code:\n"


_TOOL_LINE = re.compile(r"- (?P<name>[A-Za-z_]\w*)(?P<signature>\([^)]*\)(?:\s*->\s*[^:]+?)?): (?P<description>.*)")


_IMPORTS_LINE = re.compile(r"^Modules you may import: (?P<modules>.*)\.$", re.MULTILINE)


def short_system_prompt(long_prompt: str) -> str:
    """The short (student) variant of a CodeAct system prompt, rebuilt from the prompt itself.

    Both variants are made by :func:`~agentdistill.envs.prompts.build_system_prompt` from the same
    tools and import list, and the long one states both, so the short one can be derived without
    building the env (which would need its data files). Idempotent: a short prompt maps to itself.

    Raises:
        ValueError: the prompt has no tool section in this package's format.
    """
    tools = _parse_tool_section(long_prompt)
    return build_system_prompt(tools, variant="short", allowed_imports=_parse_allowed_imports(long_prompt))


def _parse_tool_section(prompt: str) -> list[ToolSpec]:
    start = prompt.find(_TOOLS_HEADER)
    if start == -1:
        raise ValueError(f"the system prompt has no {_TOOLS_HEADER.strip()!r} section")
    section = prompt[start + len(_TOOLS_HEADER) :].split("\n\n", 1)[0]
    tools = []
    for line in section.splitlines():
        match = _TOOL_LINE.fullmatch(line)
        if match is None:
            raise ValueError(f"cannot read the tool line {line!r}")
        spec = ToolSpec(**match.groupdict())
        if spec.render() != line:  # the rebuilt prompt must say exactly what the teacher saw
            raise ValueError(f"the tool line {line!r} does not round-trip")
        tools.append(spec)
    if not tools:
        raise ValueError("the system prompt's tool section is empty")
    return tools


def _parse_allowed_imports(prompt: str) -> frozenset[str] | None:
    matches = _IMPORTS_LINE.findall(prompt)
    if not matches:
        return None  # the env states no restriction, and neither will the short prompt
    modules = matches[-1].strip()
    return frozenset() if modules == "none" else frozenset(name.strip() for name in modules.split(","))


@dataclass(frozen=True)
class FilterRules:
    """Which teacher episodes become training data (defaults: this package's filter; :data:`PAPER_FILTER_RULES`
    is the paper's).

    Args:
        min_score: keep episodes scoring at least this (1.0: only correct answers).
        keep_unscored: keep episodes whose score is unknown (imported data the authors already
            filtered but did not score); dropped as ``"unscored"`` otherwise.
        drop_parse_errors: drop an episode if any of its actions could not be read as code.
        keep_recovered_errors: keep an episode that hit an execution error and still finished
            correctly (dropped as ``"execution_error"`` when False).
        drop_truncated: drop episodes that ran out of steps without calling ``final_answer``.
        drop_failed: drop episodes the policy failed (an API error, say): their data is incomplete.
        deduplicate: keep only the first of several identical student conversations.
    """

    min_score: float = 1.0
    keep_unscored: bool = False
    drop_parse_errors: bool = True
    keep_recovered_errors: bool = True
    drop_truncated: bool = True
    drop_failed: bool = True
    deduplicate: bool = True


PAPER_FILTER_RULES = FilterRules(drop_truncated=False, deduplicate=False)
"""The paper's filter (``filter_agent_training_data.py``): a correct answer (score 1) and no parse error
anywhere. Execution errors stay, an episode that ran out of steps stays when the answer its final-answer
call gave was judged correct, and duplicates stay (the paper never compares conversations)."""


def default_filter_rules(protocol: ProtocolName) -> FilterRules:
    """The filter a protocol applies unless told otherwise."""
    return PAPER_FILTER_RULES if check_protocol_name(protocol) == "paper" else FilterRules()


@dataclass(frozen=True)
class FilterReport:
    """How many episodes were read, kept (and what the kept ones went through), and dropped for each reason of
    :data:`DROP_REASONS`; ``extra_conversations`` counts the rows added beside the episodes' own (the paper's
    final-answer calls), so the dataset holds ``kept + extra_conversations`` rows."""

    total: int
    kept: int
    dropped: Mapping[str, int]
    kept_notes: Mapping[str, int] = field(default_factory=dict)
    extra_conversations: int = 0

    def summary(self) -> str:
        """One line for logs: the kept count, what the kept episodes went through, and every non-zero drop reason."""
        text = f"kept {self.kept} of {self.total} episodes"
        notes = ", ".join(f"{_NOTE_WORDS[note]} {count}" for note, count in self.kept_notes.items() if count)
        if notes:
            text += f" (of which {notes})"
        if self.extra_conversations:
            plural = "s" if self.extra_conversations != 1 else ""
            text += f", plus {self.extra_conversations} final-answer conversation{plural}"
        reasons = ", ".join(f"{reason} {count}" for reason, count in self.dropped.items() if count)
        return text + (f" (dropped: {reasons})" if reasons else "")

    def table(self) -> str:
        """The counts as an aligned two-column table."""
        notes = [(f"  {_NOTE_WORDS[note]}", count) for note, count in self.kept_notes.items() if count]
        extra = [("final-answer conversations", self.extra_conversations)] if self.extra_conversations else []
        rows = [("kept", self.kept), *notes, *extra, *self.dropped.items(), ("total", self.total)]
        width = max(len(name) for name, _ in rows)
        return "\n".join(f"{name:<{width}}  {count:>7}" for name, count in rows)

    def describe(self) -> None:
        """Print :meth:`table` (for the command line; library code logs :meth:`summary` instead)."""
        print(self.table())


_NOTE_WORDS: Mapping[str, str] = MappingProxyType(
    {
        "execution_error": "recovered from an execution error",
        "max_steps": "answered after the step limit",
    }
)


def _drop_reason(record: Record, rules: FilterRules) -> str | None:
    """The first record-level reason to drop this episode, or None (the conversation is checked later)."""
    if rules.drop_failed and record.get("failed"):
        return "failed"
    if rules.drop_truncated and _ran_out_of_steps(record):
        return "truncated"
    score = record.get("score")
    if score is None:
        if not rules.keep_unscored:
            return "unscored"
    elif float(score) < rules.min_score:
        return "low_score"
    steps = record.get("steps") or []
    if rules.drop_parse_errors and any(step.get("parse_error") for step in steps):
        return "parse_error"
    if not rules.keep_recovered_errors and any(_had_execution_error(step) for step in steps):
        return "execution_error"
    return None


def _ran_out_of_steps(record: Record) -> bool:
    return bool(record.get("truncated")) or record.get("terminated") is False


def _had_execution_error(step: Mapping[str, Any]) -> bool:
    return step.get("execution_error") is not None or bool(step.get("timed_out")) or bool(step.get("state_lost"))


def _kept_notes(record: Record) -> tuple[str, ...]:
    """What a kept episode went through (see :data:`KEPT_NOTES`)."""
    notes = []
    if any(_had_execution_error(step) for step in record.get("steps") or []):
        notes.append("execution_error")
    if _ran_out_of_steps(record):
        notes.append("max_steps")
    return tuple(notes)


def student_messages(record: Record, system_prompt_variant: PromptVariant = "short") -> list[Message]:
    """The conversation a student trains on: short system prompt, final observation removed.

    Raises:
        ValueError: the record's conversation is not system, task, then assistant/observation turns,
            or its system prompt cannot be rebuilt in the short variant.
        TypeError: a turn's content is not text.
    """
    _check_variant(system_prompt_variant)
    messages = [{"role": str(m.get("role")), "content": m.get("content")} for m in record.get("messages") or []]
    if len(messages) > 2 and messages[-1]["role"] == "user":
        messages.pop()  # the observation of final_answer: nothing for the student to answer
    _check_structure(messages)
    if system_prompt_variant == "short":
        messages[0] = {"role": "system", "content": short_system_prompt(messages[0]["content"])}
    return messages


def _check_variant(variant: str) -> None:
    if variant not in ("full", "short"):
        raise ValueError(f"system_prompt_variant must be 'full' or 'short', got {variant!r}")


def _check_structure(messages: Sequence[Message]) -> None:
    if len(messages) < 3:
        raise ValueError(f"a conversation needs a system prompt, a task and an action; got {len(messages)} turns")
    expected = ["system", "user"] + ["assistant", "user"] * ((len(messages) - 2) // 2 + 1)
    roles = [message["role"] for message in messages]
    if roles != expected[: len(roles)] or roles[-1] != "assistant":
        raise ValueError(f"turns must be system, user, then alternate assistant/user ending on assistant; got {roles}")
    for message in messages:
        if not isinstance(message["content"], str):
            raise TypeError(f"a {message['role']} turn has non-text content ({type(message['content']).__name__})")


def _conversation_key(messages: Sequence[Message]) -> str:
    return hashlib.sha256(json.dumps(messages, ensure_ascii=True).encode("ascii")).hexdigest()


def _student_or_reason(record: Record, variant: PromptVariant, rules: FilterRules) -> tuple[list[Message], str | None]:
    """The student conversation of an episode, or why the episode is dropped (duplicates aside)."""
    reason = _drop_reason(record, rules)
    if reason is not None:
        return [], reason
    try:
        messages = student_messages(record, variant)
    except (ValueError, TypeError) as error:
        logger.debug("dropping task %s of %s: %s", record.get("task_id"), record.get("env_id"), error)
        return [], "malformed"
    if not calls_final_answer(messages[-1]):
        return [], "no_final_answer"
    return messages, None


def paper_student_conversations(record: Record, system_prompt: str | None) -> list[list[Message]]:
    """The conversations the paper trains on from one record of a ``protocol="paper"`` run.

    The first is the episode as the model saw it, cleaned as the paper's ``clean_messages`` cleans it: turns of
    one role in a row joined with no separator, ``<reference>`` hints cut from the task turn, the trailing
    user turn (the last observation) dropped, and the system prompt replaced by ``system_prompt`` (the
    rendered ``system_prompt_short``; ``None`` keeps the teacher's). A record that ran out of steps also
    holds its ``final_answer_call``: the request the agent sent for an answer after its last step and the
    free-text answer, which become a second conversation with the request's own system prompt.

    Raises:
        ValueError: a conversation is not system, task, then turns ending on an assistant turn.
        TypeError: a turn's content is not text.
    """
    main = paper_clean([_plain_message(message) for message in record.get("messages") or []])
    if system_prompt is not None and main:
        main[0] = {"role": "system", "content": system_prompt}
    conversations = [main]
    call = record.get("final_answer_call")
    if call is not None:
        conversations.append(_final_answer_conversation(call))
    for conversation in conversations:
        check_paper_structure(conversation)
    return conversations


def _plain_message(message: Mapping[str, Any]) -> Message:
    content = message.get("content")
    if not isinstance(content, str):
        raise TypeError(f"a {message.get('role')} turn has non-text content ({type(content).__name__})")
    return {"role": str(message.get("role")), "content": content}


def _final_answer_conversation(call: Any) -> list[Message]:
    if not isinstance(call, Mapping) or not isinstance(call.get("answer"), str):
        raise ValueError("final_answer_call must hold the request's messages and the answer text")
    request = [_plain_message(message) for message in call.get("messages") or []]
    return paper_clean([*request, {"role": "assistant", "content": call["answer"]}])


def _paper_conversations_or_reason(
    record: Record, system_prompt: str | None, rules: FilterRules
) -> tuple[list[list[Message]], str | None]:
    """The paper's conversations of an episode, or why the episode is dropped (duplicates aside)."""
    reason = _drop_reason(record, rules)
    if reason is not None:
        return [], reason
    try:
        return paper_student_conversations(record, system_prompt), None
    except (ValueError, TypeError) as error:
        logger.debug("dropping task %s of %s: %s", record.get("task_id"), record.get("env_id"), error)
        return [], "malformed"


SourceKind = Literal["record", "released"]


@dataclass(frozen=True)
class _Item:
    """One episode read from a source: a record of this package or a released row, and where it was read."""

    data: Mapping[str, Any]
    kind: SourceKind
    where: str
    released_index: int


def _items(sources: TrajectorySource | Iterable[TrajectorySource]) -> Iterator[_Item]:
    """Every episode of the given files and in-memory records or rows, in order, each recognised by its content."""
    if isinstance(sources, (str, os.PathLike, Mapping)):
        sources = [sources]
    released = 0
    for position, source in enumerate(sources):
        if isinstance(source, Mapping):
            item_stream: Iterator[tuple[str, Mapping[str, Any]]] = iter([(f"input record {position}", source)])
        elif isinstance(source, (str, os.PathLike)):
            item_stream = _json_lines(source)
        else:
            raise TypeError(f"expected a trajectory file path or a record dict, got {type(source).__name__}")
        for where, data in item_stream:
            kind = _kind_of(data, where)
            yield _Item(data=data, kind=kind, where=where, released_index=released)
            released += kind == "released"


def _kind_of(data: Mapping[str, Any], where: str) -> SourceKind:
    if is_released_row(data):
        return "released"
    if all(key in data for key in RECORD_KEYS):
        return "record"
    raise UserError(
        f"{where} is neither a trajectory record of agentdistill (keys {', '.join(RECORD_KEYS)}) nor a row of "
        f"the paper's released trajectories (keys {', '.join(RELEASED_KEYS)}): give files written by "
        "`agentdistill rollout` or the paper's released rows as JSON Lines"
    )


def _json_lines(path: str | os.PathLike[str]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """The JSON objects of a JSON Lines file with where each was read (``FILE: line N``).

    A last line without its newline is read when it parses (an exported dataset may end so), and skipped
    when it is the torn tail of a killed rollout writer; any other line that is not a JSON object is an
    error naming the file and line.
    """
    with Path(path).open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{os.fspath(path)}: line {number}"
            try:
                data = json.loads(line)
            except ValueError:
                if not line.endswith(b"\n") and line.startswith(RECORD_PREFIX):
                    return
                message = f"{where} is not JSON: give trajectory files as JSON Lines, one object a line"
                raise UserError(message) from None
            if not isinstance(data, dict):
                raise UserError(f"{where} is a JSON {type(data).__name__}, not an object: give one episode a line")
            yield where, data


def _check_record_protocol(item: _Item, protocol: ProtocolName) -> None:
    recorded = recorded_protocol(item.data)
    if recorded != protocol:
        raise UserError(
            f"{item.where} was played under protocol {recorded!r}, so its turns are not those protocol {protocol!r} "
            f"converts: convert it with protocol={recorded!r} (--protocol {recorded}), apart from files of the other"
        )


@dataclass(frozen=True)
class _Converted:
    """What became of one episode: its conversations (the first is the episode's own), or why it was dropped."""

    provenance: Record
    conversations: tuple[list[Message], ...] = ()
    reason: str | None = None
    notes: tuple[str, ...] = ()


def _convert(
    item: _Item, protocol: ProtocolName, variant: PromptVariant, rules: FilterRules, paper_prompt: str | None
) -> _Converted:
    if protocol == "paper":
        return _convert_paper(item, rules, paper_prompt)
    if item.kind == "released":
        record: Record = import_row(item.data, item.released_index, None, None)
    else:
        _check_record_protocol(item, protocol)
        record = item.data
    messages, reason = _student_or_reason(record, variant, rules)
    if reason is not None:
        return _Converted(provenance=record, reason=reason)
    return _Converted(provenance=record, conversations=(messages,), notes=_kept_notes(record))


def _convert_paper(item: _Item, rules: FilterRules, system_prompt: str | None) -> _Converted:
    if item.kind == "released":
        record = released_row_record(item.data, item.released_index)
        reason = _drop_reason(record, rules)
        if reason is not None:
            return _Converted(provenance=record, reason=reason)
        try:
            conversations = released_row_conversations(item.data, system_prompt)
        except (ValueError, TypeError) as error:
            logger.debug("dropping released row %s: %s", item.where, error)
            return _Converted(provenance=record, reason="malformed")
        return _Converted(provenance=record, conversations=tuple(conversations), notes=_kept_notes(record))
    _check_record_protocol(item, "paper")
    conversations, reason = _paper_conversations_or_reason(item.data, system_prompt, rules)
    notes = _kept_notes(item.data)
    return _Converted(provenance=item.data, conversations=tuple(conversations), reason=reason, notes=notes)


def _row(record: Record, messages: list[Message]) -> dict[str, Any]:
    task_id = record.get("task_id")
    task_index = record.get("task_index")
    score = record.get("score")
    return {
        "messages": messages,
        "task_id": None if task_id is None else str(task_id),
        "env_id": record.get("env_id"),
        "task_index": None if task_index is None else int(task_index),
        "score": None if score is None else float(score),
        "num_steps": sum(1 for message in messages if message["role"] == "assistant"),
    }


def trajectories_to_dataset(
    paths: TrajectorySource | Iterable[TrajectorySource],
    *,
    system_prompt_variant: PromptVariant = "short",
    filters: FilterRules | None = None,
    report: bool = True,
    protocol: ProtocolName = "agentdistill",
    prompts_dir: str | os.PathLike[str] | None = None,
) -> tuple[datasets.Dataset, FilterReport]:
    """Filter teacher episodes and turn the kept ones into SFT rows (see the module docstring).

    Args:
        paths: trajectory files (JSON Lines: records of the rollout loop, or the paper's released rows, each
            line recognised by its keys), records or released rows already in memory, or a mix.
        system_prompt_variant: ``"short"`` (the students' prompt) or ``"full"`` (keep the teacher's).
        filters: which episodes to keep (default: the protocol's, :func:`default_filter_rules`).
        report: log the report's summary at INFO level.
        protocol: ``"agentdistill"`` or ``"paper"``: how records are converted; each record must have been
            played under the same protocol (records of another are refused, naming the file and line).
        prompts_dir: the paper's prompt files (:class:`~agentdistill.envs.paper.prompts.PaperPrompts`);
            needed by ``protocol="paper"``, whose students' system prompt is rendered from them.

    Returns:
        The dataset (columns ``messages``, ``task_id``, ``env_id``, ``task_index``, ``score``,
        ``num_steps``; see :data:`SFT_FEATURES`) and the :class:`FilterReport`. Under the paper's protocol an
        episode can give two rows (its trajectory and its final-answer call), both with its provenance.

    Raises:
        UserError: an unknown protocol, a missing ``prompts_dir`` under ``"paper"``, a line that is neither a
            record nor a released row, or a record of another protocol.
    """
    protocol = check_protocol_name(protocol)
    _check_variant(system_prompt_variant)  # a bad argument must raise, not count every record as malformed
    rules = filters if filters is not None else default_filter_rules(protocol)
    paper_prompt = _paper_student_prompt(prompts_dir, system_prompt_variant) if protocol == "paper" else None
    counts: Counter[str] = Counter()
    notes: Counter[str] = Counter()
    seen: set[str] = set()
    rows: list[dict[str, Any]] = []
    total = kept = 0
    for item in _items(paths):
        total += 1
        converted = _convert(item, protocol, system_prompt_variant, rules, paper_prompt)
        reason = converted.reason
        if reason is None and rules.deduplicate:
            key = _conversation_key(converted.conversations[0])
            reason = "duplicate" if key in seen else None
            seen.add(key)
        if reason is not None:
            counts[reason] += 1
            continue
        kept += 1
        notes.update(converted.notes)
        rows.extend(_row(converted.provenance, messages) for messages in converted.conversations)
    result = FilterReport(
        total=total,
        kept=kept,
        dropped={reason: counts[reason] for reason in DROP_REASONS},
        kept_notes={note: notes[note] for note in KEPT_NOTES},
        extra_conversations=len(rows) - kept,
    )
    if report:
        logger.info("SFT data: %s", result.summary())
    columns = {name: [row[name] for row in rows] for name in SFT_FEATURES}
    return datasets.Dataset.from_dict(columns, features=SFT_FEATURES), result


def _paper_student_prompt(prompts_dir: str | os.PathLike[str] | None, variant: PromptVariant) -> str | None:
    """The system prompt the paper's students train with (``None``: keep the teacher's, variant ``full``)."""
    prompts = PaperPrompts.load(prompts_dir)
    return prompts.system_prompt("short") if variant == "short" else None
