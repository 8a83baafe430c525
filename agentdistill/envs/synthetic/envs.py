"""The two synthetic envs: unlimited seeded tasks, no download, solvable on a CPU in milliseconds.

Task ``i`` of a split is generated from a seed derived from ``i`` and the split, so ``"train"`` and
``"test"`` never share a task and every run sees the same tasks. The generator's solution plan is
returned in ``reset``'s ``info["plan"]`` for scripted experts; it is never part of the observation.
"""

from __future__ import annotations

from typing import Any, Literal, Mapping, Sequence

from agentdistill.envs.base import CodeActEnv
from agentdistill.envs.graders import MathGrader, QAGrader, normalize_math_answer
from agentdistill.envs.imports import MATH_IMPORTS, STDLIB_IMPORTS
from agentdistill.envs.prompts import MATH_EXAMPLES, QA_EXAMPLES, ToolSpec
from agentdistill.envs.synthetic.math import generate_math_task
from agentdistill.envs.synthetic.qa import generate_qa_task
from agentdistill.envs.tasks import Task
from agentdistill.envs.tools.retrieval.bm25 import BM25Retriever
from agentdistill.envs.tools.retrieval.tool import WebSearchTool
from agentdistill.envs.tools.sandbox.base import ToolFunction

SyntheticSplit = Literal["train", "test"]
_SPLIT_OFFSETS: Mapping[str, int] = {"train": 0, "test": 1}


def task_seed(split: SyntheticSplit, index: int) -> int:
    """The generator seed of task ``index`` in ``split``: even seeds train, odd seeds test."""
    if split not in _SPLIT_OFFSETS:
        raise ValueError(f"split must be one of {sorted(_SPLIT_OFFSETS)}, got {split!r}")
    return 2 * index + _SPLIT_OFFSETS[split]


class _SyntheticEnv(CodeActEnv):
    """Shared by both synthetic envs: unlimited tasks, the plan in ``info``."""

    def __init__(self, *, split: SyntheticSplit = "train", **kwargs: Any) -> None:
        task_seed(split, 0)  # validates the split before anything is built
        super().__init__(**kwargs)
        self.split: SyntheticSplit = split

    @property
    def num_tasks(self) -> None:
        return None

    def task_at(self, index: int) -> Task:
        return self._generate(task_seed(self.split, index))

    def _generate(self, seed: int) -> Task:
        raise NotImplementedError

    def _reset_info(self, task: Task) -> dict[str, Any]:
        return {"plan": [dict(step) for step in task.plan or ()]}


class SyntheticQAEnv(_SyntheticEnv):
    """Multi-hop questions over a small knowledge base generated per task (see
    :func:`~agentdistill.envs.synthetic.qa.generate_qa_task`); ``web_search`` searches that task's
    documents only, so the answer can be found but not memorised across tasks.

    Args:
        split: ``"train"`` or ``"test"`` (disjoint tasks).
        top_k: documents per search.
        **kwargs: episode settings of :class:`CodeActEnv`.
    """

    allowed_imports = STDLIB_IMPORTS
    prompt_examples = QA_EXAMPLES

    def __init__(self, *, split: SyntheticSplit = "train", top_k: int = 3, **kwargs: Any) -> None:
        super().__init__(split=split, **kwargs)
        self.web_search = WebSearchTool(None, top_k)
        self._grader = QAGrader(metric="em")
        self._build_sandbox()

    def _generate(self, seed: int) -> Task:
        return generate_qa_task(seed)

    def _prepare_task(self, task: Task) -> None:
        self.web_search.retriever = BM25Retriever(task.documents)

    def _tools(self) -> Mapping[str, ToolFunction]:
        return {"web_search": self.web_search}

    def _tool_specs(self) -> Sequence[ToolSpec]:
        return [self.web_search.spec]


class SyntheticMathEnv(_SyntheticEnv):
    """Word problems whose answers need exact multi-digit arithmetic (see
    :func:`~agentdistill.envs.synthetic.math.generate_math_task`).

    Args:
        split: ``"train"`` or ``"test"`` (disjoint tasks).
        **kwargs: episode settings of :class:`CodeActEnv`.
    """

    allowed_imports = MATH_IMPORTS
    prompt_examples = MATH_EXAMPLES

    def __init__(self, *, split: SyntheticSplit = "train", **kwargs: Any) -> None:
        super().__init__(split=split, **kwargs)
        self._grader = MathGrader()
        self._build_sandbox()

    def _generate(self, seed: int) -> Task:
        return generate_math_task(seed)

    def normalize_answer(self, answer: str) -> str:
        """SAG compares math answers by their extracted form, spaces removed."""
        return normalize_math_answer(answer)

    def _tools(self) -> Mapping[str, ToolFunction]:
        return {}

    def _tool_specs(self) -> Sequence[ToolSpec]:
        return []
