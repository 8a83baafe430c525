"""Token-in/token-out episodes: the exact ids a model read and wrote over a multi-turn episode.

RL trains on what was sampled. Re-rendering a finished conversation with the chat template and tokenizing
it again does not give back the sampled ids (a BPE merges differently across a turn boundary, a stop string
cut mid-token, special tokens written as text...), so the loss would score tokens the model never produced.
Here an episode's ids are *built* as it runs instead, and each later turn is generated from them:

* turn 1's prompt is the chat template's rendering of the system prompt and the task (or the open first
  thought, with FTP);
* after a turn, the prompt grows by the sampled ids as they are, then by the ids of the observation turn:
  the template's text between an assistant message's content and the next generation prompt (for ChatML
  ``<|im_end|>\\n<|im_start|>user\\n{observation}<|im_end|>\\n<|im_start|>assistant\\n``), minus an
  end-of-turn token the model already sampled.

:class:`TokenTrace` keeps the result in the shape TRL's GRPO ``rollout_func`` returns: the first prompt,
then one completion running to the end of the episode with ``env_mask`` 1 exactly on sampled tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

_PLACEHOLDER = "\u2063agentdistill-turn\u2063"
"""Stands for a turn's content while the template's text around it is found (never in real text)."""


class ObservationTokenizer:
    """The ids that follow a sampled turn: the template's closing of that turn, the observation as a user
    turn, and the next assistant header, tokenized on their own.

    Args:
        tokenizer: the policy's tokenizer (with a chat template).

    Raises:
        ValueError: at construction, when the template renders earlier turns differently once a turn follows
            (then a growing prompt cannot equal the rendered conversation; use a template that does not, e.g.
            ChatML / Qwen2.5 / Llama 3).
    """

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self._end_ids = _end_of_turn_ids(tokenizer)
        self._before, self._after = self._split_observation_turn()

    def ids(self, sampled: Sequence[int], observation: str) -> list[int]:
        """Ids to append after ``sampled`` (one turn's sampled ids) to show ``observation``."""
        text = self._before + observation + self._after
        ids = self._encode(text)
        if sampled and int(sampled[-1]) in self._end_ids and ids and ids[0] == int(sampled[-1]):
            ids = ids[1:]  # the model already closed its turn with the template's end-of-turn token
        return ids

    def _encode(self, text: str) -> list[int]:
        return [int(token) for token in self.tokenizer(text, add_special_tokens=False)["input_ids"]]

    def _split_observation_turn(self) -> tuple[str, str]:
        """The template's text before and after an observation placed right after an assistant's content."""
        head = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]
        assistant = {"role": "assistant", "content": "a" + _PLACEHOLDER}
        open_turn = self._render([*head, assistant], continue_final_message=True)
        following = self._render(
            [*head, {"role": "assistant", "content": "a" + _PLACEHOLDER}, {"role": "user", "content": _PLACEHOLDER}],
            add_generation_prompt=True,
        )
        if not open_turn.endswith(_PLACEHOLDER) or not following.startswith(open_turn):
            raise ValueError(
                "the chat template renders an assistant turn differently once a user turn follows it, so a "
                "multi-turn prompt cannot grow token by token; use a template that keeps earlier turns as they "
                "are (ChatML, Qwen2.5, Llama 3)"
            )
        rest = following[len(open_turn) :]
        before, separator, after = rest.partition(_PLACEHOLDER)
        if not separator:
            raise ValueError("the chat template dropped the user turn's content")
        return before, after

    def _render(self, messages: list[dict[str, str]], **options: Any) -> str:
        return str(self.tokenizer.apply_chat_template(messages, tokenize=False, **options))


def _end_of_turn_ids(tokenizer: Any) -> set[int]:
    ids = {tokenizer.eos_token_id, tokenizer.pad_token_id}
    return {int(token) for token in ids if token is not None}


@dataclass
class TokenTrace:
    """One episode as ids: ``prompt_ids``, then ``completion_ids`` with a parallel ``env_mask`` (1: the model
    sampled the token, 0: the env or the template put it there) and ``logprobs`` (the sampled tokens' raw
    model logprobs, 0.0 on env tokens)."""

    prompt_ids: list[int]
    completion_ids: list[int] = field(default_factory=list)
    env_mask: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)

    def next_prompt(self) -> tuple[int, ...]:
        """The ids the model reads for its next turn: everything so far."""
        return (*self.prompt_ids, *self.completion_ids)

    def add_sampled(self, ids: Sequence[int], logprobs: Sequence[float] | None) -> None:
        values = list(logprobs) if logprobs is not None and len(logprobs) == len(ids) else [0.0] * len(ids)
        self.completion_ids.extend(int(token) for token in ids)
        self.env_mask.extend([1] * len(ids))
        self.logprobs.extend(float(value) for value in values)

    def add_env(self, ids: Sequence[int]) -> None:
        self.completion_ids.extend(int(token) for token in ids)
        self.env_mask.extend([0] * len(ids))
        self.logprobs.extend([0.0] * len(ids))

    def to_dict(self) -> dict[str, list[int] | list[float]]:
        return {
            "prompt_ids": list(self.prompt_ids),
            "completion_ids": list(self.completion_ids),
            "env_mask": list(self.env_mask),
            "logprobs": list(self.logprobs),
        }
