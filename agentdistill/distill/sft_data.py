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

from agentdistill.envs.imports import MATH_IMPORTS, STDLIB_IMPORTS
from agentdistill.envs.paper.prompts import PaperPrompts
from agentdistill.envs.prompts import (
    FINAL_ANSWER_TOOL,
    MATH_EXAMPLES,
    QA_EXAMPLES,
    PromptVariant,
    ToolSpec,
    build_system_prompt,
    web_search_tool,
)
from agentdistill.errors import UserError
from agentdistill.envs.paper import ProtocolName, check_protocol_name
from agentdistill.rollouts.records import RECORD_KEYS, RECORD_PREFIX, recorded_protocol

logger = logging.getLogger(__name__)

Message = dict[str, str]
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
_RELEASED_KEYS = ("question", "log_data")


# --- the student's system prompt ------------------------------------------------------------------


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


# --- the filter -----------------------------------------------------------------------------------


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


# --- records to SFT rows: this package's protocol -------------------------------------------------


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


def _calls_final_answer(message: Message) -> bool:
    return "final_answer(" in message["content"]


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
    if not _calls_final_answer(messages[-1]):
        return [], "no_final_answer"
    return messages, None


# --- records to SFT rows: the paper's protocol ----------------------------------------------------

_REFERENCE = re.compile(r"<reference>.*?</reference>", re.DOTALL)


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
    main = _paper_clean([_plain_message(message) for message in record.get("messages") or []])
    if system_prompt is not None and main:
        main[0] = {"role": "system", "content": system_prompt}
    conversations = [main]
    call = record.get("final_answer_call")
    if call is not None:
        conversations.append(_final_answer_conversation(call))
    for conversation in conversations:
        _check_paper_structure(conversation)
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
    return _paper_clean([*request, {"role": "assistant", "content": call["answer"]}])


def _paper_clean(messages: Sequence[Message]) -> list[Message]:
    """The paper's ``clean_messages`` after its role clean-up: join same-role runs, cut ``<reference>`` hints
    from the task turn, drop one trailing user turn."""
    joined = _join_same_roles(messages)
    if len(joined) > 1:
        joined[1] = {"role": joined[1]["role"], "content": _REFERENCE.sub("", joined[1]["content"])}
    if joined and joined[-1]["role"] == "user":
        joined.pop()
    return joined


def _check_paper_structure(messages: Sequence[Message]) -> None:
    roles = [message["role"] for message in messages]
    if len(roles) < 3 or roles[:2] != ["system", "user"] or roles[-1] != "assistant":
        raise ValueError(f"a conversation must be system, task, ..., assistant; got {roles}")
    unknown = sorted(set(roles) - {"system", "user", "assistant"})
    if unknown or roles.count("system") > 1:
        raise ValueError(f"a conversation has one system turn, then user and assistant turns; got {roles}")


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


# --- the paper's released trajectories ------------------------------------------------------------

PAPER_HUB_IDS: tuple[str, ...] = (
    "agent-distillation/Qwen2.5-32B-Instruct_agent_trajectories_2k",
    "agent-distillation/Qwen2.5-32B-Instruct_agent_trajectories_2k_prefix",
)
"""The paper's teacher trajectories (Qwen2.5-32B-Instruct on HotpotQA and MATH; the second with
first-thought prefixes)."""

PAPER_QA_ENV_ID = "AgentQA-HotpotQA-v0"
PAPER_MATH_ENV_ID = "AgentMath-MATH-v0"
_PAPER_TOP_K = 3

_PAPER_ROLES = ("system", "user", "assistant", "tool-call", "tool-response")
_ROLE_ALIASES: Mapping[str, str] = MappingProxyType({"tool_call": "tool-call", "tool_response": "tool-response"})
_CALL_ID = re.compile(r"\ACall id: [^\n]*\n")
_TEACHER_INSTRUCTION = re.compile(r"\n\nIMPORTANT: Always provide a 'Thought:' sequence.*\Z", re.DOTALL)
_NEW_TASK = re.compile(r"\A\s*New task:\s*")
_PARSE_ERROR_MARK = "Error in code parsing"
_ERROR_TURN = re.compile(r"(?:\A|\n)Error:\n")
_MATH_MARKUP = re.compile(r"\\[A-Za-z]+|\\[()\[\]%]|\$[^$\s][^$]*\$|[\^_{}]")
_NUMBER = re.compile(r"[-+]?(?:\d[\d,]*(?:\.\d*)?|\.\d+)")


