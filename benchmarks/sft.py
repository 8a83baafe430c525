"""Does packing speed up SFT of a student, and does it leave the loss unchanged?

Teacher conversations differ in length (a QA episode and a math episode are not the same size), so a padded
batch spends part of its compute on pad tokens. TRL's ``packing=True`` (strategy ``"bfd"``) instead packs
whole conversations into rows of ``max_length`` tokens and turns on its padding-free collator: the rows of a
batch are concatenated into one sequence, with ``position_ids`` restarting at 0 for each conversation and no
``attention_mask``. That is only correct if attention stops at conversation boundaries. TRL documents
padding-free as a FlashAttention feature; without FlashAttention (our CPU students use ``sdpa``),
transformers' mask code (``masking_utils.find_packed_sequence_indices``) reads the conversation boundaries
from the restarting ``position_ids`` and builds a block-diagonal causal mask. This script checks that this
really happens, then times both modes:

1. **Identical loss** - one model (the initial weights both runs start from) and the conversations of the
   first packed batch: the per-token mean loss of TRL's ``compute_loss`` on the padded batch and on the
   packed batch must agree (goal: within 1e-4), and so must every conversation's own loss against that
   conversation run alone. As a control, the packed tokens are also run without ``position_ids`` (plain
   causal attention over the whole row, i.e. conversations reading each other): that loss must differ,
   otherwise the check could not tell right from wrong.
2. **Throughput** - the same data, the same scratch student and initial weights, the same number of
   optimizer steps through :func:`agentdistill.distill.sft.prepare_sft` with the CPU settings of
   ``configs/distill/sft_cpu_tiny.yaml``, once with ``packing: false`` and once with ``packing: true``.
   Tokens/s counts real (non-pad) input tokens per second over the steps after the warm-up ones. Goal:
   packed >= 1.5x padded. The padding share of the padded batches bounds what packing can win on the pad
   tokens alone: at most 1 / (1 - share).
3. **Loss after training** - the last logged training loss of each run, and the loss of both trained models
   on the same fixed batch (the first packed batch's conversations). A packed step holds more conversations
   than a padded one, so after the same number of steps the packed model has seen more data.

The training data are real expert trajectories on ``AgentQA-Synthetic-v0`` and ``AgentMath-Synthetic-v0``
(the rollout loop and the SFT data filter, as in the pipeline). The script reports; it exits 0 whether or not
the goals are met.

Usage::

    python benchmarks/sft.py                  # full run (a few minutes on 2 CPU cores)
    python benchmarks/sft.py --quick          # smoke run, under a minute
    python benchmarks/sft.py --steps 30 --tasks 64
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import benchlib  # the sibling benchmarks/benchlib.py (this file runs as a script)
import torch
import torch.nn.functional as F
from transformers import TrainerCallback

import agentdistill  # noqa: F401 - registers the env ids
from agentdistill.distill.sft.settings import SFTSettings
from agentdistill.distill.sft.train import PreparedSFT, prepare_sft
from agentdistill.distill.sft.trajectories import trajectories_to_dataset
from agentdistill.policies.expert import ExpertPolicy
from agentdistill.rollouts.loop import make_rollout_envs, run_rollouts

ENV_IDS = ("AgentQA-Synthetic-v0", "AgentMath-Synthetic-v0")
CONFIG_PATH = Path(__file__).resolve().parent.parent / "configs" / "distill" / "sft_cpu_tiny.yaml"
ROLLOUT_ENVS = 8

SPEEDUP_GOAL = 1.5
LOSS_TOLERANCE = 1e-4

DEFAULT_TASKS = 48
QUICK_TASKS = 8
DEFAULT_STEPS = 16
QUICK_STEPS = 3
DEFAULT_WARMUP_STEPS = 2
QUICK_WARMUP_STEPS = 1


# --- data -----------------------------------------------------------------------------------------------


def expert_conversations(tasks_per_env: int, directory: Path) -> Any:
    """SFT rows from ``tasks_per_env`` expert episodes of each env, through the pipeline's filter."""
    paths = []
    for env_id in ENV_IDS:
        path = directory / f"{env_id}.jsonl"
        envs = make_rollout_envs(env_id, min(ROLLOUT_ENVS, tasks_per_env))
        try:
            run_rollouts(
                envs, ExpertPolicy(), env_id=env_id, task_indices=range(tasks_per_env), out=str(path), progress=False
            )
        finally:
            envs.close()
        paths.append(path)
    dataset, _ = trajectories_to_dataset(paths, report=False)
    return dataset


