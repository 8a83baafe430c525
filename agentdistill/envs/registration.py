"""The env ids of agentdistill and their registration with gymnasium.

Importing :mod:`agentdistill` registers them, so ``gym.make("AgentQA-HotpotQA-v0")`` works after
``import agentdistill``, and ``gym.make("agentdistill:AgentQA-HotpotQA-v0")`` works without it
(gymnasium imports the module named before the colon). Episode length is the env's own ``max_steps``
(the paper's 5), not gymnasium's ``TimeLimit``, so ``max_episode_steps`` stays unset.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import gymnasium as gym


@dataclass(frozen=True)
class EnvEntry:
    """One registered id: the class that implements it and its fixed constructor arguments."""

    env_id: str
    entry_point: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)


_QA = "agentdistill.envs.qa:AgentQAEnv"
_MATH = "agentdistill.envs.math:AgentMathEnv"

ENV_ENTRIES: tuple[EnvEntry, ...] = (
    EnvEntry("AgentQA-HotpotQA-v0", _QA, {"task_name": "HotpotQA"}),
    EnvEntry("AgentQA-Bamboogle-v0", _QA, {"task_name": "Bamboogle"}),
    EnvEntry("AgentQA-MuSiQue-v0", _QA, {"task_name": "MuSiQue"}),
    EnvEntry("AgentQA-2WikiMultiHopQA-v0", _QA, {"task_name": "2WikiMultiHopQA"}),
    EnvEntry("AgentMath-MATH-v0", _MATH, {"task_name": "MATH"}),
    EnvEntry("AgentMath-MATH500-v0", _MATH, {"task_name": "MATH500"}),
    EnvEntry("AgentMath-GSMHard-v0", _MATH, {"task_name": "GSMHard"}),
    EnvEntry("AgentMath-AIME-v0", _MATH, {"task_name": "AIME"}),
    EnvEntry("AgentMath-OlymMATH-v0", _MATH, {"task_name": "OlymMATH"}),
    EnvEntry("AgentQA-Synthetic-v0", "agentdistill.envs.synthetic.envs:SyntheticQAEnv"),
    EnvEntry("AgentMath-Synthetic-v0", "agentdistill.envs.synthetic.envs:SyntheticMathEnv"),
)

ENV_IDS: tuple[str, ...] = tuple(entry.env_id for entry in ENV_ENTRIES)


def register_envs() -> None:
    """Register every id that gymnasium does not know yet (importing twice registers nothing twice)."""
    for entry in ENV_ENTRIES:
        if entry.env_id not in gym.registry:
            gym.register(id=entry.env_id, entry_point=entry.entry_point, kwargs=dict(entry.kwargs))


def env_entry_for(env_id: str) -> EnvEntry:
    """The registration of ``env_id``; an unknown id is a :class:`~agentdistill.errors.UserError` that
    suggests the closest known ids and lists them all."""
    for entry in ENV_ENTRIES:
        if entry.env_id == env_id:
            return entry
    from difflib import get_close_matches

    from agentdistill.errors import UserError

    close = get_close_matches(str(env_id), ENV_IDS, n=2, cutoff=0.5)
    hint = f"did you mean {' or '.join(repr(name) for name in close)}? " if close else ""
    raise UserError(f"unknown env id {env_id!r}; {hint}known ids: {', '.join(ENV_IDS)}")


def env_arguments(env_id: str) -> tuple[str, ...]:
    """The constructor arguments a user may pass to ``env_id`` (those the registration fixes excluded),
    collected along the class hierarchy as far as ``**kwargs`` forwards them."""
    import importlib
    import inspect

    entry = env_entry_for(env_id)
    module_name, _, class_name = entry.entry_point.partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    names: list[str] = []
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        parameters = inspect.signature(init).parameters.values()
        names += [p.name for p in parameters if p.name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
        if not any(p.kind is p.VAR_KEYWORD for p in parameters):
            break
    return tuple(sorted(set(names) - set(entry.kwargs)))


def check_env_arguments(env_id: str, kwargs: Mapping[str, Any]) -> None:
    """Refuse, before anything is built, arguments ``env_id`` does not take, naming the valid ones."""
    valid = env_arguments(env_id)
    unknown = sorted(set(kwargs) - set(valid))
    if not unknown:
        return
    from difflib import get_close_matches

    from agentdistill.errors import UserError

    hints = [f"{name!r} (did you mean {close[0]!r}?)" if (close := get_close_matches(name, valid, n=1)) else repr(name)
             for name in unknown]
    raise UserError(f"{env_id} takes no argument {', '.join(hints)}; its arguments are: {', '.join(valid)}")