def is_released_row(row: Mapping[str, Any]) -> bool:
    """Whether ``row`` is a row of the paper's released trajectories (it has a ``question`` and a ``log_data``
    field, which no record of this package has)."""
    return all(key in row for key in _RELEASED_KEYS)


def released_row_env_id(row: Mapping[str, Any]) -> str:
    """The env a released row's task belongs to: :data:`PAPER_QA_ENV_ID` or :data:`PAPER_MATH_ENV_ID`.

    The paper knew it from the data file's name, which the released rows do not keep, and its teacher had
    ``web_search`` in every task (math included), so whether a trajectory searched says nothing. The row's
    data does:

    1. a scored row of the paper's code carries ``explanation``: the judge's text for a factual question and
       ``""`` for a math one (its math scorer asks no judge); that is the scorer's own word, so it decides;
    2. otherwise the question and answer: LaTeX or math markup in either (``\\frac``, ``$x$``, ``^``, ``{}``),
       or a plain-number answer to a question that itself holds a number, is math; anything else is factual.

    Rule 2 alone puts 96-99% of the paper's train and test lists on the right side (a HotpotQA question
    asking for a population in a given census year reads as arithmetic); it only labels the row (the
    ``env_id`` column, and under protocol ``agentdistill`` which env's prompt the import writes).
    """
    explanation = row.get("explanation")
    if isinstance(explanation, str):
        return PAPER_MATH_ENV_ID if explanation == "" else PAPER_QA_ENV_ID
    question = str(row.get("question") or "")
    answer = row.get("true_answer")
    answer_text = "" if answer is None else str(answer)
    if _MATH_MARKUP.search(question) or _MATH_MARKUP.search(answer_text):
        return PAPER_MATH_ENV_ID
    numeric = isinstance(answer, (int, float)) or _NUMBER.fullmatch(answer_text.strip()) is not None
    if numeric and any(character.isdigit() for character in question):
        return PAPER_MATH_ENV_ID
    return PAPER_QA_ENV_ID


def load_paper_trajectories(hub_id: str = PAPER_HUB_IDS[0], split: str = "train") -> list[dict[str, Any]]:
    """The rows of one of :data:`PAPER_HUB_IDS` (needs the hub), as plain dicts for
    :func:`trajectories_to_dataset`, which recognises them by their content.

    To train from the command line, save them once as JSON Lines
    (``datasets.load_dataset(hub_id, split="train").to_json("released.jsonl")``) and pass that file to
    ``agentdistill distill --trajectories``.
    """
    from datasets import load_dataset  # deferred: only this function talks to the hub

    return [dict(row) for row in load_dataset(hub_id, split=split)]


def released_row_record(row: Mapping[str, Any], index: int) -> dict[str, Any]:
    """What the paper's filter reads of a released row, in the record fields :class:`FilterRules` checks.

    ``failed`` holds why a row has no usable log (a crashed run); ``steps`` flag each assistant turn whose
    observation holds a parse error (the paper's test: ``"Error in code parsing"`` anywhere in it) or
    another error; ``truncated`` says that the run ended with a final-answer call after its last step (its
    memory holds that call).
    """
    log_data, problem = _paper_log(row)
    base = {
        "env_id": released_row_env_id(row),
        "task_index": index,
        "task_id": _paper_task_id(row, _text(row.get("question")) or None, index),
        "score": _paper_score(row),
        "failed": problem,
    }
    if log_data is None:
        return {**base, "steps": [], "truncated": False}
    try:
        messages = _smolagents_chat(log_data["messages"])
    except (ValueError, TypeError):
        messages = []  # counted as malformed when converted
    return {**base, "steps": _paper_steps(messages), "truncated": bool(_memory_conversations(log_data))}


