"""The paper's protocol (``protocol="paper"``): its prompt texts, observation formats and step rules."""

from __future__ import annotations

from typing import Literal, get_args

ProtocolName = Literal["agentdistill", "paper"]
"""How an agent is prompted and its steps are worded: ours (``agentdistill``), or the paper's, byte for byte."""

PROTOCOLS: tuple[str, ...] = get_args(ProtocolName)
