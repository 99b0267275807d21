"""The schema of prompts: every item of a prompt file or list is a string or a chat conversation.

A conversation is a list of turns in OpenAI (`role`/`content`) or ShareGPT (`from`/`value`) form with a user turn
that has text. Bad items are reported by index, all of them at once (the first few and a count), so a file is
fixed in one pass. A BOM, CRLF line endings and blank lines are not errors: the readers drop them without a word
(`validation.read_text_file`, `data.io.load_rows`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..errors import EdaInputError

#: How many bad items a message names before it gives only the count.
SHOWN_ITEMS = 5

# ShareGPT speaker names -> chat-template roles
_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system",
          "chatgpt": "assistant", "bing": "assistant", "bard": "assistant"}


def to_messages(value: Any, index: int) -> list[dict[str, str]]:
    """Normalise one prompt to chat messages `[{"role", "content"}, ...]` ending with a user turn.

    A string becomes one user message. A conversation (OpenAI `role`/`content` or ShareGPT `from`/`value`) is cut
    after its last user turn: the target regenerates the reply to it, earlier turns are kept as context.
    """
    if isinstance(value, str):
        if not value.strip():
            raise EdaInputError(f"prompt {index} has no text; remove empty prompts from the dataset")
        return [{"role": "user", "content": value}]
    if not isinstance(value, list) or not all(isinstance(turn, dict) for turn in value):
        raise EdaInputError(
            f"prompt {index} is a {type(value).__name__}; expected a string or a list of "
            "{'role', 'content'} / {'from', 'value'} turns"
        )
    messages = []
    for turn in value:
        speaker = turn.get("role", turn.get("from"))
        role = _ROLES.get(str(speaker).lower())
        if role is None:
            raise EdaInputError(f"prompt {index} has a turn with unknown role {speaker!r}; use user/assistant/system")
        content = turn.get("content", turn.get("value"))
        if content is not None and not isinstance(content, str):
            raise EdaInputError(f"prompt {index} has a turn whose content is a {type(content).__name__}; write each "
                                "turn's content as a string")
        messages.append({"role": role, "content": "" if content is None else str(content)})
    last_user = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=None)
    if last_user is None or not messages[last_user]["content"].strip():
        raise EdaInputError(f"prompt {index} has no user turn with text; every conversation needs one to answer")
    return messages[: last_user + 1]



def prompt_conversations(values: Iterable[Any], source: str = "the prompts") -> list[list[dict[str, str]]]:
    """Every prompt of `values` as chat messages (see `to_messages`). Refuses in one line naming `source`, the bad
    items by index (the first few and a count) and the first item's problem; an empty `values` is refused too."""
    conversations, bad = [], []
    for index, value in enumerate(values):
        try:
            conversations.append(to_messages(value, index))
        except EdaInputError as err:
            bad.append((index, str(err)))
    if bad:
        shown = ", ".join(str(index) for index, _ in bad[:SHOWN_ITEMS])
        more = f" and {len(bad) - SHOWN_ITEMS} more" if len(bad) > SHOWN_ITEMS else ""
        raise EdaInputError(f"{source}: {len(bad)} unusable prompt(s) (items {shown}{more}): {bad[0][1]}")
    if not conversations:
        raise EdaInputError(f"{source} holds no prompt: give at least one")
    return conversations


__all__ = ["prompt_conversations", "to_messages"]
