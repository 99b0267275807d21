"""How the experiment measures drafts: tau with chain and EAGLE-2 tree decoding per held-out prompt, bootstrap
intervals over prompts, per-position acceptance rates, and an estimate of training FLOPs."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel

from ...atomic import atomic_write_json
from ...generation import TreeConfig, speculative_generate
from ...generation.replay import GreedyReference, greedy_references, replay_acceptance
from ...generation.tau_report import TauMeasurement, percentile_interval, prompt_sums, summarize
from ...tuners import EdaConfig
from ...errors import EdaInputError


#: How tau is measured: "replay" computes decoding's accepted lengths from the target's greedy answers in batched
#: draft forwards (`eda_adapters.generation.replay`; same numbers, much faster), "decode" runs speculative decoding.
EVAL_METHODS = ("replay", "decode")


@torch.no_grad()
def measure_tau(
    draft: nn.Module,
    target: PreTrainedModel,
    prompts: Sequence[torch.LongTensor],
    *,
    tree: TreeConfig | None = None,
    num_draft_tokens: int = 5,
    max_new_tokens: int = 64,
    seed: int = 0,
    method: str = "decode",
    references: Sequence[GreedyReference] | None = None,
) -> TauMeasurement:
    """Greedy (T=0) acceptance of `draft` on every prompt: chain drafting of `num_draft_tokens` tokens (`tree=None`,
    through `target.generate`) or EAGLE-2 tree decoding (`tree=TreeConfig(...)`).

    `method="decode"` decodes each prompt; `method="replay"` replays the same steps from the target's greedy answers
    (`references`, one per prompt from [`greedy_references`]; computed here when not given, so pass them to measure
    several drafts on the same target and prompts).
    """
    if method not in EVAL_METHODS:
        raise EdaInputError(f"method must be one of {EVAL_METHODS}, got {method!r}")
    depth = tree.depth if tree is not None else num_draft_tokens
    if method == "replay":
        if references is None:
            references = greedy_references(target, prompts, max_new_tokens)
        per_prompt = [
            replay_acceptance(draft, target, ref, tree=tree, num_draft_tokens=num_draft_tokens).accepted_lengths
            for ref in references
        ]
        return summarize(per_prompt, depth, seed=seed)
    device = target.get_input_embeddings().weight.device
    generation = target.generation_config
    pad = generation.pad_token_id if generation.pad_token_id is not None else generation.eos_token_id
    pad = (pad[0] if isinstance(pad, list) else pad) or 0
    chain = dict(
        num_assistant_tokens=num_draft_tokens, num_assistant_tokens_schedule="constant", do_sample=False,
        pad_token_id=pad,
    )
    was_training = draft.training
    draft.eval()
    per_prompt = []
    try:
        for prompt in prompts:
            ids = prompt.to(device).view(1, -1)
            _, stats = speculative_generate(
                target, draft, ids, tree=tree, max_new_tokens=max_new_tokens, return_stats=True,
                attention_mask=torch.ones_like(ids), **({} if tree is not None else chain),
            )
            per_prompt.append(stats.accepted_lengths)
    finally:
        draft.train(was_training)
    return summarize(per_prompt, depth, seed=seed)


def measurement_key(draft: nn.Module, target_fingerprint: str, prompts: Sequence[torch.LongTensor],
                    settings: dict[str, Any]) -> str:
    """Digest of everything a tau measurement depends on: every weight of the draft (adapters included, the
    borrowed target embedding and head too), the target, the prompts' token ids and the evaluation settings."""
    hasher = hashlib.sha256(json.dumps({"target": target_fingerprint, **settings}, sort_keys=True).encode())
    for name, tensor in sorted(draft.state_dict().items()):
        hasher.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        hasher.update(tensor.detach().reshape(-1).contiguous().view(torch.uint8).cpu().numpy().tobytes())
    for ids in prompts:
        hasher.update(ids.detach().reshape(-1).to(torch.int64).cpu().numpy().tobytes() + b"|")
    return hasher.hexdigest()[:24]


def load_measurements(path: Path) -> tuple[TauMeasurement, TauMeasurement | None] | None:
    """The (chain, tree) measurements saved by `save_measurements`, or None when there are none."""
    if not path.exists():
        return None
    saved = json.loads(path.read_text())

    def measurement(fields: dict[str, Any] | None) -> TauMeasurement | None:
        return None if fields is None else TauMeasurement(**{**fields, "ci95": tuple(fields["ci95"])})

    return measurement(saved["chain"]), measurement(saved["tree"])


