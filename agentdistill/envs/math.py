"""Math envs (MATH, MATH500, GSM-Hard, AIME, OlymMATH): compute with python, answer with final_answer.

There is no retrieval tool; model code may import numpy, sympy and the math-related standard library.
Answers are graded by :class:`~agentdistill.envs.graders.MathGrader` (math-verify plus a numeric
tolerance).
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

from agentdistill.envs.base import SplitEnv
from agentdistill.envs.graders import MathGrader, normalize_math_answer
from agentdistill.envs.imports import MATH_IMPORTS
from agentdistill.envs.prompts import MATH_EXAMPLES, ToolSpec
from agentdistill.envs.splits import load_split
from agentdistill.envs.tools.retrieval.factory import RetrieverSpec, make_retriever
from agentdistill.envs.tools.retrieval.tool import WebSearchTool
from agentdistill.envs.tools.sandbox.base import ToolFunction
from agentdistill.errors import UserError


class AgentMathEnv(SplitEnv):
    """A math task family: each episode asks one problem of the loaded split.

    Args:
        task_name: the paper's name for the task ("MATH", "MATH500", "GSMHard", "AIME", "OlymMATH");
            picks the Hugging Face dataset when ``data_path`` is not given.
        data_path: a local task file in any format :func:`agentdistill.envs.data.load_tasks` reads.
        split: overrides the hub split (ignored with ``data_path``).
        rel_tol: relative tolerance for numeric answers.
        grade_timeout_s: time bound of one equivalence check.
        max_tasks: keep only the first ``max_tasks`` tasks.
        retriever: with ``protocol="paper"``, what the paper's ``web_search`` (given to math agents too) searches:
            an ``agentdistill index build`` directory or a retrieval server URL (the paper's wiki-18 index);
            without one, a search is an error the agent sees.
        encoder: the query encoder of an index directory (default: the index's own).
        **kwargs: episode settings of :class:`CodeActEnv`.
    """

    allowed_imports = MATH_IMPORTS
    prompt_examples = MATH_EXAMPLES

    def __init__(
        self,
        task_name: str,
        *,
        data_path: str | os.PathLike[str] | None = None,
        split: str | None = None,
        rel_tol: float = 1e-4,
        grade_timeout_s: float = 5.0,
        max_tasks: int | None = None,
        retriever: RetrieverSpec | None = None,
        encoder: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if retriever is not None and self.protocol != "paper":
            raise UserError("math envs search only under protocol='paper' (the paper gave its math agents web_search)")
        self._search = (
            WebSearchTool(make_retriever(retriever, documents=list, encoder=encoder), 3)
            if retriever is not None
            else None
        )
        self.task_name = task_name
        self._grader = MathGrader(rel_tol=rel_tol, timeout_s=grade_timeout_s)
        self.tasks = load_split(task_name, "math", data_path, split, max_tasks)
        self._build_sandbox()

    def normalize_answer(self, answer: str) -> str:
        """SAG compares math answers by their extracted form, spaces removed."""
        return normalize_math_answer(answer)

    def _tools(self) -> Mapping[str, ToolFunction]:
        return {"web_search": self._search} if self._search is not None else {}

    def _tool_specs(self) -> Sequence[ToolSpec]:
        return []
