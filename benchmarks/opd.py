"""Does on-policy distillation beat continued SFT at equal wall time? Held-out figures of both arms, on CPU.

    python benchmarks/opd.py                      # the full run (about 15 minutes on 2 quiet cores)
    python benchmarks/opd.py --quick              # a start check (under 3 minutes): tiny sizes, no claim

Everything runs on ``AgentMath-Synthetic-v0`` with the env arguments of ``--config``
(``configs/opd/opd_cpu_tiny.yaml``: 1-2 arithmetic steps, the students' short prompt, 3 steps per episode), so
the teacher, the student and both arms see the env exactly as OPD trains in it.

1. The scripted expert plays ``--teacher-episodes`` training tasks, 0 to N-1 (OPD plays tasks from the config's
   ``train_task_offset`` on, so it never sees a task of the expert's data).
2. Teacher: a tokenizer trained on those conversations and a scratch Qwen2 model (``students.TINY``, 0.6M
   parameters at this vocabulary), distilled with the quickstart's two-stage SFT recipe
   (``configs/distill/sft_quickstart_warmup.yaml``: the conversations without their system prompt, where copying
   names and numbers forms soonest, then ``configs/distill/sft_quickstart.yaml``: as the student sees them). Its
   strength comes from a longer second stage. It is not bigger than the student: at 1,000 expert episodes the
   quickstart's wider shape memorised the training numbers instead of learning to copy them, while this shape
   learns to copy (the README has the figures); whether copying forms in a scratch model this small depends on
   shape and schedule more than on size.
3. Student: the same starting model, distilled by the same recipe with a far shorter second stage: it acts, but
   worse than the teacher. Teacher and student share the tokenizer (OPD scores the student's token ids).
4. Per ``--seeds`` seed, two arms from that same student:
   * OPD (``agentdistill.distill.opd.train_opd``, ``--config``) for ``--opd-steps`` steps on its own episodes;
   * continued SFT on the expert's data from the student, at OPD's constant learning rate, stopped by the clock
     when it has run as long as OPD did (loading included); the table shows both actual times.
5. The student, the teacher and every arm play the same ``--eval-tasks`` held-out tasks (test split, greedy).

Prints, per seed and arm: held-out success, invalid-action rate, their change from the student paired by task (±
standard error over tasks: greedy decoding makes each task's outcome deterministic), wall time, steps and OPD's
reverse KL; the same over all seeds (each task's outcome averaged over seeds); then OPD minus continued SFT, paired
by task. Everything goes to ``OUT/opd_benchmark.json``. A rerun with the same ``--out`` reuses what is finished
(a killed SFT stage resumes from its last checkpoint, a killed OPD run starts again), so it reprints the table.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import benchlib  # the sibling benchmarks/benchlib.py (this file runs as a script)
import torch
from datasets import Dataset
from transformers import TrainerCallback

import agentdistill  # noqa: F401 - registers the env ids
from agentdistill.distill.grpo.evaluation import evaluate_student
from agentdistill.distill.opd.settings import RESULT_FILENAME as OPD_RESULT_FILENAME
from agentdistill.distill.opd.settings import OPDResult, OPDSettings
from agentdistill.distill.opd.train import train_opd
from agentdistill.distill.sft.conversations import without_system_prompt
from agentdistill.distill.sft.settings import RESULT_FILENAME as SFT_RESULT_FILENAME
from agentdistill.distill.sft.settings import SFTResult, SFTSettings
from agentdistill.distill.sft.train import train_sft
from agentdistill.distill.sft.trajectories import trajectories_to_dataset
from agentdistill.distill.students import TINY, build_student, save_student, train_tokenizer
from agentdistill.experiments import apply_override
from agentdistill.experiments.fields import Location
from agentdistill.policies import make_policy
from agentdistill.policies.hf import HFPolicy
from agentdistill.rollouts.collect import collect_trajectories
from agentdistill.rollouts.figures import episode_invalid_rate, figures_of, paired_gain
from agentdistill.rollouts.records import EpisodeRecord, latest_records

ENV_ID = "AgentMath-Synthetic-v0"
REPO = Path(__file__).resolve().parents[1]
OPD_CONFIG = REPO / "configs" / "opd" / "opd_cpu_tiny.yaml"
SFT_WARMUP_CONFIG = REPO / "configs" / "distill" / "sft_quickstart_warmup.yaml"
SFT_CONFIG = REPO / "configs" / "distill" / "sft_quickstart.yaml"
RESULT_FILENAME = "opd_benchmark.json"
SIZES_FILENAME = "opd_benchmark_sizes.json"
MAX_SFT_ARM_STEPS = 100_000
"""The continued-SFT arm's step cap: never reached, its clock stops it (a constant schedule ignores the cap)."""
KL_WINDOW = 5
"""Logged OPD steps averaged at each end of the reverse-KL curve: one step's 16 episodes are a noisy sample."""


