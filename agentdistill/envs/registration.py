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
