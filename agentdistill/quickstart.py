"""The quickstart: a teacher acts, a small student learns from it, the student acts on its own, on a laptop CPU.

``agentdistill quickstart --out DIR`` runs the whole idea of the package end to end with nothing to download:

1. **Teacher.** The scripted experts of ``AgentQA-Synthetic-v0`` and ``AgentMath-Synthetic-v0`` solve training
   tasks through the rollout loop, each episode opening with a first-thought prefix (FTP) taken from the expert's
   own chain-of-thought answer, as the paper's teacher does.
2. **Data.** The episodes are filtered and converted to student conversations with the paper's rules
   (:func:`~agentdistill.distill.sft.trajectories.trajectories_to_dataset`: short system prompt, final observation dropped).
3. **Student.** A byte-level BPE tokenizer is trained on that data and a small Qwen2-architecture model is built
   from scratch (:mod:`~agentdistill.distill.students`), then fine-tuned by the real SFT path (TRL, loss on the
   student's own turns, W&B offline).
4. **Evaluation.** On held-out tasks (the envs' ``"test"`` split, disjoint from training): the teacher, the
   student greedy, and the student with SAG. Success rate, invalid-action rate and mean steps go to
   ``DIR/results.json`` and ``DIR/results.png``.

Why the tasks are easier than the envs' defaults (2-3 hops, 2-3 arithmetic steps): a student built from scratch
has to learn, in a few CPU minutes, to copy entity names and numbers out of questions and observations. On one-hop
questions and one- or two-step problems it gets there; measured with the same budget on 1-2 hops, it answered
1-hop questions but none of the 2-hop ones, where the observation holds two documents full of look-alike names.
The difficulty is recorded in ``results.json`` and printed under the table, so nobody mistakes one for the other.

Everything lives under ``DIR``, and a rerun resumes: trajectory files keep their finished episodes, a trained
student is reused (an interrupted SFT run resumes from its last checkpoint), and evaluation files resume too::

    DIR/teacher/<env id>.ftp.json       first-thought prefixes       DIR/sft_data.jsonl     student conversations
    DIR/teacher/<env id>.jsonl          teacher trajectories         DIR/student_init/      tokenizer + random model
    DIR/student/                        the trained student (hf:DIR/student), its checkpoints and W&B run
    DIR/eval/{teacher,student,student_sag}/   held-out trajectories and per-policy result tables
    DIR/results.json  DIR/results.md  DIR/results.png  DIR/quickstart_settings.json
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from agentdistill.distill.sft.settings import SFTResult, SFTSettings
from agentdistill.distill.students import QUICKSTART, StudentConfig

if TYPE_CHECKING:
    from datasets import Dataset

    from agentdistill.distill.sft.trajectories import FilterReport
    from agentdistill.rollouts.evaluate import ResultsTable

logger = logging.getLogger(__name__)

QA_ENV_ID = "AgentQA-Synthetic-v0"
MATH_ENV_ID = "AgentMath-Synthetic-v0"
ENV_IDS: tuple[str, ...] = (QA_ENV_ID, MATH_ENV_ID)
WANDB_PROJECT = "agentdistill-quickstart"
POLICY_KEYS: tuple[str, ...] = ("teacher", "student", "student_sag")
"""The rows of the results table, in order (also the keys of ``results.json``)."""

TEACHER_ENVS = 4
"""Envs stepped together for the scripted teacher. It answers at once, so more envs would not go faster, and each
math env starts a sandbox that imports numpy and sympy; the student generates for ``num_envs`` envs in one batch."""

SETTINGS_FILENAME = "quickstart_settings.json"
RESULTS_FILENAME = "results.json"
CHART_FILENAME = "results.png"
TABLE_FILENAME = "results.md"
_INIT_FINGERPRINT = "quickstart_student.json"

Log = Callable[[str], None]

QUICKSTART_SFT_WARMUP = SFTSettings(
    learning_rate=3e-3,
    epochs=1,
    max_steps=800,
    per_device_batch_size=32,
    gradient_accumulation_steps=1,
    max_length=768,
    lora=False,
    warmup_ratio=0.02,
    lr_scheduler="cosine",
    weight_decay=0.0,
    seed=0,
    logging_steps=50,
    save_strategy="steps",
    save_steps=200,
    save_total_limit=1,
    packing=False,
    lm_head="full",
    bf16=False,
    gradient_checkpointing=False,
    wandb_project=WANDB_PROJECT,
    wandb_run_name="quickstart-student-warmup",
)
"""Stage 1 of the quickstart's SFT (``configs/distill/sft_quickstart_warmup.yaml``), on conversations without their
system prompt: full fine-tuning of a random model at a high learning rate with a short warm-up and cosine decay,
fp32, no activation checkpointing (it only slows a tiny model down), the loss from the full logits (TRL's fused LM
head took 45% of a step for this 1,025-token vocabulary; with ``lm_head="full"`` a step takes 22% less time),
checkpoints so an interrupted run resumes.

