"""One draft training step on SmolLM2-135M-Instruct, timed per objective, side by side in one run.

Rows (each a forward and backward of the objective on one batch of cached-feature shape, plus the frozen target
head that turns the last features into the target's logits):

- `eagle1_wide`: EAGLE-1 with an 8,192-token head, its loss over the forward's target-vocabulary logits (-inf outside
  the draft's tokens): what `EagleObjective` did before it scored a reduced head on its own logits;
- `eagle1`: the same step as `EagleObjective` takes it (same value and gradients, tested in
  tests/test_draft_vocab.py), the frozen head over the whole vocabulary;
- `eagle3_ttt3`: EAGLE-3 with the same head, unrolled 3 steps (training-time test);
- `*_draft_vocab`: the same objectives on `DraftVocabLogits`, what the trainer passes when the cached features store
  the target's top token: the frozen head's rows of the draft vocabulary only (same value and gradients, tested in
  tests/test_draft_vocab_logits.py).

    python benchmarks/training_step.py [--batch 8] [--length 200] [--repeats 5] [--target-dtype float32] \
        [--json docs/benchmarks/training_step_cpu.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from eda_adapters import load_target
from eda_adapters.compute_dtype import choose_dtype, machine_key
from eda_adapters.models import Eagle3DraftModel, EagleDraftModel
from eda_adapters.training import EagleTrainer, EagleTrainingConfig
from eda_adapters.training.losses import DraftVocabLogits, eagle_loss, shift_for_draft
from eda_adapters.training.objectives import EagleObjective, TrainingTimeTestObjective


def wide_eagle1_step(draft, inputs, features, target_logits, args) -> torch.Tensor:
    """EAGLE-1's loss over target-vocabulary logits, as `EagleObjective` computed it before."""
    ids, draft_features, target_features, mask = shift_for_draft(inputs["input_ids"], features, inputs["loss_mask"])
    out = draft(input_ids=ids, hidden_states=draft_features, attention_mask=inputs["attention_mask"][:, 1:])
    return eagle_loss(out.last_hidden_state, out.logits, target_features, target_logits[:, 1:], mask,
                      regression_weight=args.regression_weight, ce_weight=args.ce_weight).loss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--length", type=int, default=200)
    parser.add_argument("--draft-vocab-size", type=int, default=8192)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--target-dtype", default="float32",
                        help="the frozen target's dtype (auto: what the recipes choose on this machine)")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    torch.manual_seed(0)
    target_dtype = choose_dtype() if args.target_dtype == "auto" else args.target_dtype
    target = load_target("smollm2-135m-instruct", dtype=target_dtype)
    mixed = target.dtype == torch.bfloat16  # the recipe trains drafts of a bfloat16 target in mixed precision
    hidden = target.config.hidden_size
    vocab = torch.arange(args.draft_vocab_size)
    ids = torch.randint(0, target.config.vocab_size, (args.batch, args.length))
    ones = torch.ones_like(ids)
    inputs = {"input_ids": ids, "attention_mask": ones, "loss_mask": ones}
    last = torch.randn(args.batch, args.length, hidden, dtype=target.dtype)
    head = target.get_output_embeddings()
    top_token = torch.randint(0, target.config.vocab_size, (args.batch, args.length))  # stored with the features
    rows = {}
    for name in ("eagle1_wide", "eagle1", "eagle1_draft_vocab", "eagle3_ttt3", "eagle3_ttt3_draft_vocab"):
        eagle3 = name.startswith("eagle3")
        config = EagleTrainingConfig(output_dir="unused", draft_architecture="eagle3" if eagle3 else "eagle",
                                     ttt_steps=3 if eagle3 else 1, report_to=[], use_cpu=True, bf16=mixed)
        draft_class = Eagle3DraftModel if eagle3 else EagleDraftModel
        draft = draft_class.from_target(target, draft_vocab=vocab)
        EagleTrainer._upcast_trainable(draft, config)  # float32 master weights, as the trainer keeps them
        features = torch.randn(args.batch, args.length, 3 * hidden) if eagle3 else last.float()
        objective = TrainingTimeTestObjective() if eagle3 else EagleObjective()

        def step() -> None:
            with torch.no_grad():  # what the trainer's _target_features does on cached features
                if name.endswith("draft_vocab"):
                    target_logits = DraftVocabLogits.from_head(head, last, vocab, top_token)
                else:
                    target_logits = head(last)
            # the trainer's bf16 mixed precision: matmuls in bfloat16, weights and their gradients in float32
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mixed):
                if name == "eagle1_wide":
                    loss = wide_eagle1_step(draft, inputs, features, target_logits, config)
                else:
                    loss = objective(draft, inputs, features, target_logits, config, training=True).loss
            loss.backward()
            draft.zero_grad(set_to_none=True)

        step()
        samples = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            step()
            samples.append(time.perf_counter() - start)
        seconds = statistics.median(samples)
        rows[name] = {"seconds_per_step": round(seconds, 4), "tokens_per_second": round(ids.numel() / seconds, 1)}
        print(name, json.dumps(rows[name]), flush=True)
    speedup = {
        "eagle1_over_wide": ("eagle1_wide", "eagle1"),
        "eagle1_draft_vocab_over_full_head": ("eagle1", "eagle1_draft_vocab"),
        "eagle3_draft_vocab_over_full_head": ("eagle3_ttt3", "eagle3_ttt3_draft_vocab"),
    }
    rows["speedups"] = {key: round(rows[slow]["seconds_per_step"] / rows[fast]["seconds_per_step"], 2)
                        for key, (slow, fast) in speedup.items()}
    print("speedups", json.dumps(rows["speedups"]))
    result = {"rows": rows, "setup": {"batch": args.batch, "length": args.length, "draft_vocab_size": args.draft_vocab_size,
                                      "repeats": args.repeats, "target_dtype": str(target.dtype).removeprefix("torch."), "threads": torch.get_num_threads(),
                                      "machine": machine_key()},
              "command": "python benchmarks/training_step.py " + " ".join(
                  f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "json")}
    if args.json:
        with open(args.json, "w") as handle:
            handle.write(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
