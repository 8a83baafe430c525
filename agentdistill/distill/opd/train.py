"""One OPD process: GRPO's run in the env (:func:`~agentdistill.distill.grpo.train.train_in_env`) with the
teacher's rollouts and trainer."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from agentdistill.distill.grpo.train import EnvAlgorithm, claim_env_directory, train_in_env
from agentdistill.distill.opd.settings import RESULT_FILENAME, SETTINGS_FILENAME, OPDResult, OPDSettings
from agentdistill.errors import UserError
from agentdistill.runs import RunDirectory

TEACHER_KINDS = ("hf", "vllm", "openai")


def check_teacher_spec(spec: str) -> None:
    """Refuse at once a teacher that cannot score tokens, or a local model directory that does not exist."""
    from agentdistill.policies import parse_policy_spec
    from agentdistill.policies.model_source import check_model_source

    try:
        parsed = parse_policy_spec(spec)
    except ValueError as error:
        raise UserError(f"teacher: {error}") from None
    if parsed.kind not in TEACHER_KINDS:
        raise UserError(
            f"the teacher scores the student's tokens, so it must be a model: hf:DIR, vllm:MODEL or openai:URL#MODEL, "
            f"got {spec!r}"
        )
    if parsed.kind == "hf":
        check_model_source(parsed.adapter or parsed.model, what="teacher")


def check_shared_tokenizer(student: str, teacher: str) -> None:
    """Refuse, before any model loads, a ``hf:`` teacher whose tokenizer is not the student's (a ``vllm:`` teacher
    is checked once its engine is up; a server's tokenizer is not at hand)."""
    from agentdistill.distill.loading import load_tokenizer
    from agentdistill.distill.opd.teachers import check_same_tokenizer
    from agentdistill.policies import parse_policy_spec

    parsed_teacher, parsed_student = parse_policy_spec(teacher), parse_policy_spec(student)
    if parsed_teacher.kind != "hf":
        return
    check_same_tokenizer(
        load_tokenizer(parsed_student.model, adapter=parsed_student.adapter),
        load_tokenizer(parsed_teacher.model, adapter=parsed_teacher.adapter),
        teacher_name=teacher,
    )


def opd_algorithm(teacher: str) -> EnvAlgorithm:
    """OPD as an algorithm of :func:`~agentdistill.distill.grpo.train.train_in_env`: the teacher scores each
    episode (:class:`~agentdistill.distill.opd.rollouts.OPDRollouts`), its log-probabilities give the per-token
    advantages (:class:`~agentdistill.distill.opd.trainer.OPDTrainer`)."""

    def rollouts(env_id: str, settings: Any, out_dir: Any) -> Any:
        from agentdistill.distill.opd.rollouts import OPDRollouts

        return OPDRollouts(env_id, settings, out_dir, teacher=teacher)

    def trainer_class() -> type:
        from agentdistill.distill.opd.trainer import OPDTrainer

        return OPDTrainer

    def extras(history: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        reverse_kl = tuple(float(entry["opd/reverse_kl"]) for entry in history if "opd/reverse_kl" in entry)
        return {"teacher": teacher, "reverse_kl": reverse_kl}

    return EnvAlgorithm(
        name="opd",
        command="opd",
        settings_filename=SETTINGS_FILENAME,
        result_filename=RESULT_FILENAME,
        make_rollouts=rollouts,
        trainer_class=trainer_class,
        identity={"teacher": teacher},
        result_class=OPDResult,
        result_extras=extras,
    )


def claim_opd_directory(
    out_dir: str | os.PathLike[str], env_id: str, student: str, teacher: str, settings: OPDSettings
) -> RunDirectory:
    """Make ``out_dir`` this OPD run's directory or resume it (env, student, teacher and settings are its
    identity); anything else is refused before a file is written. Called once, by the launching process."""
    return claim_env_directory(out_dir, env_id, student, settings, opd_algorithm(teacher))


def train_opd(
    env_id: str,
    student: str,
    teacher: str,
    out_dir: str | os.PathLike[str],
    settings: OPDSettings | None = None,
    *,
    progress: bool = True,
    claim_directory: bool = True,
) -> OPDResult:
    """Distil ``teacher`` into ``student`` (``hf:DIR``) on the student's own episodes in ``env_id`` and save the
    student to ``out_dir`` (loads as ``hf:OUT``); see :mod:`agentdistill.distill.opd`.

    Resumes from the last ``out_dir/checkpoint-N`` of the same run; another run's directory is refused. Under
    ``accelerate launch`` every process calls this with ``claim_directory=False`` (the launcher holds the claim).
    """
    check_teacher_spec(teacher)
    check_shared_tokenizer(student, teacher)
    result = train_in_env(
        env_id,
        student,
        out_dir,
        settings or OPDSettings(),
        opd_algorithm(teacher),
        progress=progress,
        claim_directory=claim_directory,
    )
    assert isinstance(result, OPDResult)
    return result
