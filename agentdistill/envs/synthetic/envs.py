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
from agentdistill.envs.synthetic.math import MAX_OPS, MIN_OPS, generate_math_task
from agentdistill.envs.synthetic.qa import generate_qa_task, max_qa_hops
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


def check_qa_difficulty(min_hops: int = 2, max_hops: int = 3, num_distractors: int = 8) -> None:
    """Raise a clear error for QA difficulty settings the generator cannot honour.

    Called by :class:`SyntheticQAEnv` at construction (not at the first reset, deep inside a vector env) and by
    anything that stores settings for later envs, such as the quickstart's.
    """
    _check_range("hops", min_hops, max_hops, 1, max_qa_hops())
    _check_count("num_distractors", num_distractors)


def check_math_difficulty(min_ops: int = 2, max_ops: int = 3) -> None:
    """Raise a clear error for math difficulty settings no template can honour (see :func:`check_qa_difficulty`)."""
    _check_range("ops", min_ops, max_ops, MIN_OPS, MAX_OPS)


def _check_range(name: str, low: int, high: int, lowest: int, highest: int) -> None:
    for label, value in ((f"min_{name}", low), (f"max_{name}", high)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{label} must be an int, got {value!r}")
    if not lowest <= low <= high <= highest:
        raise ValueError(
            f"need {lowest} <= min_{name} <= max_{name} <= {highest}, got min_{name}={low}, max_{name}={high}"
        )


def _check_count(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")


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
        min_hops, max_hops: the number of relations chained per question is drawn from this range
            (1 to :func:`~agentdistill.envs.synthetic.qa.max_qa_hops`). The defaults (2-3) are the
            benchmark-like setting; 1-2 hops is the easier curriculum a from-scratch student learns in
            minutes (the quickstart).
        num_distractors: unrelated entities added to each task's knowledge base, so a search returns
            look-alike documents the agent must read past.
        **kwargs: episode settings of :class:`CodeActEnv`.

    The same ``split`` and difficulty settings always give the same tasks; changing a difficulty
    setting changes every task (the seed is shared, the draw is not).
    """

    allowed_imports = STDLIB_IMPORTS
    prompt_examples = QA_EXAMPLES

    def __init__(
        self,
        *,
        split: SyntheticSplit = "train",
        top_k: int = 3,
        min_hops: int = 2,
        max_hops: int = 3,
        num_distractors: int = 8,
        **kwargs: Any,
    ) -> None:
        check_qa_difficulty(min_hops, max_hops, num_distractors)
        super().__init__(split=split, **kwargs)
        self.min_hops = min_hops
        self.max_hops = max_hops
        self.num_distractors = num_distractors
        self.web_search = WebSearchTool(None, top_k)
        self._grader = QAGrader(metric="em")
        self._build_sandbox()

    def _generate(self, seed: int) -> Task:
        return generate_qa_task(
            seed, min_hops=self.min_hops, max_hops=self.max_hops, num_distractors=self.num_distractors
        )

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
        min_ops, max_ops: the problem templates are drawn among those needing this many arithmetic
            steps (templates exist for 1 to 4). The defaults (2-3) are the benchmark-like setting;
            1-2 ops is the easier curriculum a from-scratch student learns in minutes (the quickstart).
        **kwargs: episode settings of :class:`CodeActEnv`.
    """

    allowed_imports = MATH_IMPORTS
    prompt_examples = MATH_EXAMPLES

    def __init__(
        self, *, split: SyntheticSplit = "train", min_ops: int = 2, max_ops: int = 3, **kwargs: Any
    ) -> None:
        check_math_difficulty(min_ops, max_ops)
        super().__init__(split=split, **kwargs)
        self.min_ops = min_ops
        self.max_ops = max_ops
        self._grader = MathGrader()
        self._build_sandbox()

    def _generate(self, seed: int) -> Task:
        return generate_math_task(seed, min_ops=self.min_ops, max_ops=self.max_ops)

    def normalize_answer(self, answer: str) -> str:
        """SAG compares math answers by their extracted form, spaces removed."""
        return normalize_math_answer(answer)

    def _tools(self) -> Mapping[str, ToolFunction]:
        return {}

    def _tool_specs(self) -> Sequence[ToolSpec]:
        return []
