"""The paper's protocol (``protocol="paper"``): its prompt texts, observation formats and step rules."""

from __future__ import annotations

from typing import Literal, get_args

ProtocolName = Literal["agentdistill", "paper"]
"""How an agent is prompted and its steps are worded: ours (``agentdistill``), or the paper's, byte for byte."""

PROTOCOLS: tuple[str, ...] = get_args(ProtocolName)


def check_protocol_name(protocol: str) -> ProtocolName:
    """``protocol`` if it names a protocol; a :class:`~agentdistill.errors.UserError` listing them otherwise."""
    if protocol not in PROTOCOLS:
        from agentdistill.errors import UserError

        raise UserError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    return protocol  # type: ignore[return-value]
