"""The cells of a study: one method, one student, one seed, trained and evaluated on the held-out tasks of both envs.

A cell writes everything under ``DIR/cells/<method>/<student>/seed-<seed>/`` and its rows last, to ``rows.json``:
a cell whose rows are there is done, and a rerun skips it; an interrupted one resumes its own runs (SFT, GRPO and
OPD from their checkpoints, evaluations from their trajectory files). Cells that build on another (SAG, GRPO and
OPD start from the agent student; OPD's teacher is the largest agent student) read that cell's model.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from agentdistill.study.data import TeacherData, agent_env_kwargs
from agentdistill.study.settings import ENV_IDS, QA_ENV_ID, StudySettings

ROWS_FILENAME = "rows.json"


@dataclass(frozen=True)
class Cell:
    """One method, one student, one seed."""

    method: str
    student: str
    seed: int

    def directory(self, out: Path) -> Path:
        return out / "cells" / self.method / self.student / f"seed-{self.seed}"

    def label(self) -> str:
        return f"{self.method} / {self.student} / seed {self.seed}"


@dataclass(frozen=True)
class Row:
    """One cell's figures on one env's held-out tasks."""

    method: str
    student: str
    env: str
    seed: int
    success_rate: float
    invalid_action_rate: float | None
    """``None`` for methods without actions (CoT)."""
    mean_steps: float | None
    episodes: int


@dataclass(frozen=True)
class StudyContext:
    """What every cell reads: the study's directory and settings, the teacher's data, the untrained students."""

    out: Path
    settings: StudySettings
    data: TeacherData
    students: dict[tuple[str, int], Path]


def cells_of(settings: StudySettings) -> list[Cell]:
    """Every cell of a study, in the order they run: a cell after those it builds on. OPD runs for every student
    but the largest (its teacher)."""
    names = settings.student_names()
    cells = []
    for method in settings.methods:
        for name in names:
            if method == "agent_opd" and name == names[-1]:
                continue
            cells.extend(Cell(method, name, seed) for seed in settings.seeds)
    order = {
        method: index
        for index, method in enumerate(("agent", "cot", "cot_rag", "agent_sag", "agent_grpo", "agent_opd"))
    }
    return sorted(cells, key=lambda cell: order[cell.method])


def run_cell(cell: Cell, context: StudyContext) -> list[Row]:
    """The cell's rows, computed now or read back from a finished cell."""
    directory = cell.directory(context.out)
    done = directory / ROWS_FILENAME
    if done.is_file():
        return [Row(**row) for row in json.loads(done.read_text(encoding="utf-8"))]
    directory.mkdir(parents=True, exist_ok=True)
    rows = _METHODS[cell.method](cell, context, directory)
    done.write_text(json.dumps([asdict(row) for row in rows], indent=1) + "\n", encoding="utf-8")
    return rows


