"""Teacher trajectories to SFT conversations: the paper's filter and its student format.

A trajectory record (see :mod:`agentdistill.rollouts.records`) holds what the teacher saw: its long
system prompt, the task, and one assistant turn and one observation per step, the last observation
being the env's reply to ``final_answer``. A student is trained on a different view of the same
episode, as in Kang et al.:

* the system prompt is the *short* variant (same tools, no examples or rules): a fine-tuned student
  carries the format in its weights, and it is evaluated with the short prompt, so it must be trained
  with it too;
* observations stay user turns, but the final one is dropped: nothing follows ``final_answer``, so the
  conversation ends on the assistant turn that called it (the only turns the loss sees are assistant
  turns, and a trailing user turn would teach nothing);
* only good episodes are kept: a correct answer, no unreadable action, within the step budget, no
  policy failure, and no exact duplicate. An episode that hit an execution error and then recovered is
  kept on purpose: recovering from a traceback is behaviour the student should learn.

:func:`import_paper_trajectories` turns the paper's released teacher trajectories (smolagents logs) into
the same record format, so one pipeline serves both sources.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import datasets

from agentdistill.envs.imports import MATH_IMPORTS, STDLIB_IMPORTS
from agentdistill.envs.prompts import (
    FINAL_ANSWER_TOOL,
    MATH_EXAMPLES,
    QA_EXAMPLES,
    PromptVariant,
    ToolSpec,
    build_system_prompt,
    web_search_tool,
)
from agentdistill.rollouts.records import read_trajectories

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
    """Which teacher episodes become training data (defaults: the paper's filter).

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


@dataclass(frozen=True)
class FilterReport:
    """How many episodes were read, kept, and dropped for each reason of :data:`DROP_REASONS`."""

    total: int
    kept: int
    dropped: Mapping[str, int]

    def summary(self) -> str:
        """One line for logs: the kept count and every non-zero drop reason."""
        reasons = ", ".join(f"{reason} {count}" for reason, count in self.dropped.items() if count)
        return f"kept {self.kept} of {self.total} episodes" + (f" (dropped: {reasons})" if reasons else "")

    def table(self) -> str:
        """The counts as an aligned two-column table."""
        rows = [("kept", self.kept), *self.dropped.items(), ("total", self.total)]
        width = max(len(name) for name, _ in rows)
        return "\n".join(f"{name:<{width}}  {count:>7}" for name, count in rows)

    def describe(self) -> None:
        """Print :meth:`table` (for the command line; library code logs :meth:`summary` instead)."""
        print(self.table())


def _drop_reason(record: Record, rules: FilterRules) -> str | None:
    """The first record-level reason to drop this episode, or None (the conversation is checked later)."""
    if rules.drop_failed and record.get("failed"):
        return "failed"
    if rules.drop_truncated and (bool(record.get("truncated")) or record.get("terminated") is False):
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


def _had_execution_error(step: Mapping[str, Any]) -> bool:
    return step.get("execution_error") is not None or bool(step.get("timed_out")) or bool(step.get("state_lost"))


# --- records to SFT rows --------------------------------------------------------------------------


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


def _records(sources: TrajectorySource | Iterable[TrajectorySource]) -> Iterator[Record]:
    """Every record of the given trajectory files and in-memory records, in order."""
    if isinstance(sources, (str, os.PathLike, Mapping)):
        sources = [sources]
    for source in sources:
        if isinstance(source, Mapping):
            yield source
        elif isinstance(source, (str, os.PathLike)):
            yield from read_trajectories(source)
        else:
            raise TypeError(f"expected a trajectory file path or a record dict, got {type(source).__name__}")


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
    filters: FilterRules = FilterRules(),
    report: bool = True,
) -> tuple[datasets.Dataset, FilterReport]:
    """Filter teacher episodes and turn the kept ones into SFT rows, one conversation per episode.

    Args:
        paths: trajectory files (JSON Lines from the rollout loop), records already in memory (such as
            :func:`import_paper_trajectories` returns), or a mix.
        system_prompt_variant: ``"short"`` (the paper's students) or ``"full"`` (keep the teacher's).
        filters: which episodes to keep.
        report: log the report's summary at INFO level.

    Returns:
        The dataset (columns ``messages``, ``task_id``, ``env_id``, ``task_index``, ``score``,
        ``num_steps``; see :data:`SFT_FEATURES`) and the :class:`FilterReport`.
    """
    _check_variant(system_prompt_variant)  # a bad argument must raise, not count every record as malformed
    counts: Counter[str] = Counter()
    seen: set[str] = set()
    rows: list[dict[str, Any]] = []
    total = 0
    for record in _records(paths):
        total += 1
        messages, reason = _student_or_reason(record, system_prompt_variant, filters)
        if reason is None and filters.deduplicate:
            key = _conversation_key(messages)
            reason = "duplicate" if key in seen else None
            seen.add(key)
        if reason is not None:
            counts[reason] += 1
            continue
        rows.append(_row(record, messages))
    result = FilterReport(total=total, kept=len(rows), dropped={reason: counts[reason] for reason in DROP_REASONS})
    if report:
        logger.info("SFT data: %s", result.summary())
    columns = {name: [row[name] for row in rows] for name in SFT_FEATURES}
    return datasets.Dataset.from_dict(columns, features=SFT_FEATURES), result


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