Batches of 32: a step of this model costs mostly fixed overhead, so 32 conversations take 1.25x the time of 16
(measured: 3.3 vs 4.2 steps/s here, 13.9k vs 10.2k tokens/s). 800 steps of 32 (about 17 passes over the data)
gave 68% held-out success where 1,000 steps of 16 gave 48%, in less time; 720 steps of 32 gave 58.5% (both with
the fused head). More distinct teacher episodes instead of more passes did not help: 4,500 episodes at 1,000 x 16
gave 27%."""

QUICKSTART_SFT = QUICKSTART_SFT_WARMUP.replace(
    learning_rate=1e-3,
    max_steps=100,
    per_device_batch_size=16,
    warmup_ratio=0.05,
    logging_steps=25,
    save_steps=50,
    wandb_run_name="quickstart-student",
)
"""Stage 2 of the quickstart's SFT (``configs/distill/sft_quickstart.yaml``): the same, continued on the
conversations exactly as the student sees them (short system prompt included) at a lower learning rate.

100 steps of 16: from the same stage 1, 150 steps gave 76% greedy and 75% with SAG, invalid actions 0.2% in both
(one action, which all 8 SAG samples repeated); 100 steps gave 71% greedy with 3.8% invalid actions and 72% with SAG
at 0.2%, in 35 s less."""


def _frozen(mapping: Mapping[str, int]) -> Mapping[str, int]:
    return MappingProxyType(dict(mapping))


@dataclass(frozen=True)
class QuickstartSettings:
    """Every knob of a quickstart run. :meth:`full` is the README's run; :meth:`quick` is the CI plumbing check.

    Args:
        qa_difficulty: ``AgentQA-Synthetic-v0`` constructor arguments (``min_hops``, ``max_hops``,
            ``num_distractors``) for both training and held-out tasks.
        math_difficulty: ``AgentMath-Synthetic-v0`` constructor arguments (``min_ops``, ``max_ops``).
        qa_teacher_episodes, math_teacher_episodes: training tasks the teacher solves in each env. Math gets twice
            QA's share: copying multi-digit numbers (dropping their thousands separators) takes the student longer
            to learn than copying names, and measured with equal shares the digits were the last thing learnt.
        eval_episodes: held-out tasks each policy is evaluated on, per env.
        num_envs: envs stepped together (the batch the student generates for).
        student: the scratch student's shape.
        vocab_size: bound of the student's tokenizer vocabulary.
        sft_warmup: the first SFT stage, on the conversations without their system prompt (``None``: skip it;
            see :func:`distill_student`).
        sft: the second SFT stage, on the conversations exactly as the student sees them.
        sag_n: SAG candidates per step (the paper's 8; temperature 0.4, top-p 0.8).
        max_new_tokens: tokens per student action (the teacher's longest is 70 with the quickstart's tokenizer).
        seed: seeds the student's initial weights and SAG's sampling.
    """

    qa_difficulty: Mapping[str, int] = field(default_factory=lambda: _frozen({"min_hops": 1, "max_hops": 1}))
    math_difficulty: Mapping[str, int] = field(default_factory=lambda: _frozen({"min_ops": 1, "max_ops": 2}))
    qa_teacher_episodes: int = 500
    math_teacher_episodes: int = 1000
    eval_episodes: int = 100
    num_envs: int = 16
    student: StudentConfig = QUICKSTART
    vocab_size: int = 1024
    sft_warmup: SFTSettings | None = QUICKSTART_SFT_WARMUP
    sft: SFTSettings = QUICKSTART_SFT
    sag_n: int = 8
    max_new_tokens: int = 96
    seed: int = 0

    def __post_init__(self) -> None:
        for name in (
            "qa_teacher_episodes",
            "math_teacher_episodes",
            "eval_episodes",
            "num_envs",
            "vocab_size",
            "max_new_tokens",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if isinstance(self.sag_n, bool) or not isinstance(self.sag_n, int) or self.sag_n < 2:
            raise ValueError(f"sag_n must be an int >= 2 (SAG votes among candidates), got {self.sag_n!r}")
        object.__setattr__(self, "qa_difficulty", _frozen(self.qa_difficulty))
        object.__setattr__(self, "math_difficulty", _frozen(self.math_difficulty))
        _check_difficulty(self.qa_difficulty, self.math_difficulty)

    @classmethod
    def full(cls) -> QuickstartSettings:
        """The README's run: a student that really learns, in under 10 minutes on 2 CPU cores (356 s measured, plus
        about 45 s of install on a bare clone)."""
        return cls()

    @classmethod
    def quick(cls) -> QuickstartSettings:
        """A plumbing check for CI (about a minute): every phase runs, on a few episodes; nothing is learnt."""
        return cls(
            qa_teacher_episodes=12,
            math_teacher_episodes=12,
            eval_episodes=4,
            num_envs=2,
            student=StudentConfig(
                hidden_size=64,
                num_layers=1,
                num_heads=2,
                num_kv_heads=1,
                intermediate_size=128,
                max_position_embeddings=1024,
            ),
            vocab_size=512,
            sft_warmup=QUICKSTART_SFT_WARMUP.replace(
                max_steps=4, per_device_batch_size=4, logging_steps=2, save_steps=2
            ),
            sft=QUICKSTART_SFT.replace(max_steps=4, per_device_batch_size=4, logging_steps=2, save_steps=2),
            sag_n=2,
            max_new_tokens=24,
        )

    def teacher_episodes(self, env_id: str) -> int:
        """How many training tasks the teacher solves in ``env_id``."""
        return self.qa_teacher_episodes if env_id == QA_ENV_ID else self.math_teacher_episodes

    def difficulty(self, env_id: str) -> Mapping[str, int]:
        """The difficulty arguments of ``env_id``."""
        if env_id == QA_ENV_ID:
            return self.qa_difficulty
        if env_id == MATH_ENV_ID:
            return self.math_difficulty
        raise ValueError(f"the quickstart runs {', '.join(ENV_IDS)}, not {env_id!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain values, as ``quickstart_settings.json`` and ``results.json`` hold them."""
        return {
            "qa_difficulty": dict(self.qa_difficulty),
            "math_difficulty": dict(self.math_difficulty),
            "qa_teacher_episodes": self.qa_teacher_episodes,
            "math_teacher_episodes": self.math_teacher_episodes,
            "eval_episodes": self.eval_episodes,
            "num_envs": self.num_envs,
            "student": dataclasses.asdict(self.student),
            "vocab_size": self.vocab_size,
            "sft_warmup": self.sft_warmup.to_dict() if self.sft_warmup is not None else None,
            "sft": self.sft.to_dict(),
            "sag_n": self.sag_n,
            "max_new_tokens": self.max_new_tokens,
            "seed": self.seed,
        }


