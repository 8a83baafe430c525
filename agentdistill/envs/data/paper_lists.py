"""The paper's own question lists: ``{"metadata": {...}, "examples": [{id, question, answer, ...}]}``.

Kang et al. evaluate on fixed samples (HotpotQA 500, Bamboogle 125, MATH500, GSM-Hard 500, ...) and
release them in this one layout for QA and math alike, so whether a list holds QA or math tasks is
read from each example's ``dataset_name`` (or the list's ``dataset_info.name``). GSM-Hard answers are
floats there and become text; ``level``, ``type``, ``subject`` and the like stay as metadata.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from agentdistill.envs.data.fields import answer_text, extra_fields, record_id, require, text
from agentdistill.envs.tasks import Task

NAME = "paper_list"
TITLE = "agent-distillation question list"
FIELDS = '{"metadata": {...}, "examples": [{id, question, answer, level?, type?, dataset_name?}]}'
REQUIRED = ("question", "answer")

# Substrings of a lower-cased dataset name that reveal its kind; QA is asked first because no QA
# name contains a math marker, while e.g. "OlymMATH" must not be mistaken for anything else.
_QA_MARKERS = ("hotpot", "bamboogle", "musique", "2wiki", "wikimultihop")
_MATH_MARKERS = ("math", "gsm", "aime", "olym", "amc")


def looks_like(payload: Any) -> bool:
    """A JSON object holding an ``examples`` list."""
    return isinstance(payload, Mapping) and isinstance(payload.get("examples"), list)


def dataset_kind(name: str) -> Literal["qa", "math"] | None:
    """``"qa"`` or ``"math"`` for a dataset name the paper uses, ``None`` for an unknown one."""
    lowered = name.lower()
    if any(marker in lowered for marker in _QA_MARKERS):
        return "qa"
    if any(marker in lowered for marker in _MATH_MARKERS):
        return "math"
    return None


def dataset_names(payload: Mapping[str, Any]) -> tuple[str, ...]:
    """The examples' ``dataset_name`` values, else the list's ``dataset_info.name`` (sorted)."""
    names = {str(example["dataset_name"]) for example in payload["examples"]
             if isinstance(example, Mapping) and example.get("dataset_name")}
    if not names:
        info = payload.get("metadata")
        info = info.get("dataset_info") if isinstance(info, Mapping) else None
        if isinstance(info, Mapping) and info.get("name"):
            names = {str(info["name"])}
    return tuple(sorted(names))


def list_kind(payload: Mapping[str, Any]) -> Literal["qa", "math"] | None:
    """The kind the list's dataset names agree on, or ``None`` when they are unknown or disagree."""
    kinds = {dataset_kind(name) for name in dataset_names(payload)}
    return kinds.pop() if len(kinds) == 1 else None


def convert(record: Mapping[str, Any], default_id: str) -> Task:
    """One example of a paper list; a float answer (GSM-Hard) is written out as text."""
    require(record, REQUIRED)
    metadata = extra_fields(record, ("id", "question", "answer"))
    metadata.update(format=NAME)
    if isinstance(record["answer"], float):
        metadata["answer_value"] = record["answer"]
    return Task(
        task_id=record_id(record, ("id",), default_id),
        question=text(record, "question"),
        answer=answer_text(record["answer"]),
        metadata=metadata,
    )
