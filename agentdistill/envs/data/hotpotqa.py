"""HotpotQA records, in the Hugging Face layout and in the original release layout.

Both carry the question, the answer and ten context paragraphs (two gold, eight distractors in the
distractor setting); the paragraphs become the task's documents, which QA envs pool into their
retrieval corpus. The two layouts differ only in the id field (``id`` / ``_id``) and in how
``context`` and ``supporting_facts`` are nested, which :mod:`contexts` absorbs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agentdistill.envs.data.contexts import context_documents, parse_context, supporting_facts, unique_titles
from agentdistill.envs.data.fields import answer_text, extra_fields, record_id, require, text
from agentdistill.envs.tasks import Task

NAME = "hotpotqa"
TITLE = "HotpotQA"
FIELDS = (
    "{id|_id, question, answer, context: {title: [...], sentences: [[...]]} (Hugging Face layout) "
    "or [[title, [sentences]]] (original layout), supporting_facts?, type?, level?}"
)
REQUIRED = ("question", "answer", "context")


def looks_like(record: Mapping[str, Any]) -> bool:
    """Any record with a ``context`` and a ``question`` (2Wiki is told apart before this is asked)."""
    return "context" in record and "question" in record


def convert(record: Mapping[str, Any], default_id: str) -> Task:
    """One HotpotQA record as a Task whose documents are its context paragraphs."""
    return convert_context_record(record, default_id, format_name=NAME)


def convert_context_record(record: Mapping[str, Any], default_id: str, *, format_name: str) -> Task:
    """Shared by HotpotQA and 2WikiMultihopQA, whose records follow the same scheme."""
    require(record, REQUIRED)
    question = text(record, "question")
    answer = answer_text(record["answer"])
    documents = context_documents(parse_context(record["context"]))
    facts = supporting_facts(record.get("supporting_facts"))
    metadata = extra_fields(record, ("id", "_id", "question", "answer", "context", "supporting_facts"))
    metadata.update(
        format=format_name,
        supporting_facts=facts,
        supporting_doc_ids=unique_titles(facts),
    )
    return Task(
        task_id=record_id(record, ("id", "_id"), default_id),
        question=question,
        answer=answer,
        documents=documents,
        metadata=metadata,
    )
