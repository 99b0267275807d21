"""Trainable-parameter ratio of EDA adapters on a draft sized for a real target, computed from config only.

Run: python benchmarks/param_counts.py [--target-config qwen2.5-7b]
Nothing is downloaded and no weights are allocated (the models live on the meta device).
"""

from __future__ import annotations

import argparse

import torch
from peft import get_peft_model
from transformers import AutoModelForCausalLM, Qwen2Config

import eda_adapters

# Published config of Qwen/Qwen2.5-7B (config.json), copied as numbers so nothing is downloaded.
QWEN25_7B = dict(
    vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
    num_key_value_heads=4, max_position_embeddings=131072, rope_parameters={"rope_type": "default", "rope_theta": 1e6},
    rms_norm_eps=1e-6, tie_word_embeddings=False,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--private-sizes", type=int, nargs="*", default=[None, 4736, 2368, 1184])
    args = parser.parse_args()
    with torch.device("meta"):
        target = AutoModelForCausalLM.from_config(Qwen2Config(**QWEN25_7B))
        print("| private experts x width | trainable | draft params (own) | all params (with shared target heads) "
              "| trainable / own | trainable / all |")
        print("|---|---|---|---|---|---|")
        for experts, size in [(1, s) for s in args.private_sizes] + [(4, 4736)]:
            draft = eda_adapters.EagleDraftModel.from_target(target)
            own = sum(p.numel() for n, p in draft.named_parameters() if not n.startswith(("embed_tokens", "lm_head")))
            config = eda_adapters.EdaConfig(
                num_private_experts=experts, num_experts_per_tok=min(2, experts), private_intermediate_size=size
            )
            model = get_peft_model(draft, config)
            trainable, total = model.get_nb_trainable_parameters()
            width = size or draft.config.intermediate_size
            print(f"| {experts} x {width} | {trainable:,} | {own:,} | {total:,} | {trainable / own:.1%} "
                  f"| {trainable / total:.2%} |")


if __name__ == "__main__":
    main()