# --- trainers ---------------------------------------------------------------------------------------------


class StepClock(TrainerCallback):
    """Wall-clock time and real input tokens seen at the end of every optimizer step."""

    def __init__(self) -> None:
        self.marks: list[tuple[float, int]] = []

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.marks = [(time.perf_counter(), int(state.num_input_tokens_seen))]

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.marks.append((time.perf_counter(), int(state.num_input_tokens_seen)))


class PaddingCounter:
    """Wraps a collator and counts the token slots and the real tokens of every batch it builds."""

    def __init__(self, collator: Any) -> None:
        self.collator = collator
        self.slots = 0
        self.real = 0

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self.collator(examples)
        self.slots += int(batch["input_ids"].numel())
        self.real += sum(len(example["input_ids"]) for example in examples)
        return dict(batch)


@dataclass(frozen=True)
class Mode:
    name: str
    prepared: PreparedSFT
    clock: StepClock
    counter: PaddingCounter

    @property
    def trainer(self) -> Any:
        return self.prepared.trainer


def quiet_trainer(trainer: Any) -> None:
    """No progress bar, no printed log lines: the report is the only output."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(PrinterCallback)


def prepare_mode(name: str, dataset: Any, student: str, out_dir: Path, settings: SFTSettings) -> Mode:
    clock = StepClock()
    prepared = prepare_sft(dataset, student, out_dir, settings, callbacks=[clock])
    quiet_trainer(prepared.trainer)
    counter = PaddingCounter(prepared.trainer.data_collator)
    prepared.trainer.data_collator = counter
    return Mode(name, prepared, clock, counter)


def same_weights(first: torch.nn.Module, second: torch.nn.Module) -> bool:
    one, two = first.state_dict(), second.state_dict()
    return one.keys() == two.keys() and all(torch.equal(one[key], two[key]) for key in one)


# --- the identical-loss check ------------------------------------------------------------------------------


def split_packed_row(row: Mapping[str, Any]) -> list[dict[str, list[int]]]:
    """The conversations of one packed row, as the unpacked examples they came from."""
    examples = []
    start = 0
    for length in row["seq_lengths"]:
        end = start + int(length)
        examples.append({"input_ids": row["input_ids"][start:end], "labels": row["labels"][start:end]})
        start = end
    return examples


def token_losses(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-position next-token loss (zero where ignored) and the mask of trained positions, shape [B, L-1]."""
    targets = labels[:, 1:]
    mask = targets != -100
    losses = F.cross_entropy(
        logits[:, :-1].float().transpose(1, 2), targets.clamp(min=0), reduction="none"
    )
    return losses * mask, mask


def conversation_means(losses: torch.Tensor, mask: torch.Tensor, segment: torch.Tensor) -> list[float]:
    """Mean loss of each conversation, ``segment`` giving each predicted position's conversation index."""
    count = int(segment.max()) + 1
    sums = torch.zeros(count).index_add_(0, segment, losses)
    tokens = torch.zeros(count).index_add_(0, segment, mask.float())
    return (sums / tokens).tolist()


@dataclass(frozen=True)
class LossCheck:
    conversations: int
    trained_tokens: int
    padded_mean: float
    packed_mean: float
    worst_padded_conversation: float
    """Largest |padded - alone| conversation loss."""
    worst_packed_conversation: float
    """Largest |packed - alone| conversation loss."""
    naive_mean: float
    """The packed row with no ``position_ids``: every conversation attends to the ones before it."""

    @property
    def mean_difference(self) -> float:
        return abs(self.packed_mean - self.padded_mean)

    @property
    def passed(self) -> bool:
        worst = max(self.mean_difference, self.worst_packed_conversation, self.worst_padded_conversation)
        return worst <= LOSS_TOLERANCE


def first_packed_batch(packed: Mode) -> list[dict[str, Any]]:
    dataset = packed.trainer.train_dataset
    size = min(packed.trainer.args.per_device_train_batch_size, len(dataset))
    return [dataset[index] for index in range(size)]


