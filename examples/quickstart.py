"""Quickstart: a shared EAGLE draft for a (tiny, random) target, an EDA adapter on it, save / load / merge.

Run: python examples/quickstart.py
Everything is built from config, so it runs offline in seconds. With a real model, replace `make_tiny_target()` by
`AutoModelForCausalLM.from_pretrained("Qwen/Qwen2.5-7B-Instruct")`.
"""

from __future__ import annotations

import tempfile

import torch
from peft import PeftModel, get_peft_model
from transformers import Qwen2Config, Qwen2ForCausalLM

import eda_adapters
from eda_adapters.data import compute_target_features


def make_tiny_target() -> Qwen2ForCausalLM:
    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2,
    )
    return Qwen2ForCausalLM(config).eval()


def main() -> None:
    target = make_tiny_target()
    with tempfile.TemporaryDirectory() as tmp:
        draft = eda_adapters.EagleDraftModel.from_target(target)  # shared draft, sized from the target
        draft.save_pretrained(f"{tmp}/draft")  # the target's embedding and head are not saved: they come back on load
        model = get_peft_model(draft, eda_adapters.EdaConfig(init_private_weights="random"))  # private component
        model.print_trainable_parameters()

        ids = torch.randint(0, 256, (1, 16))
        features, _ = compute_target_features(target, ids)  # the target's last hidden states
        inputs = {"input_ids": ids[:, 1:], "hidden_states": features[:, :-1]}  # (feature_t, token_t+1) -> feature_t+1
        adapted = model(**inputs).logits
        with model.disable_adapter():
            shared = model(**inputs).logits
        print(f"private branch changes the draft's logits by up to {(adapted - shared).abs().max():.4f}")

        model.save_pretrained(f"{tmp}/adapter")  # adapter only: adapter_model.safetensors + adapter_config.json
        shared_draft = eda_adapters.EagleDraftModel.from_pretrained(f"{tmp}/draft", target_model=target)
        reloaded = PeftModel.from_pretrained(shared_draft, f"{tmp}/adapter")
        print("reloaded adapter reproduces outputs:", torch.equal(reloaded(**inputs).logits, adapted))

    merged = model.merge_and_unload()  # exact for a single private expert: a plain, wider EAGLE draft
    error = (merged(**inputs).logits - adapted).abs().max().item()
    print(f"merged draft: intermediate_size {merged.config.intermediate_size}, max |merged - adapted| = {error:.2e}")


if __name__ == "__main__":
    main()
