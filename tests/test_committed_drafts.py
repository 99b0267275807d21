"""The drafts committed for SmolLM2-135M-Instruct (`recipes/smollm2/`): the shared draft the recipe exports and the
finished drafts of both architectures it keeps beside its data. Each one must load onto the real target as a user
loads it, stay within the 40 MB the repository allows, decode losslessly (chain and tree) on held-out chat prompts
none of them was trained on, and accept more than a draft that predicts nothing would. A target with other weights
gets one line naming both fingerprints. Marker `real`: `.ci/run` installs the target's package.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from eda_adapters import TreeConfig, load_draft, speculative_generate, track_acceptance
from eda_adapters.data.prompts import encode_chat_prompts
from eda_adapters.fingerprints import target_fingerprint
from eda_adapters.research.shared_draft.prompt_mix import held_out_prompts

pytestmark = pytest.mark.real

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "smollm2"
COMMITTED = sorted(path.parent for path in [RECIPE / "shared-draft" / "config.json",
                                            *(RECIPE / "data" / "drafts").glob("*/config.json")] if path.exists())
MAX_BYTES = 40 * 2**20
NEW_TOKENS = 32
# a draft that predicts nothing accepts 1 token per target forward; the committed ones, on these three prompts, about
# 1.8 (chain) and 2.4 (tree) at 32 tokens: prose, which no training prompt resembles closely, pulls them down
MIN_CHAIN_TAU, MIN_TREE_TAU = 1.5, 1.8


def test_the_recipe_has_committed_a_draft():
    assert COMMITTED, f"no committed draft under {RECIPE}: run python recipes/smollm2/shared_draft.py"


def _safetensors_dtypes(path: Path) -> set[str]:
    with safe_open(path, framework="pt") as handle:  # slices: the header alone, no tensor is read
        return {handle.get_slice(name).get_dtype() for name in handle.keys()}


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: str(p.relative_to(RECIPE)))
def test_committed_draft_is_small_bfloat16_and_lossless(smollm2, path):
    target, tokenizer = smollm2
    weights = path / "model.safetensors"
    assert weights.stat().st_size <= MAX_BYTES
    assert "BF16" in _safetensors_dtypes(weights) and not {"F32", "F64"} & _safetensors_dtypes(weights)
    draft = load_draft(path, target_model=target).eval()
    assert draft.dtype == target.dtype  # attached: it computes in the target's dtype, whatever it was saved in
    assert draft.check_target(target) is None  # trained for exactly these weights
    kinds = {}
    for row in held_out_prompts():  # the first prompt of each kind: eda bench's, never trained on
        kinds.setdefault(row["kind"], row["prompt"])
    prompts = encode_chat_prompts(tokenizer, list(kinds.values()))
    tree_taus = []
    with track_acceptance() as chain_stats:
        for prompt in prompts:
            reference = target.generate(prompt, do_sample=False, max_new_tokens=NEW_TOKENS)
            chain = target.generate(prompt, assistant_model=draft, do_sample=False, max_new_tokens=NEW_TOKENS)
            tree, stats = speculative_generate(target, draft, prompt, tree=TreeConfig(4, 4, 12),
                                               max_new_tokens=NEW_TOKENS, return_stats=True)
            assert torch.equal(chain, reference) and torch.equal(tree, reference), \
                f"{path.name} changed SmolLM2's greedy output on {tokenizer.decode(prompt[0])!r}"
            tree_taus.append(stats.tau)
    print(f"{path.name}: chain tau {chain_stats.tau:.2f}, tree tau {[round(t, 2) for t in tree_taus]}")
    assert chain_stats.tau > MIN_CHAIN_TAU and sum(tree_taus) / len(tree_taus) > MIN_TREE_TAU


def test_a_target_with_other_weights_is_named_in_one_line(smollm2):
    target, _ = smollm2
    draft = load_draft(COMMITTED[0])
    layer = target.model.layers[0].mlp.down_proj
    original = layer.weight.detach().clone()
    try:
        with torch.no_grad():
            layer.weight.mul_(1.01)  # what a fine-tune does to the weights the draft was trained on
        line = draft.check_target(target)
        assert line is not None and "\n" not in line
        assert draft.config.target_fingerprint in line and target_fingerprint(target) in line
        assert "eda adapt" in line  # the fix
    finally:
        with torch.no_grad():
            layer.weight.copy_(original)