def _check_difficulty(qa: Mapping[str, int], math: Mapping[str, int]) -> None:
    """Check the difficulty arguments now, with the envs' own rules, rather than in the first env built."""
    import inspect

    from agentdistill.envs.synthetic.envs import check_math_difficulty, check_qa_difficulty

    for name, given, check in (
        ("qa_difficulty", qa, check_qa_difficulty),
        ("math_difficulty", math, check_math_difficulty),
    ):
        known = set(inspect.signature(check).parameters)
        unknown = sorted(set(given) - known)
        if unknown:
            raise ValueError(f"{name}: unknown argument(s) {unknown}; known: {sorted(known)}")
        check(**given)


@dataclass(frozen=True)
class PolicyResult:
    """One row of the table: figures over both envs' held-out episodes, and per env.

    ``success_rate``, ``invalid_action_rate`` and ``mean_steps`` are unweighted means over the two envs (each
    env runs the same number of episodes, so they are also the means over all episodes).
    """

    label: str
    policy: str
    success_rate: float
    invalid_action_rate: float
    mean_steps: float
    episodes: int
    sag_n: int
    per_env: Mapping[str, Mapping[str, float]]

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "per_env": {key: dict(value) for key, value in self.per_env.items()}}


@dataclass(frozen=True)
class QuickstartResult:
    """What a run produced and where it put it."""

    out_dir: Path
    rows: Mapping[str, PolicyResult]
    """``teacher``, ``student``, ``student_sag``."""
    results_path: Path
    chart_path: Path
    table_path: Path
    student_dir: Path
    wandb_run_dirs: tuple[Path, ...]
    """The W&B run of each SFT stage (offline unless the user set ``WANDB_MODE``)."""
    sft_stages: tuple[StageResult, ...]
    filter_report: FilterReport
    timings: Mapping[str, float]
    settings: QuickstartSettings

    @property
    def trained_now(self) -> bool:
        """Whether any SFT stage ran in this invocation (False when a trained student was reused)."""
        return any(stage.trained_now for stage in self.sft_stages)

    def table(self) -> str:
        """The results as an aligned text table (the CLI prints it)."""
        return format_table(self.rows, self.settings)


