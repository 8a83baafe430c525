"""MuSiQue records: 20 paragraphs per question, answer aliases, a hop decomposition.

An article can lend MuSiQue several different paragraphs, even within one question, so a title does
not identify a paragraph here. Each document's id is its title plus a short digest of its text: equal
paragraphs get equal ids across questions (so pooling deduplicates them) while distinct paragraphs
of one article stay distinct.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from agentdistill.envs.data.errors import RecordProblem
from agentdistill.envs.data.fields import (
    answer_text,
    extra_fields,
    literal_value,
    record_id,
    require,
    string_list,
    text,
)
from agentdistill.envs.tasks import Document, Task

NAME = "musique"
TITLE = "MuSiQue"
FIELDS = "{id, question, answer, paragraphs: [{title, paragraph_text, is_supporting?, idx?}], answer_aliases?}"
REQUIRED = ("question", "answer", "paragraphs")


def looks_like(record: Mapping[str, Any]) -> bool:
    """MuSiQue is the only supported layout with a ``paragraphs`` field."""
    return "paragraphs" in record


def paragraph_id(title: str, paragraph: str) -> str:
    """``"<title>#<10 hex digits>"``: stable across files, distinct for distinct paragraphs."""
    digest = hashlib.sha1(f"{title}\n{paragraph}".encode("utf-8")).hexdigest()[:10]
    return f"{title}#{digest}"


def convert(record: Mapping[str, Any], default_id: str) -> Task:
    """One MuSiQue record; ``answer_aliases`` become :attr:`Task.aliases`."""
    require(record, REQUIRED)
    question = text(record, "question")
    answer = answer_text(record["answer"])
    documents, supporting = _documents(literal_value(record["paragraphs"], "paragraphs"))
    aliases = tuple(
        alias for alias in dict.fromkeys(string_list(record.get("answer_aliases"), "answer_aliases"))
        if alias != answer
    )
    metadata = extra_fields(record, ("id", "question", "answer", "paragraphs", "answer_aliases"))
    metadata.update(format=NAME, supporting_doc_ids=supporting)
    return Task(
        task_id=record_id(record, ("id", "_id"), default_id),
        question=question,
        answer=answer,
        aliases=aliases,
        documents=documents,
        metadata=metadata,
    )


def _documents(paragraphs: Any) -> tuple[tuple[Document, ...], tuple[str, ...]]:
    if not isinstance(paragraphs, (list, tuple)):
        raise RecordProblem("field 'paragraphs' must be a list of {title, paragraph_text} objects")
    documents: list[Document] = []
    supporting: list[str] = []
    for position, paragraph in enumerate(paragraphs):
        if not isinstance(paragraph, Mapping):
            raise RecordProblem(f"field 'paragraphs': paragraph {position} must be an object")
        missing = [name for name in ("title", "paragraph_text") if name not in paragraph]
        if missing:
            names = ", ".join(f"'paragraphs[{position}].{name}'" for name in missing)
            raise RecordProblem(f"missing field(s) {names}", missing=[f"paragraphs.{name}" for name in missing])
        title, body = str(paragraph["title"]).strip(), str(paragraph["paragraph_text"]).strip()
        document = Document(title=title, text=body, doc_id=paragraph_id(title, body))
        documents.append(document)
        if paragraph.get("is_supporting"):
            supporting.append(document.doc_id)
    return tuple(documents), tuple(supporting)
