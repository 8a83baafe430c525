"""First-thought prefixes (FTP): the teacher's own chain-of-thought opening starts its agent trajectory.

Building them: the teacher answers each task with plain chain-of-thought (reason step by step, answer
in ``\\boxed{}``), and the first paragraph of each response is kept, keyed by task id. Using them: the
rollout loop starts a task's first assistant turn with ``Thought: <prefix>`` and the teacher continues
that same message (see :func:`agentdistill.rollouts.loop.run_rollouts`); the recorded turn holds prefix
and continuation as one text, which students are trained on as ordinary text.

``protocol="paper"`` builds them as the paper's ``build_prefix_memory.py`` does: the chain of thought is
asked with the system prompt of its ``teacher_model.yaml`` (from ``prompts_dir``) and the raw question,
and the prefix is everything before the response's first blank line, whitespace kept, plus that blank line
(:func:`paper_first_thought`). :func:`load_prefixes` also reads the paper's own prefix-memory files.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import gymnasium as gym

from agentdistill.envs.paper import ProtocolName
from agentdistill.envs.paper.prompts import PaperPrompts
from agentdistill.errors import OutputConflictError, UserError
from agentdistill.policies.base import Policy, PolicyRequest, SamplingParams

COT_SYSTEM_PROMPT = (
    "You are a helpful assistant. Think through the question step by step before answering. Start with a "
    "short paragraph that plans how to solve it. Put the final answer in \\boxed{}."
)


def first_paragraph(text: str) -> str:
    """The first non-empty paragraph of ``text``, on one line (a ``Thought:`` prefix continues it)."""
    for paragraph in text.strip().split("\n\n"):
        cleaned = " ".join(paragraph.split())
        if cleaned:
            return cleaned
    return ""


THOUGHT_OPENING = "Thought: "
"""What the rollout loop writes before a prefix, and what the paper's prefix-memory values start with."""


def paper_first_thought(response: str) -> str:
    """The paper's prefix of a chain-of-thought response: ``response.split("\\n\\n")[0] + "\\n\\n"``, whitespace
    and all (an empty first paragraph gives just the blank line, as the paper's does). The paper stores it after
    ``"Thought: "``, which the rollout loop writes itself, so this is the text after it."""
    return response.split("\n\n")[0] + "\n\n"


def prefix_for(prefixes: Mapping[str, str], *, task_id: str, question: str) -> str | None:
    """A task's prefix in what :func:`load_prefixes` read: by task id (this package's files), else by the
    task's question (the paper's prefix-memory files are keyed by the raw question)."""
    found = prefixes.get(task_id)
    return found if found is not None else prefixes.get(question.strip())


def build_prefixes(
    env: gym.Env,
    policy: Policy,
    task_indices: Iterable[int],
    *,
    sampling: SamplingParams | None = None,
    batch_size: int = 64,
    progress: bool = False,
    protocol: ProtocolName = "agentdistill",
    prompts_dir: str | os.PathLike[str] | None = None,
) -> dict[str, str]:
    """Ask ``policy`` for chain-of-thought answers to the tasks; keep each first paragraph by task id.

    ``env`` only provides the questions (and, for scripted experts, the plan in the context), through
    :meth:`~agentdistill.envs.base.CodeActEnv.describe_task`: no episode is started. ``progress`` shows a bar that
    advances one batch at a time. Sampling defaults to greedy without stop strings. ``protocol="paper"`` asks
    with the paper's CoT prompt (read from ``prompts_dir``) and cuts the paper's prefix
    (:func:`paper_first_thought`); the default asks with :data:`COT_SYSTEM_PROMPT` and keeps the first non-empty
    paragraph on one line (:func:`first_paragraph`).
    """
    from tqdm.auto import tqdm

    system_prompt, cut = _prefix_style(protocol, prompts_dir)
    base = env.unwrapped
    sampling = sampling or SamplingParams(stop=())
    prefixes: dict[str, str] = {}
    indices = list(task_indices)
    env_id = env.spec.id if env.spec is not None else type(base).__name__
    with tqdm(total=len(indices), desc=f"FTP {env_id}", unit="task", disable=not progress) as bar:
        for start in range(0, len(indices), batch_size):
            batch = indices[start : start + batch_size]
            requests, task_ids = [], []
            for index in batch:
                task, info = base.describe_task(index)
                context: dict[str, Any] = {**info, "purpose": "chain_of_thought"}
                requests.append(
                    PolicyRequest(
                        messages=(
                            {"role": "system", "content": system_prompt},
                            {"role": "user", "content": task.question},
                        ),
                        context=context,
                    )
                )
                task_ids.append(task.task_id)
            for task_id, completions in zip(task_ids, policy.generate(requests, sampling)):
                if completions and completions[0].finish_reason != "error":
                    prefix = cut(completions[0].text)
                    if prefix:
                        prefixes[task_id] = prefix
            bar.update(len(batch))
    return prefixes


