"""An OPD run in N data-parallel processes (``accelerate launch``), its output directory claimed once."""

from __future__ import annotations

import os

from agentdistill.distill.grpo.launch import launch_in_env
from agentdistill.distill.launch import LaunchOptions
from agentdistill.distill.opd.settings import OPDResult, OPDSettings
from agentdistill.distill.opd.train import check_shared_tokenizer, check_teacher_spec, opd_algorithm

OPD_MODULE = "agentdistill.distill.opd"


def launch_opd(
    env_id: str,
    student: str,
    teacher: str,
    out_dir: str | os.PathLike[str],
    *,
    settings: OPDSettings | None = None,
    options: LaunchOptions | None = None,
) -> OPDResult:
    """Distil in ``options.num_processes`` data-parallel processes (default: two) and return the main one's result:
    each process plays its slice of the tasks and has its own copy of the teacher score them (see
    :func:`~agentdistill.distill.grpo.launch.launch_grpo` for the launcher)."""
    check_teacher_spec(teacher)
    check_shared_tokenizer(student, teacher)
    options = options or LaunchOptions()
    arguments = ["--env", env_id, "--student", student, "--teacher", teacher]
    result = launch_in_env(
        OPD_MODULE, arguments, env_id, student, out_dir, settings or OPDSettings(), opd_algorithm(teacher), options
    )
    assert isinstance(result, OPDResult)
    return result
