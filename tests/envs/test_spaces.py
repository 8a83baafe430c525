"""BoundedText: any str up to a bound, and a shared-memory codec that keeps every character."""

from __future__ import annotations

import copy
import multiprocessing as mp

from gymnasium.vector.utils import create_shared_memory, read_from_shared_memory, write_to_shared_memory

from agentdistill.envs.spaces import BoundedText


def test_contains_accepts_any_text_within_the_bound() -> None:
    space = BoundedText(40)
    assert space.contains("spaces, newlines\nand ünïcode ✓")
    assert space.contains("\ud800 lone surrogate")
    assert not space.contains("x" * 41)
    assert not space.contains(b"bytes")
    assert not space.contains(None)
    assert space.contains(space.sample())


def test_shared_memory_round_trips_arbitrary_unicode() -> None:
    space = BoundedText(64)
    memory = create_shared_memory(space, n=3, ctx=mp.get_context("fork"))
    values = ["Observation:\nhé 😀 \ud800", "", "x" * 64]
    for index, value in enumerate(values):
        write_to_shared_memory(space, index, value, memory)
    view = read_from_shared_memory(space, memory, n=3)
    assert tuple(view) == tuple(values)
    snapshot = copy.deepcopy(view)
    write_to_shared_memory(space, 0, "short", memory)  # a shorter value replaces a longer one exactly
    assert view[0] == "short"  # the view is live, like gymnasium's numpy views for Box spaces
    assert snapshot == tuple(values) and type(snapshot) is tuple
