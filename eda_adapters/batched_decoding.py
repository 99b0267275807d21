"""Keeping batched `generate` (and every batched forward that keeps one position's logits) fast on CPU.

When a causal LM keeps only the last position's logits (`logits_to_keep=1`, as `generate` asks), its output head
reads `hidden_states[:, -1:, :]`, a strided view of the batch. On CPU in bfloat16, torch 2.13's `linear` turns that
view into a batched matmul over a copy of the head's weight *per row*: `[batch, hidden, vocab]`, 3.6 GB for
SmolLM2-135M at batch 64, once per `generate` call (measured: 9 of 16 s of a 64-prompt regeneration). A contiguous
input takes the plain matmul. `benchmarks/pipeline_peak.py` measures the difference.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


def _contiguous_input(module: torch.nn.Module, args: tuple) -> tuple:
    return (args[0].contiguous(), *args[1:])


@contextmanager
def contiguous_head_input(model: torch.nn.Module) -> Iterator[None]:
    """Within the block, `model`'s output head reads a contiguous input (see the module docstring); the outputs are
    unchanged."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    handle = head.register_forward_pre_hook(_contiguous_input) if isinstance(head, torch.nn.Module) else None
    try:
        yield
    finally:
        if handle is not None:
            handle.remove()
