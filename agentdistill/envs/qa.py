"""Factual multi-hop QA envs (HotpotQA, Bamboogle, MuSiQue, 2WikiMultiHopQA): search, read, answer.

Model code gets ``web_search(query)``; the retriever runs in the env's process (or behind a server).
By default it is a BM25 index over every context paragraph of the loaded split, pooled, so
``gym.make("AgentQA-HotpotQA-v0")`` works without the paper's 60 GB Wikipedia index while the answers
stay findable. ``corpus=PATH`` searches a corpus file instead (the Search-R1/FlashRAG ``wiki-18.jsonl``
format or a JSON list of ``{"title", "text"}``); ``retriever=`` picks dense e5 + FAISS, a prebuilt
index directory or a retrieval server URL (see :mod:`agentdistill.envs.tools.retrieval.factory`).
"""

from __future__ import annotations

import os
from typing import Any, Literal, Mapping, Sequence

from agentdistill.envs.base import SplitEnv
from agentdistill.envs.graders import JudgeFn, QAGrader
from agentdistill.envs.imports import STDLIB_IMPORTS
from agentdistill.envs.prompts import QA_EXAMPLES, ToolSpec
from agentdistill.envs.splits import load_split
from agentdistill.envs.tasks import Document, Task
from agentdistill.envs.tools.retrieval.base import Retriever
from agentdistill.envs.tools.retrieval.corpus import load_corpus
from agentdistill.envs.tools.retrieval.factory import RetrieverSpec, make_retriever, uses_env_corpus
from agentdistill.envs.tools.retrieval.tool import WebSearchTool
from agentdistill.envs.tools.sandbox.base import ToolFunction


class AgentQAEnv(SplitEnv):
    """A QA task family: each episode asks one question of the loaded split.

    Args:
        task_name: the paper's name for the task ("HotpotQA", "Bamboogle", "MuSiQue", "2WikiMultiHopQA");
            picks the Hugging Face dataset when ``data_path`` is not given.
        data_path: a local task file in any format :func:`agentdistill.envs.data.load_tasks` reads.
        split: overrides the hub split (ignored with ``data_path``).
        corpus: a corpus file to search instead of the pooled context paragraphs (``"bm25"`` and
            ``"dense"`` only).
        retriever: ``"bm25"`` (default), ``"dense"``, an index directory, a server URL or a ready
            :class:`Retriever`; see :func:`~agentdistill.envs.tools.retrieval.factory.make_retriever`.
        encoder: the sentence-transformers model for ``"dense"`` (default e5-base-v2) or to override
            an index directory's.
        top_k: documents per search (3 in the paper).
        reward: ``"em"`` (default), ``"f1"`` or ``"judge"`` (needs ``judge``).
        judge: an LLM-judge hook ``(question, prediction, golds) -> score``.
        max_tasks: keep only the first ``max_tasks`` tasks of the split.
        **kwargs: episode settings of :class:`CodeActEnv` (``max_steps``, ``sandbox`` ...).
    """

    allowed_imports = STDLIB_IMPORTS
    prompt_examples = QA_EXAMPLES

    def __init__(
        self,
        task_name: str,
        *,
        data_path: str | os.PathLike[str] | None = None,
        split: str | None = None,
        corpus: str | os.PathLike[str] | None = None,
        retriever: RetrieverSpec = "bm25",
        encoder: str | None = None,
        top_k: int = 3,
        reward: Literal["em", "f1", "judge"] = "em",
        judge: JudgeFn | None = None,
        max_tasks: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.web_search = WebSearchTool(None, top_k)
        self.task_name = task_name
        self._grader = QAGrader(metric=reward, judge=judge)
        self.tasks = load_split(task_name, "qa", data_path, split, max_tasks)
        self.web_search.retriever = self._build_retriever(retriever, corpus, data_path, encoder)
        self._build_sandbox()

    @property
    def retriever(self) -> Retriever:
        """The retriever behind ``web_search``."""
        assert self.web_search.retriever is not None
        return self.web_search.retriever

    def _tools(self) -> Mapping[str, ToolFunction]:
        return {"web_search": self.web_search}

    def _tool_specs(self) -> Sequence[ToolSpec]:
        return [self.web_search.spec]

    def _build_retriever(
        self,
        retriever: RetrieverSpec,
        corpus: str | os.PathLike[str] | None,
        data_path: str | os.PathLike[str] | None,
        encoder: str | None,
    ) -> Retriever:
        if corpus is not None and not uses_env_corpus(retriever):
            raise ValueError(
                f"corpus= is searched only by retriever='bm25' or 'dense'; retriever={retriever!r} brings its own"
            )

        def documents() -> list[Document]:
            found = load_corpus(corpus) if corpus is not None else pooled_documents(self.tasks)
            if not found:
                source = data_path if data_path is not None else f"the hub split of {self.task_name}"
                raise ValueError(
                    f"{self.task_name}: {source} has no context paragraphs to search, so web_search needs a "
                    "corpus. Pass corpus=PATH: a Search-R1/FlashRAG jsonl such as wiki-18.jsonl "
                    '({"id", "contents"}) or a JSON list of {"title", "text"} objects; or retriever= an '
                    "index directory or a retrieval server URL."
                )
            return found

        return make_retriever(retriever, documents=documents, encoder=encoder)

def pooled_documents(tasks: Sequence[Task]) -> list[Document]:
    """Every task's context paragraphs, each distinct (title, text) once, in first-seen order."""
    seen: set[tuple[str, str]] = set()
    pooled: list[Document] = []
    for task in tasks:
        for document in task.documents:
            key = (document.title, document.text)
            if key not in seen:
                seen.add(key)
                pooled.append(document)
    return pooled

