"""Self-consistent action generation (SAG), the env's half: run N candidate actions, keep the majority.

The rollout loop samples N candidate actions for an env and sends them as ONE action, encoded with
:func:`encode_candidates`; this goes through any gymnasium vector env unchanged. The env then runs
every parsable candidate from the same sandbox state without touching it (forked workers), drops
those that fail to parse or raise, votes among the rest on what they produce (for ``final_answer``
candidates, the normalised answer; for others, their observation), adopts the winner's resulting state
and returns its observation as the step's, so the winner never runs twice. If no candidate is valid,
the first one is kept so that its error reaches the model.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Sequence

_MARKER = "\x00agentdistill-sag-candidates\x00"
"""Starts an encoded candidate list; a NUL byte never appears in text a model writes."""


VOTES: tuple[str, ...] = ("answer", "logs")
"""What candidates vote with: ``answer`` (the normalised final answer, else the whole observation) or ``logs``
(only what the candidate printed, as the paper's agent votes: ``final_answer``-only candidates then tie on "",
and the first valid one wins)."""


def encode_candidates(actions: Sequence[str], vote: str = "answer") -> str:
    """One action string that carries ``actions`` as SAG candidates to the env, and how they vote."""
    if not actions:
        raise ValueError("SAG needs at least one candidate action")
    if vote not in VOTES:
        raise ValueError(f"vote must be one of {VOTES}, got {vote!r}")
    return _MARKER + json.dumps({"vote": vote, "candidates": [str(action) for action in actions]})


def decode_sag(action: str) -> tuple[list[str], str] | None:
    """The candidates carried by ``action`` and their vote, or ``None`` for an ordinary action."""
    if not action.startswith(_MARKER):
        return None
    try:
        payload = json.loads(action[len(_MARKER) :])
    except ValueError:
        return None
    candidates, vote = (payload.get("candidates"), payload.get("vote")) if isinstance(payload, dict) else (payload, "answer")
    if not isinstance(candidates, list) or not candidates or not all(isinstance(c, str) for c in candidates):
        return None
    return candidates, vote if vote in VOTES else "answer"


@dataclass(frozen=True)
class CandidateOutcome:
    """What one candidate did: whether it is valid and the key it votes with."""

    valid: bool
    vote: str


@dataclass(frozen=True)
class Selection:
    """The chosen candidate and how the vote went, for the step's ``info["sag"]``."""

    winner: int
    candidates: int
    valid: int
    votes: int

    def as_info(self) -> dict[str, int]:
        return {"candidates": self.candidates, "valid": self.valid, "winner": self.winner, "votes": self.votes}


def select_candidate(outcomes: Sequence[CandidateOutcome]) -> Selection:
    """Majority vote among valid candidates; ties go to the earliest; none valid keeps the first."""
    valid = [(index, outcome.vote) for index, outcome in enumerate(outcomes) if outcome.valid]
    if not valid:
        return Selection(winner=0, candidates=len(outcomes), valid=0, votes=0)
    counts = Counter(vote for _, vote in valid)
    best = max(counts.values())
    winner = next(index for index, vote in valid if counts[vote] == best)
    return Selection(winner=winner, candidates=len(outcomes), valid=len(valid), votes=best)


def vote_key(final_answer: str | None, observation: str, normalize_answer: Callable[[str], str]) -> str:
    """What a candidate votes with: its normalised final answer, or else its observation."""
    if final_answer is not None:
        return "answer:" + normalize_answer(final_answer)
    return "observation:" + observation
