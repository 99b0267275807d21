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
from ..errors import EdaInputError


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

    depth: int = 6
    top_k: int = 10
    total_tokens: int = 60

    def __post_init__(self) -> None:
        for name in ("depth", "top_k", "total_tokens"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise EdaInputError(f"TreeConfig.{name} must be a positive integer, got {value!r}.")


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
        count = min(total_tokens, self.tokens.numel())
        best = self.scores.topk(count).indices
        keep = self.ancestors[best].any(dim=0).nonzero().squeeze(-1)  # best nodes and all their ancestors
        new_index = torch.full_like(self.parents, -1)
        new_index[keep] = torch.arange(keep.numel(), device=keep.device)
        parents = self.parents[keep]
        parents = torch.where(parents >= 0, new_index[parents.clamp_min(0)], parents)
        return DraftTree(
            self.tokens[keep], parents, self.depths[keep], self.scores[keep], self.ancestors[keep][:, keep]
        )


def _additive_mask(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """`[q, k]` boolean (True = attend) -> `[1, 1, q, k]` additive float mask (works for eager and SDPA attention)."""
    mask = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
    return mask.masked_fill_(~allowed, torch.finfo(dtype).min)[None, None]


class TreeSpeculator:
    """Greedy EAGLE-2 tree speculative decoding of one sequence (batch size 1).

    Invariant between steps: the target cache and the draft's committed cache both hold `num_done` positions (all
    tokens before the current root), and the draft's output for the root's pair is kept (`root_hidden`,
    `root_logits`) to grow the next tree from.
    """

    def __init__(self, target: PreTrainedModel, draft: Any, config: TreeConfig) -> None:
        self.target = target
        self.draft: EagleDraft = prepare_draft(draft, target)
        self.config = config
        attn = getattr(target.config, "_attn_implementation", "sdpa")
        if attn not in TREE_MASK_IMPLEMENTATIONS:
            raise EdaInputError(
                f"Tree decoding needs a custom 4D attention mask, which attn_implementation={attn!r} does not take: "
                "load the target with attn_implementation='sdpa' (or 'eager')."
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
        """EAGLE-2 expansion: `depth` draft steps, expanding the `top_k` best nodes of each depth."""
        cfg, device = self.config, self.root_logits.device
        self.draft_cache.crop(-(self.draft_cache.get_seq_length() - self.num_done))  # drop any previous tree
        logp = F.log_softmax(self.root_logits.float(), dim=-1).topk(cfg.top_k)
        tokens, scores = logp.indices, logp.values
        parents = torch.full_like(tokens, -1)
        depths = torch.ones_like(tokens)
        ancestors = torch.eye(tokens.numel(), dtype=torch.bool, device=device)
        hidden = torch.zeros(tokens.numel(), self.root_hidden.numel(), dtype=self.root_hidden.dtype, device=device)
        cached_nodes = torch.empty(0, dtype=torch.long, device=device)  # tree nodes in the draft cache, in order
        frontier = torch.arange(tokens.numel(), device=device)
        for depth in range(2, cfg.depth + 1):
            parent_of = parents[frontier]
            features = torch.where(
                (parent_of >= 0)[:, None], hidden[parent_of.clamp_min(0)], self.root_hidden[None]
            )
            # the frontier attends to the committed prefix, its ancestors already in the cache, and itself
            visible_tree = ancestors[frontier][:, cached_nodes]
            allowed = torch.cat(
                (
                    torch.ones(frontier.numel(), self.num_done, dtype=torch.bool, device=device),
                    visible_tree,
                    torch.eye(frontier.numel(), dtype=torch.bool, device=device),
                ),
                dim=1,
            )
            out = self.draft(
                input_ids=tokens[frontier][None],
                hidden_states=features[None],
                attention_mask=allowed[None, None],
                position_ids=(self.num_done + depths[frontier] - 1)[None],
                past_key_values=self.draft_cache,
                use_cache=True,
            )
            cached_nodes = torch.cat((cached_nodes, frontier))
            hidden[frontier] = out.last_hidden_state[0]
            logits = self.draft.target_vocab_logits(out.logits[0])
            child = F.log_softmax(logits.float(), dim=-1).topk(cfg.top_k)  # [frontier, top_k]
            first_new = tokens.numel()
            child_parents = frontier.repeat_interleave(cfg.top_k)
            tokens = torch.cat((tokens, child.indices.flatten()))
            scores = torch.cat((scores, (scores[frontier][:, None] + child.values).flatten()))
            parents = torch.cat((parents, child_parents))
            depths = torch.cat((depths, torch.full_like(child_parents, depth)))
            hidden = torch.cat((hidden, torch.zeros(child_parents.numel(), hidden.shape[1], dtype=hidden.dtype,
                                                    device=device)))
            num = tokens.numel()
            grown = torch.zeros(num, num, dtype=torch.bool, device=device)
            grown[:first_new, :first_new] = ancestors
            grown[first_new:, :first_new] = ancestors[child_parents]
            grown[first_new:, first_new:] = torch.eye(num - first_new, dtype=torch.bool, device=device)
            ancestors = grown
            frontier = first_new + scores[first_new:].topk(min(cfg.top_k, num - first_new)).indices
        return DraftTree(tokens, parents, depths, scores, ancestors)

    # ------------------------------------------------------------------ target side
    def _target_forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor, allowed: torch.Tensor | None):
        out = self.target(
            input_ids=input_ids[None],
            position_ids=position_ids[None],
            attention_mask=None if allowed is None else _additive_mask(allowed, self.dtype),
            past_key_values=self.target_cache,
            use_cache=True,
            output_hidden_states=self.draft.hidden_state_indices,
        )
        return out.logits[0], self.draft.target_features(out.hidden_states)[0]

    def prefill(self, prompt: torch.Tensor) -> int:
        """Run the target on the prompt, feed the draft, and return the first generated token (the first root)."""
        logits, features = self._target_forward(prompt, torch.arange(prompt.numel(), device=prompt.device), None)
        root = int(logits[-1].argmax())
        tokens = torch.cat((prompt[1:], prompt.new_tensor([root])))
        self._draft_consume(tokens, features)
        self.num_done = prompt.numel()
        return root

    def step(self, root: int) -> list[int]:
        """Draft a tree below `root`, verify it in one target forward, and return the new tokens (accepted path +
        bonus token; the last one is the next root). Keeps both KV caches to the accepted path."""
        tree = self.grow_tree().select(self.config.total_tokens)
        device, n = tree.tokens.device, tree.tokens.numel()
        # row 0 = root, row 1 + i = node i
        tokens = torch.cat((tree.tokens.new_tensor([root]), tree.tokens))
        positions = self.num_done + torch.cat((tree.depths.new_zeros(1), tree.depths))
        allowed = torch.zeros(n + 1, self.num_done + n + 1, dtype=torch.bool, device=device)
        allowed[:, : self.num_done + 1] = True  # prefix and root
        allowed[1:, self.num_done + 1 :] = tree.ancestors
        logits, features = self._target_forward(tokens, positions, allowed)

        # greedy verification: follow the target's argmax down the tree as long as a child matches it
        predicted = logits.argmax(dim=-1)
        parent_rows = torch.cat((tree.parents.new_full((1,), -2), tree.parents + 1))  # node parent -1 -> row 0
        path, row = [0], 0
        while True:
            match = ((parent_rows == row) & (tokens == predicted[row])).nonzero()
            if match.numel() == 0:
                break
            row = int(match[0, 0])
            path.append(row)
        new_tokens = [int(t) for t in tokens[path[1:]]] + [int(predicted[row])]

        # keep only the accepted path in the target cache: move its rows up behind the (untouched) prefix, then crop
        path_rows = torch.tensor(path, device=device)
        accepted, kept = self.num_done + path_rows, self.num_done + len(path)
        for layer in self.target_cache.layers:
            layer.keys[..., self.num_done : kept, :] = layer.keys.index_select(-2, accepted)
            layer.values[..., self.num_done : kept, :] = layer.values.index_select(-2, accepted)
        self.target_cache.crop(-(self.target_cache.get_seq_length() - kept))
        # the draft re-reads the accepted tokens with the target's true features
        self._draft_consume(torch.tensor(new_tokens, device=device), features[path_rows])
        self.num_done += len(path)
        self.num_nodes = n
        return new_tokens


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
    if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2:
        raise TypeError("input_ids must be a [batch, seq] LongTensor.")
    if input_ids.shape[0] != 1:
        raise EdaInputError(
            f"Tree decoding supports batch size 1 (got {input_ids.shape[0]}): call it once per sequence."
        )
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
    """Speculative decoding of `target` with an EAGLE/EDA `draft`; greedy output is identical to plain greedy.

    With `tree=TreeConfig(...)` it runs EAGLE-2 dynamic tree decoding (greedy, batch size 1): each step the draft
    grows a tree of candidate continuations, the target verifies all of it in one forward with a tree attention
    mask, and the longest path that matches the target's own argmax is accepted (plus the target's bonus token).
    With `tree=None` it is `target.generate(input_ids, assistant_model=draft, ...)` (chain drafting; supports
    sampling and every `generate` option through `**generate_kwargs`).

    Args:
        target: A Hugging Face causal LM (the verifier).
        draft: An `EagleDraftModel` or `Eagle3DraftModel`, a `PeftModel` wrapping one (its active adapter is used), or
            a merged draft.
        input_ids: The prompt, `[1, seq]`.
        tree: The tree shape, or `None` for chain drafting through `generate`.
        max_new_tokens: Tokens to generate at most.
        eos_token_id: Stop after this token (default: the target's `generation_config.eos_token_id`).
        attention_mask: Optional; must be all ones (no padding) in tree mode.
        return_stats: Also return a [`SpeculativeStats`] (per-step accepted lengths, `tau`).

    Returns:
        `[1, seq + new]` token ids (prompt included), and the stats if `return_stats`.
    """
    if tree is None:
        if eos_token_id is not None:  # None must not reach generate(): it would switch off the target's own EOS
            generate_kwargs["eos_token_id"] = eos_token_id
        with track_acceptance() as stats:
            output = target.generate(
                input_ids, attention_mask=attention_mask, assistant_model=draft, max_new_tokens=max_new_tokens,
                **generate_kwargs,
            )
        return (output, stats) if return_stats else output
    if generate_kwargs.get("do_sample"):
        raise EdaInputError(
            "Tree decoding is greedy only: for sampling use tree=None (target.generate(..., assistant_model=draft, "
            "do_sample=True)), which applies the speculative-sampling acceptance rule."
        )
    if generate_kwargs:
        raise TypeError(f"speculative_generate(tree=...) got unsupported arguments {sorted(generate_kwargs)}.")
    if not isinstance(tree, TreeConfig):
        raise TypeError(f"tree must be a TreeConfig or None, got {type(tree).__name__}.")
    if max_new_tokens < 1:
        raise EdaInputError(f"max_new_tokens must be >= 1, got {max_new_tokens}.")
    _check_inputs(target, input_ids, attention_mask, input_ids.shape[1] + max_new_tokens + tree.depth + 1)
    input_ids = input_ids.to(target.get_input_embeddings().weight.device)
    eos = set(eos_token_ids(target, eos_token_id))

    speculator = TreeSpeculator(target, draft, tree)
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