def check_loss(padded: Mode, packed: Mode, model: torch.nn.Module) -> LossCheck:
    """Compare the loss of the first packed batch's conversations, padded, packed and one by one."""
    rows = first_packed_batch(packed)
    examples = [example for row in rows for example in split_packed_row(row)]
    padded_batch = padded.counter.collator(examples)
    packed_batch = packed.counter.collator(rows)
    model.eval()
    with torch.no_grad():
        padded_mean = float(padded.trainer.compute_loss(model, dict(padded_batch)))
        packed_mean = float(packed.trainer.compute_loss(model, dict(packed_batch)))

        alone = []
        for example in examples:
            ids = torch.tensor([example["input_ids"]])
            losses, mask = token_losses(model(input_ids=ids).logits, torch.tensor([example["labels"]]))
            alone.append(float(losses.sum() / mask.sum()))

        logits = model(input_ids=padded_batch["input_ids"], attention_mask=padded_batch["attention_mask"]).logits
        losses, mask = token_losses(logits, padded_batch["labels"])
        rows_index = torch.arange(losses.shape[0])[:, None].expand_as(losses)
        padded_each = conversation_means(losses.flatten(), mask.flatten(), rows_index.flatten())

        position_ids = packed_batch["position_ids"]
        logits = model(input_ids=packed_batch["input_ids"], position_ids=position_ids).logits
        losses, mask = token_losses(logits, packed_batch["labels"])
        segment = ((position_ids[0] == 0).cumsum(0) - 1)[1:]
        packed_each = conversation_means(losses[0], mask[0], segment)

        logits = model(input_ids=packed_batch["input_ids"]).logits
        losses, mask = token_losses(logits, packed_batch["labels"])
        naive_mean = float(losses.sum() / mask.sum())
    return LossCheck(
        conversations=len(examples),
        trained_tokens=int(mask.sum()),
        padded_mean=padded_mean,
        packed_mean=packed_mean,
        worst_padded_conversation=max(abs(a - b) for a, b in zip(padded_each, alone)),
        worst_packed_conversation=max(abs(a - b) for a, b in zip(packed_each, alone)),
        naive_mean=naive_mean,
    )


def fixed_batch_loss(mode: Mode, rows: list[dict[str, Any]]) -> float:
    """The trained model's per-token mean loss on ``rows``' conversations, padded (the same batch for both)."""
    examples = [example for row in rows for example in split_packed_row(row)]
    model = mode.trainer.model
    model.eval()
    with torch.no_grad():
        return float(mode.trainer.compute_loss(model, dict(mode.counter.collator(examples))))


# --- training -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Throughput:
    steps: int
    timed_steps: int
    seconds: float
    tokens: int
    """Real input tokens of the timed steps."""
    padding_share: float
    """Pad slots / all slots over every batch the collator built."""
    conversations_per_step: float
    last_loss: float
    final_fixed_loss: float

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds

    @property
    def tokens_per_step(self) -> float:
        return self.tokens / self.timed_steps

    @property
    def step_ms(self) -> float:
        return 1000 * self.seconds / self.timed_steps


def conversations_per_step(mode: Mode) -> float:
    dataset = mode.trainer.train_dataset
    per_row = sum(len(lengths) for lengths in dataset["seq_lengths"]) / len(dataset) if "seq_lengths" in dataset.column_names else 1.0
    return per_row * mode.trainer.args.per_device_train_batch_size


def train(mode: Mode, warmup_steps: int, fixed_rows: list[dict[str, Any]]) -> Throughput:
    mode.trainer.train()
    marks = mode.clock.marks
    steps = len(marks) - 1
    start = min(warmup_steps, steps - 1)
    (begun, tokens_before), (ended, tokens_after) = marks[start], marks[-1]
    counter = mode.counter
    losses = [entry["loss"] for entry in mode.trainer.state.log_history if "loss" in entry]
    return Throughput(
        steps=steps,
        timed_steps=steps - start,
        seconds=ended - begun,
        tokens=tokens_after - tokens_before,
        padding_share=1 - counter.real / counter.slots if counter.slots else 0.0,
        conversations_per_step=conversations_per_step(mode),
        last_loss=float(losses[-1]) if losses else float("nan"),
        final_fixed_loss=fixed_batch_loss(mode, fixed_rows),
    )


# --- report ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Results:
    student: str
    parameters: int
    conversations: int
    token_lengths: tuple[int, int, int]
    settings: SFTSettings
    attention: str
    same_initial_weights: bool
    check: LossCheck
    padded: Throughput
    packed: Throughput