def released_row_conversations(row: Mapping[str, Any], system_prompt: str | None) -> list[list[Message]]:
    """The conversations the paper trains on from one released row (``preprocess_logs``).

    The log's messages are cleaned as the paper cleans them: ``MessageRole.X`` roles read as ``x``,
    ``tool-call`` turns (a restatement of the code) dropped, ``tool-response`` turns become user turns, each
    turn's first text part kept, turns of one role in a row joined with no separator, ``<reference>`` hints
    cut from the task turn and the trailing user turn dropped; the system prompt becomes ``system_prompt``
    (``None`` keeps the teacher's). Every step of ``original_memory`` that holds messages (the final-answer
    call after the last step) becomes one more conversation, cleaned the same way, with its own system prompt.

    Raises:
        ValueError: the row has no usable log, or a conversation is not system, task, ..., assistant.
        TypeError: a turn's content is not text.
    """
    log_data, problem = _paper_log(row)
    if log_data is None:
        raise ValueError(problem)
    main = _paper_clean(_smolagents_chat(log_data["messages"]))
    if system_prompt is not None and main:
        main[0] = {"role": "system", "content": system_prompt}
    conversations = [main, *(_paper_clean(_smolagents_chat(raw)) for raw in _memory_conversations(log_data))]
    for conversation in conversations:
        _check_paper_structure(conversation)
    return conversations


def _memory_conversations(log_data: Mapping[str, Any]) -> list[Sequence[Mapping[str, Any]]]:
    memory = log_data.get("original_memory")
    steps = memory.get("steps") if isinstance(memory, Mapping) else None
    if not isinstance(steps, list):
        return []
    return [step["messages"] for step in steps if isinstance(step, Mapping) and step.get("messages")]


def _smolagents_chat(raw: Any) -> list[Message]:
    """smolagents messages as the paper sends and trains on them: roles cleaned, tool calls dropped, tool
    responses as user turns, the first text part of each, same-role runs joined with no separator."""
    if not isinstance(raw, list):
        raise ValueError("log_data messages must be a list")
    chat: list[Message] = []
    for item in raw:
        if not isinstance(item, Mapping):
            raise ValueError(f"a log message must be a mapping, got {type(item).__name__}")
        role = _paper_role(item.get("role"))
        if role not in _PAPER_ROLES:
            raise ValueError(f"a log message has the role {role!r}, not one of {', '.join(_PAPER_ROLES)}")
        if role == "tool-call":
            continue
        role = "user" if role == "tool-response" else role
        chat.append({"role": role, "content": _first_text(item.get("content"))})
    return _join_same_roles(chat)


def _join_same_roles(messages: Sequence[Message]) -> list[Message]:
    """Runs of turns of one role joined into one turn, their texts concatenated with no separator (as the
    paper's ``clean_messages`` does)."""
    joined: list[Message] = []
    for message in messages:
        if joined and joined[-1]["role"] == message["role"]:
            joined[-1] = {"role": message["role"], "content": joined[-1]["content"] + message["content"]}
        else:
            joined.append(dict(message))
    return joined


