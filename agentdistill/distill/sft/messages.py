"""Conversations as the student is trained on them: the message type, and the paper's clean-up of a
conversation (``clean_messages`` of its preprocessing), shared by the filter and the importer of released rows.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

Message = dict[str, str]


REFERENCE_HINT = re.compile(r"<reference>.*?</reference>", re.DOTALL)
"""A ``<reference>`` hint in a task turn, which the paper's preprocessing cuts before training."""


def calls_final_answer(message: Message) -> bool:
    return "final_answer(" in message["content"]


def check_paper_structure(messages: Sequence[Message]) -> None:
    roles = [message["role"] for message in messages]
    if len(roles) < 3 or roles[:2] != ["system", "user"] or roles[-1] != "assistant":
        raise ValueError(f"a conversation must be system, task, ..., assistant; got {roles}")
    unknown = sorted(set(roles) - {"system", "user", "assistant"})
    if unknown or roles.count("system") > 1:
        raise ValueError(f"a conversation has one system turn, then user and assistant turns; got {roles}")


def join_same_roles(messages: Sequence[Message]) -> list[Message]:
    """Runs of turns of one role joined into one turn, their texts concatenated with no separator (as the
    paper's ``clean_messages`` does)."""
    joined: list[Message] = []
    for message in messages:
        if joined and joined[-1]["role"] == message["role"]:
            joined[-1] = {"role": message["role"], "content": joined[-1]["content"] + message["content"]}
        else:
            joined.append(dict(message))
    return joined


def paper_clean(messages: Sequence[Message]) -> list[Message]:
    """The paper's ``clean_messages`` after its role clean-up: join same-role runs, cut ``<reference>`` hints
    from the task turn, drop one trailing user turn."""
    joined = join_same_roles(messages)
    if len(joined) > 1:
        joined[1] = {"role": joined[1]["role"], "content": REFERENCE_HINT.sub("", joined[1]["content"])}
    if joined and joined[-1]["role"] == "user":
        joined.pop()
    return joined