# --------------------------------------------------------------------------------------------------------- phases


def collect_teacher(
    out_dir: Path, settings: QuickstartSettings, *, progress: bool = True, log: Log = logger.info
) -> list[Path]:
    """Phase 1: the scripted teacher solves training tasks of both envs, each opening with an FTP first thought.

    The prefixes come from the expert's own chain-of-thought answer (:func:`~agentdistill.rollouts.ftp.build_prefixes`)
    and are saved next to the trajectories, so a rerun reuses them; the trajectory files resume by themselves.
    """
    import gymnasium as gym

    import agentdistill  # noqa: F401 - registers the env ids
    from agentdistill.policies.expert import ExpertPolicy
    from agentdistill.rollouts.ftp import build_prefixes, load_prefixes, save_prefixes
    from agentdistill.rollouts.loop import make_rollout_envs, run_rollouts

    teacher = ExpertPolicy(seed=settings.seed)
    files = []
    for env_id in ENV_IDS:
        difficulty = dict(settings.difficulty(env_id))
        tasks = range(settings.teacher_episodes(env_id))
        ftp_path = out_dir / "teacher" / f"{env_id}.ftp.json"
        if ftp_path.exists():
            prefixes = load_prefixes(ftp_path)
        else:
            env = gym.make(env_id, split="train", **difficulty)
            try:
                prefixes = build_prefixes(env, teacher, tasks, progress=progress)
            finally:
                env.close()
            save_prefixes(prefixes, ftp_path)
        path = out_dir / "teacher" / f"{env_id}.jsonl"
        envs = make_rollout_envs(env_id, min(TEACHER_ENVS, settings.num_envs), split="train", **difficulty)
        try:
            summary = run_rollouts(
                envs,
                teacher,
                env_id=env_id,
                task_indices=tasks,
                out=str(path),
                ftp_prefixes=prefixes,
                progress=progress,
            )
        finally:
            envs.close()
        log(f"teacher on {env_id}: {summary.episodes} new episodes, {summary.skipped} already in {path}")
        files.append(path)
    return files


def build_sft_data(files: Sequence[Path], out_dir: Path, *, log: Log = logger.info) -> tuple[Dataset, FilterReport]:
    """Phase 2: filter the teacher's episodes and convert them to student conversations (short system prompt).

    The conversations are also written to ``out_dir/sft_data.jsonl``, the format ``agentdistill distill`` and
    ``python -m agentdistill.distill.sft --dataset`` read.
    """
    from agentdistill.distill.sft.trajectories import trajectories_to_dataset

    dataset, report = trajectories_to_dataset([str(path) for path in files], system_prompt_variant="short")
    log(f"SFT data: {report.summary()}")
    if len(dataset) == 0:
        raise RuntimeError("no teacher episode passed the filters: nothing to train the student on")
    dataset.select_columns(["messages"]).to_json(str(out_dir / "sft_data.jsonl"))
    return dataset, report


