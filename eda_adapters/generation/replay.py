"""Greedy acceptance by replay: the accepted lengths of chain and EAGLE-2 tree decoding at T=0, computed from the
target's greedy answer in a few batched draft forwards instead of decoding token by token.

At T=0 speculative decoding is lossless, so its output is the target's greedy answer, and every verification step is
a deterministic function of that answer: the draft's cache holds the target's features of the accepted prefix, the
draft rolls out its chain (or grows its tree) from there, and the target accepts the longest drafted prefix (path)
that agrees with its own greedy tokens. Replay computes the target's greedy answer and its features once
([`greedy_reference`], shared by every draft measured on the same target), runs the draft teacher-forced over it
once, then drafts from *every* position at once (all starting points as one batch, with an attention mask that
lets each one see only its own prefix and its own drafted tokens) and walks the steps decoding would take. For an
experiment that measures many drafts on the same held-out prompts this is an order of magnitude faster, and it
gives the same accepted lengths as [`speculative_generate`] step for step (tested), up to floating-point ties
between batched and one-token forwards.

Replay covers what the experiment measures: greedy decoding without logits processors, a constant number of draft
tokens (`num_assistant_tokens_schedule="constant"`, no confidence threshold) or an EAGLE-2 tree.
"""

from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel
from tqdm.auto import tqdm

from ..console import bar_options
from transformers.cache_utils import DynamicCache

from ..batched_decoding import contiguous_head_input
from ..models.eagle.modeling_eagle import concat_hidden_states
from .drafts import prepare_draft
from .eos import eos_token_ids
from .stats import SpeculativeStats
from .tree import TreeConfig, best_nodes
from ..errors import EdaInputError


@dataclass
class GreedyReference:
    """The target's greedy answer to one prompt and its features: what every replay on that prompt reads.

    Attributes:
        sequence: Prompt and answer, `[prompt_length + answer_length]` (the answer stops after `max_new_tokens` or at
            the first end-of-sequence token, included).
        features: The target's hidden states a draft reads (`hidden_state_indices`, concatenated) at positions
            `0 .. len(sequence) - 2`, `[len - 1, features]`.
        prompt_length: Tokens of the prompt.
        max_new_tokens: The generation length decoding was asked for.
        eos_token_ids: End-of-sequence tokens that stop decoding.
        hidden_state_indices: Which `hidden_states` the features hold: `(-1,)` (the last, EAGLE-1) or an EAGLE-3
            draft's three aux states.
    """

    sequence: torch.LongTensor
    features: torch.Tensor
    prompt_length: int
    max_new_tokens: int
    eos_token_ids: tuple[int, ...] = ()
    hidden_state_indices: tuple[int, ...] = (-1,)

    @property
    def answer_length(self) -> int:
        return self.sequence.numel() - self.prompt_length


def greedy_reference(
    target: PreTrainedModel,
    prompt: torch.LongTensor,
    max_new_tokens: int,
    eos_token_id: int | list[int] | None = None,
    *,
    hidden_state_indices: Sequence[int] = (-1,),
) -> GreedyReference:
    """Decode `prompt` (`[seq]` or `[1, seq]`) greedily with `target` (plain `generate`) and keep its features."""
    return greedy_references(
        target, [prompt], max_new_tokens, eos_token_id, hidden_state_indices=hidden_state_indices
    )[0]


