"""Token-in/token-out episodes: every turn is generated from the exact ids of the turns before it."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest
import torch

import agentdistill  # noqa: F401 - registers the env ids
from agentdistill.distill.students import TINY, build_student, save_student, train_tokenizer
from agentdistill.envs.synthetic.math import generate_math_task
from agentdistill.policies import make_policy
from agentdistill.policies.base import SamplingParams
from agentdistill.policies.expert import expert_action
from agentdistill.policies.hf import HFPolicy
from agentdistill.rollouts.loop import SAGSettings, make_rollout_envs, run_rollouts
from agentdistill.rollouts.records import read_trajectories
from agentdistill.rollouts.tokens import ObservationTokenizer

ENV_ID = "AgentMath-Synthetic-v0"


@pytest.fixture(scope="module")
def student_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained TINY student: its turns never solve the task, so every episode runs all its turns."""
    texts = []
    for seed in range(40):
        task = generate_math_task(seed)
        texts += [task.question, *(expert_action(task.plan, step) for step in range(len(task.plan)))]
    tokenizer = train_tokenizer(texts, vocab_size=1000)
    out = tmp_path_factory.mktemp("student")
    save_student(build_student(tokenizer, TINY, seed=3), tokenizer, out)
    return out


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _segments(mask: list[int]) -> list[tuple[int, int, int]]:
    """Runs of equal mask values as (value, start, end)."""
    runs: list[tuple[int, int, int]] = []
    for position, bit in enumerate(mask):
        if runs and runs[-1][0] == bit:
            runs[-1] = (bit, runs[-1][1], position + 1)
        else:
            runs.append((bit, position, position + 1))
    return runs


def test_multi_turn_trace_holds_exactly_the_sampled_ids(student_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "t.jsonl"
    envs = make_rollout_envs(ENV_ID, 2, max_steps=3, prompt_variant="short")
    with HFPolicy(str(student_dir)) as policy:
        summary = run_rollouts(
            envs, policy, env_id=ENV_ID, task_indices=range(2), samples_per_task=2, out=str(out),
            sampling=SamplingParams(temperature=1.0, max_new_tokens=12, seed=5), token_trace=True,
            record_token_ids=True, progress=False,
        )
        tokenizer = policy.tokenizer
    envs.close()
    assert summary.episodes == 4
    records = list(read_trajectories(out))
    assert sorted((record["task_index"], record["sample"]) for record in records) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    for record in records:
        trace = record["token_trace"]
        prompt, completion, mask = trace["prompt_ids"], trace["completion_ids"], trace["env_mask"]
        steps = record["steps"]
        assert len(steps) == 3, "an untrained student never answers: all three turns run"
        assert len(completion) == len(mask) == len(trace["logprobs"])
        # each turn was generated from the exact ids of the episode so far...
        for step in steps:
            assert step["prompt_token_ids"] == prompt + completion[: len(step["prompt_token_ids"]) - len(prompt)]
        # ...the mask is 1 exactly on what each turn sampled, in order, and the logprobs are the sampled ones
        sampled_runs = [(start, end) for bit, start, end in _segments(mask) if bit == 1]
        assert [completion[start:end] for start, end in sampled_runs] == [step["token_ids"][0] for step in steps]
        assert [trace["logprobs"][start:end] for start, end in sampled_runs] == [step["logprobs"][0] for step in steps]
        # ...and between turns lies the observation turn as the template writes it, nothing else
        env_runs = [(start, end) for bit, start, end in _segments(mask) if bit == 0]
        assert len(env_runs) == len(steps) - 1 and mask[-1] == 1
        for (start, end), step in zip(env_runs, steps):
            closing = "" if step["token_ids"][0][-1] == tokenizer.eos_token_id else "<|im_end|>"
            expected = f"{closing}\n<|im_start|>user\n{step['observation']}<|im_end|>\n<|im_start|>assistant\n"
            assert tokenizer.decode(completion[start:end]) == expected
        # the first prompt is the chat template's rendering of the system prompt and the task
        assert tokenizer.decode(prompt) == tokenizer.apply_chat_template(
            record["messages"][:2], tokenize=False, add_generation_prompt=True
        )


def test_observation_ids_close_the_turn_unless_the_model_did(student_dir: Path) -> None:
    policy = HFPolicy(str(student_dir))
    observation_tokens = ObservationTokenizer(policy.tokenizer)
    sampled = policy.tokenizer("Thought: x = 12", add_special_tokens=False)["input_ids"]
    appended = observation_tokens.ids(sampled, "Observation:\n12")
    assert policy.tokenizer.decode(appended).startswith("<|im_end|>\n<|im_start|>user\nObservation:\n12")
    ended = [*sampled, policy.tokenizer.eos_token_id]
    assert observation_tokens.ids(ended, "o") == observation_tokens.ids(sampled, "o")[1:]
    policy.close()


def test_token_trace_refuses_text_only_policies_and_sag(student_dir: Path, tmp_path: Path) -> None:
    envs = make_rollout_envs(ENV_ID, 1)
    try:
        with pytest.raises(ValueError, match="token_trace needs a policy that generates from token ids"):
            run_rollouts(
                envs, make_policy("expert"), env_id=ENV_ID, task_indices=[0], out=str(tmp_path / "a.jsonl"),
                token_trace=True, progress=False,
            )
        with HFPolicy(str(student_dir)) as policy, pytest.raises(ValueError, match="SAG"):
            run_rollouts(
                envs, policy, env_id=ENV_ID, task_indices=[0], out=str(tmp_path / "b.jsonl"), token_trace=True,
                sag=SAGSettings(n=2), progress=False,
            )
    finally:
        envs.close()


def test_samples_per_task_resume_skips_only_finished_samples(tmp_path: Path) -> None:
    out = tmp_path / "g.jsonl"
    envs = make_rollout_envs(ENV_ID, 2)
    policy: Any = make_policy("expert")
    try:
        first = run_rollouts(envs, policy, env_id=ENV_ID, task_indices=[0, 1], out=str(out), progress=False)
        again = run_rollouts(
            envs, policy, env_id=ENV_ID, task_indices=[0, 1], samples_per_task=3, out=str(out), progress=False
        )
    finally:
        envs.close()
    assert (first.episodes, again.episodes, again.skipped) == (2, 4, 2)
    keys = sorted((record["task_index"], record["sample"]) for record in read_trajectories(out))
    assert keys == [(task, sample) for task in (0, 1) for sample in range(3)]
