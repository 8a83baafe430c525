"""The task records every environment is built from.

A loader (``agentdistill.envs.data``) or a generator (``agentdistill.envs.synthetic``) turns its source
into :class:`Task` objects; the env only ever sees these, so a new data format never touches env code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping


@dataclass(frozen=True)
class Document:
    """One retrievable passage: what ``web_search`` returns, with its title kept apart from its text."""

    title: str
    text: str
    doc_id: str = ""
    contents: str | None = field(default=None, compare=False)
    """The corpus row's own text when it came from a Search-R1/FlashRAG ``{"id", "contents"}`` row, byte for byte
    (``'"Title"\ntext'``, whatever quoting or spacing it has): what a Search-R1 server returns and what the
    paper's index encodes. ``None`` for documents made from a title and a text."""


@dataclass(frozen=True)
class Task:
    """One question with its gold answer.

    ``documents`` are passages that come with the task in its source file (HotpotQA's distractor
    paragraphs, MuSiQue's paragraphs, 2Wiki's contexts, a synthetic task's knowledge base); QA envs pool
    them into their default retrieval corpus. ``plan`` is the generator's hidden solution for synthetic
    tasks (read by scripted experts, never shown to the agent); ``None`` for real data.
    """

    task_id: str
    question: str
    answer: str
    aliases: tuple[str, ...] = ()
    documents: tuple[Document, ...] = ()
    plan: tuple[Mapping[str, Any], ...] | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @property
    def gold_answers(self) -> tuple[str, ...]:
        """The answer followed by its aliases: every string a grader accepts."""
        return (self.answer, *self.aliases)
