"""GRPO on the rollout loop (TRL's GRPOTrainer with our rollout_func), with a real tiny student on CPU.

The student is a scratch TINY model that memorised the expert's episode of synthetic math task 0 (a few
seconds of plain PyTorch training). Sampled at temperature 1 it solves that task only some of the time, so a
group of episodes gets different rewards: the advantages that reach the loss are not all zero.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest
import torch

import agentdistill  # noqa: F401 - registers the env ids
from agentdistill.distill.grpo.evaluation import merge_eval_shards
from agentdistill.distill.grpo.launch import launch_grpo
from agentdistill.distill.grpo.rollouts import EnvRollouts, task_dataset, task_groups, task_prompt
from agentdistill.distill.grpo.settings import GRPOResult, GRPOSettings
from agentdistill.distill.grpo.train import train_grpo
from agentdistill.distill.launch import LaunchOptions
from agentdistill.policies import make_policy
from agentdistill.policies.base import PolicyRequest, SamplingParams
from agentdistill.policies.hf import HFPolicy
from agentdistill.rollouts.figures import episode_reward, paired_gain
from agentdistill.rollouts.loop import make_rollout_envs, run_rollouts
from agentdistill.rollouts.records import TrajectoryWriter, read_trajectories
from tests.distill.memorised import memorise_expert_episode

ENV_ID = "AgentMath-Synthetic-v0"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def memorised_student(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A TINY student trained (assistant tokens only) on the expert's episode of task 0, short prompt."""
    directory, _, _ = memorise_expert_episode(tmp_path_factory.mktemp("memorised"), ENV_ID, {"max_steps": 3, "prompt_variant": "short"})
    return directory


def tiny_settings(**changes: Any) -> GRPOSettings:
    """Task 0 only (the memorised one), groups of 4, two optimizer steps."""
    values: dict[str, Any] = {
        "env_kwargs": {"max_steps": 3, "prompt_variant": "short"},
        "train_tasks": 1, "eval_tasks": 0, "num_envs": 4, "group_size": 4, "prompts_per_step": 1, "max_steps": 2,
        "learning_rate": 1e-3, "beta": 0.05, "max_new_tokens": 64, "invalid_action_penalty": 0.1, "lora": False,
        "bf16": False, "save_steps": 1, "seed": 0,
    }
    values.update(changes)
    return GRPOSettings.from_mapping(values)


def test_task_prompts_round_trip_into_groups() -> None:
    prompts = [task_prompt(7, "q?")] * 3 + [task_prompt(2, "r")] * 3
    assert task_groups(prompts) == ([7, 2], 3)
    with pytest.raises(ValueError, match="same number of times"):
        task_groups([task_prompt(1, "a")] * 2 + [task_prompt(2, "b")])
    with pytest.raises(ValueError, match=r"not a task prompt"):
        task_groups(["What is 2+2?"])


def test_training_tasks_start_at_the_offset_and_name_their_task() -> None:
    import gymnasium as gym

    settings = tiny_settings(train_tasks=3, train_task_offset=5000)
    dataset = task_dataset(ENV_ID, settings)
    assert dataset["task_index"] == [5000, 5001, 5002]
    env = gym.make(ENV_ID, **settings.split_kwargs(settings.train_split))
    try:
        expected = [task_prompt(i, env.unwrapped.task_at(i).question) for i in (5000, 5001, 5002)]
    finally:
        env.close()
    assert dataset["prompt"] == expected
    assert task_groups([expected[1]] * 2) == ([5001], 2)
    with pytest.raises(ValueError, match="train_task_offset must be >= 0, got -1"):
        tiny_settings(train_task_offset=-1)


def test_an_offset_past_a_finite_split_is_refused(shared_data: Path) -> None:
    settings = GRPOSettings.from_mapping(
        {
            "env_kwargs": {"data_path": str(shared_data / "math" / "gsmhard_v2_1319.jsonl")},
            "train_split": None, "train_tasks": 2, "train_task_offset": 1319,
        }
    )
    with pytest.raises(ValueError, match=r"train_task_offset=1319 is past the end .* \(1319 tasks\)"):
        task_dataset("AgentMath-GSMHard-v0", settings)


