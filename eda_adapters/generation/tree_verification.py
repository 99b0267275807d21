"""Which path of a verified draft tree is accepted: greedy, or by exact speculative sampling.

**Why sampling one token per tree row is exact.** EAGLE-2 drafts a node's children *deterministically* (the draft's
`top_k` tokens, then the global selection), so each child is a draw from a point mass: q(x_i) = 1. Recursive
rejection sampling over the siblings x_1..x_m at a node with target distribution p (SpecInfer; EAGLE-2) then reads:
accept x_1 with probability min(1, p(x_1) / q(x_1)) = p(x_1); if rejected, the residual is
norm(max(p - q, 0)) = p with x_1 removed and renormalised; try x_2 on it; and so on; if every sibling is rejected,
sample the correction token from the last residual. Sibling x_i is output with probability
p(x_i) / (1 - sum_{j<i} p(x_j)) * prod_{j<i} (1 - p(x_j) / (1 - sum_{l<j} p(x_l))) = p(x_i), and any other token x
with probability (1 - sum_j p(x_j)) * p(x) / (1 - sum_j p(x_j)) = p(x): the rule outputs exactly a sample of p. So
does drawing y ~ p and descending into the child whose token is y (stopping at y otherwise), which is what this
module does, for every row at once. Each row is visited at most once on the way down, so its draw is used at most
once and the rows' draws may be independent. Taking q as the draft's *probability* instead (min(1, p / q_draft),
residual max(p - q_draft, 0)) would be wrong here, because the children were not sampled from q_draft.
`tests/test_tree_sampling.py` checks the rule above, and the sibling-by-sibling form, with a chi-square test, and
shows the same test catching a residual that keeps the rejected siblings.

Sampling happens only when the call passes `do_sample=True`: the tree decodes greedily otherwise, even for a target
whose generation config samples (the tree always did; research and benchmark callers rely on it). The target's
logits are then processed as `generate(do_sample=True)` would (temperature, top-k, top-p, min-p, from the call's
arguments, else the target's generation config, else transformers' defaults), so the output distribution is the one
plain sampling has.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from transformers import (
    GenerationConfig,
    LogitsProcessorList,
    MinPLogitsWarper,
    PreTrainedModel,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from ..errors import EdaInputError

#: `speculative_generate(tree=...)` arguments that shape the sampled distribution.
SAMPLING_ARGUMENTS = ("do_sample", "temperature", "top_k", "top_p", "min_p")


@dataclass
class AcceptedPath:
    """The verification's outcome: tree rows (0 = root, 1 + i = node i) of the accepted path, root first, and the
    tokens to emit (the accepted nodes' tokens, then the target's own next token); each on the host and the device."""

    rows: torch.Tensor
    host_rows: list[int]
    tokens: list[int]
    token_ids: torch.Tensor


class TreeSampler:
    """The target's token choice at every tree row: argmax (greedy) or a draw from the processed distribution.

    Built from the `generate`-style arguments of `speculative_generate(tree=..., **kwargs)`: greedy unless they hold
    `do_sample=True`; the warpers' values not given come from the target's generation config, then from
    transformers' defaults, as in `target.generate(do_sample=True)`.
    """

    def __init__(self, target: PreTrainedModel, arguments: dict[str, Any]) -> None:
        unknown = sorted(set(arguments) - set(SAMPLING_ARGUMENTS))
        if unknown:
            raise TypeError(f"speculative_generate(tree=...) got unsupported arguments {unknown}.")
        config, defaults = getattr(target, "generation_config", None), GenerationConfig._get_default_generation_params()

        def value(name: str) -> Any:
            for source in (arguments.get(name), getattr(config, name, None), defaults.get(name)):
                if source is not None:
                    return source
            return None

        self.do_sample = bool(arguments.get("do_sample"))  # never from the target's config: see the module docstring
        self.warpers = LogitsProcessorList()
        if not self.do_sample:
            return
        temperature, top_k, top_p, min_p = (value(name) for name in ("temperature", "top_k", "top_p", "min_p"))
        if temperature is None or not float(temperature) > 0:
            raise EdaInputError(
                f"Tree sampling needs temperature > 0, got {temperature}: pass do_sample=False for greedy tree "
                "decoding instead."
            )
        if float(temperature) != 1.0:
            self.warpers.append(TemperatureLogitsWarper(float(temperature)))
        if top_k:
            self.warpers.append(TopKLogitsWarper(int(top_k)))
        if top_p is not None and float(top_p) < 1.0:
            self.warpers.append(TopPLogitsWarper(float(top_p)))
        if min_p:
            self.warpers.append(MinPLogitsWarper(float(min_p)))

    def accept(self, tree_tokens: torch.Tensor, parents: torch.Tensor, ancestors: torch.Tensor,
               logits: torch.Tensor) -> AcceptedPath:
        """The accepted path of a tree (see [`accepted_path`]) from the target's logits at its rows `[1 + n, vocab]`."""
        return accepted_path(tree_tokens, parents, ancestors, self.choose(logits))

    def choose(self, logits: torch.Tensor) -> torch.Tensor:
        """The target's token at each row of `logits` `[rows, vocab]`."""
        if not self.do_sample:
            return logits.argmax(dim=-1)
        # the warpers read no token history (temperature, top-k/p, min-p): an empty one stands for every row's
        processed = self.warpers(logits.new_empty((logits.shape[0], 0), dtype=torch.long), logits.float())
        return torch.multinomial(torch.softmax(processed, dim=-1), num_samples=1).squeeze(-1)


def accepted_path(tree_tokens: torch.Tensor, parents: torch.Tensor, ancestors: torch.Tensor,
                  chosen: torch.Tensor) -> AcceptedPath:
    """Follow the target's chosen tokens down the tree, as tensor work and one host read.

    `tree_tokens`, `parents` (`-1` for the root) and `ancestors` describe the nodes; `chosen[r]` is the target's token
    at tree row `r` (row 0 = root, row 1 + i = node i). A node is accepted when its token is the one chosen at its
    parent's row and the same holds for each of its ancestors; siblings carry distinct tokens, so the accepted nodes
    form one path, in index order (parents come before children).
    """
    matches = tree_tokens == chosen[parents + 1]  # parent -1 (the root) reads row 0
    on_path = ~(ancestors & ~matches[None, :]).any(dim=1)
    num_accepted = on_path.sum()
    order = torch.argsort((~on_path).to(torch.uint8), stable=True)  # the accepted nodes first, in index order
    last_row = torch.where(num_accepted > 0, order[(num_accepted - 1).clamp_min(0)] + 1, 0)
    n = tree_tokens.numel()
    packed = torch.cat((num_accepted[None], chosen[last_row][None], tree_tokens[order], order + 1)).tolist()
    count = packed[0]
    rows = torch.cat((order.new_zeros(1), order[:count] + 1))
    token_ids = torch.cat((tree_tokens[order[:count]], chosen[last_row][None]))
    return AcceptedPath(rows=rows, host_rows=[0] + packed[2 + n : 2 + n + count],
                        tokens=packed[2 : 2 + count] + [packed[1]], token_ids=token_ids)
