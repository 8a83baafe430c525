"""The one exception for mistakes in what a user asked for.

A bad env id, a policy spec that names nothing, a file that is not what it should be, an output that
belongs to another run: the user can fix each by changing the command, and a traceback would only hide
the one sentence that says how. Library code raises :class:`UserError` for these (it is a ``ValueError``,
so callers that catch bad arguments keep working); ``agentdistill`` prints its message on one line and
exits with status 1, and ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import os


class UserError(ValueError):
    """A mistake in the user's input, with a message that names the bad value and the fix."""


class OutputConflictError(UserError):
    """An output file or directory that holds another run's data (or no run's data at all): writing into it
    would mix two runs or destroy what the user keeps there."""

    def __init__(self, path: str | os.PathLike[str], problem: str) -> None:
        self.path = os.fspath(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.path, self.problem))