def _prefix_style(
    protocol: ProtocolName, prompts_dir: str | os.PathLike[str] | None
) -> tuple[str, Callable[[str], str]]:
    """The CoT system prompt and the prefix cut of a protocol (the paper's prompt read from ``prompts_dir``)."""
    if protocol == "agentdistill":
        return COT_SYSTEM_PROMPT, first_paragraph
    if protocol == "paper":
        return PaperPrompts.load(prompts_dir).teacher_system_prompt, paper_first_thought
    raise UserError(f"protocol must be 'agentdistill' or 'paper', got {protocol!r}")


def build_prefix_file(
    policy: Policy,
    env_id: str,
    task_indices: Iterable[int],
    out: str | os.PathLike[str],
    *,
    env_kwargs: Mapping[str, Any] | None = None,
    sampling: SamplingParams | None = None,
    batch_size: int = 64,
    progress: bool = False,
    protocol: ProtocolName = "agentdistill",
    prompts_dir: str | os.PathLike[str] | None = None,
) -> dict[str, str]:
    """:func:`build_prefixes` on a fresh ``env_id`` env, saved to ``out`` (what ``agentdistill ftp build`` and
    the ``collect`` experiments with ``ftp: {build: true}`` run). The policy is left open; ``progress`` shows a
    bar. An existing ``out`` (or a missing ``prompts_dir`` under ``protocol="paper"``) is refused before the
    teacher is asked anything (:func:`save_prefixes`)."""
    import agentdistill  # noqa: F401 - registers the env ids

    _refuse_existing(out)
    _prefix_style(protocol, prompts_dir)
    env = gym.make(env_id, **dict(env_kwargs or {}))
    try:
        prefixes = build_prefixes(
            env, policy, task_indices, sampling=sampling, batch_size=batch_size, progress=progress,
            protocol=protocol, prompts_dir=prompts_dir,
        )
    finally:
        env.close()
    save_prefixes(prefixes, out)
    return prefixes


def save_prefixes(prefixes: Mapping[str, str], path: str | os.PathLike[str]) -> None:
    """Write prefixes as one JSON object ``{task_id: prefix}`` to a new file.

    A prefix file is built in one go (there is nothing to resume), so an existing file (an earlier build
    the user may be using, or any other file) is never replaced: delete it to build again.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    _refuse_existing(target)
    with tempfile.NamedTemporaryFile("w", dir=target.parent, prefix=".prefixes-", delete=False, encoding="utf-8") as handle:
        handle.write(json.dumps(dict(prefixes), indent=1, ensure_ascii=False))
    try:
        os.link(handle.name, target)  # appears whole or not at all, and never over a file that appeared meanwhile
    except FileExistsError:
        _refuse_existing(target)
        raise
    finally:
        os.unlink(handle.name)


def _refuse_existing(path: str | os.PathLike[str]) -> None:
    if Path(path).exists():
        raise OutputConflictError(
            path, "already exists and prefix files are never overwritten; use it with --ftp, give another path, "
            "or delete it to build again"
        )


def load_prefixes(path: str | os.PathLike[str]) -> dict[str, str]:
    """Read a prefix file: this package's ``{task_id: prefix}``, or the paper's prefix memory.

    The paper's files (``build_prefix_memory.py``: ``{question: "Thought: " + prefix}``) are recognised by every
    value starting with ``"Thought: "``, which the rollout loop writes itself: their values are returned
    without it, and their keys are the questions, stripped of surrounding whitespace as this package's task
    loaders strip questions (two keys that differ only there keep the later value, as JSON objects do). A
    task finds its prefix by its question text there, and by its task id in this package's files:
    :func:`prefix_for` tries both. A file that is neither is a clear error naming the file (and the line of a
    JSON error).
    """
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except ValueError as error:
        where = f" (line {error.lineno}, column {error.colno})" if isinstance(error, json.JSONDecodeError) else ""
        raise UserError(f"{path}: not a prefix file: invalid JSON{where}") from None
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise UserError(f"{path}: not a prefix file: expected a JSON object mapping task ids to prefix strings")
    if is_paper_prefix_memory(data):
        return {question.strip(): prefix[len(THOUGHT_OPENING) :] for question, prefix in data.items()}
    return data


def is_paper_prefix_memory(prefixes: Mapping[str, str]) -> bool:
    """Whether a prefix mapping is the paper's prefix memory: not empty, and every value starts with
    ``"Thought: "`` (this package's values are the text after it)."""
    return bool(prefixes) and all(prefix.startswith(THOUGHT_OPENING) for prefix in prefixes.values())