@torch.no_grad()
def greedy_references(
    target: PreTrainedModel,
    prompts: list[torch.LongTensor],
    max_new_tokens: int,
    eos_token_id: int | list[int] | None = None,
    *,
    batch_size: int = 16,
    show_progress: bool = False,
    hidden_state_indices: Sequence[int] = (-1,),
) -> list[GreedyReference]:
    """The target's greedy answers to `prompts` (each `[seq]` or `[1, seq]`) and their features, in prompt order.

    Prompts of similar length are decoded together (`batch_size` per left-padded `generate` call); every answer is
    token-identical to decoding its prompt alone (tested). The features are the hidden states the target computes
    while it generates (kept with `output_hidden_states`), the ones speculative decoding reads too, so no second pass
    over the answer is needed; they agree with a teacher-forced forward to float rounding (see `docs/benchmarks.md`).
    `hidden_state_indices` picks them: the last one for EAGLE-1 drafts, `draft.hidden_state_indices` for EAGLE-3.
    """
    if max_new_tokens < 1:
        raise EdaInputError(f"max_new_tokens must be >= 1, got {max_new_tokens}.")
    if batch_size < 1:
        raise EdaInputError(f"batch_size must be >= 1, got {batch_size}.")
    device = target.get_input_embeddings().weight.device
    indices = [int(i) for i in hidden_state_indices]
    eos = eos_token_ids(target, eos_token_id)
    generation = getattr(target, "generation_config", None)
    pad = getattr(generation, "pad_token_id", None)
    pad = pad if pad is not None else (eos[0] if eos else 0)
    rows = [p.reshape(-1) for p in prompts]
    order = sorted(range(len(rows)), key=lambda i: (rows[i].numel(), i))
    references: list[GreedyReference | None] = [None] * len(rows)
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    for batch in tqdm(batches, desc="greedy references", unit="batch", **bar_options(show_progress)):
        width = max(rows[i].numel() for i in batch)
        input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
        attention_mask = torch.zeros_like(input_ids)
        for r, i in enumerate(batch):
            input_ids[r, width - rows[i].numel():] = rows[i]
            attention_mask[r, width - rows[i].numel():] = 1
        with contiguous_head_input(target):
            out = target.generate(
                input_ids.to(device), attention_mask=attention_mask.to(device), do_sample=False,
                max_new_tokens=max_new_tokens, eos_token_id=list(eos) or None, pad_token_id=pad,
                output_hidden_states=indices, return_dict_in_generate=True,
            )
        # the chosen states at every position the target has read: the prompt (step 0), then one token per step
        features = torch.cat([concat_hidden_states(step, indices) for step in out.hidden_states], dim=1)
        for r, i in enumerate(batch):
            start = width - rows[i].numel()
            answer = out.sequences[r, width:].tolist()
            ends = [t for t, token in enumerate(answer) if token in eos]
            length = rows[i].numel() + (ends[0] + 1 if ends else len(answer))
            sequence = out.sequences[r, start : start + length]
            references[i] = GreedyReference(
                sequence, features[r, start : start + length - 1], rows[i].numel(), max_new_tokens, eos,
                tuple(indices),
            )
    return references  # type: ignore[return-value]


