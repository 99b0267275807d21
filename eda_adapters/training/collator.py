"""Batching of draft-training samples: token sequences, their loss masks and (optionally) cached target features."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from ..data import pad_batch
from ..data.feature_cache import TOP_TOKEN_KEY
from ..errors import EdaInputError

#: Name of the optional per-sample column holding cached target features `[seq, hidden]` (see `eda_adapters.data`).
FEATURES_KEY = "hidden_states"


@dataclass
class DraftDataCollator:
    """Truncate and right-pad samples into a draft-training batch (`eda_adapters.data.pad_batch` does the padding).

    Each sample is a mapping with `input_ids` (`[seq]`) and optionally `loss_mask` (1 = position counts in the loss,
    e.g. response tokens; default all ones), cached target features `hidden_states` (`[seq, hidden]`, e.g. from
    `CachedFeatureDataset`), the target's top next token `target_top_token` (`[seq]`, stored with them) and
    `attention_mask` (for rows stored padded: their padding is dropped first). Other
    columns are ignored.

    Returns `input_ids`, `attention_mask`, `loss_mask` (`[batch, seq]`, 0 on padding) and, when the samples carry them,
    `hidden_states` (`[batch, seq, hidden]`) and `target_top_token` (`[batch, seq]`).
    """

    pad_token_id: int = 0
    max_length: int | None = None
    pad_to_multiple_of: int | None = None

    def __call__(self, samples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if not samples:
            raise EdaInputError("DraftDataCollator got an empty batch.")
        batch = pad_batch([self._trim(i, s) for i, s in enumerate(samples)], pad_token_id=self.pad_token_id)
        length = batch["input_ids"].shape[1]
        if self.pad_to_multiple_of and length % self.pad_to_multiple_of:
            extra = self.pad_to_multiple_of - length % self.pad_to_multiple_of
            for key, tensor in batch.items():
                pad = (0, 0, 0, extra) if tensor.dim() == 3 else (0, extra)
                batch[key] = F.pad(tensor, pad, value=self.pad_token_id if key == "input_ids" else 0)
        return batch

    def _trim(self, index: int, sample: dict[str, Any]) -> dict[str, torch.Tensor]:
        if "input_ids" not in sample:
            raise EdaInputError(
                f"Draft-training samples need an `input_ids` column (sample {index} has only {sorted(sample)}): "
                "tokenize the data first (see eda_adapters.data)."
            )
        ids = torch.as_tensor(sample["input_ids"], dtype=torch.long).flatten()
        out = {"input_ids": ids}
        for key in ("loss_mask", FEATURES_KEY, TOP_TOKEN_KEY):
            if sample.get(key) is not None:
                value = torch.as_tensor(sample[key])
                if value.shape[0] != len(ids):
                    raise EdaInputError(
                        f"Sample {index}: {key} has length {value.shape[0]}, input_ids {len(ids)}: they must match."
                    )
                out[key] = value
        if sample.get("attention_mask") is not None:
            keep = torch.as_tensor(sample["attention_mask"]).flatten().bool()
            if len(keep) != len(ids):
                raise EdaInputError(f"Sample {index}: attention_mask has length {len(keep)}, input_ids {len(ids)}.")
            out = {key: value[keep] for key, value in out.items()}
        if self.max_length is not None:
            out = {key: value[: self.max_length] for key, value in out.items()}
        return out
