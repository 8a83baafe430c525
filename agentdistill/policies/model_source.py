"""Where a model comes from, and what to tell a user whose model cannot be loaded.

transformers answers a mistyped local path with "Repo id must be in the form 'repo_name' or
'namespace/repo_name'" and a hub id on a machine without network with "couldn't connect to
huggingface.co": both true, neither says what to fix. :func:`check_model_source` refuses at once a
source that can only fail (a path-like name that does not exist), before any slow import or load, and
:func:`explaining_model_load` turns a failed load into one sentence that says which case it is.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from agentdistill.errors import UserError

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")
"""``name`` or ``org/name``: the shape of a Hugging Face hub id (anything else can only be a local path)."""


def looks_like_hub_id(source: str) -> bool:
    """Whether ``source`` could name a model on the Hugging Face hub (``org/name`` or ``name``)."""
    return bool(_HUB_ID.match(source)) and not source.startswith((".", "~"))


def check_model_source(source: str | os.PathLike[str], *, what: str = "model") -> None:
    """Raise :class:`UserError` when ``source`` is neither an existing path nor shaped like a hub id."""
    text = os.fspath(source)
    if Path(text).expanduser().exists() or looks_like_hub_id(text):
        return
    raise UserError(f"{what} {text!r}: no such file or directory (relative paths are read from {os.getcwd()})")


def model_load_error(source: str | os.PathLike[str], error: BaseException, *, what: str = "model") -> UserError:
    """The one-sentence explanation of why loading ``source`` failed with ``error``."""
    text = os.fspath(source)
    lines = str(error).strip().splitlines()
    reason = lines[0] if lines else type(error).__name__
    if Path(text).expanduser().exists():
        return UserError(f"{what} {text!r} exists but cannot be loaded ({reason})")
    if looks_like_hub_id(text):
        return UserError(
            f"{what} {text!r} is not a local directory, and the Hugging Face hub did not provide it ({reason}); "
            "check the path (relative to the current directory), or the model id and the network"
        )
    return UserError(f"{what} {text!r}: no such file or directory (relative paths are read from {os.getcwd()})")


@contextmanager
def explaining_model_load(source: str | os.PathLike[str], *, what: str = "model") -> Iterator[None]:
    """Run a ``from_pretrained`` call; a failure to find or read ``source`` becomes :func:`model_load_error`."""
    check_model_source(source, what=what)
    try:
        yield
    except UserError:
        raise
    except (OSError, ValueError) as error:
        raise model_load_error(source, error, what=what) from error
