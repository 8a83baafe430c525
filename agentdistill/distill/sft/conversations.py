"""Training rows as a ``datasets.Dataset`` of ``messages``, from rows in memory or a file."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from datasets import Dataset


def as_conversations(dataset: Dataset | Iterable[Mapping[str, Any]]) -> Dataset:
    """A ``Dataset`` with only a ``messages`` column of ``{role, content}`` dicts, checked for SFT.

    Every row must hold at least one assistant message (there would be nothing to learn from it otherwise).
    Extra columns and message keys are dropped so that TRL tokenizes exactly what the chat template renders.
    """
    from datasets import Dataset

    if isinstance(dataset, Dataset):
        if "messages" not in dataset.column_names:
            raise ValueError(f"the dataset has no 'messages' column (columns: {dataset.column_names})")
        rows: Iterable[Any] = dataset["messages"]
    else:
        rows = (row["messages"] for row in dataset)
    cleaned = []
    for index, messages in enumerate(rows):
        turns = [{"role": str(message["role"]), "content": str(message.get("content") or "")} for message in messages]
        if not any(turn["role"] == "assistant" for turn in turns):
            raise ValueError(f"row {index} has no assistant message to learn from")
        cleaned.append({"messages": turns})
    if not cleaned:
        raise ValueError("the dataset is empty")
    return Dataset.from_list(cleaned)


def without_system_prompt(dataset: Dataset) -> Dataset:
    """The conversations minus their leading system turn.

    A first SFT stage trains on these when the system prompt is long and the same in every row: it teaches
    nothing, yet multiplies the tokens of a step (the quickstart's and the study's copy warm-up).
    """

    def drop(row: dict[str, Any]) -> dict[str, Any]:
        messages = row["messages"]
        return {"messages": messages[1:] if messages and messages[0]["role"] == "system" else messages}

    return dataset.map(drop, desc="Dropping system prompts", load_from_cache_file=False)


def load_conversations(path: str | os.PathLike[str]) -> Dataset:
    """Conversations from a ``save_to_disk`` directory (its ``train`` split for a ``DatasetDict``) or a JSONL file.

    Both are read into memory, so nothing (no ``datasets`` cache file) is written next to the data or in ``$HOME``.
    """
    from datasets import DatasetDict, load_from_disk

    source = Path(path)
    if source.is_dir():
        loaded = load_from_disk(str(source), keep_in_memory=True)
        if isinstance(loaded, DatasetDict):
            if "train" not in loaded:
                raise ValueError(f"{source} holds splits {list(loaded)}, none named 'train'")
            loaded = loaded["train"]
        return as_conversations(loaded)
    with open(source, encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    return as_conversations(rows)