class _Replay:
    """The draft run teacher-forced over one reference, and the batched drafting from every starting point."""

    def __init__(self, draft: Any, target: PreTrainedModel, reference: GreedyReference) -> None:
        self.draft = prepare_draft(draft, target)
        if list(reference.hidden_state_indices) != self.draft.hidden_state_indices:
            raise EdaInputError(
                f"The greedy reference holds the target's hidden states {list(reference.hidden_state_indices)}, but "
                f"this draft reads {self.draft.hidden_state_indices}: build the references with "
                "greedy_references(..., hidden_state_indices=draft.hidden_state_indices)."
            )
        self.ref = reference
        device = self.draft.device
        self.sequence = reference.sequence.to(device)
        pairs = self.sequence.numel() - 1  # pair i = (feature_i, token_{i+1})
        self.cache = DynamicCache()
        out = self.draft(
            input_ids=self.sequence[None, 1:],
            hidden_states=reference.features[None].to(device),
            position_ids=torch.arange(pairs, device=device)[None],
            past_key_values=self.cache,
            use_cache=True,
        )
        self.hidden, self.logits = out.last_hidden_state[0], self.draft.target_vocab_logits(out.logits[0])
        self.num_pairs = pairs
        # a step after g generated tokens starts with the draft holding pairs 0 .. c - 1, c = prompt_length + g - 1;
        # its first draft token comes from pair c - 1 and predicts token c + 1
        answer = reference.answer_length
        self.starts = torch.arange(reference.prompt_length, reference.prompt_length + answer - 1, device=device)

    def _drop_drafted(self) -> None:
        """Keep only the teacher-forced pairs in the draft cache."""
        extra = self.cache.get_seq_length() - self.num_pairs
        if extra:
            self.cache.crop(-extra)

    def _forward(self, tokens: torch.Tensor, features: torch.Tensor, positions: torch.Tensor, allowed: torch.Tensor):
        out = self.draft(
            input_ids=tokens[None], hidden_states=features[None], attention_mask=allowed[None, None],
            position_ids=positions[None], past_key_values=self.cache, use_cache=True,
        )
        return out.last_hidden_state[0], self.draft.target_vocab_logits(out.logits[0])

    def _prefix_mask(self, starts: torch.Tensor) -> torch.Tensor:
        """`[len(starts), num_pairs]`: a query drafting from start `c` sees the committed pairs `0 .. c - 1`."""
        return torch.arange(self.num_pairs, device=starts.device)[None] < starts[:, None]

    def chain_tokens(self, k: int, starts: torch.Tensor) -> torch.Tensor:
        """`[len(starts), k]`: the chain the draft proposes from each start (greedy on its own features)."""
        num = starts.numel()
        if num == 0:
            return starts.new_empty(0, k)
        self._drop_drafted()
        tokens = [self.logits[starts - 1].argmax(dim=-1)]
        hidden = self.hidden[starts - 1]
        prefix, eye = self._prefix_mask(starts), torch.eye(num, dtype=torch.bool, device=starts.device)
        for j in range(1, k):
            # sees its prefix, its own earlier drafted tokens (one block per depth) and itself
            allowed = torch.cat([prefix] + [eye] * j, dim=1)
            hidden, logits = self._forward(tokens[-1], hidden, starts + j - 1, allowed)
            tokens.append(logits.argmax(dim=-1))
        return torch.stack(tokens, dim=1)

    def tree_depths(self, config: TreeConfig, starts: torch.Tensor) -> torch.Tensor:
        """`[len(starts)]`: the depth of the longest path of each start's EAGLE-2 tree (after selecting
        `total_tokens` nodes) that agrees with the greedy answer, i.e. the drafted tokens decoding accepts there."""
        K, device = config.top_k, starts.device
        num = starts.numel()
        if num == 0:
            return starts.new_empty(0)
        self._drop_drafted()
        rows = torch.arange(num, device=device)
        root_hidden = self.hidden[starts - 1]
        logp = F.log_softmax(self.logits[starts - 1].float(), dim=-1).topk(K)
        tokens, scores = logp.indices, logp.values  # [num, n]
        parents = torch.full_like(tokens, -1)
        depths = torch.ones_like(tokens)
        ancestors = torch.eye(K, dtype=torch.bool, device=device).expand(num, K, K).clone()
        hidden = torch.zeros(num, K, root_hidden.shape[-1], dtype=root_hidden.dtype, device=device)
        frontier = torch.arange(K, device=device).expand(num, K)
        cached: list[torch.Tensor] = []  # frontier of each earlier depth: the tree nodes in the cache, in order
        prefix = self._prefix_mask(starts).repeat_interleave(K, dim=0)
        same_start = torch.eye(num, dtype=torch.bool, device=device)[:, None, :, None]
        for depth in range(2, config.depth + 1):
            width = frontier.shape[1]
            parent_of = parents.gather(1, frontier)
            features = torch.where(
                (parent_of >= 0)[..., None], hidden[rows[:, None], parent_of.clamp_min(0)], root_hidden[:, None]
            )
            anc_rows = ancestors[rows[:, None], frontier]  # [num, width, n]
            blocks = []
            for block in cached:  # a node sees its ancestors among the cached nodes of its own start
                visible = anc_rows.gather(2, block[:, None, :].expand(num, width, block.shape[1]))
                blocks.append((same_start & visible[:, :, None, :]).reshape(num * width, num * block.shape[1]))
            allowed = torch.cat([prefix] + blocks + [torch.eye(num * width, dtype=torch.bool,
                                                                              device=device)], dim=1)
            out_hidden, out_logits = self._forward(
                tokens.gather(1, frontier).flatten(), features.flatten(0, 1),
                (starts[:, None] + depths.gather(1, frontier) - 1).flatten(), allowed,
            )
            cached.append(frontier)
            hidden[rows[:, None], frontier] = out_hidden.view(num, width, -1)
            child = F.log_softmax(out_logits.float(), dim=-1).topk(K)
            first_new, n = tokens.shape[1], tokens.shape[1] + width * K
            child_parents = frontier.repeat_interleave(K, dim=1)
            tokens = torch.cat((tokens, child.indices.view(num, -1)), dim=1)
            scores = torch.cat((scores, (scores.gather(1, frontier)[..., None] + child.values.view(num, width, K))
                                .view(num, -1)), dim=1)
            parents = torch.cat((parents, child_parents), dim=1)
            depths = torch.cat((depths, torch.full_like(child_parents, depth)), dim=1)
            hidden = torch.cat((hidden, hidden.new_zeros(num, width * K, hidden.shape[-1])), dim=1)
            grown = torch.zeros(num, n, n, dtype=torch.bool, device=device)
            grown[:, :first_new, :first_new] = ancestors
            grown[:, first_new:, :first_new] = ancestors[rows[:, None], child_parents]
            grown[:, first_new:, first_new:] = torch.eye(n - first_new, dtype=torch.bool, device=device)
            ancestors = grown
            frontier = first_new + scores[:, first_new:].topk(min(K, n - first_new)).indices

        best = best_nodes(scores, depths, config.total_tokens)  # closed under ancestry, as decoding selects
        keep = torch.zeros_like(tokens, dtype=torch.bool).scatter_(1, best, True)
        # node at depth d agrees with the answer if its token is token c + d of the sequence
        seq_len = self.sequence.numel()
        want_pos = starts[:, None] + depths
        wanted = self.sequence[want_pos.clamp_max(seq_len - 1)]
        match = keep & (tokens == wanted) & (want_pos < seq_len)
        on_path = match & (parents < 0)
        for _ in range(2, config.depth + 1):  # parents come before children: one pass per depth suffices
            on_path = on_path | (match & on_path.gather(1, parents.clamp_min(0)) & (parents >= 0))
        return torch.where(on_path, depths, torch.zeros_like(depths)).amax(dim=1)