def test_reward_is_the_score_minus_the_invalid_action_penalty() -> None:
    record = {"score": 1.0, "steps": [{"parse_error": "x"}, {"execution_error": None}, {"execution_error": "E"}]}
    assert episode_reward(record, 0.3) == pytest.approx(1.0 - 0.3 * 2 / 3)
    assert episode_reward({"score": 0.0, "steps": [{}]}, 0.5) == 0.0


def test_paired_reward_gain_averages_samples_per_task_then_pairs_tasks() -> None:
    def episodes(scores: dict[int, list[float]]) -> list[dict[str, Any]]:
        return [{"task_index": task, "score": score, "steps": [{}]} for task, values in scores.items() for score in values]

    before = episodes({0: [0.0, 0.0], 1: [1.0, 0.0], 2: [1.0, 1.0], 3: [0.0, 0.0]})
    after = episodes({0: [1.0, 1.0], 1: [1.0, 1.0], 2: [1.0, 0.0], 4: [1.0, 1.0]})  # task 3/4: not in both
    gain = paired_gain(before, after)
    assert gain is not None and (gain.tasks, gain.improved, gain.worsened) == (3, 2, 1)
    differences = [1.0, 0.5, -0.5]
    assert gain.mean == pytest.approx(1.0 / 3)
    spread = sum((d - 1.0 / 3) ** 2 for d in differences) / 2
    assert gain.stderr == pytest.approx((spread / 3) ** 0.5)
    assert paired_gain(before[:2], after[:2]) is None  # one task: no spread to measure
    with pytest.raises(ValueError, match="eval_samples=4 needs eval_temperature > 0"):
        GRPOSettings(eval_samples=4)
    with pytest.raises(ValueError, match="eval_temperature must be >= 0"):
        GRPOSettings(eval_temperature=-1.0)


def test_unknown_and_ill_typed_settings_are_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"'group_sise' \(did you mean 'group_size'"):
        GRPOSettings.from_mapping({"group_sise": 4})
    config = tmp_path / "c.yaml"
    config.write_text("learning_rate: fast\n")
    with pytest.raises(ValueError, match=rf"{config}.*learning_rate"):
        GRPOSettings.from_yaml(config)
    with pytest.raises(ValueError, match="group_size must be >= 2"):
        GRPOSettings(group_size=1)
    shipped = {path.name: GRPOSettings.from_yaml(path) for path in sorted((REPO / "configs" / "rl").glob("*.yaml"))}
    assert shipped["grpo_cpu_tiny.yaml"].env_kwargs["prompt_variant"] == "short" and not shipped["grpo_cpu_tiny.yaml"].lora
    assert shipped["grpo_qwen2.5-1.5b_vllm.yaml"].rollout_backend == "vllm"