def build_initial_student(
    dataset: Dataset, out_dir: Path, settings: QuickstartSettings, *, log: Log = logger.info
) -> Path:
    """Phase 3a: a tokenizer trained on the conversations and a randomly initialised Qwen2 student over it.

    Written once to ``out_dir/student_init`` with a fingerprint of what made it (shape, vocabulary bound, seed,
    a hash of the texts); a rerun on the same data reuses it, so a resumed SFT run keeps its tokenizer.
    """
    from agentdistill.distill.students import build_student, count_parameters, save_student, train_tokenizer

    path = out_dir / "student_init"
    texts = [message["content"] for messages in dataset["messages"] for message in messages]
    fingerprint = {
        "student": dataclasses.asdict(settings.student),
        "vocab_size": settings.vocab_size,
        "seed": settings.seed,
        "texts_sha256": hashlib.sha256("\x00".join(texts).encode("utf-8")).hexdigest(),
    }
    marker = path / _INIT_FINGERPRINT
    if marker.is_file():
        if json.loads(marker.read_text(encoding="utf-8")) == fingerprint:
            return path
        raise ValueError(
            f"{path} holds a student built from other data or settings; use a fresh --out directory "
            "(or delete it to start over)"
        )
    tokenizer = train_tokenizer(texts, vocab_size=settings.vocab_size)
    model = build_student(tokenizer, settings.student, seed=settings.seed)
    save_student(model, tokenizer, path)
    marker.write_text(json.dumps(fingerprint) + "\n", encoding="utf-8")
    log(f"student built from scratch: {count_parameters(model):,} parameters, vocabulary {len(tokenizer):,}")
    return path


@dataclass(frozen=True)
class StageResult:
    """One SFT stage of the student: where it went, what it did, and whether it ran in this invocation."""

    name: str
    result: SFTResult
    trained_now: bool


def distill_student(
    dataset: Dataset, init_dir: Path, out_dir: Path, settings: QuickstartSettings, *, log: Log = logger.info
) -> list[StageResult]:
    """Phase 3b: SFT of the initial student (TRL, assistant turns only, W&B offline), in two stages.

    What the student must learn is to copy: entity names and numbers from the question and the observations into
    its thoughts and code. Everything else is template text it picks up in a few dozen steps. Copying needs
    attention circuits that form abruptly after a while, and measured on 2 CPU cores they form about three
    times sooner per CPU-second on conversations without the 240-token system prompt (which is the same in every
    conversation of an env, so it teaches nothing, but more than doubles the tokens per step and dilutes
    attention). So stage 1 (``settings.sft_warmup``, into ``out_dir/student_warmup``) trains on the conversations
    without it, and stage 2 (``settings.sft``, into ``out_dir/student``) continues from there on the
    conversations exactly as the student sees them when it acts: short system prompt included. Set
    ``sft_warmup=None`` for a single stage.

    A stage whose directory holds its ``sft_result.json`` is reused as is; an interrupted stage resumes from its
    last checkpoint.
    """
    from agentdistill.distill.sft.conversations import without_system_prompt
    from agentdistill.distill.sft.settings import RESULT_FILENAME
    from agentdistill.distill.sft.train import train_sft

    stages: list[tuple[str, Dataset, SFTSettings]] = []
    if settings.sft_warmup is not None:
        stages.append(("student_warmup", without_system_prompt(dataset), settings.sft_warmup))
    stages.append(("student", dataset, settings.sft))
    results = []
    start = init_dir
    for name, data, stage_settings in stages:
        directory = out_dir / name
        result_path = directory / RESULT_FILENAME
        if result_path.is_file():
            log(f"{name} already trained: reusing {directory} (delete it to train again)")
            results.append(StageResult(name, SFTResult.from_json(result_path), trained_now=False))
        else:
            with _offline_wandb():
                result = train_sft(data, str(start), directory, stage_settings)
            loss = f"{result.losses[-1]:.3f}" if result.losses else "n/a"
            log(f"{name}: {result.global_step} steps in {result.runtime_seconds:.0f} s, last loss {loss}")
            results.append(StageResult(name, result, trained_now=True))
        start = directory
    return results


