"""Reading retrieval corpora into :class:`~agentdistill.envs.tasks.Document` objects.

Two layouts are accepted, recognised from the content:

* Search-R1 / FlashRAG JSON Lines ``{"id", "contents"}``, where ``contents`` is ``"Title"\\ntext``
  (the title on the first line, in double quotes). This is the paper's ``wiki-18.jsonl``, 21M lines,
  so it is streamed line by line and never read whole.
* a JSON list (or JSON Lines) of ``{"title", "text"}`` objects, e.g. the 2WikiMultihopQA paragraphs.

Errors follow :mod:`agentdistill.envs.data`: FileNotFoundError for a missing file,
:class:`~agentdistill.envs.data.DataFormatError` naming the file, the line or record, and the
expected fields for anything else.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, TextIO

from agentdistill.envs.data import DataFormatError
from agentdistill.envs.data.reading import existing_file
from agentdistill.envs.tasks import Document

_EXPECTED = (
    'Search-R1/FlashRAG JSON Lines {"id", "contents": "\\"Title\\"\\ntext"} '
    'or a JSON list / JSON Lines of {"title", "text"}'
)


def load_corpus(path: str | os.PathLike[str]) -> list[Document]:
    """Every document of a corpus file, in file order."""
    return list(iter_corpus(path))


def iter_corpus(path: str | os.PathLike[str]) -> Iterator[Document]:
    """Stream a corpus file's documents.

    The path is checked now (so a missing file fails at the call, not at the first ``next``); the
    file is opened lazily and JSON Lines corpora are read one line at a time.
    """
    return _documents(existing_file(path))


def split_contents(contents: str) -> tuple[str, str]:
    """``'"Title"\\ntext'`` → ``("Title", "text")``; one pair of surrounding quotes is removed.

    Contents without a newline have no title line and are all text.
    """
    if "\n" not in contents:
        return "", contents.strip()
    first, rest = contents.split("\n", 1)
    title = first.strip()
    if len(title) >= 2 and title.startswith('"') and title.endswith('"'):
        title = title[1:-1]
    return title.strip(), rest.strip()


def _documents(file: Path) -> Iterator[Document]:
    source = str(file)
    try:
        with file.open(encoding="utf-8-sig") as handle:
            first = _first_char(handle)
            if first == "":
                raise DataFormatError(f"{source}: file is empty; expected {_EXPECTED}", source=source)
            if first == "[":
                yield from _from_json_list(handle, source)
            elif first == "{":
                yield from _from_json_lines(handle, source)
            else:
                raise DataFormatError(
                    f"{source}: starts with {first!r}, not JSON or JSON Lines; expected {_EXPECTED}",
                    source=source,
                )
    except UnicodeDecodeError as error:
        raise DataFormatError(f"{source}: not UTF-8 text; expected {_EXPECTED}", source=source) from error


def _first_char(handle: TextIO) -> str:
    """The first non-whitespace character (``""`` for an empty file); the handle is rewound."""
    while True:
        chunk = handle.read(4096)
        if not chunk:
            handle.seek(0)
            return ""
        stripped = chunk.lstrip()
        if stripped:
            handle.seek(0)
            return stripped[0]


def _from_json_lines(handle: TextIO, source: str) -> Iterator[Document]:
    count = 0
    for line_number, line in enumerate(handle, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataFormatError(
                f"{source}: line {line_number}: invalid JSON ({error.msg}); expected {_EXPECTED}",
                source=source,
                index=line_number,
            ) from error
        yield document_from_record(record, source, "line", line_number)
        count += 1
    if count == 0:
        raise DataFormatError(f"{source}: holds no documents; expected {_EXPECTED}", source=source)


def _from_json_list(handle: TextIO, source: str) -> Iterator[Document]:
    # A JSON array cannot be streamed with the standard library; such corpora are small (thousands of
    # paragraphs), while the 21M-passage Wikipedia dump comes as JSON Lines.
    try:
        records = json.load(handle)
    except json.JSONDecodeError as error:
        raise DataFormatError(
            f"{source}: invalid JSON ({error.msg} at line {error.lineno}); expected {_EXPECTED}",
            source=source,
        ) from error
    if not isinstance(records, list) or not records:
        raise DataFormatError(f"{source}: holds no documents; expected {_EXPECTED}", source=source)
    for index, record in enumerate(records):
        yield document_from_record(record, source, "record", index)


def document_from_record(record: Any, source: str, unit: str, index: int) -> Document:
    """One corpus record (``{"id", "contents"}`` or ``{"title", "text"}``) as a :class:`Document`.

    ``source``, ``unit`` and ``index`` only shape the error message ("wiki.jsonl: line 7: ...").
    """
    where = f"{source}: {unit} {index}"
    if not isinstance(record, Mapping):
        raise DataFormatError(
            f"{where}: is a JSON {type(record).__name__}, expected an object; expected {_EXPECTED}",
            source=source,
            index=index,
        )
    if "contents" in record:
        if "id" not in record:
            raise _missing(where, source, index, ("id",))
        contents = record["contents"]
        if not isinstance(contents, str):
            raise DataFormatError(
                f"{where}: field 'contents' must be a string; expected {_EXPECTED}", source=source, index=index
            )
        title, text = split_contents(contents)
        return Document(title=title, text=text, doc_id=str(record["id"]), contents=contents)
    missing = tuple(field for field in ("title", "text") if field not in record)
    if missing:
        if "id" in record:
            missing = ("contents",)  # an {"id", ...} record reads as the FlashRAG layout
        raise _missing(where, source, index, missing)
    title, text = str(record["title"]).strip(), str(record["text"]).strip()
    doc_id = str(record["id"]) if record.get("id") is not None else title
    return Document(title=title, text=text, doc_id=doc_id)


def _missing(where: str, source: str, index: int, missing: tuple[str, ...]) -> DataFormatError:
    names = ", ".join(repr(name) for name in missing)
    return DataFormatError(
        f"{where}: missing field(s) {names}; expected {_EXPECTED}", source=source, index=index, missing=missing
    )
