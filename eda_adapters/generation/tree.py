"""EAGLE-2 dynamic draft trees, verified in one target forward with a tree attention mask, and
[`speculative_generate`], the entry point of both decoding paths."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel
from transformers.cache_utils import DynamicCache

from ..models.eagle.modeling_eagle import TREE_MASK_IMPLEMENTATIONS
from .drafts import EagleDraft, prepare_draft
from .eos import eos_token_ids
from .stats import SpeculativeStats, track_acceptance
from .tree_verification import TreeSampler
from ..errors import EdaInputError
from ..schemas.config_ranges import COUNT, check_ranges, ranged
from ..schemas.tensors import mask_tensor, token_ids_tensor


@dataclass
class TreeConfig:
    """Shape of the EAGLE-2 dynamic draft tree.

    Args:
        depth: Draft tokens on the tree's longest path, which is also the number of draft forwards per step and the
            most tokens one verification can accept, bonus excluded. EAGLE's code counts one less (its `depth=5` is
            `depth=6` here); see "Tree depth" in docs/speculative_decoding.md.
        top_k: Branching: each expanded node proposes its `top_k` most likely children, and the `top_k` nodes of each
            depth with the highest cumulative log-probability are expanded further.
        total_tokens: Nodes kept (by cumulative log-probability, over all depths) and verified in one target forward.
            EAGLE-2 uses depth 6 (its `depth=5`), top_k 10, total_tokens 60 on GPUs; on CPUs smaller trees are cheaper.
    """

    depth: int = ranged(6, COUNT)
    top_k: int = ranged(10, COUNT)
    total_tokens: int = ranged(60, COUNT)

    def __post_init__(self) -> None:
        check_ranges(self)
        if self.total_tokens > self.capacity:
            raise EdaInputError(
                f"TreeConfig.total_tokens={self.total_tokens} exceeds the {self.capacity} nodes a tree of depth "
                f"{self.depth} and top_k {self.top_k} grows: lower total_tokens or raise depth or top_k."
            )

    @property
    def capacity(self) -> int:
        """Nodes grown before selection: `top_k` children of the root, then `top_k` children of each of the `top_k`
        expanded nodes at every further depth."""
        return self.top_k + (self.depth - 1) * self.top_k * self.top_k


@dataclass
class DraftTree:
    """A draft tree below a root token (the root itself is not a node).

    `tokens`, `parents` (node index, `-1` for the root), `depths` (root = 0) and `scores` (cumulative log-probability)
    are `[num_nodes]`; `ancestors[i, j]` is True if node `j` is node `i` or one of its ancestors. Parents always come
    before their children.
    """

    tokens: torch.Tensor
    parents: torch.Tensor
    depths: torch.Tensor
    scores: torch.Tensor
    ancestors: torch.Tensor

    def select(self, total_tokens: int) -> DraftTree:
        """The `total_tokens` best nodes by cumulative score, closed under ancestry, in topological order."""
        keep = best_nodes(self.scores, self.depths, total_tokens).sort().values  # index order is topological
        new_index = torch.full_like(self.parents, -1)
        new_index[keep] = torch.arange(keep.numel(), device=keep.device)
        parents = self.parents[keep]
        parents = torch.where(parents >= 0, new_index[parents.clamp_min(0)], parents)
        return DraftTree(
            self.tokens[keep], parents, self.depths[keep], self.scores[keep], self.ancestors[keep][:, keep]
        )


def best_nodes(scores: torch.Tensor, depths: torch.Tensor, count: int) -> torch.Tensor:
    """Indices of the `count` best nodes along the last dimension, by cumulative log-probability.

    A child's score is its parent's plus a log-probability <= 0, so the best nodes are closed under ancestry, except
    where float rounding makes a child tie its parent: the depth breaks those ties toward the parent, so the
    selection is closed under ancestry and needs no host-side closure. Shared by decoding and replay.
    """
    key = scores.double() - depths.double() * 1e-9
    return key.topk(min(count, key.shape[-1]), dim=-1).indices


class TreeSpeculator:
    """EAGLE-2 tree speculative decoding of one sequence (batch size 1), greedy or by exact speculative sampling.

    Invariant between steps: the target cache and the draft's committed cache both hold `num_done` positions (all
    tokens before the current root), and the draft's output for the root's pair is kept (`root_hidden`,
    `root_logits`) to grow the next tree from. A step's bookkeeping is tensor work on the device; the host reads the
    accepted tokens once per step.

    Args:
        target: The verifier (attention `sdpa` or `eager`: the tree needs a 4D mask).
        draft: An EAGLE-1/EAGLE-3 draft, a `PeftModel` wrapping one, or a merged draft.
        config: The tree's shape.
        sampler: The target's token choice per tree row (default: greedy); see [`TreeSampler`].
    """

    def __init__(self, target: PreTrainedModel, draft: Any, config: TreeConfig,
                 sampler: TreeSampler | None = None) -> None:
        self.target = target
        self.draft: EagleDraft = prepare_draft(draft, target)
        self.config = config
        self.sampler = sampler or TreeSampler(target, {"do_sample": False})
        attn = getattr(target.config, "_attn_implementation", "sdpa")
        if attn not in TREE_MASK_IMPLEMENTATIONS:
            raise EdaInputError(
                f"Tree decoding needs a custom 4D attention mask, which attn_implementation={attn!r} does not take: "
                "load the target with attn_implementation='sdpa' (or 'eager')."
            )
        draft_vocab = getattr(self.draft.config, "draft_vocab_size", None) or self.draft.config.vocab_size
        if config.top_k > draft_vocab:
            raise EdaInputError(
                f"TreeConfig.top_k={config.top_k} exceeds the draft's vocabulary of {draft_vocab} tokens: use "
                f"top_k <= {draft_vocab}."
            )
        self.dtype = target.get_input_embeddings().weight.dtype
        self.target_cache = DynamicCache()
        self.draft_cache = DynamicCache()
        self.num_done = 0

    # ------------------------------------------------------------------ draft side
    def _draft_consume(self, tokens: torch.Tensor, features: torch.Tensor) -> None:
        """Crop the draft cache to the committed prefix and feed pairs (feature_t, token_{t+1}) from `num_done`."""
        self.draft_cache.crop(-(self.draft_cache.get_seq_length() - self.num_done))
        start = self.num_done
        out = self.draft(
            input_ids=tokens[None],
            hidden_states=features[None],
            position_ids=torch.arange(start, start + tokens.numel(), device=tokens.device)[None],
            past_key_values=self.draft_cache,
            use_cache=True,
        )
        self.root_hidden = out.last_hidden_state[0, -1]
        self.root_logits = self.draft.target_vocab_logits(out.logits[0, -1])

    def grow_tree(self) -> DraftTree:
        """EAGLE-2 expansion: `depth` draft steps, expanding the `top_k` best nodes of each depth.

        Nodes are written into buffers sized for the whole tree ([`TreeConfig.capacity`]); every depth's frontier has
        exactly `top_k` nodes, at one position, and attends to the committed prefix, its ancestors among the earlier
        frontiers (in the draft cache in order) and itself.
        """
        cfg, device, done = self.config, self.root_logits.device, self.num_done
        k, capacity = cfg.top_k, cfg.capacity
        self.draft_cache.crop(-(self.draft_cache.get_seq_length() - done))  # drop any previous tree
        tokens = torch.empty(capacity, dtype=torch.long, device=device)
        scores = torch.empty(capacity, dtype=torch.float32, device=device)
        parents = torch.full((capacity,), -1, dtype=torch.long, device=device)
        depths = torch.ones(capacity, dtype=torch.long, device=device)
        ancestors = torch.eye(capacity, dtype=torch.bool, device=device)
        root = F.log_softmax(self.root_logits.float(), dim=-1).topk(k)
        tokens[:k], scores[:k] = root.indices, root.values
        frontier, frontier_scores, count = torch.arange(k, device=device), root.values, k
        features = self.root_hidden.expand(k, -1)  # each frontier node reads its parent's draft state
        allowed = torch.zeros(k, done + (cfg.depth - 1) * k, dtype=torch.bool, device=device)
        allowed[:, :done] = True
        cached = torch.empty((cfg.depth - 1) * k, dtype=torch.long, device=device)  # the frontiers, in cache order
        own, positions = torch.eye(k, dtype=torch.bool, device=device), done + torch.arange(cfg.depth, device=device)
        for level in range(cfg.depth - 1):  # expand the nodes of depth level + 1
            seen = done + level * k
            if level:
                allowed[:, done:seen] = ancestors[frontier[:, None], cached[None, : level * k]]
            allowed[:, seen : seen + k] = own
            out = self.draft(
                input_ids=tokens[frontier][None],
                hidden_states=features[None],
                attention_mask=allowed[None, None, :, : seen + k],
                position_ids=positions[level].expand(1, k),
                past_key_values=self.draft_cache,
                use_cache=True,
            )
            cached[level * k : (level + 1) * k] = frontier
            child = F.log_softmax(self.draft.target_vocab_logits(out.logits[0]).float(), dim=-1).topk(k)
            new = slice(count, count + k * k)  # children of frontier node j are the j-th block of k
            tokens[new] = child.indices.flatten()
            scores[new] = (frontier_scores[:, None] + child.values).flatten()
            parents[new].view(k, k)[:] = frontier[:, None]
            depths[new] = level + 2
            ancestors[new, :count].view(k, k, count)[:] = ancestors[frontier, None, :count]
            best = scores[new].topk(k)
            frontier, frontier_scores = count + best.indices, best.values
            features = out.last_hidden_state[0, best.indices // k]
            count += k * k
        return DraftTree(tokens, parents, depths, scores, ancestors)

    # ------------------------------------------------------------------ target side
    def _target_forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor, mask: torch.Tensor | None):
        out = self.target(
            input_ids=input_ids[None],
            position_ids=position_ids[None],
            attention_mask=mask,
            past_key_values=self.target_cache,
            use_cache=True,
            output_hidden_states=self.draft.hidden_state_indices,
        )
        return out.logits[0], self.draft.target_features(out.hidden_states)[0]

    def _tree_mask(self, tree: DraftTree) -> torch.Tensor:
        """`[1, 1, 1 + n, done + 1 + n]` additive mask of the verification: every row sees the prefix and the root,
        node rows also their ancestors (themselves included)."""
        n, done = tree.tokens.numel(), self.num_done
        blocked = torch.finfo(self.dtype).min
        mask = torch.zeros(n + 1, done + n + 1, dtype=self.dtype, device=tree.tokens.device)
        mask[0, done + 1 :] = blocked
        mask[1:, done + 1 :].masked_fill_(~tree.ancestors, blocked)
        return mask[None, None]

    def prefill(self, prompt: torch.Tensor) -> int:
        """Run the target on the prompt, feed the draft, and return the first generated token (the first root)."""
        logits, features = self._target_forward(prompt, torch.arange(prompt.numel(), device=prompt.device), None)
        first = self.sampler.choose(logits[-1:])
        self._draft_consume(torch.cat((prompt[1:], first)), features)
        self.num_done = prompt.numel()
        return int(first)

    def step(self, root: int) -> list[int]:
        """Draft a tree below `root`, verify it in one target forward, and return the new tokens (accepted path +
        the target's own next token, the next root). Keeps both KV caches to the accepted path."""
        tree = self.grow_tree().select(self.config.total_tokens)
        done = self.num_done
        tokens = torch.cat((tree.tokens.new_tensor([root]), tree.tokens))  # row 0 = root, row 1 + i = node i
        positions = done + torch.cat((tree.depths.new_zeros(1), tree.depths))
        logits, features = self._target_forward(tokens, positions, self._tree_mask(tree))
        path = self.sampler.accept(tree.tokens, tree.parents, tree.ancestors, logits)

        # keep only the accepted path in the target cache: move its rows up behind the (untouched) prefix, then crop.
        # Rows already in place (the root, and any leading run of the path) are not copied: a step that accepts no
        # drafted token moves nothing.
        kept = done + len(path.host_rows)
        in_place = next((i for i, row in enumerate(path.host_rows) if row != i), len(path.host_rows))
        if in_place < len(path.host_rows):
            moved = done + path.rows[in_place:]
            for layer in self.target_cache.layers:
                layer.keys[..., done + in_place : kept, :] = layer.keys.index_select(-2, moved)
                layer.values[..., done + in_place : kept, :] = layer.values.index_select(-2, moved)
        self.target_cache.crop(-(self.target_cache.get_seq_length() - kept))
        # the draft re-reads the accepted tokens with the target's true features
        self._draft_consume(path.token_ids, features[path.rows])
        self.num_done = kept
        self.num_nodes = tree.tokens.numel()
        return path.tokens


def _sliding_window(target: PreTrainedModel) -> int | None:
    """The target's attention window if it uses sliding-window attention, else `None`."""
    config = target.config.get_text_config()
    window = getattr(config, "sliding_window", None)
    if window is None:
        return None
    layer_types = getattr(config, "layer_types", None) or ()
    if getattr(config, "use_sliding_window", True) or "sliding_attention" in layer_types:
        return int(window)
    return None


def _check_inputs(
    target: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, max_length: int
) -> None:
    if attention_mask is not None and not bool(attention_mask.bool().all()):
        raise EdaInputError("Tree decoding does not support padding: pass the sequence without pad tokens.")
    window = _sliding_window(target)
    if window is not None and max_length > window:
        raise EdaInputError(
            f"The target uses sliding-window attention (window {window}) and this generation would exceed it, "
            "which tree decoding does not support: use tree=None (the generate hook) or a shorter generation."
        )


@torch.no_grad()
def speculative_generate(
    target: PreTrainedModel,
    draft: Any,
    input_ids: torch.LongTensor,
    *,
    tree: TreeConfig | None = None,
    max_new_tokens: int = 64,
    eos_token_id: int | list[int] | None = None,
    attention_mask: torch.Tensor | None = None,
    return_stats: bool = False,
    **generate_kwargs: Any,
) -> torch.LongTensor | tuple[torch.LongTensor, SpeculativeStats]:
    """Speculative decoding of `target` with an EAGLE/EDA `draft`: the output is the target's own (greedy: identical
    to plain greedy decoding; sampling: distributed as plain sampling).

    With `tree=TreeConfig(...)` it runs EAGLE-2 dynamic tree decoding (batch size 1): each step the draft grows a tree
    of candidate continuations and the target verifies all of it in one forward with a tree attention mask. Greedy,
    the longest path that matches the target's own argmax is accepted (plus the target's next token); with
    `do_sample=True` (and `temperature`, `top_k`, `top_p`, `min_p`, defaulting to the target's generation config as in
    `generate`) the path is accepted by exact multi-candidate speculative sampling (see
    `eda_adapters/generation/tree_verification.py`). With `tree=None` it is `target.generate(input_ids,
    assistant_model=draft, ...)` (chain drafting; every `generate` option through `**generate_kwargs`).

    Args:
        target: A Hugging Face causal LM (the verifier).
        draft: An `EagleDraftModel` or `Eagle3DraftModel`, a `PeftModel` wrapping one (its active adapter is used), or
            a merged draft.
        input_ids: The prompt, `[1, seq]` (a 1-D tensor is one sequence).
        tree: The tree shape, or `None` for chain drafting through `generate`.
        max_new_tokens: Tokens to generate at most.
        eos_token_id: Stop after this token (default: the target's `generation_config.eos_token_id`).
        attention_mask: Optional; must be all ones (no padding) in tree mode.
        return_stats: Also return a [`SpeculativeStats`] (per-step accepted lengths, `tau`).
        generate_kwargs: With a tree, the sampling arguments `do_sample`, `temperature`, `top_k`, `top_p`, `min_p`;
            without, anything `generate` takes.

    Returns:
        `[1, seq + new]` token ids (prompt included), and the stats if `return_stats`.
    """
    input_ids = token_ids_tensor(input_ids, where="speculative_generate", batch_size=1,
                                 vocab_size=target.config.get_text_config().vocab_size, check_values=True)
    attention_mask = mask_tensor(attention_mask, input_ids, where="speculative_generate", check_values=True)
    if tree is None:
        if eos_token_id is not None:  # None must not reach generate(): it would switch off the target's own EOS
            generate_kwargs["eos_token_id"] = eos_token_id
        with track_acceptance() as stats:
            output = target.generate(
                input_ids, attention_mask=attention_mask, assistant_model=draft, max_new_tokens=max_new_tokens,
                **generate_kwargs,
            )
        return (output, stats) if return_stats else output
    if not isinstance(tree, TreeConfig):
        raise TypeError(f"tree must be a TreeConfig or None, got {type(tree).__name__}.")
    sampler = TreeSampler(target, generate_kwargs)
    if max_new_tokens < 1:
        raise EdaInputError(f"max_new_tokens must be >= 1, got {max_new_tokens}.")
    _check_inputs(target, input_ids, attention_mask, input_ids.shape[1] + max_new_tokens + tree.depth + 1)
    input_ids = input_ids.to(target.get_input_embeddings().weight.device)
    eos = set(eos_token_ids(target, eos_token_id))

    speculator = TreeSpeculator(target, draft, tree, sampler)
    stats = SpeculativeStats()
    generated = [speculator.prefill(input_ids[0])]
    while len(generated) < max_new_tokens and generated[-1] not in eos:
        emitted = 0
        for token in speculator.step(generated[-1]):
            generated.append(token)
            emitted += 1
            if len(generated) >= max_new_tokens or token in eos:
                break
        stats.record(emitted - 1, speculator.num_nodes)
    output = torch.cat((input_ids, input_ids.new_tensor(generated)[None]), dim=1)
    return (output, stats) if return_stats else output
