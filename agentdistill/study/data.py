"""What every cell of a study starts from: the teacher's data and the untrained students.

The scripted expert is the teacher. It solves ``teacher_episodes`` training tasks per env three ways: as an agent
(thought, code, observation; the data of agent distillation), by chain of thought without tools (CoT
distillation) and by chain of thought over the question's retrieved documents (CoT+RAG, QA; math has nothing to
retrieve, so its CoT answers serve both). All students share one tokenizer, trained on all of that text, so the
largest agent student can score the others' tokens (on-policy distillation). Everything is written once under the
study's directory and reused by a rerun.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

from agentdistill.study.settings import ENV_IDS, QA_ENV_ID, StudySettings


@dataclasses.dataclass(frozen=True)
class TeacherData:
    """The conversations each kind of student is trained on (``datasets.Dataset`` of ``messages``)."""

    agent: Any
    cot: Any
    cot_rag: Any


def agent_env_kwargs(settings: StudySettings, env_id: str, split: str) -> dict[str, Any]:
    """An env of the study as a student acts in it: the split, the study's difficulty, the short system prompt."""
    return {"split": split, "prompt_variant": "short", "max_steps": 4, **settings.difficulty(env_id)}


def collect_teacher_data(out: Path, settings: StudySettings) -> TeacherData:
    """The expert's agent episodes and CoT answers on the training tasks of both envs (resumed when present)."""
    import gymnasium as gym

    from agentdistill.distill.cot import collect_cot, cot_dataset
    from agentdistill.distill.sft.trajectories import trajectories_to_dataset
    from agentdistill.policies.expert import ExpertPolicy
    from agentdistill.rollouts.loop import make_rollout_envs, run_rollouts

    directory = out / "teacher"
    agent_files, cot_files, cot_rag_files = [], [], []
    for env_id in ENV_IDS:
        agent_path = directory / f"{env_id}.agent.jsonl"
        envs = make_rollout_envs(env_id, settings.num_envs, **agent_env_kwargs(settings, env_id, "train"))
        try:
            run_rollouts(
                envs,
                ExpertPolicy(),
                env_id=env_id,
                task_indices=range(settings.teacher_episodes),
                out=str(agent_path),
                progress=False,
            )
        finally:
            envs.close()
        agent_files.append(agent_path)
        for rag in (False, True) if env_id == QA_ENV_ID else (False,):
            path = directory / f"{env_id}.{'cot_rag' if rag else 'cot'}.jsonl"
            env = gym.make(env_id, split="train", **settings.difficulty(env_id))
            try:
                collect_cot(ExpertPolicy(), env, range(settings.teacher_episodes), rag=rag, out=path)
            finally:
                env.close()
            (cot_rag_files if rag else cot_files).append(path)
    agent, _ = trajectories_to_dataset(agent_files, report=False)
    math_cot = [path for path in cot_files if QA_ENV_ID not in path.name]
    return TeacherData(agent=agent, cot=cot_dataset(cot_files), cot_rag=cot_dataset([*cot_rag_files, *math_cot]))


def initial_students(out: Path, settings: StudySettings, data: TeacherData) -> dict[tuple[str, int], Path]:
    """One untrained student per (name, seed), all over one tokenizer trained on every conversation of ``data``;
    built once (a fingerprint of shape, vocabulary bound, seed and texts guards a rerun on other data)."""
    from transformers import AutoTokenizer

    from agentdistill.distill.students import StudentConfig, build_student, save_student, train_tokenizer

    texts = [
        message["content"]
        for dataset in (data.agent, data.cot, data.cot_rag)
        for row in dataset["messages"]
        for message in row
    ]
    tokenizer_dir = out / "students" / "tokenizer"
    digest = hashlib.sha256("\x00".join(texts).encode("utf-8")).hexdigest()
    fingerprint = {"vocab_size": settings.vocab_size, "texts_sha256": digest}
    marker = tokenizer_dir / "study_tokenizer.json"
    if marker.is_file() and json.loads(marker.read_text(encoding="utf-8")) == fingerprint:
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    else:
        tokenizer = train_tokenizer(texts, vocab_size=settings.vocab_size)
        tokenizer.save_pretrained(tokenizer_dir)
        marker.write_text(json.dumps(fingerprint) + "\n", encoding="utf-8")
    students = {}
    for name, shape in settings.students.items():
        config = StudentConfig(**shape)
        for seed in settings.seeds:
            path = out / "students" / f"{name}-seed{seed}"
            if not (path / "config.json").is_file():
                save_student(build_student(tokenizer, config, seed=seed), tokenizer, path)
            students[(name, seed)] = path
    return students