def evaluate_policies(
    student_dir: Path, out_dir: Path, settings: QuickstartSettings, *, progress: bool = True, log: Log = logger.info
) -> dict[str, PolicyResult]:
    """Phase 4: teacher, student greedy and student with SAG on the same held-out tasks (the ``"test"`` split).

    All three run in envs with the student's short system prompt (the scripted teacher ignores prompts), through
    :func:`~agentdistill.rollouts.evaluate.evaluate`, which resumes each policy's trajectory files.
    """
    import agentdistill  # noqa: F401 - registers the env ids
    from agentdistill.policies.base import SamplingParams
    from agentdistill.policies.expert import ExpertPolicy
    from agentdistill.policies.hf import HFPolicy
    from agentdistill.rollouts.evaluate import evaluate

    env_kwargs = {
        env_id: {"split": "test", "prompt_variant": "short", **settings.difficulty(env_id)} for env_id in ENV_IDS
    }
    common: dict[str, Any] = {"env_kwargs_by_env": env_kwargs, "limit": settings.eval_episodes, "progress": progress}
    tables: dict[str, ResultsTable] = {}
    tables["teacher"] = evaluate(
        ExpertPolicy(seed=settings.seed),
        ENV_IDS,
        out_dir=out_dir / "eval" / "teacher",
        num_envs=min(TEACHER_ENVS, settings.num_envs),
        **common,
    )
    common["num_envs"] = settings.num_envs
    student = HFPolicy(student_dir, name="student", max_batch_size=settings.num_envs)
    try:
        greedy = SamplingParams(max_new_tokens=settings.max_new_tokens)
        tables["student"] = evaluate(student, ENV_IDS, out_dir=out_dir / "eval" / "student", sampling=greedy, **common)
        tables["student_sag"] = evaluate(
            student,
            ENV_IDS,
            out_dir=out_dir / "eval" / "student_sag",
            sampling=SamplingParams(max_new_tokens=settings.max_new_tokens, seed=settings.seed),
            sag_n=settings.sag_n,
            **common,
        )
    finally:
        student.close()
    labels = {
        "teacher": "teacher (scripted expert)",
        "student": "student, greedy",
        "student_sag": f"student + SAG (N={settings.sag_n})",
    }
    rows = {key: _policy_result(labels[key], table) for key, table in tables.items()}
    for key, row in rows.items():
        log(f"{labels[key]}: success {row.success_rate:.1%}, invalid actions {row.invalid_action_rate:.1%}")
    return rows


def _policy_result(label: str, table: ResultsTable) -> PolicyResult:
    overall = table.averages()["all"]
    per_env = {
        row.env_id: {
            "success_rate": row.accuracy,
            "invalid_action_rate": row.invalid_action_rate or 0.0,
            "mean_steps": row.mean_steps or 0.0,
            "episodes": float(row.episodes),
        }
        for row in table.rows
    }
    return PolicyResult(
        label=label,
        policy=table.policy,
        success_rate=float(overall["accuracy"] or 0.0),
        invalid_action_rate=float(overall["invalid_action_rate"] or 0.0),
        mean_steps=float(overall["mean_steps"] or 0.0),
        episodes=sum(row.episodes for row in table.rows),
        sag_n=table.sag_n,
        per_env=per_env,
    )


# -------------------------------------------------------------------------------------------------------- outputs


def format_table(rows: Mapping[str, PolicyResult], settings: QuickstartSettings) -> str:
    """The three rows (overall and per env) as aligned text, with the tasks' difficulty underneath."""
    header = (
        f"{'':28} {'success':>8} {'invalid actions':>16} {'mean steps':>11}   {'QA success':>10} {'math success':>12}"
    )
    lines = [header, "-" * len(header)]
    for key in POLICY_KEYS:
        row = rows[key]
        qa = row.per_env.get(QA_ENV_ID, {}).get("success_rate", 0.0)
        math = row.per_env.get(MATH_ENV_ID, {}).get("success_rate", 0.0)
        lines.append(
            f"{row.label:28} {row.success_rate:>8.1%} {row.invalid_action_rate:>16.1%} {row.mean_steps:>11.2f}   "
            f"{qa:>10.1%} {math:>12.1%}"
        )
    lines.append(describe_tasks(settings))
    return "\n".join(lines)


def describe_tasks(settings: QuickstartSettings) -> str:
    """Which held-out tasks the figures are on, and how they compare with the envs' defaults (2-3 of each)."""

    def span(low: int, high: int, unit: str) -> str:
        return f"{low} {unit}" if low == high else f"{low}-{high} {unit}s"

    qa, math = settings.qa_difficulty, settings.math_difficulty
    hops = span(qa.get("min_hops", 2), qa.get("max_hops", 3), "hop")
    ops = span(math.get("min_ops", 2), math.get("max_ops", 3), "arithmetic step")
    return (
        f"Held-out tasks: {settings.eval_episodes} per env, QA with {hops}, math with {ops}: the quickstart's easier "
        "setting (the envs default to 2-3 of each)."
    )


