"""Factual multi-hop QA envs (HotpotQA, Bamboogle, MuSiQue, 2WikiMultiHopQA): search, read, answer.

Model code gets ``web_search(query)``; the retriever runs in the env's process. By default it is a BM25
index over every context paragraph of the loaded split, pooled, so ``gym.make("AgentQA-HotpotQA-v0")``
works without the paper's 60 GB Wikipedia index while the answers stay findable. ``corpus=PATH``
searches a corpus file instead (the Search-R1/FlashRAG ``wiki-18.jsonl`` format or a JSON list of
``{"title", "text"}``).
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
from agentdistill.envs.tools.retrieval.bm25 import BM25Retriever
from agentdistill.envs.tools.retrieval.corpus import load_corpus
from agentdistill.envs.tools.retrieval.tool import WebSearchTool
from agentdistill.envs.tools.sandbox.base import ToolFunction

RetrieverSpec = Literal["bm25"] | Retriever


class AgentQAEnv(SplitEnv):
    """A QA task family: each episode asks one question of the loaded split.

    Args:
        task_name: the paper's name for the task ("HotpotQA", "Bamboogle", "MuSiQue", "2WikiMultiHopQA");
            picks the Hugging Face dataset when ``data_path`` is not given.
        data_path: a local task file in any format :func:`agentdistill.envs.data.load_tasks` reads.
        split: overrides the hub split (ignored with ``data_path``).
        corpus: a corpus file to search instead of the pooled context paragraphs.
        retriever: ``"bm25"`` or a ready :class:`Retriever` (then ``corpus`` is not used).
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
        self.web_search.retriever = self._build_retriever(retriever, corpus, data_path)
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
    ) -> Retriever:
        if not isinstance(retriever, str):
            return retriever
        if retriever != "bm25":
            raise ValueError(f"retriever must be 'bm25' or a Retriever object, got {retriever!r}")
        documents = load_corpus(corpus) if corpus is not None else pooled_documents(self.tasks)
        if not documents:
            source = data_path if data_path is not None else f"the hub split of {self.task_name}"
            raise ValueError(
                f"{self.task_name}: {source} has no context paragraphs to search, so web_search needs a corpus. "
                "Pass corpus=PATH: a Search-R1/FlashRAG jsonl such as wiki-18.jsonl ({\"id\", \"contents\"}) or "
                "a JSON list of {\"title\", \"text\"} objects."
            )
        return BM25Retriever(documents)


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

