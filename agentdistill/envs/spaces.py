"""Text spaces that accept any string up to a bound and cost nothing to check.

gymnasium's :class:`~gymnasium.spaces.Text` validates every character against its charset: the default
charset rejects spaces and newlines, and a full-Unicode charset costs seconds and ~200 MB per space
(and vector envs copy the space per env). Model actions and tool observations are arbitrary Unicode,
so :class:`BoundedText` keeps ``Text``'s interface (sampling, ``max_length``) but checks only type and
length.

Async vector envs put observations in shared memory by default, and ``Text``'s shared-memory codec
breaks twice: it maps every character outside the charset to nothing, and it decodes the buffer once,
when the vector env is built, into a tuple that never changes again (a ``Box`` gets a live numpy view).
We register a codec for :class:`BoundedText` that stores raw code points with a length and reads them
through :class:`SharedTextView`, a live view like the numpy one, whose deep copy (what the vector env
returns by default) is a plain tuple of str. So ``gym.make_vec(..., vectorization_mode="async")``
returns the same text as the sync vector env with its default settings.
"""

from __future__ import annotations

import multiprocessing as mp
import string
from collections.abc import Sequence
from types import ModuleType
from typing import Any, overload

import numpy as np
from gymnasium.spaces import Text
from gymnasium.vector.utils import shared_memory as gym_shared_memory

SAMPLE_CHARSET = string.ascii_letters + string.digits + " \n.,:;()=+-*/_'\"[]"
"""Characters :meth:`BoundedText.sample` draws from; containment does not depend on it."""


class BoundedText(Text):
    """A :class:`~gymnasium.spaces.Text` space holding any ``str`` of at most ``max_length`` characters."""

    def __init__(self, max_length: int, *, min_length: int = 0, seed: int | None = None) -> None:
        if max_length < 1:
            raise ValueError(f"max_length must be a positive number of characters, got {max_length!r}")
        super().__init__(max_length, min_length=min_length, charset=SAMPLE_CHARSET, seed=seed)

    def contains(self, x: Any) -> bool:
        """Accept any ``str`` whose length is within bounds, whatever its characters."""
        return isinstance(x, str) and self.min_length <= len(x) <= self.max_length

    def __repr__(self) -> str:
        return f"BoundedText(max_length={self.max_length}, min_length={self.min_length})"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, BoundedText)
            and self.max_length == other.max_length
            and self.min_length == other.min_length
        )

    def __hash__(self) -> int:
        return hash((type(self), self.max_length, self.min_length))


@gym_shared_memory.create_shared_memory.register(BoundedText)
def _create_bounded_text_shared_memory(space: BoundedText, n: int = 1, ctx: ModuleType = mp) -> Any:
    """One row per env: slot 0 holds the length, the rest the code points."""
    return ctx.Array(np.dtype(np.int32).char, n * (space.max_length + 1))


class SharedTextView(Sequence[str]):
    """A live, read-only view of ``n`` texts in shared memory: indexing decodes the current contents.

    ``copy.deepcopy`` and ``tuple(view)`` give a snapshot as a tuple of str, which is what the async
    vector env hands to users with its default ``copy=True``.
    """

    def __init__(self, rows: np.ndarray) -> None:
        self._rows = rows

    def __len__(self) -> int:
        return len(self._rows)

    @overload
    def __getitem__(self, index: int) -> str: ...

    @overload
    def __getitem__(self, index: slice) -> tuple[str, ...]: ...

    def __getitem__(self, index: int | slice) -> str | tuple[str, ...]:
        if isinstance(index, slice):
            return tuple(self[i] for i in range(*index.indices(len(self))))
        row = self._rows[index]
        return _decode_code_points(row[1 : 1 + int(row[0])])

    def __deepcopy__(self, memo: dict[int, Any]) -> tuple[str, ...]:
        return tuple(self)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and tuple(self) == tuple(other)

    def __repr__(self) -> str:
        return f"SharedTextView({tuple(self)!r})"


@gym_shared_memory.read_from_shared_memory.register(BoundedText)
def _read_bounded_text(space: BoundedText, shared_memory: Any, n: int = 1) -> SharedTextView:
    return SharedTextView(np.frombuffer(shared_memory.get_obj(), dtype=np.int32).reshape((n, space.max_length + 1)))


@gym_shared_memory.write_to_shared_memory.register(BoundedText)
def _write_bounded_text(space: BoundedText, index: int, value: str, shared_memory: Any) -> None:
    width = space.max_length + 1
    row = np.frombuffer(shared_memory.get_obj(), dtype=np.int32)[index * width : (index + 1) * width]
    code_points = np.frombuffer(value.encode("utf-32-le", "surrogatepass"), dtype=np.int32)
    row[0] = len(code_points)
    row[1 : 1 + len(code_points)] = code_points


def _decode_code_points(code_points: np.ndarray) -> str:
    return code_points.astype("<i4").tobytes().decode("utf-32-le", "surrogatepass")

