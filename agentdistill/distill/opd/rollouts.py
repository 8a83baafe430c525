"""The student's episodes, scored by the teacher: GRPO's rollout hook plus one teacher pass per batch.

Each episode comes back from the rollout loop as token ids (the student's first prompt, then one completion
running to the end of the episode with ``env_mask`` 1 on the tokens the student sampled). The teacher reads the
same completion after its own first prompt: its system prompt (``teacher_prompt_variant``) and the same task
turn, rendered by the shared chat template. So the teacher judges every sampled token in the context it would
have had itself, with the student's turns and the env's observations exactly as they were.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym

from agentdistill.distill.grpo.rollouts import EnvRollouts
from agentdistill.distill.opd.settings import OPDSettings
from agentdistill.distill.opd.teachers import Teacher, check_same_tokenizer, make_teacher


class OPDRollouts(EnvRollouts):
    """GRPO's ``rollout_func`` (:class:`~agentdistill.distill.grpo.rollouts.EnvRollouts`) that also has ``teacher``
    score every episode's completion; :meth:`take_teacher_logprobs` hands the scores of the last call to the
    trainer (:class:`~agentdistill.distill.opd.trainer.OPDTrainer`), in the order of the episodes returned."""

    def __init__(self, env_id: str, settings: OPDSettings, out_dir: str | Path, *, teacher: str) -> None:
        super().__init__(env_id, settings, out_dir)
        self.settings: OPDSettings = settings
        self.teacher_spec = teacher
        self._teacher: Teacher | None = None
        self._teacher_system_prompt: str | None = None
        self._scores: list[list[float]] | None = None

    def __call__(self, prompts: list[Any], trainer: Any) -> dict[str, Any]:
        records = self.play(prompts, trainer)
        output = self.batch(records, eos_token_id=self.eos_token_id(trainer))
        teacher = self._live_teacher(trainer)
        items = [
            (self.teacher_prompt_ids(record, trainer.processing_class), completion)
            for record, completion in zip(records, output["completion_ids"])
        ]
        self._scores = teacher.score(items)
        return output

    def take_teacher_logprobs(self) -> list[list[float]]:
        """The teacher's log-probability of every completion token of the last call's episodes (once)."""
        if self._scores is None:
            raise RuntimeError("no teacher scores: the trainer asked before the rollouts ran, or asked twice")
        scores, self._scores = self._scores, None
        return scores

    def teacher_prompt_ids(self, record: Mapping[str, Any], tokenizer: Any) -> list[int]:
        """The teacher's first prompt for an episode: its system prompt, the episode's task turn, and the
        assistant header, as the chat template renders them."""
        task = record["messages"][1]
        messages = [
            {"role": "system", "content": self.teacher_system_prompt()},
            {"role": task["role"], "content": task["content"]},
        ]
        encoded = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        ids = encoded["input_ids"] if isinstance(encoded, Mapping) else encoded
        return [int(token) for token in ids]

    def teacher_system_prompt(self) -> str:
        """The env's system prompt in the teacher's variant (the tools are the same for every task)."""
        if self._teacher_system_prompt is None:
            env = gym.make(self.env_id, **self.settings.split_kwargs(self.settings.train_split))
            try:
                self._teacher_system_prompt = env.unwrapped.system_prompt(self.settings.teacher_prompt_variant)
            finally:
                env.close()
        return self._teacher_system_prompt

    def _live_teacher(self, trainer: Any) -> Teacher:
        if self._teacher is None:
            model = trainer.accelerator.unwrap_model(trainer.model)
            teacher, tokenizer = make_teacher(
                self.teacher_spec,
                device=trainer.accelerator.device,
                dtype=next(model.parameters()).dtype,
                batch_size=self.settings.teacher_batch_size,
            )
            if tokenizer is not None:
                check_same_tokenizer(trainer.processing_class, tokenizer, teacher_name=teacher.name)
            self._teacher = teacher
        return self._teacher

    def close(self) -> None:
        super().close()
        if self._teacher is not None:
            self._teacher.close()
            self._teacher = None


def pad_scores(scores: Sequence[Sequence[float]], length: int) -> list[list[float]]:
    """Each row cut or padded with zeros to ``length`` (TRL pads and may cut completions to one width)."""
    return [[*row[:length], *([0.0] * max(0, length - len(row)))] for row in scores]