def write_results(
    out_dir: Path,
    rows: Mapping[str, PolicyResult],
    *,
    settings: QuickstartSettings,
    extra: Mapping[str, Any],
) -> tuple[Path, Path, Path]:
    """``results.json`` (one object per policy, plus the settings and run facts), ``results.md`` and the chart."""
    data: dict[str, Any] = {key: rows[key].to_dict() for key in POLICY_KEYS}
    data["settings"] = settings.to_dict()
    data.update(extra)
    results_path = out_dir / RESULTS_FILENAME
    results_path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    table_path = out_dir / TABLE_FILENAME
    table_path.write_text("```\n" + format_table(rows, settings) + "\n```\n", encoding="utf-8")
    chart_path = plot_results(rows, out_dir / CHART_FILENAME)
    return results_path, table_path, chart_path


def plot_results(rows: Mapping[str, PolicyResult], path: Path) -> Path:
    """Two bar charts side by side: success rate and invalid-action rate, per env and overall, per policy."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    groups = [("QA", QA_ENV_ID), ("math", MATH_ENV_ID), ("overall", None)]
    colours = {"teacher": "#8C8C8C", "student": "#4C72B0", "student_sag": "#DD8452"}
    figure = Figure(figsize=(10, 4), layout="constrained")
    FigureCanvasAgg(figure)  # no display and no global pyplot state
    width = 0.8 / len(POLICY_KEYS)
    for panel, (metric, title) in enumerate(
        (("success_rate", "success rate (%)"), ("invalid_action_rate", "invalid actions (%)"))
    ):
        axes = figure.add_subplot(1, 2, panel + 1)
        highest = 0.0
        for offset, key in enumerate(POLICY_KEYS):
            row = rows[key]
            values = [
                100 * float(row.per_env.get(env_id, {}).get(metric, 0.0) if env_id else getattr(row, metric))
                for _, env_id in groups
            ]
            highest = max(highest, *values)
            positions = [index + (offset - 1) * width for index in range(len(groups))]
            bars = axes.bar(positions, values, width=width, color=colours[key], label=row.label)
            decimals = 0 if metric == "success_rate" else 1  # invalid-action rates are often a few tenths of a %
            axes.bar_label(bars, labels=[f"{value:.{decimals}f}" for value in values], fontsize=7)
        axes.set_xticks(range(len(groups)), [name for name, _ in groups])
        # Success spans 0-100; invalid-action rates are small, so that panel is scaled to its largest bar.
        axes.set_ylim(0, 110 if metric == "success_rate" else max(5.0, 1.25 * highest))
        axes.set_title(title, fontsize=10)
        if panel == 0:
            handles, labels = axes.get_legend_handles_labels()
    figure.legend(handles, labels, loc="outside lower center", ncols=len(POLICY_KEYS), fontsize=9, frameon=False)
    figure.suptitle("agentdistill quickstart: held-out synthetic tasks", fontsize=11)
    figure.savefig(path, dpi=110)
    return path


def wandb_run_dir(student_dir: Path) -> Path | None:
    """The newest W&B run directory the SFT run wrote under ``student_dir/wandb`` (offline or synced)."""
    runs = sorted(
        (path for path in (student_dir / "wandb").glob("**/*run-*") if path.is_dir() and path.name != "latest-run"),
        key=lambda path: path.stat().st_mtime,
    )
    return runs[-1] if runs else None


# ------------------------------------------------------------------------------------------------------- the run


def run_quickstart(
    out_dir: str | os.PathLike[str],
    *,
    quick: bool = False,
    settings: QuickstartSettings | None = None,
    progress: bool = True,
    log: Log = logger.info,
) -> QuickstartResult:
    """Run (or resume) the quickstart into ``out_dir`` and return its results (see the module docstring).

    Args:
        out_dir: where everything goes; a directory of an earlier run is resumed.
        quick: the CI plumbing check (:meth:`QuickstartSettings.quick`) instead of the full run.
        settings: explicit settings (overrides ``quick``).
        progress: show progress bars (rollouts, training, evaluation).
        log: receives one line per phase (the CLI prints them; the default logs at INFO).

    Raises:
        ValueError: ``out_dir`` holds a run made with other settings.
    """
    settings = settings or (QuickstartSettings.quick() if quick else QuickstartSettings.full())
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    _check_settings_file(out, settings)
    load_before = _load_average()
    timings: dict[str, float] = {}

    with _timed(timings, "teacher_rollouts_s"):
        log("[1/4] teacher rollouts with first-thought prefixes")
        files = collect_teacher(out, settings, progress=progress, log=log)
    with _timed(timings, "sft_data_s"):
        log("[2/4] filtering and converting to SFT conversations")
        dataset, report = build_sft_data(files, out, log=log)
    with _timed(timings, "student_sft_s"):
        log("[3/4] building a student from scratch and distilling it (TRL SFT, W&B offline)")
        init_dir = build_initial_student(dataset, out, settings, log=log)
        stages = distill_student(dataset, init_dir, out, settings, log=log)
    student_dir = out / "student"
    with _timed(timings, "evaluation_s"):
        log("[4/4] evaluating teacher, student and student + SAG on held-out tasks")
        rows = evaluate_policies(student_dir, out, settings, progress=progress, log=log)
    timings["total_s"] = sum(timings.values())

    run_dirs = tuple(run_dir for stage in stages if (run_dir := wandb_run_dir(out / stage.name)) is not None)
    extra = {
        "quick": quick,
        "timings_s": timings,
        "load_average": {"start": load_before, "end": _load_average()},
        "cpu_count": os.cpu_count(),
        "student_dir": str(student_dir),
        "student_parameters": _parameter_count(student_dir),
        "sft_stages": [
            {
                "name": stage.name,
                "steps": stage.result.global_step,
                "examples": stage.result.num_examples,
                "final_loss": stage.result.losses[-1] if stage.result.losses else None,
                "runtime_s": round(stage.result.runtime_seconds, 1),
                "trained_now": stage.trained_now,
            }
            for stage in stages
        ],
        "teacher_filter": {"total": report.total, "kept": report.kept},
        "wandb_run_dirs": [str(run_dir) for run_dir in run_dirs],
    }
    results_path, table_path, chart_path = write_results(out, rows, settings=settings, extra=extra)
    return QuickstartResult(
        out_dir=out,
        rows=rows,
        results_path=results_path,
        chart_path=chart_path,
        table_path=table_path,
        student_dir=student_dir,
        wandb_run_dirs=run_dirs,
        sft_stages=tuple(stages),
        filter_report=report,
        timings=timings,
        settings=settings,
    )


def _check_settings_file(out: Path, settings: QuickstartSettings) -> None:
    """Record the settings on the first run; refuse to resume a directory made with other settings.

    Resuming with other settings would mix two runs' episodes in one table (the trajectory files resume by task
    index), so ``--quick`` into a full run's directory, or the reverse, is an error.
    """
    path = out / SETTINGS_FILENAME
    wanted = settings.to_dict()
    if path.is_file():
        if json.loads(path.read_text(encoding="utf-8")) != json.loads(json.dumps(wanted)):
            raise ValueError(
                f"{out} holds a quickstart run made with other settings (see {path}); "
                "use another --out directory, or delete this one to start over"
            )
        return
    path.write_text(json.dumps(wanted, indent=1) + "\n", encoding="utf-8")


@contextmanager
def _timed(timings: dict[str, float], name: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        timings[name] = round(time.perf_counter() - started, 1)


@contextmanager
def _offline_wandb() -> Iterator[None]:
    """W&B offline for the quickstart (it must need no network or account) unless the user chose a mode."""
    chosen = os.environ.get("WANDB_MODE")
    if chosen is None:
        os.environ["WANDB_MODE"] = "offline"
    try:
        yield
    finally:
        if chosen is None:
            os.environ.pop("WANDB_MODE", None)


def _load_average() -> list[float] | None:
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except OSError:  # not available on every platform
        return None


def _parameter_count(student_dir: Path) -> int | None:
    """Parameters of the saved student, read from its safetensors header (no model load)."""
    from safetensors import safe_open

    path = student_dir / "model.safetensors"
    if not path.is_file():
        return None
    total = 0
    with safe_open(str(path), framework="pt") as handle:
        for name in handle.keys():
            shape = handle.get_slice(name).get_shape()
            count = 1
            for size in shape:
                count *= size
            total += count
    return total
