"""Prompts for regeneration: find them in a dataset, normalise them to chat messages, render them for the target."""

from __future__ import annotations

from typing import Any

import torch
from datasets import Dataset
from transformers import PreTrainedTokenizerBase
from ..errors import EdaInputError
from ..schemas.prompt_items import to_messages  # noqa: F401  (public here first)

# Columns looked for, in order, when no prompt column is named.
PROMPT_COLUMNS = ("prompt", "messages", "conversations")


def find_prompt_column(dataset: Dataset, prompt_column: str | None = None) -> str:
    """The column holding the prompts: `prompt_column` if given, else the first of `PROMPT_COLUMNS` present."""
    if prompt_column is not None:
        if prompt_column not in dataset.column_names:
            raise EdaInputError(
                f"the prompt dataset has no column {prompt_column!r}; columns found: {dataset.column_names}"
            )
        return prompt_column
    for name in PROMPT_COLUMNS:
        if name in dataset.column_names:
            return name
    raise EdaInputError(
        f"the prompt dataset has none of the columns {list(PROMPT_COLUMNS)}; columns found: {dataset.column_names}. "
        "Name the prompt column with prompt_column=... (--prompt-column)"
    )


def render_prompt(
    tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, str]], use_chat_template: bool
) -> tuple[str, list[int]]:
    """The exact prompt text the target sees and its token ids.

    With the chat template the generation prompt (the opening of the assistant turn) is appended; without it the
    turns' contents are joined by blank lines and the tokenizer adds its usual special tokens (e.g. BOS).
    """
    if use_chat_template:
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    else:
        text = "\n\n".join(m["content"] for m in messages)
        ids = tokenizer(text)["input_ids"]
    return text, list(ids)


def resolve_chat_template(tokenizer: PreTrainedTokenizerBase, use_chat_template: bool | None) -> bool:
    """`None` means: use the chat template when the tokenizer has one."""
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if use_chat_template is None:
        return has_template
    if use_chat_template and not has_template:
        raise EdaInputError("the tokenizer has no chat_template; pass use_chat_template=False (--no-chat-template)")
    return bool(use_chat_template)


def tokenize_answers(
    tokenizer: PreTrainedTokenizerBase, rows: Dataset, max_answer_tokens: int, answer_column: str = "reference"
) -> Dataset:
    """Prompts with given answers (`answer_column`, e.g. the original human-written ones), tokenized like
    regenerated rows: the rendered prompt, then the answer cut to `max_answer_tokens` and closed by EOS when it fits.
    Columns `input_ids` and `loss_mask` (1 on the answer); rows without an answer are skipped."""
    if answer_column not in rows.column_names:
        return Dataset.from_dict({"input_ids": [], "loss_mask": []})
    column = find_prompt_column(rows)
    use_template = resolve_chat_template(tokenizer, None)
    eos = tokenizer.eos_token_id
    input_ids, loss_mask = [], []
    for index, row in enumerate(rows):
        if not row.get(answer_column):
            continue
        _, prompt_ids = render_prompt(tokenizer, to_messages(row[column], index), use_template)
        answer = tokenizer(row[answer_column], add_special_tokens=False)["input_ids"][:max_answer_tokens]
        answer = answer + ([eos] if eos is not None and len(answer) < max_answer_tokens else [])
        input_ids.append(prompt_ids + answer)
        loss_mask.append([0] * len(prompt_ids) + [1] * len(answer))
    return Dataset.from_dict({"input_ids": input_ids, "loss_mask": loss_mask})


def encode_chat_prompts(tokenizer: Any, prompts: list[str]) -> list[torch.LongTensor]:
    """Each prompt as a one-turn user message, rendered as regeneration renders it (the chat template when the
    tokenizer has one, plain text otherwise), `[1, seq]` each."""
    use_template = bool(getattr(tokenizer, "chat_template", None))
    return [
        torch.tensor([render_prompt(tokenizer, [{"role": "user", "content": prompt}], use_template)[1]])
        for prompt in prompts
    ]
