"""``load_tasks``: one local file in, a list of tasks out, its layout read from its content.

File names lie (``.json`` files holding JSON Lines, paper lists named after the dataset they sample),
so the loader parses the file, recognises the paper-list container or the layout of its first record,
and hands every record to that layout's converter.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from agentdistill.envs.data import paper_lists
from agentdistill.envs.data.errors import DataFormatError, describe_location
from agentdistill.envs.data.formats import PAPER_LIST, TASK_KINDS, TaskKind, expected_formats, sniff_record_format
from agentdistill.envs.data.reading import existing_file, read_json_or_jsonl
from agentdistill.envs.data.records import check_kind, convert_records
from agentdistill.envs.tasks import Task

_EXPECTED = "a JSON list, JSON Lines or JSON object in one of the supported layouts"


def load_tasks(path: str | os.PathLike[str], *, kind: TaskKind) -> list[Task]:
    """Load every task of a local data file.

    Supported layouts: the paper's question lists, HotpotQA (Hugging Face or original layout),
    MuSiQue, 2WikiMultihopQA, GSM8K, MATH-500 / AIME / OlymMATH problem-answer records, Hendrycks
    MATH, GSM-Hard and Bamboogle — each as a JSON list or JSON Lines. ``kind`` (``"qa"`` or
    ``"math"``) must match what the file holds.

    Raises FileNotFoundError for a missing file and :class:`DataFormatError` for an empty,
    unreadable or unrecognised file, a record lacking required fields, or a kind mismatch.
    Records with a null or empty answer are skipped with a :class:`SkippedRecordsWarning`.
    """
    if kind not in TASK_KINDS:
        raise ValueError(f"kind must be one of {TASK_KINDS}, got {kind!r}")
    file = existing_file(path)
    source = str(file)
    payload = read_json_or_jsonl(file, expected=f"{_EXPECTED}:\n{expected_formats()}")

    if isinstance(payload, list) and len(payload) == 1 and paper_lists.looks_like(payload[0]):
        payload = payload[0]  # a paper list written on a single line reads as one JSON Lines value
    if paper_lists.looks_like(payload):
        names = ", ".join(paper_lists.dataset_names(payload)) or "unnamed datasets"
        check_kind(PAPER_LIST, kind, source, actual=paper_lists.list_kind(payload), title=f"{PAPER_LIST.title} ({names})")
        return convert_records(payload["examples"], PAPER_LIST, source=source, id_prefix=file.stem)

    records = _as_records(payload, source)
    fmt = sniff_record_format(records[0])
    if fmt is None:
        fields = ", ".join(sorted(map(str, records[0]))) or "none"
        raise DataFormatError(
            f"{describe_location(source, 0)}: unrecognised data format (fields: {fields}); "
            f"expected one of:\n{expected_formats()}",
            source=source,
            index=0,
        )
    check_kind(fmt, kind, source)
    return convert_records(records, fmt, source=source, id_prefix=file.stem)


def _as_records(payload: Any, source: str) -> list[Any]:
    """A JSON list of records, or a single record (a one-object file) as a one-element list."""
    records = [payload] if isinstance(payload, Mapping) else payload
    if not isinstance(records, list):
        raise DataFormatError(
            f"{source}: top-level JSON {type(payload).__name__} is neither a list of records nor an "
            f"object; expected one of:\n{expected_formats()}",
            source=source,
        )
    if not records:
        raise DataFormatError(f"{source}: holds no records; expected one of:\n{expected_formats()}", source=source)
    if not isinstance(records[0], Mapping):
        raise DataFormatError(
            f"{describe_location(source, 0)}: is a JSON {type(records[0]).__name__}, expected an object; "
            f"expected one of:\n{expected_formats()}",
            source=source,
            index=0,
        )
    return records