@dataclass(frozen=True)
class Row:
    measurement: str
    padded: str
    packed: str
    ratio: str = ""
    goal: str = "-"
    passed: bool | None = None


def format_verdict(passed: bool | None) -> str:
    return "-" if passed is None else ("PASS" if passed else "MISS")


def build_rows(results: Results) -> list[Row]:
    padded, packed, check = results.padded, results.packed, results.check
    speedup = packed.tokens_per_second / padded.tokens_per_second
    ceiling = 1 / (1 - padded.padding_share)
    return [
        Row("optimizer steps (timed after warm-up)", f"{padded.steps} ({padded.timed_steps})", f"{packed.steps} ({packed.timed_steps})"),
        Row("conversations per step", f"{padded.conversations_per_step:.1f}", f"{packed.conversations_per_step:.1f}"),
        Row("real tokens per step", f"{padded.tokens_per_step:,.0f}", f"{packed.tokens_per_step:,.0f}", f"{packed.tokens_per_step / padded.tokens_per_step:.2f}x"),
        Row("padding share of batch slots", f"{padded.padding_share:.1%}", f"{packed.padding_share:.1%}", f"ceiling {ceiling:.2f}x"),
        Row("time per step", f"{padded.step_ms:,.0f} ms", f"{packed.step_ms:,.0f} ms", f"{packed.step_ms / padded.step_ms:.2f}x"),
        Row(
            "real tokens/s",
            f"{padded.tokens_per_second:,.0f}",
            f"{packed.tokens_per_second:,.0f}",
            f"{speedup:.2f}x",
            f">= {SPEEDUP_GOAL:g}x",
            speedup >= SPEEDUP_GOAL,
        ),
        Row(
            f"first batch: mean loss ({check.conversations} conv., {check.trained_tokens:,} tok.)",
            f"{check.padded_mean:.6f}",
            f"{check.packed_mean:.6f}",
            f"|d| {check.mean_difference:.1e}",
            f"|d| <= {LOSS_TOLERANCE:g}",
            check.passed,
        ),
        Row(
            "first batch: worst conversation vs alone",
            f"{check.worst_padded_conversation:.1e}",
            f"{check.worst_packed_conversation:.1e}",
            "",
            f"<= {LOSS_TOLERANCE:g}",
            check.passed,
        ),
        Row(
            "control: packed row without position_ids",
            "",
            f"{check.naive_mean:.6f}",
            f"|d| {abs(check.naive_mean - check.padded_mean):.1e}",
            "must differ",
            abs(check.naive_mean - check.padded_mean) > LOSS_TOLERANCE,
        ),
        Row("training loss, last logged step", f"{padded.last_loss:.4f}", f"{packed.last_loss:.4f}"),
        Row("loss after training, first-batch conv.", f"{padded.final_fixed_loss:.4f}", f"{packed.final_fixed_loss:.4f}"),
    ]


def table_lines(rows: Sequence[Row]) -> list[str]:
    header = ("measurement", "padded", "packed", "packed/padded", "goal", "result")
    cells = [header, *((row.measurement, row.padded, row.packed, row.ratio, row.goal, format_verdict(row.passed)) for row in rows)]
    return benchlib.table_lines(header, cells[1:], right_aligned={1, 2, 3})


def machine_details() -> str:
    return f", torch {torch.__version__} ({torch.get_num_threads()} threads)"


def print_report(results: Results) -> None:
    import transformers
    import trl

    settings = results.settings
    shortest, median, longest = results.token_lengths
    print(benchlib.machine_line(machine_details()))
    print(
        f"student: {results.student} ({results.parameters:,} parameters, attention {results.attention!r}), "
        f"same initial weights in both runs: {'yes' if results.same_initial_weights else 'NO'}; "
        f"transformers {transformers.__version__}, trl {trl.__version__}"
    )
    print(
        f"data: {results.conversations} expert conversations ({', '.join(ENV_IDS)}), "
        f"{shortest}/{median}/{longest} tokens (min/median/max)"
    )
    print(
        f"settings: {CONFIG_PATH.name} with max_steps {settings.max_steps}, lm_head {settings.lm_head}: "
        f"batch {settings.per_device_batch_size}, max_length {settings.max_length}, lr {settings.learning_rate:g}; "
        "packed = the same with packing: true "
        "(TRL bfd packing, padding-free collator)"
    )
    for line in table_lines(build_rows(results)):
        print(line)
    print("real tokens: input tokens that are not padding. packed/padded above 1 means packing has more of it.")
    print(
        "padding ceiling: the speedup packing could reach by dropping pad tokens alone, if a token cost the "
        "same in both modes (padding-free attention spans the whole packed row under sdpa, so it costs more)."
    )
    print(
        "first batch: the conversations of the first packed batch, on the initial weights; TRL's compute_loss "
        "on the padded and on the packed batch, and each conversation's loss against it run alone."
    )


