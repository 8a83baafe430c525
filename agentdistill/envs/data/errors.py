"""The errors and warnings every data loader raises.

Loaders meet files written by many hands, so a bad file must fail with a message a user can act on:
which file, which record, which fields were missing, and which layouts would have been accepted.
:class:`DataFormatError` carries that message to the user; :class:`RecordProblem` is the internal,
location-free complaint a per-format converter raises, which the loader turns into a
:class:`DataFormatError` once it knows the file and record index.
"""

from __future__ import annotations

from collections.abc import Sequence


class DataFormatError(ValueError):
    """A data file (or hub dataset) that cannot be read as tasks or documents.

    Raised for unreadable or unrecognised formats, empty files, records that lack required fields and
    a ``kind`` that does not fit the data. ``source`` is the file (or hub dataset) it concerns,
    ``index`` the record (0-based) where known, ``missing`` the fields that record lacks.
    """

    def __init__(
        self,
        message: str,
        *,
        source: str = "",
        index: int | None = None,
        missing: Sequence[str] = (),
    ) -> None:
        super().__init__(message)
        self.source = source
        self.index = index
        self.missing = tuple(missing)


class HubLoadError(RuntimeError):
    """A Hugging Face hub dataset that could not be fetched (no network, no ``datasets``, bad id).

    Kept apart from :class:`DataFormatError`: here the data never arrived, and the remedy is to point
    the loader at a local copy (``data_path=``) rather than to fix a file.
    """


class SkippedRecordsWarning(UserWarning):
    """Records were dropped because they carry no gold answer (``"answer": null`` or ``""``).

    Such a record cannot be graded, so it cannot become a task; the real files hold a few of these
    (two in each of the paper's MATH train lists), and refusing the whole file would be worse.
    """


class RecordProblem(Exception):
    """A converter's complaint about one record, before the loader knows where that record lives."""

    def __init__(self, problem: str, *, missing: Sequence[str] = ()) -> None:
        super().__init__(problem)
        self.problem = problem
        self.missing = tuple(missing)


class UnansweredRecord(RecordProblem):
    """The record is well formed but its gold answer is null or blank; loaders skip it with a warning."""


def describe_location(source: str, index: int | None) -> str:
    """``"<source>: record 3"`` — the prefix every message starts with, so messages read alike."""
    return source if index is None else f"{source}: record {index}"
