"""Choosing a reduced draft vocabulary: the target tokens a draft should score, by frequency in its training data."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from ..errors import EdaInputError


def count_tokens(rows: Iterable[Mapping[str, Any]], vocab_size: int) -> torch.Tensor:
    """How often each target token id occurs where it is a training label: over `loss_mask == 1` positions when rows
    have a `loss_mask` (the response tokens a draft learns to predict), else over all `input_ids`."""
    counts = torch.zeros(vocab_size, dtype=torch.long)
    for row in rows:
        ids = torch.as_tensor(row["input_ids"], dtype=torch.long).flatten()
        mask = row.get("loss_mask")
        if mask is not None:
            ids = ids[: len(mask)][torch.as_tensor(mask).flatten()[: ids.numel()].bool()]
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= vocab_size):
            raise EdaInputError(f"Token ids outside [0, {vocab_size}): is the data tokenized for this target?")
        counts += torch.bincount(ids, minlength=vocab_size)
    return counts


def most_frequent_tokens(
    rows: Iterable[Mapping[str, Any]], size: int, vocab_size: int, always: Sequence[int] = ()
) -> torch.LongTensor:
    """The `size` most frequent label tokens of `rows` (see `count_tokens`), always including `always` (e.g. the EOS
    and chat-template tokens); ordered by count, then id. Pass the result as
    `EagleDraftModel.from_target(target, draft_vocab=...)`."""
    if not 0 < size <= vocab_size:
        raise EdaInputError(f"size must be in [1, vocab_size={vocab_size}], got {size}.")
    counts = count_tokens(rows, vocab_size)
    forced = torch.as_tensor(list(dict.fromkeys(always)), dtype=torch.long)
    if forced.numel() > size:
        raise EdaInputError(f"{forced.numel()} ids in `always` do not fit a vocabulary of {size}.")
    # rank by count (descending), then id (ascending): a stable sort of ids by -count
    ranked = torch.sort(-counts, stable=True).indices
    rest = ranked[~torch.isin(ranked, forced)][: size - forced.numel()]
    chosen = torch.cat((rest, forced)).sort().values  # ids ascending: the stable sort below breaks ties by id
    return chosen[torch.sort(-counts[chosen], stable=True).indices]
