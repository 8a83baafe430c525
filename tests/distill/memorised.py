"""A TINY scratch model that memorised the scripted expert's episode of one task (assistant tokens only): a
student that acts (for GRPO) or a teacher that knows better than a fresh model (for OPD), built in seconds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from agentdistill.distill.students import TINY, build_student, save_student, train_tokenizer
from agentdistill.policies import make_policy
from agentdistill.rollouts.loop import make_rollout_envs, run_rollouts
from agentdistill.rollouts.records import read_trajectories


def memorise_expert_episode(
    directory: Path, env_id: str, env_kwargs: dict[str, Any], *, steps: int = 120
) -> tuple[Path, Any, dict[str, Any]]:
    """Write ``directory/student``: a TINY model over a tokenizer trained on the expert's episode of task 0,
    trained ``steps`` times on that episode. Returns the model directory, the tokenizer and the episode."""
    envs = make_rollout_envs(env_id, 1, **env_kwargs)
    try:
        run_rollouts(envs, make_policy("expert"), env_id=env_id, task_indices=[0], out=str(directory / "t.jsonl"), progress=False)
    finally:
        envs.close()
    episode = next(read_trajectories(directory / "t.jsonl"))
    messages = episode["messages"]
    tokenizer = train_tokenizer([message["content"] for message in messages], vocab_size=600, min_frequency=1)
    model = build_student(tokenizer, TINY, seed=0)
    encoded = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    input_ids = torch.tensor([encoded["input_ids"]])
    labels = input_ids.clone()
    labels[torch.tensor([encoded["assistant_masks"]]) == 0] = -100
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    torch.manual_seed(0)
    model.train()
    for _ in range(steps):
        model(input_ids=input_ids, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    out = directory / "student"
    save_student(model.eval(), tokenizer, out)
    return out, tokenizer, dict(episode)