# --- main -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    tasks_per_env: int
    steps: int
    warmup_steps: int
    student: str


def silence_libraries() -> None:
    """Progress bars and library warnings would interleave with the report."""
    import datasets
    import transformers

    warnings.filterwarnings("ignore")
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    logging.getLogger("trl").setLevel(logging.ERROR)


def token_lengths(mode: Mode) -> tuple[int, int, int]:
    lengths = sorted(len(ids) for ids in mode.trainer.train_dataset["input_ids"])
    return lengths[0], lengths[len(lengths) // 2], lengths[-1]


def measure(plan: Plan) -> Results:
    # Both modes on TRL's fused LM head: the CPU config's `lm_head: full` does not support packing, and one head for
    # both keeps the comparison about padding alone.
    settings = SFTSettings.from_yaml(CONFIG_PATH).replace(max_steps=plan.steps, lm_head="fused")
    with tempfile.TemporaryDirectory(prefix="agentdistill-sft-bench-") as scratch:
        directory = Path(scratch)
        dataset = expert_conversations(plan.tasks_per_env, directory)
        padded = prepare_mode("padded", dataset, f"scratch:{plan.student}", directory / "padded", settings)
        # The packed run starts from the very student the padded run built (same tokenizer, same weights).
        base = padded.prepared.base_model
        packed = prepare_mode("packed", dataset, base, directory / "packed", settings.replace(packing=True))
        model = packed.trainer.model
        same = same_weights(padded.trainer.model, model)
        check = check_loss(padded, packed, model)
        fixed_rows = first_packed_batch(packed)
        padded_figures = train(padded, plan.warmup_steps, fixed_rows)
        packed_figures = train(packed, plan.warmup_steps, fixed_rows)
        return Results(
            student=f"scratch:{plan.student}",
            parameters=sum(parameter.numel() for parameter in model.parameters()),
            conversations=len(dataset),
            token_lengths=token_lengths(padded),
            settings=settings,
            attention=str(model.config._attn_implementation),
            same_initial_weights=same,
            check=check,
            padded=padded_figures,
            packed=packed_figures,
        )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(
            "Train a scratch student with TRL's SFTTrainer on expert trajectories, padded and packed "
            "(padding-free), and compare real tokens/s and the loss. Prints one table; always exits 0 "
            "unless the benchmark itself breaks."
        )
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: few tasks and steps (under a minute)")
    parser.add_argument("--steps", type=int, default=None, metavar="N", help=f"optimizer steps per run (default {DEFAULT_STEPS}, {QUICK_STEPS} with --quick)")
    parser.add_argument("--tasks", type=int, default=None, metavar="N", help=f"expert episodes per env (default {DEFAULT_TASKS}, {QUICK_TASKS} with --quick)")
    parser.add_argument("--student", choices=("tiny", "small"), default="tiny", help="scratch student preset (default tiny; small is slow on CPU)")
    args = parser.parse_args(argv)
    if args.steps is not None and args.steps < 2:
        parser.error("--steps must be at least 2 (one warm-up step, one timed)")
    if args.tasks is not None and args.tasks < 2:
        parser.error("--tasks must be at least 2")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    steps = args.steps or (QUICK_STEPS if args.quick else DEFAULT_STEPS)
    plan = Plan(
        tasks_per_env=args.tasks or (QUICK_TASKS if args.quick else DEFAULT_TASKS),
        steps=steps,
        warmup_steps=min(QUICK_WARMUP_STEPS if args.quick else DEFAULT_WARMUP_STEPS, steps - 1),
        student=args.student,
    )
    silence_libraries()
    print_report(measure(plan))
    return 0


if __name__ == "__main__":
    sys.exit(main())