def _first_text(content: Any) -> str:
    """A turn's text as the paper flattens it: a string as is, a list of parts by its first part's text."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and content and isinstance(content[0], Mapping):
        text = content[0].get("text")
        if isinstance(text, str):
            return text
    raise TypeError(f"a log message's content must be text or a list of text parts, got {content!r:.80}")


def import_paper_trajectories(
    rows_or_dataset: Iterable[Mapping[str, Any]],
    *,
    env_id: str | None = None,
    system_prompt: str | None = None,
) -> list[dict[str, Any]]:
    """Convert the paper's released teacher trajectories into records of this package's envs (protocol
    ``agentdistill``: a student for this package's envs, trained from the paper's teacher).

    Each row is a scored agent run of the paper's code (smolagents 1.13): ``question``,
    ``true_answer``, ``generated_answer``, ``score`` when scored, and ``log_data`` (a dict, or its JSON
    text on the hub) whose ``messages`` list holds smolagents chat messages: roles ``system``, ``user``,
    ``assistant``, ``tool-call`` and ``tool-response`` (or their ``MessageRole.X`` names), content as
    text or a list of ``{"type": "text", "text": ...}`` parts. Tool-call turns (a restatement of the code)
    go, tool responses become user turns with their ``Call id:`` line removed, and adjacent turns of one
    role are merged. The task turn becomes ``Task: <question>`` (this package's wording; the teacher-only
    instruction and ``<reference>`` hints go) and the system prompt becomes the full prompt of the row's
    env, so :func:`trajectories_to_dataset` derives the student's short prompt as for this package's own
    rollouts. The final observation is kept, as in this package's records. (To keep the paper's texts
    instead, convert the rows with ``protocol="paper"``.)

    Args:
        rows_or_dataset: the rows, e.g. a ``datasets.Dataset`` or a list of dicts.
        env_id: the env the student will run in; ``None`` picks per row from its data
            (:func:`released_row_env_id`).
        system_prompt: a full system prompt to use for every row instead of the env's.

    Returns:
        One record per row, in order; a row without a usable log becomes a record with ``failed`` set,
        so the filter counts it.
    """
    return [_import_row(row, index, env_id, system_prompt) for index, row in enumerate(rows_or_dataset)]


def paper_env_system_prompt(env_id: str) -> str:
    """The full system prompt of the env a paper trajectory is mapped to (HotpotQA or MATH).

    The paper's teacher saw a smolagents prompt; a student trained from its trajectories runs in this
    package's env, so the record carries that env's prompt instead (the same one
    ``gym.make(env_id).unwrapped.system_prompt("full")`` gives, without loading the env's data).
    """
    if env_id.startswith("AgentQA-"):
        tools, examples, imports = [web_search_tool(_PAPER_TOP_K), FINAL_ANSWER_TOOL], QA_EXAMPLES, STDLIB_IMPORTS
    elif env_id.startswith("AgentMath-"):
        tools, examples, imports = [FINAL_ANSWER_TOOL], MATH_EXAMPLES, MATH_IMPORTS
    else:
        raise ValueError(f"paper trajectories map to an AgentQA-* or AgentMath-* env, got {env_id!r}")
    return build_system_prompt(tools, variant="full", examples=examples, allowed_imports=imports)


def _import_row(row: Mapping[str, Any], index: int, env_id: str | None, system_prompt: str | None) -> dict[str, Any]:
    question = _text(row.get("question")) or None
    chosen_env = env_id or released_row_env_id(row)
    base = {
        "env_id": chosen_env,
        "task_index": index,
        "task_id": _paper_task_id(row, question, index),
        "policy": str(row.get("model_id") or "paper-teacher"),
        "source": "agent-distillation",
        "answer": _plain(row.get("generated_answer", row.get("prediction"))),
        "gold": _plain(row.get("true_answer")),
        "score": _paper_score(row),
    }
    log_data, problem = _paper_log(row)
    if log_data is None:
        return {
            **base,
            "messages": [],
            "steps": [],
            "terminated": False,
            "truncated": False,
            "num_steps": 0,
            "failed": problem,
        }
    messages = _paper_messages(log_data["messages"])
    steps = _paper_steps(messages)
    assistants = [message for message in messages if message["role"] == "assistant"]
    if messages and messages[0]["role"] == "system":
        messages[0] = {"role": "system", "content": system_prompt or paper_env_system_prompt(chosen_env)}
    if len(messages) > 1 and messages[1]["role"] == "user":
        messages[1] = {"role": "user", "content": _task_turn(messages[1]["content"], question)}
    terminated = bool(assistants) and _calls_final_answer(assistants[-1])
    return {
        **base,
        "messages": messages,
        "steps": steps,
        "terminated": terminated,
        "truncated": not terminated,
        "num_steps": len(assistants),
        "failed": None,
    }


def _paper_log(row: Mapping[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
    """The row's log and, when it has none usable, why."""
    log_data = row.get("log_data")
    if isinstance(log_data, str):
        try:
            log_data = json.loads(log_data)
        except ValueError as error:
            return None, f"log_data is not valid JSON: {error}"
    if not isinstance(log_data, Mapping) or not isinstance(log_data.get("messages"), list):
        return None, f"the teacher run left no messages ({row.get('error') or 'no log_data'})"
    return dict(log_data), None


def _paper_messages(raw: Sequence[Mapping[str, Any]]) -> list[Message]:
    """smolagents messages as plain system/user/assistant turns in this package's style (call ids cut,
    same-role turns joined by a newline)."""
    messages: list[Message] = []
    for item in raw:
        role = _paper_role(item.get("role"))
        if role == "tool-call":
            continue  # "Calling tools: [...]" only repeats the code of the assistant turn before it
        content = _text(item.get("content"))
        if role == "tool-response":
            role, content = "user", _CALL_ID.sub("", content)
        if messages and messages[-1]["role"] == role:
            messages[-1] = {"role": role, "content": f"{messages[-1]['content']}\n{content}"}
        else:
            messages.append({"role": role, "content": content})
    return messages


def _paper_role(role: Any) -> str:
    name = str(getattr(role, "value", role)).strip()
    name = name.removeprefix("MessageRole.").lower()
    return _ROLE_ALIASES.get(name, name)


def _paper_steps(messages: Sequence[Message]) -> list[dict[str, Any]]:
    """Per assistant turn, what its observation says about it (the filter reads these flags): a parse error
    when ``"Error in code parsing"`` is anywhere in it (the paper's own test), another error when it holds
    an ``Error:`` turn."""
    steps = []
    for position, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        following = messages[position + 1] if position + 1 < len(messages) else None
        observation = following["content"] if following is not None and following["role"] == "user" else None
        parse_error = observation is not None and _PARSE_ERROR_MARK in observation
        failed_run = observation is not None and not parse_error and _ERROR_TURN.search(observation) is not None
        steps.append(
            {
                "parse_error": parse_error,
                "execution_error": observation if failed_run else None,
                "observation": observation,
            }
        )
    return steps


def _task_turn(content: str, question: str | None) -> str:
    if question is not None:
        return f"Task: {question}"
    cleaned = _TEACHER_INSTRUCTION.sub("", _REFERENCE.sub("", _NEW_TASK.sub("", content)))
    return f"Task: {cleaned.strip()}"


def _text(content: Any) -> str:
    """Message content as text: smolagents may store a list of typed parts (non-text parts are dropped)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(part.get("text", "")) for part in content if isinstance(part, Mapping) and part.get("type") == "text"
        )
    return str(content)


def _plain(value: Any) -> Any:
    """A JSON-friendly copy of an answer field (lists of aliases stay lists)."""
    if value is None or isinstance(value, (str, int, float, bool, list)):
        return value
    return str(value)


def _paper_score(row: Mapping[str, Any]) -> float | None:
    for key in ("score", "correct", "is_correct"):
        value = row.get(key)
        if value is None:
            continue
        if isinstance(value, str):
            lowered = value.strip().lower()
            if lowered in ("true", "false"):
                return 1.0 if lowered == "true" else 0.0
        try:
            return float(value)
        except (TypeError, ValueError):
            continue
    return None


def _paper_task_id(row: Mapping[str, Any], question: str | None, index: int) -> str:
    for key in ("id", "task_id", "_id"):
        if row.get(key) is not None:
            return str(row[key])
    if question is None:
        return f"paper-row-{index}"
    return "paper-" + hashlib.sha1(question.encode("utf-8")).hexdigest()[:16]


# --- sources: trajectory files, released-row files, records in memory ------------------------------

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
        f"the paper's released trajectories (keys {', '.join(_RELEASED_KEYS)}): give files written by "
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


# --- the conversion -------------------------------------------------------------------------------


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
        record: Record = _import_row(item.data, item.released_index, None, None)
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