@dataclass(frozen=True)
class Sizes:
    """How much of everything a run does; a working directory holds the run of one set of sizes."""

    teacher_episodes: int = 1000
    teacher_warmup_steps: int = 200
    teacher_steps: int = 300
    student_warmup_steps: int = 200
    student_steps: int = 60
    opd_steps: int = 30
    prompts_per_step: int = 4
    group_size: int = 4
    num_envs: int = 16
    eval_tasks: int = 100
    eval_envs: int = 50
    """Envs the held-out evaluation steps together: the student generates for all of them in one batch, which
    costs about what a batch of 16 does for a model this small."""
    sft_batch_size: int | None = None
    """``None``: the configs' batch sizes (the quick run shrinks them)."""
    max_new_tokens: int | None = None
    """``None``: the OPD config's (the quick run shrinks it)."""
    learning_rate: float = 1e-4
    """Both arms' constant learning rate: low enough that OPD's per-token policy gradient does not push a weak
    student's sampled actions into invalid code within a few steps (the README has the higher rate's outcome)."""

    @classmethod
    def quick(cls) -> Sizes:
        """Smoke sizes: every stage runs for a step or two; the figures mean nothing."""
        return cls(
            teacher_episodes=16,
            teacher_warmup_steps=1,
            teacher_steps=2,
            student_warmup_steps=0,
            student_steps=2,
            opd_steps=1,
            prompts_per_step=2,
            group_size=2,
            num_envs=4,
            eval_tasks=4,
            eval_envs=4,
            sft_batch_size=4,
            max_new_tokens=24,
        )


@dataclass(frozen=True)
class Arm:
    """One evaluated policy: the student, the teacher, or an arm of one seed."""

    name: str
    seed: int | None
    model_dir: Path
    eval_path: Path
    seconds: float | None = None
    steps: int | None = None
    reverse_kl: tuple[float, ...] = ()


