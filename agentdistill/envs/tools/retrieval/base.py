"""The retriever interface behind the ``web_search`` tool, and how results read to the agent.

Retrievers answer a *batch* of queries at once: query encoding dominates dense retrieval time, so the
interface lets later backends (dense, remote, a shared service) encode many envs' queries together.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

from agentdistill.envs.tasks import Document


@dataclass(frozen=True)
class SearchHit:
    """One retrieved document with the retriever's score for it."""

    document: Document
    score: float


class Retriever(Protocol):
    """Anything that returns the top-``k`` documents for each of a batch of queries."""

    def search(self, queries: Sequence[str], k: int) -> list[list[SearchHit]]:
        """Best-first hits for each query; fewer than ``k`` (or none) when fewer documents match."""
        ...


def checked_search_args(queries: Sequence[str], k: int) -> list[str]:
    """``queries`` as a list after checking the arguments every :meth:`Retriever.search` takes."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive number of documents, got {k!r}")
    checked = list(queries)
    for index, query in enumerate(checked):
        if not isinstance(query, str):
            raise TypeError(f"queries[{index}] must be a string, got {type(query).__name__}")
    return checked


def format_search_results(query: str, hits: Sequence[SearchHit]) -> str:
    """The text ``web_search`` returns: each document numbered, with its title and text."""
    if not hits:
        return f"No documents found for the query {query!r}. Try other keywords."
    blocks = [f"Document {rank} | Title: {hit.document.title}\n{hit.document.text}" for rank, hit in enumerate(hits, 1)]
    return "\n\n".join(blocks)