def _sft_settings(settings: StudySettings, seed: int, run_name: str, *, warmup: bool) -> Any:
    """One SFT stage of a cell: stage 1 (``warmup``) or stage 2, as the quickstart's two stages."""
    from agentdistill.distill.sft.settings import SFTSettings

    steps = settings.sft_warmup_steps if warmup else settings.sft_steps
    return SFTSettings(
        learning_rate=settings.sft_warmup_learning_rate if warmup else settings.sft_learning_rate,
        max_steps=steps,
        per_device_batch_size=settings.sft_warmup_batch_size if warmup else settings.sft_batch_size,
        gradient_accumulation_steps=1,  # a step is one batch: the paper's accumulation is for 7B students on GPUs
        max_length=4096,
        lora=False,
        warmup_ratio=0.02 if warmup else 0.05,
        lr_scheduler="cosine",
        weight_decay=0.0,
        seed=seed,
        logging_steps=max(1, steps // 10),
        save_strategy="steps",
        save_steps=max(1, steps // 2),
        save_total_limit=1,
        lm_head="full",
        bf16=False,
        gradient_checkpointing=False,  # recomputing activations only slows a model this small down
        wandb_project=settings.wandb_project,
        wandb_run_name=f"{run_name}-warmup" if warmup else run_name,
    )


def _trained(cell: Cell, context: StudyContext, dataset: Any, model_dir: Path) -> Path:
    """The cell's student after SFT on ``dataset``: stage 1 without the system prompt into ``model_dir`` +
    ``_warmup`` (skipped when ``sft_warmup_steps`` is 0), then stage 2 as the student sees its conversations."""
    from agentdistill.distill.sft.conversations import without_system_prompt
    from agentdistill.distill.sft.launch import run_sft

    settings = context.settings
    run_name = f"{cell.method}-{cell.student}-{cell.seed}"
    start = context.students[(cell.student, cell.seed)]
    if settings.sft_warmup_steps:
        warmup_dir = model_dir.with_name(f"{model_dir.name}_warmup")
        if not (warmup_dir / "sft_result.json").is_file():
            stage = _sft_settings(settings, cell.seed, run_name, warmup=True)
            run_sft(without_system_prompt(dataset), str(start), warmup_dir, settings=stage)
        start = warmup_dir
    if not (model_dir / "sft_result.json").is_file():
        run_sft(dataset, str(start), model_dir, settings=_sft_settings(settings, cell.seed, run_name, warmup=False))
    return model_dir


def agent_model(context: StudyContext, student: str, seed: int) -> Path:
    """The agent student of ``(student, seed)`` (trained by its ``agent`` cell)."""
    return _trained(
        Cell("agent", student, seed),
        context,
        context.data.agent,
        Cell("agent", student, seed).directory(context.out) / "model",
    )


def _agent_rows(
    cell: Cell, context: StudyContext, model: Path, out: Path, env_ids: tuple[str, ...] = ENV_IDS, *, sag: bool = False
) -> list[Row]:
    from agentdistill.policies.base import SamplingParams
    from agentdistill.rollouts.evaluate import evaluate
    from agentdistill.rollouts.loop import SAGSettings

    settings = context.settings
    sag_settings = (
        SAGSettings(n=settings.sag_n, temperature=settings.sag_temperature, top_p=settings.sag_top_p) if sag else None
    )
    table = evaluate(
        f"hf:{model}",
        env_ids,
        env_kwargs_by_env={env: agent_env_kwargs(settings, env, "test") for env in env_ids},
        limit=settings.eval_tasks,
        sag_n=settings.sag_n if sag else 0,
        sag_settings=sag_settings,
        num_envs=settings.num_envs,
        out_dir=out,
        progress=False,
        sampling=SamplingParams(max_new_tokens=settings.max_new_tokens, seed=cell.seed),
    )
    return [
        Row(
            cell.method,
            cell.student,
            row.env_id,
            cell.seed,
            row.accuracy,
            row.invalid_action_rate,
            row.mean_steps,
            row.episodes,
        )
        for row in table.rows
    ]


def _agent(cell: Cell, context: StudyContext, directory: Path) -> list[Row]:
    return _agent_rows(cell, context, agent_model(context, cell.student, cell.seed), directory / "eval")


def _agent_sag(cell: Cell, context: StudyContext, directory: Path) -> list[Row]:
    return _agent_rows(cell, context, agent_model(context, cell.student, cell.seed), directory / "eval", sag=True)


def _env_training_settings(settings_class: type, context: StudyContext, env_id: str, seed: int, steps: int) -> Any:
    settings = context.settings
    return settings_class(
        env_kwargs={key: value for key, value in agent_env_kwargs(settings, env_id, "train").items() if key != "split"},
        train_tasks=max(settings.teacher_episodes, 8),
        train_task_offset=settings.teacher_episodes,
        eval_tasks=0,
        num_envs=settings.num_envs,
        group_size=settings.rl_group_size,
        prompts_per_step=settings.rl_prompts_per_step,
        max_steps=steps,
        learning_rate=settings.rl_learning_rate,
        max_new_tokens=settings.max_new_tokens,
        lora=False,
        bf16=False,
        save_steps=max(1, steps // 2),
        seed=seed,
        invalid_action_penalty=0.1,
        wandb_project=settings.wandb_project,
        wandb_run_name=None,
    )


def _agent_grpo(cell: Cell, context: StudyContext, directory: Path) -> list[Row]:
    from agentdistill.distill.grpo.settings import GRPOSettings
    from agentdistill.distill.grpo.train import train_grpo

    start = agent_model(context, cell.student, cell.seed)
    rows = []
    for env_id in ENV_IDS:
        model = directory / env_id
        settings = _env_training_settings(GRPOSettings, context, env_id, cell.seed, context.settings.grpo_steps)
        if not (model / "rl_result.json").is_file():
            train_grpo(env_id, f"hf:{start}", model, settings, progress=False)
        rows.extend(_agent_rows(cell, context, model, directory / "eval" / env_id, (env_id,)))
    return rows


def _agent_opd(cell: Cell, context: StudyContext, directory: Path) -> list[Row]:
    from agentdistill.distill.opd.settings import OPDSettings
    from agentdistill.distill.opd.train import train_opd

    start = agent_model(context, cell.student, cell.seed)
    teacher = agent_model(context, context.settings.student_names()[-1], cell.seed)
    rows = []
    for env_id in ENV_IDS:
        model = directory / env_id
        settings = _env_training_settings(OPDSettings, context, env_id, cell.seed, context.settings.opd_steps)
        settings = settings.replace(teacher_prompt_variant="short", invalid_action_penalty=0.0)
        if not (model / "opd_result.json").is_file():
            train_opd(env_id, f"hf:{start}", f"hf:{teacher}", model, settings, progress=False)
        rows.extend(_agent_rows(cell, context, model, directory / "eval" / env_id, (env_id,)))
    return rows


def _cot_rows(cell: Cell, context: StudyContext, model: Path, directory: Path, *, rag: bool) -> list[Row]:
    from agentdistill.distill.cot import evaluate_cot
    from agentdistill.policies.base import SamplingParams

    settings = context.settings
    rows = []
    for env_id in ENV_IDS:
        result = evaluate_cot(
            f"hf:{model}",
            env_id,
            {"split": "test", **settings.difficulty(env_id)},
            limit=settings.eval_tasks,
            rag=rag and env_id == QA_ENV_ID,
            out_dir=directory / "eval" / env_id,
            sampling=SamplingParams(max_new_tokens=4 * settings.max_new_tokens),
        )
        rows.append(Row(cell.method, cell.student, env_id, cell.seed, result.accuracy, None, None, result.episodes))
    return rows


def _cot(cell: Cell, context: StudyContext, directory: Path) -> list[Row]:
    return _cot_rows(
        cell, context, _trained(cell, context, context.data.cot, directory / "model"), directory, rag=False
    )


def _cot_rag(cell: Cell, context: StudyContext, directory: Path) -> list[Row]:
    return _cot_rows(
        cell, context, _trained(cell, context, context.data.cot_rag, directory / "model"), directory, rag=True
    )


_METHODS = MappingProxyType(
    {
        "agent": _agent,
        "agent_sag": _agent_sag,
        "agent_grpo": _agent_grpo,
        "agent_opd": _agent_opd,
        "cot": _cot,
        "cot_rag": _cot_rag,
    }
)
"""Each method's cell: ``(cell, context, directory) -> rows``."""
