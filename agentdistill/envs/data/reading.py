"""Reading a JSON or JSON Lines file whatever its extension says.

Task files arrive as ``.json`` lists, ``.jsonl`` streams, single JSON objects and occasionally
mislabelled mixtures, so the layout is decided from the content: a file that parses as one JSON
document is that document; otherwise it is read as one JSON value per line.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from typing import Any

from agentdistill.envs.data.errors import DataFormatError


def existing_file(path: str | os.PathLike[str]) -> Path:
    """Return ``path`` as a :class:`Path`, raising FileNotFoundError (naming it) when it is absent."""
    file = Path(path)
    if not file.exists():
        raise FileNotFoundError(errno.ENOENT, "data file not found", str(file))
    if file.is_dir():
        raise DataFormatError(f"{file}: is a directory; expected a JSON or JSON Lines file", source=str(file))
    return file


def read_text(file: Path) -> str:
    """The file's text as UTF-8 (a byte-order mark is dropped); a binary file is a format error."""
    try:
        return file.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise DataFormatError(
            f"{file}: not UTF-8 text (byte {error.start}); expected a JSON or JSON Lines file",
            source=str(file),
        ) from error


def read_json_or_jsonl(file: Path, *, expected: str) -> Any:
    """Parse ``file`` as one JSON document, else as JSON Lines (returned as a list of values).

    ``expected`` names the accepted layouts; it ends every error message so the user learns what
    the file should have looked like.
    """
    text = read_text(file)
    stripped = text.lstrip()
    if not stripped:
        raise DataFormatError(f"{file}: file is empty; expected {expected}", source=str(file))
    try:
        return json.loads(text)
    except json.JSONDecodeError as whole_error:
        if not stripped.startswith("{"):
            raise DataFormatError(
                f"{file}: not JSON or JSON Lines ({whole_error.msg} at line {whole_error.lineno}); "
                f"expected {expected}",
                source=str(file),
            ) from whole_error
    return _parse_lines(text, file, expected=expected)


def _parse_lines(text: str, file: Path, *, expected: str) -> list[Any]:
    values: list[Any] = []
    for line_number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            values.append(json.loads(line))
        except json.JSONDecodeError as error:
            raise DataFormatError(
                f"{file}: line {line_number}: invalid JSON ({error.msg}); expected {expected}",
                source=str(file),
            ) from error
    return values
