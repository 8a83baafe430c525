"""The ``protocol`` and ``prompts_dir`` keys every experiment kind shares (kept free of torch: dry runs stay light)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agentdistill.envs.paper import ProtocolName
from agentdistill.errors import UserError
from agentdistill.experiments.fields import Location


def check_protocol(protocol: ProtocolName, prompts_dir: str | None) -> None:
    """A protocol that reads the paper's prompt files must be given their directory (``__post_init__`` check)."""
    if protocol == "paper" and prompts_dir is None:
        raise ValueError(
            "protocol: paper needs prompts_dir: the directory of the paper's code_agent.yaml, teacher_model.yaml, "
            "judge_prompt.txt and task_instruction.txt"
        )


def describe_prompts_dir(prompts_dir: str, where: Location) -> str:
    """How a plan names the paper's prompt files, once they loaded from ``prompts_dir`` (a dry run checks them)."""
    from agentdistill.envs.paper.prompts import PaperPrompts

    try:
        prompts = PaperPrompts.load(prompts_dir)
    except UserError as error:
        raise where.error(str(error)) from None
    return f"the paper's prompts from {prompts.directory}"


def resolve_prompts_dir(prompts_dir: str | None, data_root: str | None) -> str | None:
    """Where a config's ``prompts_dir`` is: a relative path is read under ``data_root`` when one is set (a folder
    laid out like ``../shared/data`` keeps the paper's prompt files in ``agent-distillation/prompts``, beside its
    question lists), else from the current directory; an absolute path as it is."""
    if prompts_dir is None or data_root is None or Path(prompts_dir).is_absolute():
        return prompts_dir
    return str(Path(data_root) / prompts_dir)


def with_resolved_prompts_dir(config: Any) -> None:
    """Resolve ``config.prompts_dir`` against ``config.data_root`` in a frozen config's ``__post_init__``."""
    object.__setattr__(config, "prompts_dir", resolve_prompts_dir(config.prompts_dir, config.data_root))
