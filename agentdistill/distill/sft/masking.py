"""The assistant-only loss: which tokens of a conversation the student is trained on (see the package docstring)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from datasets import Dataset
    from transformers import PreTrainedTokenizerBase


def has_generation_markers(chat_template: str | None) -> bool:
    """Whether a template marks assistant output with ``{% generation %}`` (TRL's own check)."""
    if not chat_template:
        return False
    from trl.chat_template_utils import has_generation_markers as trl_check

    return bool(trl_check(chat_template))


def assistant_token_mask(tokenizer: PreTrainedTokenizerBase, messages: Sequence[Mapping[str, Any]]) -> list[int]:
    """1 for every token of ``apply_chat_template(messages, tokenize=True)`` that SFT trains on, else 0.

    Those are the assistant turns' contents and the end-of-turn token closing each (see the module docstring
    for how templates with and without generation markers are handled).
    """
    return tokenize_with_mask(tokenizer, messages)[1]


def tokenize_with_mask(
    tokenizer: PreTrainedTokenizerBase, messages: Sequence[Mapping[str, Any]]
) -> tuple[list[int], list[int]]:
    conversation = [dict(message) for message in messages]
    if has_generation_markers(tokenizer.chat_template):
        output = tokenizer.apply_chat_template(
            conversation, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
        )
        return list(output["input_ids"]), [int(bit) for bit in output["assistant_masks"]]
    text, spans = _assistant_spans(tokenizer, conversation)
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    mask = [
        int(any(start < span_end and end > span_start for span_start, span_end in spans))
        for start, end in encoded["offset_mapping"]
    ]
    return list(encoded["input_ids"]), mask


def _assistant_spans(
    tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, Any]]
) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character span of each assistant turn (content + end-of-turn token)."""

    def render(part: list[dict[str, Any]], prompt: bool) -> str:
        return tokenizer.apply_chat_template(part, tokenize=False, add_generation_prompt=prompt)

    text = render(messages, False)
    spans: list[tuple[int, int]] = []
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        try:
            before = render(messages[:index], True)
        except Exception:  # some templates cannot render an empty conversation
            if index:
                raise
            before = ""
        through = render(messages[: index + 1], False)
        if not (through.startswith(before) and text.startswith(through)):
            raise ValueError(
                "the chat template renders earlier turns differently depending on what follows, so assistant "
                f"turns cannot be located (turn {index}); set chat_template_path to a template with "
                "{% generation %} markers"
            )
        turn = through[len(before) :]
        spans.append((len(before), len(before) + len(turn.rstrip())))
    return text, spans


def pretokenize(conversations: Dataset, tokenizer: PreTrainedTokenizerBase) -> Dataset:
    def encode(row: dict[str, Any]) -> dict[str, list[int]]:
        input_ids, mask = tokenize_with_mask(tokenizer, row["messages"])
        return {"input_ids": input_ids, "assistant_masks": mask}

    return conversations.map(encode, remove_columns=conversations.column_names, desc="Masking assistant turns")
