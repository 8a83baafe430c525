"""Every task of the paper as a ``gymnasium.Env`` with text observations and actions.

See :class:`agentdistill.envs.base.CodeActEnv` for the episode contract, and
:mod:`agentdistill.envs.registration` for the ids.
"""

from agentdistill.envs.registration import ENV_IDS, register_envs

__all__ = ["ENV_IDS", "register_envs"]
