"""Training cost of stage 2 (EDA adapter) vs stage 1 (whole shared draft) on the same tiny setup, side by side.

Runs on CPU in about a minute: builds a small random Llama target from config, trains a stage-1 draft
(`EagleTrainer`) and a stage-2 adapter on a copy of the target (`EdaTrainer`) on the same data, alternating the two
several times, and prints the trainable parameters and the median time per optimizer step of each, with online target
features (the default) and with cached features (`eda_adapters.extract_features`: the step without the target forward).

    python recipes/tiny/stage_cost.py [--plot stage_cost.png]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch
from datasets import Dataset
from transformers import LlamaConfig, LlamaForCausalLM, TrainerCallback

from eda_adapters import EagleDraftModel, EdaConfig
from eda_adapters.data import extract_features
from eda_adapters.training import EagleTrainer, EagleTrainingConfig, EdaTrainer, EdaTrainingConfig


def build(args: argparse.Namespace):
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.hidden * 8 // 3, num_hidden_layers=4,
        num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=512,
    )
    target = LlamaForCausalLM(config).eval()
    rows = torch.randint(0, args.vocab, (args.samples, args.seq_len)).tolist()
    return target, Dataset.from_dict({"input_ids": rows})


def trainable(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def timed_steps(trainer) -> tuple[float, float]:
    """Median (wall time, CPU time of this thread) of one optimizer step, after one warm-up step.

    With one torch thread all the compute runs on the calling thread, so its CPU time is the step's compute cost even
    when other processes load the machine; wall time is what a dedicated machine would show.
    """
    stamps: list[tuple[float, float]] = []

    class StepClock(TrainerCallback):
        def on_step_end(self, *args, **kwargs):
            stamps.append((time.perf_counter(), time.thread_time()))

    trainer.add_callback(StepClock())
    stamps.append((time.perf_counter(), time.thread_time()))
    trainer.train()
    steps = list(zip(stamps[:-1], stamps[1:]))[1:]
    return (
        statistics.median(b[0] - a[0] for a, b in steps),
        statistics.median(b[1] - a[1] for a, b in steps),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--vocab", type=int, default=2048)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--plot", help="Also save a bar chart to this PNG.")
    args = parser.parse_args()
    torch.set_num_threads(1)  # tiny matmuls: one thread is fastest and least sensitive to other load
    target, data = build(args)
    common = dict(
        per_device_train_batch_size=args.batch_size, max_steps=args.steps, save_strategy="no", report_to=[],
        use_cpu=True, disable_tqdm=True, logging_steps=10**6,
    )
    with tempfile.TemporaryDirectory() as tmp:
        shared = EagleDraftModel.from_target(target)
        shared.save_pretrained(f"{tmp}/draft")
        features = str(extract_features(target, data, f"{tmp}/features", show_progress=False).path)

        # one output directory per stage and feature source: a directory belongs to one run (RunDirectory)
        def stage1(dataset, mode):
            draft = EagleDraftModel.from_pretrained(f"{tmp}/draft", target_model=target)
            config = EagleTrainingConfig(output_dir=f"{tmp}/s1-{mode}", **common)
            return EagleTrainer(model=draft, target_model=target, args=config, train_dataset=dataset)

        def stage2(dataset, mode):
            draft = EagleDraftModel.from_pretrained(f"{tmp}/draft", target_model=target)
            config = EdaTrainingConfig(output_dir=f"{tmp}/s2-{mode}", **common)
            return EdaTrainer(model=draft, target_model=target, args=config, train_dataset=dataset,
                              peft_config=EdaConfig(num_private_experts=1))

        params = {"stage 1": trainable(stage1(data, "online").model), "stage 2": trainable(stage2(data, "online").model)}
        results: dict[str, dict[str, list[tuple[float, float]]]] = {"online": {}, "cached": {}}
        for mode, dataset in (("online", data), ("cached", features)):
            for _ in range(args.repeats):  # alternate so that machine load hits both alike
                for name, make in (("stage 1", stage1), ("stage 2", stage2)):
                    results[mode].setdefault(name, []).append(timed_steps(make(dataset, mode)))

    print(f"target: Llama hidden {args.hidden}, 4 layers, vocab {args.vocab}; "
          f"batch {args.batch_size} x {args.seq_len} tokens")
    print(f"trainable parameters: stage 1 {params['stage 1']:,}  stage 2 {params['stage 2']:,}  "
          f"ratio {params['stage 2'] / params['stage 1']:.3f}")
    medians = {}
    for mode, by_stage in results.items():
        medians[mode] = {
            name: tuple(statistics.median(t[i] for t in times) for i in (0, 1)) for name, times in by_stage.items()
        }
        (w1, c1), (w2, c2) = medians[mode]["stage 1"], medians[mode]["stage 2"]
        print(f"step time ({mode} features): CPU stage 1 {c1 * 1e3:.1f} ms, stage 2 {c2 * 1e3:.1f} ms, ratio "
              f"{c2 / c1:.3f} | wall stage 1 {w1 * 1e3:.1f} ms, stage 2 {w2 * 1e3:.1f} ms, ratio {w2 / w1:.3f}")
    if args.plot:
        from eda_adapters.plotting import pyplot

        plt = pyplot("--plot")
        fig, axes = plt.subplots(1, 2, figsize=(8, 3))
        axes[0].bar(list(params), list(params.values()), color=["tab:gray", "tab:green"])
        axes[0].set_title("trainable parameters")
        width = 0.35
        for i, name in enumerate(("stage 1", "stage 2")):
            axes[1].bar([x + i * width for x in range(2)], [medians[m][name][1] * 1e3 for m in ("online", "cached")],
                        width, label=name, color=["tab:gray", "tab:green"][i])
        axes[1].set_xticks([x + width / 2 for x in range(2)], ["online features", "cached features"])
        axes[1].set_title("CPU ms per optimizer step (1 thread)")
        axes[1].legend()
        fig.tight_layout()
        fig.savefig(args.plot, dpi=120)
        print(f"saved {args.plot}")


if __name__ == "__main__":
    main()
