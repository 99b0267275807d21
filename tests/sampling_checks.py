"""Exact distributions of short continuations on a tiny vocabulary, and a chi-square goodness-of-fit test: shared by
the tests that check that speculative sampling (chain and tree) keeps the target's distribution."""

from __future__ import annotations

import torch
from conftest import make_target
from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopPLogitsWarper

from eda_adapters import EagleDraftModel

VOCAB = 6
PROMPT = torch.tensor([[1, 2, 3]])


def tiny_target_and_draft():
    """A one-layer Llama over a 6-token vocabulary (spread-out logits) and a random EAGLE draft for it."""
    target = make_target(
        "llama", vocab_size=VOCAB, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, initializer_range=0.5, eos_token_id=None, bos_token_id=None,
    )
    torch.manual_seed(0)
    return target, EagleDraftModel.from_target(target)


@torch.no_grad()
def target_joint(target, prompt: torch.Tensor, vocab: int, temperature: float, top_p: float) -> torch.Tensor:
    """Exact probability `[vocab] * 3` of every continuation (x1, x2, x3) under `target`, with the warpers `generate`
    applies for `temperature` and `top_p`."""
    warp = LogitsProcessorList([TemperatureLogitsWarper(temperature), TopPLogitsWarper(top_p)])
    grid = torch.cartesian_prod(torch.arange(vocab), torch.arange(vocab))  # all (x1, x2)
    ids = torch.cat((prompt.expand(len(grid), -1), grid), dim=1)
    logits = target(input_ids=ids).logits[:, prompt.shape[1] - 1 :]

    def probs(position: int) -> torch.Tensor:
        return torch.softmax(warp(ids[:, : prompt.shape[1] + position], logits[:, position].clone()), dim=-1)

    p1 = probs(0)[0]  # same row for every grid entry
    p2 = probs(1).view(vocab, vocab, vocab)[:, 0]  # [x1, x2]
    p3 = probs(2).view(vocab, vocab, vocab)  # [x1, x2, x3]
    return p1[:, None, None] * p2[:, :, None] * p3


def chi_square_p_value(counts: torch.Tensor, probs: torch.Tensor) -> float:
    """Pearson chi-square goodness of fit, cells with expected count < 5 pooled into one."""
    expected = probs.flatten().double() * counts.sum()
    observed = counts.flatten().double()
    small = expected < 5
    expected = torch.cat((expected[~small], expected[small].sum()[None]))
    observed = torch.cat((observed[~small], observed[small].sum()[None]))
    if expected[-1] == 0:
        expected, observed = expected[:-1], observed[:-1]
    statistic = ((observed - expected) ** 2 / expected).sum()
    dof = torch.tensor(len(expected) - 1, dtype=torch.double)
    return float(torch.special.gammaincc(dof / 2, statistic / 2))