def test_the_loss_sees_the_sampled_ids_the_env_mask_and_the_env_rewards(
    memorised_student: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Instrumentation only: TRL's own compute_loss runs; the wrapper records what it was given."""
    from trl import GRPOTrainer

    seen: list[dict[str, Any]] = []
    original = GRPOTrainer.compute_loss

    def recording_compute_loss(self: Any, model: Any, inputs: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        seen.append({key: value.detach().clone() if torch.is_tensor(value) else value for key, value in inputs.items()})
        return original(self, model, inputs, *args, **kwargs)

    monkeypatch.setattr(GRPOTrainer, "compute_loss", recording_compute_loss)
    out = tmp_path / "rl"
    train_grpo(ENV_ID, f"hf:{memorised_student}", out, tiny_settings(), progress=False)

    rollout_files = sorted((out / "rollouts" / "rank-0").glob("*.jsonl"))
    assert len(rollout_files) == len(seen) == 2, "one generation per optimizer step"
    some_reward_differs = False
    for inputs, path in zip(seen, rollout_files):
        records = list(read_trajectories(path))
        rewards = torch.tensor([episode_reward(record, 0.1) for record in records])
        some_reward_differs |= bool(rewards.std() > 0)
        expected_advantage = {
            (record["task_index"], record["sample"]): float((reward - rewards.mean()) / (rewards.std() + 1e-4))
            for record, reward in zip(records, rewards)
        }  # one task per step: the whole batch is one group
        unmatched = list(records)  # identical episodes are interchangeable: each row takes one of its own
        for row in range(inputs["completion_ids"].shape[0]):
            length = int(inputs["completion_mask"][row].sum())
            ids = inputs["completion_ids"][row, :length].tolist()
            loss_mask = (inputs["completion_mask"][row] * inputs["tool_mask"][row])[:length].tolist()
            prompt = inputs["prompt_ids"][row][inputs["prompt_mask"][row].bool()].tolist()
            record = next(r for r in unmatched if _trained_row_of(r["token_trace"]["completion_ids"], ids))
            unmatched.remove(record)
            trace = record["token_trace"]
            key = (record["task_index"], record["sample"])
            # the trained ids are the sampled ids (plus at most a closing eos the model did not write)...
            assert prompt == trace["prompt_ids"]
            assert ids[: len(trace["completion_ids"])] == trace["completion_ids"]
            # ...the loss mask is 1 exactly where the model sampled...
            assert loss_mask[: len(trace["env_mask"])] == trace["env_mask"]
            assert loss_mask[len(trace["env_mask"]) :] in ([], [0])
            # ...and the episode's reward reaches the loss as its group-relative advantage
            assert float(inputs["advantages"][row]) == pytest.approx(expected_advantage[key], abs=1e-4)
        assert not unmatched and len(records) == 4
    assert some_reward_differs, "the memorised student should sometimes fail: otherwise this test shows nothing"
    result = GRPOResult.from_json(out / "rl_result.json")
    assert result.global_step == 2 and len(result.train_rewards) == 2


def _trained_row_of(sampled: list[int], trained: list[int]) -> bool:
    """Whether ``trained`` is ``sampled``, possibly followed by one closing eos."""
    return trained[: len(sampled)] == sampled and len(trained) - len(sampled) in (0, 1)


def test_rl_cli_trains_logs_offline_loads_and_resumes(memorised_student: Path, tmp_path: Path) -> None:
    config = tmp_path / "grpo.yaml"
    import yaml

    settings = tiny_settings(eval_tasks=2, train_tasks=2, eval_temperature=1.0, eval_samples=2)
    config.write_text(yaml.safe_dump(settings.to_dict()))
    out = tmp_path / "rl"
    command = [
        str(Path(sys.executable).with_name("agentdistill")), "rl", "--env", ENV_ID, "--policy", f"hf:{memorised_student}",
        "--out", str(out), "--steps", "1", "--config", str(config), "--wandb-project", "agentdistill-test", "--no-progress",
    ]
    environment = {"WANDB_MODE": "offline", "PATH": str(Path(sys.executable).parent), "HOME": str(tmp_path)}
    first = subprocess.run(command, capture_output=True, text=True, timeout=600, env=environment)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "held-out success" in first.stdout
    result = GRPOResult.from_json(out / "rl_result.json")
    assert result.global_step == 1 and result.before is not None and result.after is not None
    assert result.before.episodes == result.after.episodes == 4  # 2 sampled episodes of each of 2 tasks
    assert result.reward_gain is not None and result.reward_gain.tasks == 2
    assert "paired by task: mean reward" in first.stdout
    samples = {(r["task_index"], r["sample"]): r["sampling"]["temperature"] for r in read_trajectories(out / "eval_after.jsonl")}
    assert samples == {(task, sample): 1.0 for task in (0, 1) for sample in (0, 1)}
    runs = list((out / "wandb").glob("**/offline-run-*"))
    assert runs, "the W&B run is written offline under OUT/wandb"
    state = json.loads((out / "checkpoint-1" / "trainer_state.json").read_text())
    logged = state["log_history"][0]
    for key in ("reward", "kl", "env/success", "env/invalid_rate", "completions/mean_length"):
        assert key in logged, key
    # the trained student loads as a policy and acts
    with HFPolicy(str(out)) as policy:
        completion = policy.generate([PolicyRequest(messages=({"role": "user", "content": "Task: x"},))], SamplingParams(max_new_tokens=4))
    assert completion[0][0].completion_tokens >= 1
    # a rerun with more steps resumes from the checkpoint instead of starting over
    command[command.index("--steps") + 1] = "2"
    second = subprocess.run(command, capture_output=True, text=True, timeout=600, env=environment)
    assert second.returncode == 0, second.stderr[-3000:]
    resumed = GRPOResult.from_json(out / "rl_result.json")
    assert resumed.global_step == 2 and resumed.resumed_from is not None and resumed.resumed_from.endswith("checkpoint-1")
    # other settings would resume checkpoints they did not make: refused, the run's files untouched
    before = {path: path.stat().st_mtime_ns for path in out.rglob("*") if path.is_file()}
    config.write_text(yaml.safe_dump(settings.replace(learning_rate=5e-4).to_dict()))
    other = subprocess.run(command, capture_output=True, text=True, timeout=600, env=environment)
    assert other.returncode == 1 and "Traceback" not in other.stderr
    assert other.stderr.startswith(f"agentdistill rl: {out}: holds another `agentdistill rl` run (learning_rate: 0.001 before, 0.0005 now)")
    assert {path: path.stat().st_mtime_ns for path in out.rglob("*") if path.is_file()} == before


@pytest.fixture()
def no_wandb_login(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty $HOME and no W&B credentials, mode or directories: a tracked run must go offline, under its
    output directory."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for name in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_CONFIG_DIR"):
        monkeypatch.delenv(name, raising=False)
    return home


def test_lora_run_saves_an_adapter_and_checkpoints_that_load_as_students(
    memorised_student: Path, tmp_path: Path, no_wandb_login: Path
) -> None:
    out = tmp_path / "lora"
    settings = tiny_settings(max_steps=1, lora=True, lora_r=4, lora_alpha=8, wandb_project="agentdistill-test")
    result = train_grpo(ENV_ID, f"hf:{memorised_student}", out, settings, progress=False)
    assert result.global_step == 1
    assert result.wandb_dir == str(out.resolve() / "wandb") and list((out / "wandb").glob("**/offline-run-*"))
    assert not any(no_wandb_login.rglob("*")), f"files written under $HOME: {list(no_wandb_login.rglob('*'))}"
    assert "WANDB_DIR" not in os.environ  # the run's directory settings do not leak into later runs
    assert (out / "adapter_config.json").is_file() and not (out / "model.safetensors").exists()
    request = [PolicyRequest(messages=({"role": "user", "content": "Task: x"},))]
    for directory in (out, out / "checkpoint-1"):
        with HFPolicy(str(directory)) as policy:
            assert getattr(policy.model, "peft_config", None), "the adapter is loaded over the recorded base"
            assert policy.generate(request, SamplingParams(max_new_tokens=2))[0][0].completion_tokens >= 1


@pytest.fixture(scope="module")
def lora_student(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoRA student as ``agentdistill distill`` writes it: a real short SFT run of a scratch student on expert
    episodes (adapter, tokenizer and the scratch base inside the run). The high learning rate moves the adapter
    well away from its base, so a start or a reference without it would show."""
    from agentdistill.distill.sft.launch import run_sft
    from agentdistill.distill.sft.settings import SFTSettings
    from agentdistill.distill.sft.trajectories import trajectories_to_dataset

    directory = tmp_path_factory.mktemp("lora-student")
    teacher = directory / "teacher.jsonl"
    envs = make_rollout_envs(ENV_ID, 2, max_steps=3, prompt_variant="short")
    try:
        run_rollouts(envs, make_policy("expert"), env_id=ENV_ID, task_indices=range(4), out=str(teacher), progress=False)
    finally:
        envs.close()
    dataset, _ = trajectories_to_dataset([teacher], report=False)
    student = directory / "student"
    sft = SFTSettings.from_yaml(REPO / "configs" / "distill" / "sft_cpu_tiny.yaml").replace(
        lora=True, lora_r=4, lora_alpha=8, max_steps=2, learning_rate=2e-2, scratch_vocab_size=600
    )
    run_sft(dataset, "scratch:tiny", student, settings=sft)
    assert (student / "adapter_config.json").is_file() and not (student / "model.safetensors").exists()
    return student


def _first_step_kl(out: Path) -> float:
    return float(json.loads((out / "checkpoint-1" / "trainer_state.json").read_text())["log_history"][0]["kl"])


def _episodes_of(path: Path) -> list[tuple[int, list[str]]]:
    return sorted((r["task_index"], [m["content"] for m in r["messages"]]) for r in read_trajectories(path))


@pytest.mark.parametrize("lora", [True, False], ids=["continue-adapter", "merge-adapter"])
def test_rl_starts_from_a_lora_student_as_distill_wrote_it(lora_student: Path, tmp_path: Path, lora: bool) -> None:
    """With LoRA settings the student's adapter is trained further, with full fine-tuning it is merged into its
    base; either way the held-out check before training plays the student as distilled, and the KL reference
    is the distilled student (not its base)."""
    from safetensors.torch import load_file

    from agentdistill.distill.grpo.evaluation import evaluate_student

    student = shutil.copytree(lora_student, tmp_path / "moved-student")  # the adapter records the old base path
    base = student / "base"
    spec = f"hf:{student}" if lora else f"hf:{base}@{student}"
    out = tmp_path / "rl"
    # held-out episodes sampled, not greedy: this student's greedy episodes are its base's too
    settings = tiny_settings(max_steps=1, lora=lora, eval_tasks=2, train_tasks=2, eval_temperature=1.0)
    result = train_grpo(ENV_ID, spec, out, settings, progress=False)

    assert result.global_step == 1 and result.before is not None and result.before.episodes == 2
    assert result.start == ("adapter continued" if lora else "adapter merged")
    assert result.start_model == f"{base} + adapter {student}"
    assert json.loads((out / "rl_result.json").read_text())["start"] == result.start
    with HFPolicy(str(base), adapter=str(student)) as distilled:  # the student as distill wrote it
        evaluate_student(distilled, ENV_ID, settings, tmp_path / "distilled.jsonl", progress=False)
    assert _episodes_of(out / "eval_before.jsonl") == _episodes_of(tmp_path / "distilled.jsonl")
    if lora:  # the same adapter, trained further; TRL's reference is a frozen copy of it as distilled
        adapter_config = json.loads((out / "adapter_config.json").read_text())
        assert adapter_config["r"] == 4 and adapter_config["base_model_name_or_path"] == str(base)
        assert not (out / "model.safetensors").exists()
        distilled_weights = load_file(student / "adapter_model.safetensors")
        reference = load_file(out / "ref" / "adapter_model.safetensors")
        assert reference.keys() == distilled_weights.keys()
        assert all(torch.equal(reference[key], distilled_weights[key]) for key in reference)
    else:  # the reference is the merged student: before the first update the policy is the reference itself
        assert (out / "model.safetensors").is_file() and not (out / "adapter_config.json").exists()
        assert _first_step_kl(out) == pytest.approx(0.0, abs=1e-7)
    with HFPolicy(str(out)) as policy:
        request = [PolicyRequest(messages=({"role": "user", "content": "Task: x"},))]
        assert policy.generate(request, SamplingParams(max_new_tokens=2))[0][0].completion_tokens >= 1


def _snapshot(directory: Path) -> dict[Path, bytes]:
    return {path: path.read_bytes() for path in sorted(directory.rglob("*")) if path.is_file()}


def test_rl_refuses_another_runs_directory_and_foreign_files_before_loading_anything(tmp_path: Path) -> None:
    """Refused before any model loads (the policies named here do not exist) and before a byte is written."""
    from agentdistill.distill.grpo.train import claim_rl_directory
    from agentdistill.errors import OutputConflictError

    settings = tiny_settings(max_steps=1)
    out = tmp_path / "rl"
    claim_rl_directory(out, ENV_ID, "hf:students/first", settings).release()  # what the first run's launcher claimed
    (out / "checkpoint-1").mkdir()
    (out / "checkpoint-1" / "trainer_state.json").write_text('{"global_step": 1}')
    kept = _snapshot(out)
    attempts = (
        (lambda: train_grpo(ENV_ID, "hf:students/other", out, settings, progress=False),
         "policy: 'hf:students/first' before, 'hf:students/other' now"),
        (lambda: train_grpo("AgentQA-Synthetic-v0", "hf:students/first", out, settings, progress=False),
         f"env_id: '{ENV_ID}' before, 'AgentQA-Synthetic-v0' now"),
        (lambda: launch_grpo(ENV_ID, "hf:students/first", out, settings=settings.replace(temperature=0.7), options=LaunchOptions(cpu=True)),
         "temperature: 1.0 before, 0.7 now"),
    )
    for attempt, difference in attempts:
        expected = rf"holds another `agentdistill rl` run \({re.escape(difference)}\)"
        with pytest.raises(OutputConflictError, match=expected):
            attempt()
        assert _snapshot(out) == kept
    foreign = tmp_path / "thesis"
    foreign.mkdir()
    (foreign / "draft.tex").write_text("\\section{Results}")
    with pytest.raises(OutputConflictError, match=r"no agentdistill run wrote here \(draft.tex\)"):
        train_grpo(ENV_ID, "hf:students/first", foreign, settings, progress=False)
    assert _snapshot(foreign) == {foreign / "draft.tex": b"\\section{Results}"}


def test_launch_runs_two_cpu_processes_and_shares_the_evaluation(memorised_student: Path, tmp_path: Path) -> None:
    out = tmp_path / "rl2"
    settings = tiny_settings(max_steps=1, num_envs=2, train_tasks=2, eval_tasks=3)
    options = LaunchOptions(num_processes=2, log_path=tmp_path / "launch.log", timeout=600)
    result = launch_grpo(ENV_ID, f"hf:{memorised_student}", out, settings=settings, options=options)
    ranks = sorted(json.loads(path.read_text())["world_size"] for path in (out / "ranks").glob("rank-*.json"))
    assert ranks == [2, 2]
    assert result.world_size == 2 and result.global_step == 1
    assert sorted(path.name for path in (out / "rollouts").iterdir()) == ["rank-0", "rank-1"], "each rank played its slice"
    log = (tmp_path / "launch.log").read_text()
    for name in ("eval_before.jsonl", "eval_after.jsonl"):
        assert f"rank 0 evaluates 2 of the 3 held-out tasks not yet in {name}: 0-1" in log
        assert f"rank 1 evaluates 1 of the 3 held-out tasks not yet in {name}: 2-2" in log
        assert sorted(record["task_index"] for record in read_trajectories(out / name)) == [0, 1, 2]
    assert not list(out.glob("eval_*.rank-*.jsonl")), "the shards are merged and removed"
    assert result.before is not None and result.after is not None and result.before.episodes == 3
    assert result.reward_gain is not None and result.reward_gain.tasks == 3


def test_evaluation_shards_merge_once_and_keep_what_the_file_holds(tmp_path: Path) -> None:
    path = tmp_path / "eval_after.jsonl"
    identity = {"policy": "hf:grpo-eval"}

    def record(task: int, score: float) -> dict[str, Any]:
        return {"env_id": ENV_ID, "task_index": task, "sample": 0, "messages": [], "score": score}

    with TrajectoryWriter(path, identity=identity) as writer:
        writer.write(record(0, 1.0))
    with TrajectoryWriter(path.with_name("eval_after.rank-0.jsonl"), identity=identity) as writer:
        writer.write(record(0, 0.0))  # a killed run's shard: task 0 was merged already
        writer.write(record(1, 1.0))
    with TrajectoryWriter(path.with_name("eval_after.rank-1.jsonl"), identity=identity) as writer:
        writer.write(record(2, 0.0))
    assert merge_eval_shards(path) == 2
    assert [(r["task_index"], r["score"]) for r in read_trajectories(path)] == [(0, 1.0), (1, 1.0), (2, 0.0)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval_after.jsonl"]
    assert merge_eval_shards(path) == 0


def test_rollout_hook_returns_one_completion_per_prompt_in_prompt_order(memorised_student: Path, tmp_path: Path) -> None:
    """The hook's output, checked without a trainer: groups kept together, ids from the trace."""
    hook = EnvRollouts(ENV_ID, tiny_settings(), tmp_path)
    records = [
        {"task_index": 3, "sample": 0, "score": 1.0, "num_steps": 1, "steps": [{"finish_reason": ["stop"]}],
         "token_trace": {"prompt_ids": [1, 2], "completion_ids": [5, 6], "env_mask": [1, 1], "logprobs": [-0.1, -0.2]}},
        {"task_index": 3, "sample": 1, "score": 0.0, "num_steps": 1, "steps": [{"finish_reason": ["length"], "parse_error": "x"}],
         "token_trace": {"prompt_ids": [1, 2], "completion_ids": [7], "env_mask": [1], "logprobs": [-0.3]}},
    ]
    batch = hook.batch(records, eos_token_id=9)
    assert batch["completion_ids"] == [[5, 6, 9], [7]], "a finished episode gets a closing eos; a cut one does not"
    assert batch["env_mask"] == [[1, 1, 0], [1]]
    assert batch["env_reward"] == [1.0, pytest.approx(-0.1)]
    assert batch["env_invalid_rate"] == [0.0, 1.0]


@pytest.mark.parametrize("path", sorted((REPO / "configs" / "rl").glob("*.yaml")), ids=lambda path: path.name)
def test_every_shipped_rl_config_loads(path: Path) -> None:
    settings = GRPOSettings.from_yaml(path)
    assert settings.max_steps > 0 and settings.group_size >= 2


def test_the_rollout_hook_runs_its_envs_as_ray_actors_when_asked(tmp_path: Path) -> None:
    """``executor: ray`` puts GRPO's (and OPD's) training envs in Ray actors: the hook's vector env is a
    ``RayVectorEnv`` (a Ray started for the test on this machine), and the expert's episodes through it are the
    ones the local envs give."""
    pytest.importorskip("ray")
    from agentdistill.rollouts.ray_envs import RayVectorEnv

    with pytest.raises(ValueError, match="executor must be one of local, ray, got 'dask'"):
        tiny_settings(executor="dask")
    settings = tiny_settings(executor="ray", num_envs=2)
    hook = EnvRollouts(ENV_ID, settings, tmp_path / "ray")
    try:
        envs = hook._vector_env()
        assert isinstance(envs, RayVectorEnv)
        run_rollouts(envs, make_policy("expert"), env_id=ENV_ID, task_indices=range(4), out=str(tmp_path / "ray.jsonl"))
    finally:
        hook.close()
    local = make_rollout_envs(ENV_ID, 2, **settings.split_kwargs(settings.train_split))
    try:
        run_rollouts(local, make_policy("expert"), env_id=ENV_ID, task_indices=range(4), out=str(tmp_path / "local.jsonl"))
    finally:
        local.close()
    ray_records, local_records = read_trajectories(tmp_path / "ray.jsonl"), read_trajectories(tmp_path / "local.jsonl")
    assert [(r["task_id"], r["score"]) for r in ray_records] == [(r["task_id"], r["score"]) for r in local_records]
    assert all(r["score"] == 1.0 for r in ray_records)