_ROLE_ALIASES = {"tool_call": "tool-call", "tool_response": "tool-response"}
_CALL_ID = re.compile(r"\ACall id: [^\n]*\n")
_REFERENCE = re.compile(r"<reference>.*?</reference>", re.DOTALL)
_TEACHER_INSTRUCTION = re.compile(r"\n\nIMPORTANT: Always provide a 'Thought:' sequence.*\Z", re.DOTALL)
_NEW_TASK = re.compile(r"\A\s*New task:\s*")
_PARSE_ERROR_MARK = "Error in code parsing"


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


def import_paper_trajectories(
    rows_or_dataset: Iterable[Mapping[str, Any]],
    *,
    env_id: str | None = None,
    system_prompt: str | None = None,
) -> list[dict[str, Any]]:
    """Convert the paper's released teacher trajectories into this package's trajectory records.

    Each row is a scored agent run of the paper's code (smolagents 1.13): ``question``,
    ``true_answer``, ``generated_answer``, ``score`` when scored, and ``log_data`` (a dict, or its JSON
    text on the hub) whose ``messages`` list holds smolagents chat messages: roles ``system``, ``user``,
    ``assistant``, ``tool-call`` and ``tool-response`` (or their ``MessageRole.X`` names), content as
    text or a list of ``{"type": "text", "text": ...}`` parts. The conversion follows the paper's own
    preprocessing: tool-call turns (a restatement of the code) go, tool responses become user turns with
    their ``Call id:`` line removed, and adjacent turns of one role are merged. The task turn becomes
    ``Task: <question>`` (our envs' wording; the teacher-only instruction and ``<reference>`` hints go)
    and the system prompt becomes the full prompt of ``env_id``, so :func:`trajectories_to_dataset`
    derives the student's short prompt as for our own rollouts. The final observation is kept, as in
    our records.

    Args:
        rows_or_dataset: the rows, e.g. a ``datasets.Dataset`` or a list of dicts.
        env_id: the env the student will run in. ``None`` picks per row: HotpotQA when the teacher
            called ``web_search``, MATH otherwise (the paper trained on those two; its teacher had the
            search tool in both, so the tool list cannot tell them apart).
        system_prompt: a full system prompt to use for every row instead of the env's.

    Returns:
        One record per row, in order; a row without a usable log becomes a record with ``failed`` set,
        so the filter counts it.
    """
    return [_import_row(row, index, env_id, system_prompt) for index, row in enumerate(rows_or_dataset)]


def load_paper_trajectories(
    hub_id: str = PAPER_HUB_IDS[0], split: str = "train", **import_options: Any
) -> list[dict[str, Any]]:
    """Download one of :data:`PAPER_HUB_IDS` (needs the hub) and :func:`import_paper_trajectories` it."""
    from datasets import load_dataset  # deferred: only this function talks to the hub

    return import_paper_trajectories(load_dataset(hub_id, split=split), **import_options)


def _import_row(row: Mapping[str, Any], index: int, env_id: str | None, system_prompt: str | None) -> dict[str, Any]:
    question = _text(row.get("question")) or None
    base = {
        "env_id": env_id,
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
    searched = any("web_search(" in message["content"] for message in assistants)
    chosen_env = env_id or (PAPER_QA_ENV_ID if searched else PAPER_MATH_ENV_ID)
    if messages and messages[0]["role"] == "system":
        messages[0] = {"role": "system", "content": system_prompt or paper_env_system_prompt(chosen_env)}
    if len(messages) > 1 and messages[1]["role"] == "user":
        messages[1] = {"role": "user", "content": _task_turn(messages[1]["content"], question)}
    terminated = bool(assistants) and _calls_final_answer(assistants[-1])
    return {
        **base,
        "env_id": chosen_env,
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
    """smolagents messages as plain system/user/assistant turns (the paper's cleaning)."""
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
    """Per assistant turn, what its observation says about it (the filter reads these flags)."""
    steps = []
    for position, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        following = messages[position + 1] if position + 1 < len(messages) else None
        observation = following["content"] if following is not None and following["role"] == "user" else None
        parse_error = observation is not None and _PARSE_ERROR_MARK in observation[:200]
        failed_run = observation is not None and observation.startswith("Error:") and not parse_error
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