@torch.no_grad()
def replay_acceptance(
    draft: Any,
    target: PreTrainedModel,
    reference: GreedyReference,
    *,
    tree: TreeConfig | None = None,
    num_draft_tokens: int = 5,
    starts_per_pass: int = 32,
) -> SpeculativeStats:
    """The per-step acceptance that `speculative_generate(target, draft, prompt, tree=tree,
    max_new_tokens=reference.max_new_tokens)` (greedy; chain of `num_draft_tokens` through `generate` when `tree` is
    None) would record on `reference`'s prompt, computed by replay (see the module docstring).

    The starting points are drafted `starts_per_pass` at a time: in one pass every drafted node attends to the nodes
    of all starts of the pass (masked), so a pass costs O(starts_per_pass^2 x nodes^2) and the whole replay grows
    linearly with the answer length instead of quadratically. The result does not depend on it.
    """
    if num_draft_tokens < 1:
        raise EdaInputError(f"num_draft_tokens must be >= 1, got {num_draft_tokens}.")
    if starts_per_pass < 1:
        raise EdaInputError(f"starts_per_pass must be >= 1, got {starts_per_pass}.")
    replay = _Replay(draft, target, reference)
    was_training = replay.draft.training
    replay.draft.eval()
    try:
        passes = replay.starts.split(starts_per_pass)
        if tree is None:
            drafted = torch.cat([replay.chain_tokens(num_draft_tokens, starts) for starts in passes]) if passes \
                else replay.starts.new_empty(0, num_draft_tokens)
            return _walk_chain(replay, num_draft_tokens, drafted.tolist())
        depths = torch.cat([replay.tree_depths(tree, starts) for starts in passes]) if passes \
            else replay.starts.new_empty(0)
        return _walk_tree(replay, tree, depths.tolist())
    finally:
        replay.draft.train(was_training)


def _walk_chain(replay: _Replay, k: int, drafted: list[list[int]]) -> SpeculativeStats:
    ref, stats = replay.ref, SpeculativeStats()
    sequence = ref.sequence.tolist()
    answer, generated = ref.answer_length, 1  # the prefill yields the first answer token
    while generated < answer:
        # transformers' assisted loop: candidates stop one token short of max_length
        m = min(k, ref.max_new_tokens - generated - 1)
        if m <= 0:
            stats.record(0, 0)
            generated += 1
            continue
        c = ref.prompt_length + generated - 1
        proposal = drafted[generated - 1][:m]
        ends = [i for i, token in enumerate(proposal) if token in ref.eos_token_ids]
        if ends:  # the draft stops its chain after an end-of-sequence token
            proposal = proposal[: ends[0] + 1]
            m = len(proposal)
        truth = sequence[c + 1 : c + 1 + m]
        accepted = 0
        while accepted < min(m, len(truth)) and proposal[accepted] == truth[accepted]:
            accepted += 1
        # generate() keeps the accepted tokens and the target's own next one, cut after the first EOS: an accepted
        # EOS then counts as the target's token
        last = len(sequence) - 1
        if sequence[last] in ref.eos_token_ids and c + accepted >= last:
            accepted = last - 1 - c
        stats.record(accepted, m)
        generated += accepted + 1
    return stats


def _walk_tree(replay: _Replay, tree: TreeConfig, depths: list[int]) -> SpeculativeStats:
    ref, stats = replay.ref, SpeculativeStats()
    answer, generated = ref.answer_length, 1
    nodes = min(tree.total_tokens, tree.top_k + (tree.depth - 1) * tree.top_k * tree.top_k)
    while generated < answer:
        emitted = min(depths[generated - 1] + 1, answer - generated)  # the answer ends at max_new_tokens or EOS
        stats.record(emitted - 1, nodes)
        generated += emitted
    return stats


__all__ = ["GreedyReference", "greedy_reference", "greedy_references", "replay_acceptance"]
