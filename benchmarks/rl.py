"""Does GRPO on the rollout loop improve a distilled student? Before/after on held-out tasks, on CPU.

    python benchmarks/rl.py                       # the full run (about 15-25 minutes on 2 cores)
    python benchmarks/rl.py --quick               # a start check (a minute): tiny sizes, no claim

1. The scripted expert plays ``--teacher-episodes`` training tasks of ``--env`` (AgentMath-Synthetic-v0 or
   AgentQA-Synthetic-v0, at the difficulty ``--env-arg`` sets).
2. A scratch Qwen2-architecture student (4 layers, hidden 192: ~2.4M parameters with its tokenizer) is
   distilled on them with the real SFT path for only ``--sft-steps`` steps, on purpose: a student that
   already solves everything leaves RL nothing to show.
3. ``agentdistill.distill.grpo.train_grpo`` trains it with GRPO (``configs/rl/grpo_cpu_tiny.yaml`` unless
   ``--config``) for ``--rl-steps`` steps, once per ``--seeds`` seed; each run scores the same
   ``--eval-tasks`` held-out (test split) tasks greedily before and after.

Prints, per seed: held-out success and mean reward before and after, the difference, and its standard error
(paired over the same tasks: greedy decoding makes each task's before/after outcome deterministic).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import benchlib  # the sibling benchmarks/benchlib.py (this file runs as a script)

import agentdistill  # noqa: F401 - registers the env ids
from agentdistill.cli import env_argument  # KEY=VALUE, the same parsing as `agentdistill rollout --env-arg`
from agentdistill.distill.grpo.settings import GRPOSettings
from agentdistill.distill.grpo.train import train_grpo
from agentdistill.distill.sft.settings import SFTSettings
from agentdistill.distill.sft.train import train_sft
from agentdistill.distill.sft.trajectories import trajectories_to_dataset
from agentdistill.distill.students import StudentConfig, build_student, save_student, train_tokenizer
from agentdistill.experiments import apply_override
from agentdistill.experiments.fields import Location
from agentdistill.policies import make_policy
from agentdistill.rollouts.figures import paired_gain
from agentdistill.rollouts.loop import make_rollout_envs, run_rollouts
from agentdistill.rollouts.records import EpisodeRecord, read_trajectories

ENV_ID = "AgentMath-Synthetic-v0"
REPO = Path(__file__).resolve().parents[1]
STUDENT_SHAPE = StudentConfig(hidden_size=192, num_layers=4, num_heads=4, num_kv_heads=2, intermediate_size=512)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/bench-rl", help="working directory (resumed where possible)")
    parser.add_argument("--teacher-episodes", type=int, default=400)
    parser.add_argument("--sft-steps", type=int, default=120)
    parser.add_argument("--rl-steps", type=int, default=40)
    parser.add_argument("--eval-tasks", type=int, default=200)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--config", default=str(REPO / "configs" / "rl" / "grpo_cpu_tiny.yaml"))
    parser.add_argument("--env", default=ENV_ID, choices=(ENV_ID, "AgentQA-Synthetic-v0"))
    parser.add_argument("--env-arg", type=env_argument, action="append", default=[], metavar="KEY=VALUE",
                        help="difficulty, e.g. min_ops=1 max_ops=1 (math) or min_hops=1 max_hops=2 (QA)")
    parser.add_argument("--override", "--set", dest="set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a GRPO setting of --config (value parsed as YAML), e.g. learning_rate=1e-4")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks that the pipeline runs")
    return parser


def teacher_data(out: Path, env_id: str, episodes: int, difficulty: dict[str, int]) -> Path:
    path = out / "teacher.jsonl"
    envs = make_rollout_envs(env_id, 8, max_steps=4, **difficulty)
    try:
        run_rollouts(envs, make_policy("expert"), env_id=env_id, task_indices=range(episodes), out=str(path))
    finally:
        envs.close()
    return path


def distilled_student(out: Path, teacher: Path, steps: int) -> Path:
    student = out / "student"
    if (student / "sft_result.json").is_file():
        return student
    dataset, _ = trajectories_to_dataset(teacher)
    texts = [message["content"] for row in dataset for message in row["messages"]]
    tokenizer = train_tokenizer(texts, vocab_size=2048)
    start = out / "student-init"
    save_student(build_student(tokenizer, STUDENT_SHAPE, seed=0), tokenizer, start)
    settings = SFTSettings(
        learning_rate=2e-3, epochs=1, max_steps=steps, per_device_batch_size=16, gradient_accumulation_steps=1,
        max_length=1024, lora=False, warmup_ratio=0.1, lr_scheduler="cosine", logging_steps=10,
        save_strategy="no", bf16=False, gradient_checkpointing=False,
    )
    train_sft(dataset, str(start), student, settings)
    return student


def success_gain(before: Path, after: Path, tasks: int) -> tuple[float, float]:
    """Mean and standard error of (after - before) success over the same held-out tasks, paired by task."""
    def held_out(path: Path) -> list[EpisodeRecord]:
        return [record for record in read_trajectories(path) if record["task_index"] < tasks]

    gain = paired_gain(held_out(before), held_out(after))
    return (gain.mean, gain.stderr) if gain is not None else (math.nan, math.nan)


def percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.quick:
        args.teacher_episodes, args.sft_steps, args.rl_steps, args.eval_tasks = 16, 2, 1, 4
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    difficulty = dict(args.env_arg)
    overrides: dict[str, object] = {}
    for item in args.set:  # KEY=VALUE, the value read as YAML: `agentdistill run --override`'s parser
        apply_override(overrides, item, Location(args.config))
    teacher = teacher_data(out, args.env, args.teacher_episodes, difficulty)
    student = distilled_student(out, teacher, args.sft_steps)
    prepared = time.perf_counter() - started
    rows = []
    for seed in args.seeds:
        base = GRPOSettings.from_yaml(args.config)
        settings = base.replace(
            seed=seed, max_steps=args.rl_steps, eval_tasks=args.eval_tasks, env_kwargs={**base.env_kwargs, **difficulty},
            **overrides,
            **({"num_envs": 4, "group_size": 2, "prompts_per_step": 2, "max_new_tokens": 16} if args.quick else {}),
        )
        begun = time.perf_counter()
        run_dir = out / f"rl-seed{seed}"
        result = train_grpo(args.env, f"hf:{student}", run_dir, settings)
        assert result.before is not None and result.after is not None
        gain, error = success_gain(run_dir / "eval_before.jsonl", run_dir / "eval_after.jsonl", args.eval_tasks)
        rows.append([
            str(seed), str(result.after.episodes),
            f"{result.before.success_rate:.1%}", f"{result.after.success_rate:.1%}", f"{gain:+.1%} ± {error:.1%}",
            f"{result.before.mean_reward:.3f}", f"{result.after.mean_reward:.3f}",
            percent(result.before.invalid_action_rate), percent(result.after.invalid_action_rate),
            f"{time.perf_counter() - begun:.0f} s",
        ])
    header = ["seed", "held-out episodes", "success before", "after", "gain (paired, ± s.e.)", "reward before",
              "after", "invalid before", "after", "RL time"]
    print(benchlib.machine_line())
    print(f"GRPO on {args.env} {difficulty}: {args.teacher_episodes} teacher episodes, {args.sft_steps} SFT steps "
          f"({prepared:.0f} s to prepare), {args.rl_steps} GRPO steps ({args.config})")
    print("\n".join(benchlib.table_lines(header, rows, right_aligned=set(range(1, len(header))))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