def save_measurements(path: Path, chain: TauMeasurement, tree: TauMeasurement | None) -> None:
    """Keep a measurement on disk (atomically), so a resumed experiment does not replay a finished row again."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, {"chain": dataclasses.asdict(chain),
                             "tree": None if tree is None else dataclasses.asdict(tree)})


def summarize_seeds(per_seed: Sequence[TauMeasurement], seed: int = 0, resamples: int = 1000) -> TauMeasurement:
    """One measurement of a row trained with several seeds, each measured on the same held-out prompts.

    tau pools every verification step of every seed. The 95% interval is a nested bootstrap: each resample draws
    seeds with replacement, then, for each drawn seed, prompts with replacement, and pools what it drew; it covers
    both the training seed's and the prompts' variation. With one seed it is that seed's measurement as it is.
    """
    if len(per_seed) == 1:
        return per_seed[0]
    depth = len(per_seed[0].acceptance_by_position)
    per_prompt = [m.per_prompt for m in per_seed]
    if any(len(p) != len(per_prompt[0]) for p in per_prompt):
        raise ValueError("every seed must be measured on the same prompts")
    sums = [prompt_sums(prompts) for prompts in per_prompt]
    rng = random.Random(seed)
    stats = []
    for _ in range(resamples):
        tokens = steps = 0
        for _ in sums:
            picked = sums[rng.randrange(len(sums))]
            for _ in picked:
                t, n = picked[rng.randrange(len(picked))]
                tokens, steps = tokens + t, steps + n
        if steps:
            stats.append(tokens / steps)
    pooled = summarize([lengths for prompts in per_prompt for lengths in prompts], depth, seed=seed, resamples=1)
    return TauMeasurement(
        pooled.tau, percentile_interval(stats), pooled.acceptance_by_position, len(per_prompt[0]), pooled.num_steps,
        [lengths for prompts in per_prompt for lengths in prompts],
    )


def tau_by_kind(per_seed: Sequence[TauMeasurement], kinds: Sequence[str]) -> dict[str, TauMeasurement]:
    """Each prompt kind's measurement (`kinds[i]` is the kind of prompt `i`): that kind's prompts of every seed,
    pooled and with intervals as in [`summarize_seeds`]."""
    depth = len(per_seed[0].acceptance_by_position)
    groups: dict[str, list[int]] = {}
    for i, kind in enumerate(kinds):
        groups.setdefault(kind, []).append(i)
    return {kind: summarize_seeds([summarize([m.per_prompt[i] for i in index], depth) for m in per_seed])
            for kind, index in groups.items()}


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Parameters of `module` (each tensor once, shared ones included once)."""
    seen, total = set(), 0
    for param in module.parameters():
        if id(param) in seen or (trainable_only and not param.requires_grad):
            continue
        seen.add(id(param))
        total += param.numel()
    return total


def training_flops(tokens: int, target_params: int, draft_compute_params: int, trainable_params: int) -> float:
    """Estimated FLOPs of draft training on `tokens` tokens with online target features.

    Per token: `2 * target_params` for the target's forward (features), `2 * draft_compute_params` for the draft's
    forward and as much again for the backward through its activations (the draft's layers and the target's output
    head it runs, embedding lookups excluded), plus `2 * trainable_params` for the weight gradients. This is the usual
    6N rule with weight gradients counted only for what trains.
    """
    return float(tokens) * (2 * target_params + 4 * draft_compute_params + 2 * trainable_params)


def forward_parameters(model: nn.Module) -> int:
    """Parameters a forward pass multiplies with: all but the input embedding (a lookup), the output head counted
    even when it is tied to the embedding. Works for causal LMs, EAGLE drafts (whose head is the target's) and
    `PeftModel`s around them."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    embed = getattr(base, "embed_tokens", None) or base.get_input_embeddings()
    head = getattr(base, "lm_head", None) or base.get_output_embeddings()
    skip = {id(p) for p in embed.parameters()} if embed is not None else set()
    total = count_parameters(base) - sum(p.numel() for p in embed.parameters()) if embed is not None else (
        count_parameters(base)
    )
    if head is not None and id(head.weight) in skip:
        total += head.weight.numel()
    return total


#: Linear layers of an EAGLE draft that the LoRA baseline adapts (all of them).
LORA_TARGET_MODULES = ["fc", "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def eda_trainable_parameters(draft: nn.Module, eda: EdaConfig) -> int:
    """Trainable parameters of an EDA adapter with config `eda` (wrapping every layer's MLP) on `draft`."""
    total = 0
    for layer in draft.layers:
        hidden = layer.mlp.gate_proj.in_features
        width = eda.private_intermediate_size or layer.mlp.gate_proj.out_features
        experts = eda.num_private_experts
        total += experts * 3 * hidden * width + (hidden * experts if eda.is_routed else 0)
    for name in eda.modules_to_save or ():
        total += sum(p.numel() for n, m in draft.named_modules() if n.split(".")[-1] == name for p in m.parameters())
    return total


def lora_rank_matching(draft: nn.Module, eda: EdaConfig) -> int:
    """The LoRA rank on `LORA_TARGET_MODULES` whose trainable parameters come closest to an EDA adapter's (`eda`)."""
    per_rank = sum(
        module.in_features + module.out_features
        for name, module in draft.named_modules()
        if isinstance(module, nn.Linear) and name.split(".")[-1] in LORA_TARGET_MODULES
    )
    return max(1, round(eda_trainable_parameters(draft, eda) / per_rank))
