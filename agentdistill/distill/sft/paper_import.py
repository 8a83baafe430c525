"""The paper's released teacher trajectories (smolagents logs) read as rows, records and conversations."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

from agentdistill.distill.sft.messages import (
    REFERENCE_HINT,
    Message,
    calls_final_answer,
    check_paper_structure,
    join_same_roles,
    paper_clean,
)
from agentdistill.envs.imports import MATH_IMPORTS, STDLIB_IMPORTS
from agentdistill.envs.prompts import (
    FINAL_ANSWER_TOOL,
    MATH_EXAMPLES,
    QA_EXAMPLES,
    build_system_prompt,
    web_search_tool,
)
from agentdistill.envs.registration import domain_of

RELEASED_KEYS = ("question", "log_data")
"""Keys every row of the paper's released trajectories has (how such a row is recognised)."""


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
    return all(key in row for key in RELEASED_KEYS)


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
    main = paper_clean(_smolagents_chat(log_data["messages"]))
    if system_prompt is not None and main:
        main[0] = {"role": "system", "content": system_prompt}
    conversations = [main, *(paper_clean(_smolagents_chat(raw)) for raw in _memory_conversations(log_data))]
    for conversation in conversations:
        check_paper_structure(conversation)
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
    return join_same_roles(chat)


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
    return [import_row(row, index, env_id, system_prompt) for index, row in enumerate(rows_or_dataset)]


def paper_env_system_prompt(env_id: str) -> str:
    """The full system prompt of the env a paper trajectory is mapped to (HotpotQA or MATH).

    The paper's teacher saw a smolagents prompt; a student trained from its trajectories runs in this
    package's env, so the record carries that env's prompt instead (the same one
    ``gym.make(env_id).unwrapped.system_prompt("full")`` gives, without loading the env's data).
    """
    if domain_of(env_id) == "factual":
        tools, examples, imports = [web_search_tool(_PAPER_TOP_K), FINAL_ANSWER_TOOL], QA_EXAMPLES, STDLIB_IMPORTS
    else:
        tools, examples, imports = [FINAL_ANSWER_TOOL], MATH_EXAMPLES, MATH_IMPORTS
    return build_system_prompt(tools, variant="full", examples=examples, allowed_imports=imports)


def import_row(row: Mapping[str, Any], index: int, env_id: str | None, system_prompt: str | None) -> dict[str, Any]:
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
    terminated = bool(assistants) and calls_final_answer(assistants[-1])
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
    cleaned = _TEACHER_INSTRUCTION.sub("", REFERENCE_HINT.sub("", _NEW_TASK.sub("", content)))
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