def build_parser() -> argparse.ArgumentParser:
    defaults = Sizes()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/bench-opd", help="working directory (resumed where possible)")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="default: 0 1 (--quick: 0)")
    parser.add_argument("--config", default=str(OPD_CONFIG), help="the OPD settings (and the env's arguments)")
    parser.add_argument("--teacher-episodes", type=int, default=defaults.teacher_episodes)
    parser.add_argument(
        "--teacher-warmup-steps",
        type=int,
        default=defaults.teacher_warmup_steps,
        help="teacher SFT stage 1 (no system prompt, batches of 32)",
    )
    parser.add_argument(
        "--teacher-steps",
        type=int,
        default=defaults.teacher_steps,
        help="teacher SFT stage 2 (as the student sees it, batches of 16)",
    )
    parser.add_argument("--student-warmup-steps", type=int, default=defaults.student_warmup_steps)
    parser.add_argument("--student-steps", type=int, default=defaults.student_steps)
    parser.add_argument("--opd-steps", type=int, default=defaults.opd_steps)
    parser.add_argument(
        "--prompts-per-step",
        type=int,
        default=defaults.prompts_per_step,
        help="OPD tasks per step (each played --group-size times)",
    )
    parser.add_argument("--group-size", type=int, default=defaults.group_size)
    parser.add_argument("--eval-tasks", type=int, default=defaults.eval_tasks)
    parser.add_argument(
        "--learning-rate",
        type=float,
        default=defaults.learning_rate,
        help="both arms' constant learning rate (OPD's overrides the config's)",
    )
    parser.add_argument(
        "--override",
        "--set",
        dest="set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override an OPD setting of --config (value parsed as YAML), e.g. temperature=0.7",
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks that the pipeline runs")
    return parser


def sizes_of(args: argparse.Namespace) -> Sizes:
    if args.quick:
        return Sizes.quick()
    return Sizes(
        teacher_episodes=args.teacher_episodes,
        teacher_warmup_steps=args.teacher_warmup_steps,
        teacher_steps=args.teacher_steps,
        student_warmup_steps=args.student_warmup_steps,
        student_steps=args.student_steps,
        opd_steps=args.opd_steps,
        prompts_per_step=args.prompts_per_step,
        group_size=args.group_size,
        eval_tasks=args.eval_tasks,
        learning_rate=args.learning_rate,
    )


def claim_out(out: Path, identity: dict[str, Any]) -> None:
    """Make ``out`` this run's directory, or refuse it when it holds a run of other sizes: the stages reuse what
    they find, so a quick run's teacher must never stand in for a full run's."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / SIZES_FILENAME
    if path.is_file():
        found = json.loads(path.read_text(encoding="utf-8"))
        if found != identity:
            differing = sorted(key for key in {*found, *identity} if found.get(key) != identity.get(key))
            raise SystemExit(f"{out} holds a benchmark run of other sizes ({', '.join(differing)}); use another --out")
        return
    path.write_text(json.dumps(identity, indent=1) + "\n", encoding="utf-8")


def opd_settings(config: str, sizes: Sizes, overrides: dict[str, Any]) -> OPDSettings:
    """The OPD settings of every arm (seed aside); evaluation runs apart (``eval_tasks`` 0), so all arms are scored
    by the same code on the same tasks and OPD's wall time is training only."""
    settings = OPDSettings.from_yaml(config).replace(
        max_steps=sizes.opd_steps,
        eval_tasks=0,
        wandb_project=None,
        prompts_per_step=sizes.prompts_per_step,
        group_size=sizes.group_size,
        num_envs=sizes.num_envs,
        save_steps=max(sizes.opd_steps, 1),
        learning_rate=sizes.learning_rate,
    )
    if sizes.max_new_tokens is not None:
        settings = settings.replace(max_new_tokens=sizes.max_new_tokens)
    return settings.replace(**overrides)


def teacher_data(out: Path, settings: OPDSettings, episodes: int) -> Path:
    """The expert's episodes of training tasks 0 to ``episodes - 1``, disjoint from the tasks OPD samples."""
    if episodes > settings.train_task_offset:
        raise SystemExit(
            f"--teacher-episodes {episodes} would overlap OPD's training tasks (from {settings.train_task_offset} on)"
        )
    path = out / "expert.jsonl"
    collect_trajectories(
        make_policy("expert"),
        ENV_ID,
        out=path,
        episodes=episodes,
        num_envs=8,
        env_kwargs=settings.split_kwargs(settings.train_split),
        progress=False,
    )
    return path


def sft_settings(path: Path, steps: int, sizes: Sizes, seed: int = 0) -> SFTSettings:
    """A quickstart SFT stage at this run's size, without W&B; its checkpoints stay, so a stage killed midway (the
    teacher's first takes most of the run) resumes where it was."""
    settings = SFTSettings.from_yaml(path).replace(
        max_steps=steps,
        seed=seed,
        wandb_project=None,
        wandb_run_name=None,
        logging_steps=max(1, min(25, steps)),
    )
    return settings if sizes.sft_batch_size is None else settings.replace(per_device_batch_size=sizes.sft_batch_size)


def sft_stage(dataset: Dataset, start: Path, out_dir: Path, settings: SFTSettings) -> SFTResult:
    """One SFT run from ``start`` into ``out_dir``, or the result it already left there."""
    if (out_dir / SFT_RESULT_FILENAME).is_file():
        return SFTResult.from_json(out_dir / SFT_RESULT_FILENAME)
    return train_sft(dataset, str(start), out_dir, settings)


def initial_model(dataset: Dataset, out: Path) -> Path:
    """The random model both the teacher and the student start from (``TINY``, seed 0), over one tokenizer trained
    on the conversations (system prompt included, so the student's prompt encodes compactly); built once."""
    init = out / "init"
    if not (init / "config.json").is_file():
        texts = [message["content"] for messages in dataset["messages"] for message in messages]
        tokenizer = train_tokenizer(texts, vocab_size=2048)
        save_student(build_student(tokenizer, TINY, seed=0), tokenizer, init)
    return init


def two_stage_sft(
    dataset: Dataset, start: Path, out_dir: Path, steps: tuple[int, int], sizes: Sizes
) -> list[SFTResult]:
    """The quickstart's recipe: stage 1 without the system prompt into ``warmup-STEPS`` beside ``out_dir`` (skipped
    at 0 steps; shared by the teacher and the student when their first stages are as long, since both start from
    the same model), stage 2 as the student sees it into ``out_dir``; returns each stage's result, stage 2 last."""
    results = []
    if steps[0] > 0:
        warmup_dir = out_dir.with_name(f"warmup-{steps[0]}")
        results.append(
            sft_stage(
                without_system_prompt(dataset), start, warmup_dir, sft_settings(SFT_WARMUP_CONFIG, steps[0], sizes)
            )
        )
        start = warmup_dir
    results.append(sft_stage(dataset, start, out_dir, sft_settings(SFT_CONFIG, steps[1], sizes)))
    return results


def opd_arm(student: Path, teacher: Path, out: Path, settings: OPDSettings, seed: int) -> Arm:
    """OPD from the student for ``settings.max_steps`` steps (or the run this directory already finished)."""
    run_dir = out / f"opd-seed{seed}"
    if (run_dir / OPD_RESULT_FILENAME).is_file():
        result = OPDResult.from_json(run_dir / OPD_RESULT_FILENAME)
    else:
        result = train_opd(
            ENV_ID, f"hf:{student}", f"hf:{teacher}", run_dir, settings.replace(seed=seed), progress=False
        )
    return Arm(
        "OPD",
        seed,
        run_dir,
        out / "eval" / f"opd-seed{seed}.jsonl",
        result.runtime_seconds,
        result.global_step,
        tuple(result.reverse_kl),
    )


class WallTimeStop(TrainerCallback):
    """Stops training at the first step end past ``deadline`` (a ``time.perf_counter()`` value): the continued-SFT
    arm gets exactly the wall time OPD took, loading included, whatever else the machine is doing meanwhile."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        if time.perf_counter() >= self.deadline:
            control.should_training_stop = True
        return control


def sft_arm(
    dataset: Dataset, student: Path, out: Path, seconds: float, learning_rate: float, sizes: Sizes, seed: int
) -> Arm:
    """The student trained further on the expert's data for OPD's wall time, at OPD's constant learning rate (the
    student's own cosine schedule restarted would reheat it to its peak), stopped by the clock, not a step count."""
    run_dir = out / f"sft-seed{seed}"
    if (run_dir / SFT_RESULT_FILENAME).is_file():
        result = SFTResult.from_json(run_dir / SFT_RESULT_FILENAME)
    else:
        settings = sft_settings(SFT_CONFIG, MAX_SFT_ARM_STEPS, sizes, seed=seed).replace(
            learning_rate=learning_rate,
            lr_scheduler="constant",
            warmup_ratio=0.0,
            save_strategy="no",
        )
        stop = WallTimeStop(time.perf_counter() + seconds)
        result = train_sft(dataset, str(student), run_dir, settings, callbacks=[stop])
    return Arm(
        "continued SFT",
        seed,
        run_dir,
        out / "eval" / f"sft-seed{seed}.jsonl",
        result.runtime_seconds,
        result.global_step,
    )


def evaluate(arm: Arm, settings: OPDSettings) -> list[EpisodeRecord]:
    """``arm``'s greedy episodes on the first ``eval_tasks`` held-out tasks (played once, then read back)."""
    arm.eval_path.parent.mkdir(parents=True, exist_ok=True)
    evaluate_student(HFPolicy(arm.model_dir, max_batch_size=64), ENV_ID, settings, arm.eval_path, progress=False)
    return [record for record in latest_records(arm.eval_path) if record["task_index"] < settings.eval_tasks]


def gain_dict(before: Sequence[EpisodeRecord], after: Sequence[EpisodeRecord]) -> dict[str, Any] | None:
    """After minus before in success, paired by task (``None`` for fewer than two tasks)."""
    gain = paired_gain(before, after)
    return dataclasses.asdict(gain) if gain is not None else None


def invalid_change(before: Sequence[EpisodeRecord], after: Sequence[EpisodeRecord]) -> dict[str, Any] | None:
    """After minus before in each episode's share of invalid actions, paired by task: where no policy succeeds
    yet, whether its actions start to run is what moves (an episode without actions counts as 0)."""
    gain = paired_gain(before, after, value=lambda record: episode_invalid_rate(record) or 0.0)
    return dataclasses.asdict(gain) if gain is not None else None


def opd_vs_sft(sft: Sequence[EpisodeRecord], opd: Sequence[EpisodeRecord]) -> dict[str, dict[str, Any] | None]:
    """OPD minus continued SFT on the same held-out tasks: success and the share of invalid actions."""
    return {"success": gain_dict(sft, opd), "invalid": invalid_change(sft, opd)}


def kl_ends(values: Sequence[float]) -> tuple[float, float] | None:
    """The mean reverse KL of the first and of the last :data:`KL_WINDOW` logged steps."""
    if not values:
        return None
    window = min(KL_WINDOW, max(1, len(values) // 2))
    return statistics.fmean(values[:window]), statistics.fmean(values[-window:])


def arm_entry(arm: Arm, records: Sequence[EpisodeRecord], student: Sequence[EpisodeRecord]) -> dict[str, Any]:
    """What the JSON keeps of one evaluated policy."""
    ends = kl_ends(arm.reverse_kl)
    return {
        "arm": arm.name,
        "seed": arm.seed,
        "model_dir": str(arm.model_dir),
        "eval": str(arm.eval_path),
        "figures": dataclasses.asdict(figures_of(records)),
        "gain_vs_student": gain_dict(student, records),
        "invalid_change_vs_student": invalid_change(student, records),
        "seconds": arm.seconds,
        "steps": arm.steps,
        "reverse_kl": list(arm.reverse_kl),
        "reverse_kl_first_last": list(ends) if ends else None,
    }


def percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def gain_text(gain: dict[str, Any] | None, counts: bool = True) -> str:
    """``mean ± s.e.``, then how many tasks rose and fell."""
    if gain is None:
        return "-"
    text = f"{gain['mean']:+.1%} ± {gain['stderr']:.1%}"
    return text + f" (+{gain['improved']}/-{gain['worsened']})" if counts else text


def table_row(label: str, entry: dict[str, Any]) -> list[str]:
    figures, ends = entry["figures"], entry["reverse_kl_first_last"]
    seconds = entry["seconds"]
    return [
        label,
        entry["arm"],
        percent(figures["success_rate"]),
        percent(figures["invalid_action_rate"]),
        gain_text(entry["gain_vs_student"]),
        gain_text(entry["invalid_change_vs_student"], counts=False),
        "-" if seconds is None else f"{seconds:.0f} s",
        "-" if entry["steps"] is None else str(entry["steps"]),
        "-" if ends is None else f"{ends[0]:.3f} -> {ends[1]:.3f}",
    ]


def mean_entry(
    arm: str, entries: Sequence[dict[str, Any]], records: Sequence[EpisodeRecord], student: Sequence[EpisodeRecord]
) -> dict[str, Any]:
    """An arm over every seed: figures of all its episodes, the gain with each task's outcome averaged over seeds
    (its standard error is over tasks), mean wall time and steps, mean reverse-KL ends."""
    ends = [entry["reverse_kl_first_last"] for entry in entries if entry["reverse_kl_first_last"]]
    return {
        "arm": arm,
        "seed": "mean",
        "figures": dataclasses.asdict(figures_of(records)),
        "gain_vs_student": gain_dict(student, records),
        "invalid_change_vs_student": invalid_change(student, records),
        "seconds": statistics.fmean(entry["seconds"] for entry in entries),
        "steps": round(statistics.fmean(entry["steps"] for entry in entries)),
        "reverse_kl_first_last": [statistics.fmean(end[i] for end in ends) for i in (0, 1)] if ends else None,
    }


def print_report(header_line: str, rows: list[list[str]], comparisons: list[list[str]]) -> None:
    print(benchlib.machine_line())
    print(header_line)
    header = [
        "seed",
        "arm",
        "success",
        "invalid actions",
        "success vs student (paired, ± s.e.)",
        "invalid vs student",
        "wall time",
        "steps",
        "OPD reverse KL first -> last",
    ]
    print("\n".join(benchlib.table_lines(header, rows, right_aligned={2, 3, 4, 5, 6, 7, 8})))
    print(
        f"(paired by held-out task, after minus the student: success with +tasks gained/-lost, and each episode's "
        f"share of invalid actions; reverse KL: mean per sampled token, nats, over the first and the last "
        f"{KL_WINDOW} logged steps, or half of them when fewer)"
    )
    print("OPD minus continued SFT, paired by held-out task:")
    header = ["seed", "success (± s.e.)", "tasks OPD better / worse", "invalid actions (± s.e.)"]
    print("\n".join(benchlib.table_lines(header, comparisons, right_aligned={1, 2, 3})))


@dataclass(frozen=True)
class Prepared:
    """What every arm starts from: the expert's dataset, the teacher and the student."""

    dataset: Dataset
    teacher: Path
    student: Path
    summary: dict[str, Any]


def prepare(out: Path, sizes: Sizes, settings: OPDSettings) -> Prepared:
    """Expert data, then the teacher and the student distilled from it."""
    started = time.perf_counter()
    expert = teacher_data(out, settings, sizes.teacher_episodes)
    dataset, report = trajectories_to_dataset([expert], report=False)
    expert_seconds = time.perf_counter() - started
    init = initial_model(dataset, out)
    teacher = two_stage_sft(dataset, init, out / "teacher", (sizes.teacher_warmup_steps, sizes.teacher_steps), sizes)
    student = two_stage_sft(dataset, init, out / "student", (sizes.student_warmup_steps, sizes.student_steps), sizes)
    summary = {
        "expert_episodes": report.total,
        "sft_rows": len(dataset),
        "expert_seconds": expert_seconds,
        "teacher_sft_seconds": [result.runtime_seconds for result in teacher],
        "student_sft_seconds": [result.runtime_seconds for result in student],
        "teacher_final_loss": teacher[-1].losses[-1] if teacher[-1].losses else None,
        "student_final_loss": student[-1].losses[-1] if student[-1].losses else None,
        "seconds": time.perf_counter() - started,
    }
    return Prepared(dataset, Path(teacher[-1].model_dir), Path(student[-1].model_dir), summary)


@dataclass(frozen=True)
class Outcome:
    """Every evaluated policy's JSON entry, the per-arm means over seeds, and OPD minus continued SFT."""

    entries: list[dict[str, Any]]
    means: list[dict[str, Any]]
    opd_minus_sft: dict[str, dict[str, dict[str, Any] | None]]
    """Per seed and over all seeds (``"mean"``): the paired ``success`` and ``invalid`` differences."""


def run_arms(out: Path, seeds: Sequence[int], sizes: Sizes, settings: OPDSettings, prepared: Prepared) -> Outcome:
    """Evaluate the student and the teacher, then per seed train and evaluate both arms."""
    eval_settings = settings.replace(eval_tasks=sizes.eval_tasks, num_envs=sizes.eval_envs)
    fixed = [
        Arm("student (start)", None, prepared.student, out / "eval" / "student.jsonl"),
        Arm("teacher", None, prepared.teacher, out / "eval" / "teacher.jsonl"),
    ]
    student = evaluate(fixed[0], eval_settings)
    entries = [arm_entry(fixed[0], student, student), arm_entry(fixed[1], evaluate(fixed[1], eval_settings), student)]
    pooled: dict[str, list[EpisodeRecord]] = {"OPD": [], "continued SFT": []}
    opd_minus_sft: dict[str, dict[str, dict[str, Any] | None]] = {}
    for seed in seeds:
        opd = opd_arm(prepared.student, prepared.teacher, out, settings, seed)
        sft = sft_arm(prepared.dataset, prepared.student, out, opd.seconds or 0.0, settings.learning_rate, sizes, seed)
        records = {arm.name: evaluate(arm, eval_settings) for arm in (opd, sft)}
        for arm in (opd, sft):
            pooled[arm.name].extend(records[arm.name])
            entries.append(arm_entry(arm, records[arm.name], student))
        opd_minus_sft[str(seed)] = opd_vs_sft(records["continued SFT"], records["OPD"])
    opd_minus_sft["mean"] = opd_vs_sft(pooled["continued SFT"], pooled["OPD"])
    means = [
        mean_entry(name, [entry for entry in entries if entry["arm"] == name], records, student)
        for name, records in pooled.items()
    ]
    return Outcome(entries, means, opd_minus_sft)


def report_rows(outcome: Outcome) -> tuple[list[list[str]], list[list[str]]]:
    """The main table's rows (student and teacher, each seed's arms, the means) and the comparison's."""
    rows = [
        table_row("-" if entry["seed"] is None else str(entry["seed"]), entry)
        for entry in [*outcome.entries, *outcome.means]
    ]
    comparisons = [
        [
            seed,
            gain_text(gains["success"], counts=False),
            "-" if gains["success"] is None else f"{gains['success']['improved']} / {gains['success']['worsened']}",
            gain_text(gains["invalid"], counts=False),
        ]
        for seed, gains in outcome.opd_minus_sft.items()
    ]
    return rows, comparisons


def describe(settings: OPDSettings, sizes: Sizes, config: str, prepared: Prepared, total: float) -> str:
    """The run in two lines; SFT times are each stage's own (kept in its result), so a resumed run reports them too,
    while ``total`` is this invocation's, which skips what an earlier one finished."""
    teacher, student = (sum(prepared.summary[key]) for key in ("teacher_sft_seconds", "student_sft_seconds"))
    return (
        f"OPD vs continued SFT on {ENV_ID} {settings.env_kwargs}: {sizes.teacher_episodes} expert episodes; teacher "
        f"{sizes.teacher_warmup_steps}+{sizes.teacher_steps} SFT steps ({teacher:.0f} s), student "
        f"{sizes.student_warmup_steps}+{sizes.student_steps} ({student:.0f} s)\n"
        f"OPD {sizes.opd_steps} steps of {sizes.prompts_per_step} tasks x {sizes.group_size} ({config}); "
        f"{sizes.eval_tasks} held-out tasks, greedy; this invocation took {total:.0f} s"
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ["WANDB_MODE"] = "disabled"  # W&B stays off even where a config names a project
    torch.set_num_threads(2)
    sizes = sizes_of(args)
    seeds = args.seeds if args.seeds is not None else [0] if args.quick else [0, 1]
    overrides: dict[str, Any] = {}
    for item in args.set:  # KEY=VALUE, the value read as YAML: `agentdistill run --override`'s parser
        apply_override(overrides, item, Location(args.config))
    out = Path(args.out).resolve()
    claim_out(
        out, {"sizes": dataclasses.asdict(sizes), "config": str(Path(args.config).resolve()), "overrides": overrides}
    )
    started, machine_at_start = time.perf_counter(), benchlib.machine_line()
    settings = opd_settings(args.config, sizes, overrides)
    prepared = prepare(out, sizes, settings)
    outcome = run_arms(out, seeds, sizes, settings, prepared)
    total = time.perf_counter() - started
    print_report(describe(settings, sizes, args.config, prepared, total), *report_rows(outcome))
    result = {
        "env_id": ENV_ID,
        "env_kwargs": settings.env_kwargs,
        "config": args.config,
        "overrides": overrides,
        "sizes": dataclasses.asdict(sizes),
        "seeds": seeds,
        "preparation": prepared.summary,
        "arms": outcome.entries,
        "means": outcome.means,
        "opd_minus_sft": outcome.opd_minus_sft,
        "seconds": total,
        "machine_at_start": machine_at_start,
        "machine_at_end": benchlib.machine_line(),
    }
    (out / RESULT_FILENAME).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(f"written: {out / RESULT_FILENAME}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
