"""agentdistill: tool-using LLM agents as Gymnasium environments, and small models that learn to act like big ones.

Importing the package registers the env ids (``AgentQA-HotpotQA-v0`` ... ``AgentMath-Synthetic-v0``)
with gymnasium and nothing heavier: env classes, retrievers and models load when first used.
"""

from __future__ import annotations

from agentdistill.envs.registration import ENV_IDS, register_envs

__version__ = "0.1.0"

register_envs()

__all__ = ["ENV_IDS", "__version__", "register_envs"]
