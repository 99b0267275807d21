"""Tiny target LMs for the CPU demo: a tokenizer trained offline, a base LM on general text, domain fine-tunes.

Everything here is what a user would otherwise download from the Hub (a Qwen2.5 base model and its Math/Coder
fine-tunes); the rest of the pipeline does not know the difference.
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from ...data.io import atomic_directory
from ..toys import train_lm
from ...errors import EdaInputError

logger = logging.getLogger(__name__)

SPECIAL_TOKENS = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}


@dataclass
class TinyLMSpec:
    """Size and training budget of a tiny target LM."""

    vocab_size: int = 512
    hidden_size: int = 64
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    intermediate_size: int = 176
    seq_len: int = 96
    batch_size: int = 16
    base_steps: int = 300
    finetune_steps: int = 200
    lr: float = 3e-3
    #: Fraction of general text replayed in each fine-tune (as domain fine-tuning recipes do), so the fine-tuned target
    #: drifts on its domain and stays closer to the base elsewhere.
    finetune_general_replay: float = 0.3


def train_tokenizer(texts: Sequence[str], vocab_size: int, save_dir: str | os.PathLike) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on `texts` with the `tokenizers` library, saved to `save_dir`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE(unk_token=SPECIAL_TOKENS["unk_token"]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    bos = SPECIAL_TOKENS["bos_token"]
    # like Llama tokenizers: encoding a text prepends BOS, so prompts look like the `<s> text </s>` training blocks
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tokenizer.token_to_id(bos))]
    )
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tokenizer, **SPECIAL_TOKENS)
    _atomic_save(wrapped, save_dir)
    return wrapped


def new_tiny_lm(spec: TinyLMSpec, tokenizer: PreTrainedTokenizerFast, seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_attention_heads,
        max_position_embeddings=4 * spec.seq_len,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return LlamaForCausalLM(config)


def pack_tokens(texts: Sequence[str], tokenizer: PreTrainedTokenizerFast, seq_len: int) -> torch.Tensor:
    """Concatenate `<s> text </s>` for all texts and cut into `[n, seq_len]` blocks (the usual LM packing)."""
    ids: list[int] = []
    for text in texts:
        ids += [tokenizer.bos_token_id, *tokenizer(text, add_special_tokens=False)["input_ids"], tokenizer.eos_token_id]
    n = len(ids) // seq_len
    if n == 0:
        raise EdaInputError(f"Not enough text to fill one block of {seq_len} tokens.")
    return torch.tensor(ids[: n * seq_len]).view(n, seq_len)


def _atomic_save(obj, save_dir: str | os.PathLike) -> None:
    """save_pretrained into a temp dir beside `save_dir`, then rename: a crash never leaves a half-written model."""
    with atomic_directory(save_dir) as tmp:
        obj.save_pretrained(tmp)


def build_targets(
    cache_dir: str | os.PathLike,
    general: Sequence[str],
    domains: dict[str, Sequence[str]],
    spec: TinyLMSpec,
    seed: int = 0,
) -> dict[str, Path]:
    """Train (or reuse from `cache_dir`) the tokenizer, the base LM and one fine-tune per domain.

    Returns `{"tokenizer": path, "base": path, "<domain>": path, ...}`. A model already in the cache is reused, so a
    second run starts straight from the experiments.
    """
    cache_dir = Path(cache_dir)
    paths = {"tokenizer": cache_dir / "tokenizer", "base": cache_dir / "base"}
    paths.update({name: cache_dir / f"ft-{name}" for name in domains})
    if not paths["tokenizer"].exists():
        rng = random.Random(seed)
        domain_sample = [t for texts in domains.values() for t in rng.sample(list(texts), min(400, len(texts)))]
        sample = list(general) + domain_sample
        train_tokenizer(sample, spec.vocab_size, paths["tokenizer"])
    tokenizer = PreTrainedTokenizerFast.from_pretrained(paths["tokenizer"])

    if not paths["base"].exists():
        base = new_tiny_lm(spec, tokenizer, seed)
        train_lm(base, pack_tokens(general, tokenizer, spec.seq_len), spec.base_steps, spec.batch_size, spec.lr, seed,
                 desc="base target")
        _atomic_save(base, paths["base"])
    for name, texts in domains.items():
        if paths[name].exists():
            continue
        model = LlamaForCausalLM.from_pretrained(paths["base"])
        domain_blocks = pack_tokens(texts, tokenizer, spec.seq_len)
        replay = pack_tokens(general, tokenizer, spec.seq_len)
        num_replay = min(len(replay), round(len(domain_blocks) * spec.finetune_general_replay))
        replay_rows = torch.randperm(len(replay), generator=torch.Generator().manual_seed(seed))[:num_replay]
        blocks = torch.cat((domain_blocks, replay[replay_rows]))
        train_lm(model, blocks, spec.finetune_steps, spec.batch_size, spec.lr / 2, seed + 1, desc=f"fine-tune {name}")
        _atomic_save(model, paths[name])
    return paths
