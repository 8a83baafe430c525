"""The ``web_search`` tool that QA envs bind into model code, over whatever retriever the env holds."""

from __future__ import annotations

from agentdistill.envs.paper.codeact import PaperDocument, search_results
from agentdistill.envs.prompts import ToolSpec, web_search_tool
from agentdistill.envs.tasks import Document
from agentdistill.envs.tools.retrieval.base import Retriever, format_search_results


class WebSearchTool:
    """``web_search(query) -> str``: the top-``k`` documents of :attr:`retriever` as text.

    The retriever may be swapped between episodes (the synthetic env searches each task's own
    documents); the tool keeps its name and description.
    """

    def __init__(self, retriever: Retriever | None, top_k: int, *, paper_format: bool = False) -> None:
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise ValueError(f"top_k must be a positive int, got {top_k!r}")
        self.retriever = retriever
        self.top_k = top_k
        self.paper_format = paper_format
        """Print results as the paper's ``web_search`` does (``protocol="paper"``) instead of our own layout."""

    @property
    def spec(self) -> ToolSpec:
        """How the tool is described in the system prompt."""
        return web_search_tool(self.top_k)

    def __call__(self, query: str) -> str:
        if not isinstance(query, str):
            raise TypeError(f"web_search() takes a query string, got {type(query).__name__}")
        if self.retriever is None:
            raise RuntimeError("web_search() has no retriever yet: the env must be reset first")
        hits = self.retriever.search([query], self.top_k)[0]
        if self.paper_format:
            return search_results([PaperDocument(paper_contents(hit.document), hit.score) for hit in hits])
        return format_search_results(query, hits)


def paper_contents(document: Document) -> str:
    """What the paper's tool prints for a document: the corpus row's ``contents`` (``'"Title"\\ntext'``)."""
    return document.contents if document.contents is not None else f'"{document.title}"\n{document.text}'
