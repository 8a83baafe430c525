"""Turning a sequence of raw records into tasks, with errors that say where.

Local files and hub datasets both end here, so a bad record reads the same wherever it came from:
``<source>: record <i>: missing field(s) 'answer'; expected <layout> records: {...}``. Records with a
null or empty gold answer are skipped together and reported in one warning.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping
from typing import Any

from agentdistill.envs.data.errors import (
    DataFormatError,
    RecordProblem,
    SkippedRecordsWarning,
    UnansweredRecord,
    describe_location,
)
from agentdistill.envs.data.formats import RecordFormat, TaskKind
from agentdistill.envs.tasks import Task


def check_kind(
    fmt: RecordFormat,
    kind: TaskKind,
    source: str,
    *,
    actual: TaskKind | None = None,
    title: str | None = None,
) -> None:
    """Refuse data whose kind (``actual``, else the format's) is not the one asked for.

    ``title`` describes the data in the message when the format's own title says too little.
    """
    holds = actual if actual is not None else fmt.kind
    if holds is not None and holds != kind:
        raise DataFormatError(
            f"{source}: holds {title or fmt.title} data, which are {holds!r} tasks, but kind={kind!r} was asked "
            f"for; load it with kind={holds!r} or pick a {kind} dataset",
            source=source,
        )


def convert_records(
    records: Iterable[Any],
    fmt: RecordFormat,
    *,
    source: str,
    id_prefix: str,
    limit: int | None = None,
) -> list[Task]:
    """Convert every record with ``fmt``; ids default to ``f"{id_prefix}-{index}"``."""
    tasks: list[Task] = []
    skipped: list[int] = []
    for index, record in enumerate(records):
        if not isinstance(record, Mapping):
            raise DataFormatError(
                f"{describe_location(source, index)}: is a JSON {type(record).__name__}, expected an "
                f"object; expected {fmt.title} records: {fmt.fields}",
                source=source,
                index=index,
            )
        try:
            tasks.append(fmt.convert(record, f"{id_prefix}-{index}"))
        except UnansweredRecord:
            skipped.append(index)
            continue
        except RecordProblem as problem:
            raise DataFormatError(
                f"{describe_location(source, index)}: {problem.problem}; "
                f"expected {fmt.title} records: {fmt.fields}",
                source=source,
                index=index,
                missing=problem.missing,
            ) from problem
        if limit is not None and len(tasks) >= limit:
            break  # stop before pulling another record: a hub source loads lazily
    if skipped:
        shown = ", ".join(str(index) for index in skipped[:20]) + (", ..." if len(skipped) > 20 else "")
        warnings.warn(
            f"{source}: skipped {len(skipped)} record(s) with no gold answer (null or empty answer): {shown}",
            SkippedRecordsWarning,
            stacklevel=3,
        )
    if not tasks:
        raise DataFormatError(f"{source}: no usable records; expected {fmt.title} records: {fmt.fields}", source=source)
    return tasks
