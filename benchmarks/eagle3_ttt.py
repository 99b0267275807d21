"""EAGLE-1 against EAGLE-3 with training-time test on a real target (SmolLM2-135M-Instruct, `--target smollm2`) or on
the CPU miniature (`--target demo`: `eda demo`'s 2-layer base target and its general prompts): the same regenerated
data, the same draft vocabulary, held-out prompts, and both equal epochs and equal training compute.

Rows (all trained by `EagleTrainer` on cached features of the target's own greedy answers to general chat prompts):

- `eagle1`: EAGLE-1 draft, `--epochs` epochs (feature regression + cross-entropy, EAGLE-1's objective);
- `eagle3_ttt1`: EAGLE-3 draft, `--epochs` epochs, unroll 1 (no training-time test: isolates the architecture);
- `eagle3_ttt3`, `eagle3_ttt5`: EAGLE-3 draft, `--epochs` epochs, unroll 3 or 5 (the training-time test; 5 is the
  chain's drafted length);
- `eagle1_3x`: EAGLE-1 draft, 3 x `--epochs` epochs: as many draft forward/backward passes as `eagle3_ttt3`.

Each is measured on `--eval-prompts` held-out prompts (never trained on) with replayed greedy chain (5 drafted tokens)
and EAGLE-2 tree (depth 5, top-k 10, 60 tokens) decoding: tau with 95% bootstrap intervals over prompts, and the
chain's acceptance at each drafted position, as a share of all steps and conditional on the previous position. The
draft step cost (one token on a 64-token cache) is timed for each architecture next to a one-token target forward.

The miniature's target has 2 layers, too few for the default aux states `[2, L//2, L-3]`: its EAGLE-3 drafts fuse
`hidden_states` 0, 1 and 2 (embeddings, the middle, the final normed state).

Every stage keeps its output under `--work` (regenerated data, feature caches, trained drafts, row results), so a
run that stops resumes where it stopped. Results go to `docs/benchmarks/eagle3_ttt_<target>.json` (+ `.png`) after
each row.

    python benchmarks/eagle3_ttt.py [--target smollm2] [--train-prompts 600] [--epochs 2]
    python benchmarks/eagle3_ttt.py --target demo
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel

from eda_adapters import load_target
from eda_adapters.data import extract_features, load_regenerated, regenerate
from eda_adapters.data.feature_cache import draft_feature_layers
from eda_adapters.data.io import load_rows, load_tokenizer
from eda_adapters.generation.replay import greedy_references
from eda_adapters.models import Eagle3DraftModel, EagleDraftModel
from eda_adapters.models.draft_loading import load_draft
from eda_adapters.plotting import pyplot
from eda_adapters.research.demo import DemoSize, build_demo
from eda_adapters.research.demo.chat_prompts import general_chat_prompts
from eda_adapters.research.experiment.evaluation import measure_tau
from eda_adapters.research.shared_draft.evaluation import CHAIN_TOKENS, TREE, step_cost_ms
from eda_adapters.training import EagleTrainer, EagleTrainingConfig
from eda_adapters.training.acceptance import prompts_from_dataset

#: Per `--target`: the defaults that fit it (each a command-line flag) and its EAGLE-3 aux states (None: the default).
TARGETS = {
    "smollm2": {"train_prompts": 600, "eval_prompts": 100, "max_new_tokens": 96, "eval_max_new_tokens": 48,
                "epochs": 2, "draft_vocab_size": 8192, "aux_layer_ids": None},
    "demo": {"train_prompts": 2000, "eval_prompts": 100, "max_new_tokens": 64, "eval_max_new_tokens": 64,
             "epochs": 16, "draft_vocab_size": None, "aux_layer_ids": [0, 1, 2]},
}


def rows(epochs: int, aux_layer_ids: list[int] | None) -> dict[str, dict]:
    eagle3 = {"draft_architecture": "eagle3", "num_train_epochs": epochs,
              **({"aux_layer_ids": aux_layer_ids} if aux_layer_ids else {})}
    return {
        "eagle1": {"draft_architecture": "eagle", "num_train_epochs": epochs, "ttt_steps": 1},
        "eagle3_ttt3": {**eagle3, "ttt_steps": 3},
        "eagle3_ttt1": {**eagle3, "ttt_steps": 1},
        "eagle3_ttt5": {**eagle3, "ttt_steps": 5},
        "eagle1_3x": {"draft_architecture": "eagle", "num_train_epochs": 3 * epochs, "ttt_steps": 1},
    }


def load_setup(name: str, work: Path, eval_prompts: int) -> tuple[PreTrainedModel, Any, list[str], list[str]]:
    """The target (float32), its tokenizer, the held-out general prompts and the training ones (disjoint)."""
    if name == "smollm2":
        target_name = "smollm2-135m-instruct"
        general = general_chat_prompts(seed=0)
        return (load_target(target_name, dtype="float32").eval(), load_tokenizer(target_name),
                general[:eval_prompts], general[eval_prompts:])
    demo = build_demo(work / "demo", DemoSize(), seed=0)  # trains the targets once, then reuses them
    prompts = [[row["prompt"] for row in load_rows(path)] for path in (demo.general_eval_prompts, demo.general_prompts)]
    return load_target(demo.base_target, dtype="float32").eval(), load_tokenizer(demo.tokenizer), *prompts


def regenerated(target, tokenizer, prompts: list[str], folder: Path, max_new_tokens: int):
    """The target's greedy answers (resumed by `regenerate` itself)."""
    return regenerate(target, tokenizer, [{"prompt": p} for p in prompts], folder, max_new_tokens=max_new_tokens,
                      batch_size=16)


def train_row(name: str, settings: dict, target, work: Path, args: argparse.Namespace) -> dict:
    """Train one row's draft (resuming a stopped run) and return its training record."""
    out = work / name
    record_file = out / "train_record.json"
    if record_file.is_file():
        return json.loads(record_file.read_text())
    if settings["draft_architecture"] == "eagle":
        probe = EagleDraftModel.from_target(target)
    else:
        probe = Eagle3DraftModel.from_target(target, aux_layer_ids=settings.get("aux_layer_ids"))
    layers = draft_feature_layers(probe, target)
    cache = work / ("features-" + "-".join(map(str, layers)))
    extract_features(target, work / "regen-train", cache, layers=layers, dtype="bfloat16", batch_size=8)
    config = EagleTrainingConfig(
        output_dir=str(out), per_device_train_batch_size=8, learning_rate=1e-3, max_length=256,
        draft_vocab_size=args.draft_vocab_size, feature_noise_std=0.0, save_strategy="epoch", save_total_limit=1,
        logging_steps=25, report_to=[], use_cpu=True, seed=0, dataloader_num_workers=0, **settings,
    )
    trainer = EagleTrainer(target_model=target, args=config, train_dataset=str(cache))
    has_checkpoint = out.is_dir() and any(p.name.startswith("checkpoint-") for p in out.iterdir())
    start = time.perf_counter()
    trainer.train(resume_from_checkpoint=True if has_checkpoint else None)
    seconds = time.perf_counter() - start
    trainer.save_model()
    logs = [row for row in trainer.state.log_history if "accuracy" in row]
    record = {
        "settings": settings, "train_seconds_this_session": round(seconds, 1), "resumed": has_checkpoint,
        "optimizer_steps": trainer.state.global_step, "feature_layers": layers,
        "draft_passes_per_batch": settings["ttt_steps"] if settings["draft_architecture"] == "eagle3" else 1,
        "last_log": logs[-1] if logs else None,
    }
    record_file.write_text(json.dumps(record, indent=2) + "\n")
    return record


def evaluate(draft, target, prompts, references) -> dict:
    chain = measure_tau(draft, target, prompts, num_draft_tokens=CHAIN_TOKENS, method="replay", references=references)
    tree = measure_tau(draft, target, prompts, tree=TREE, method="replay", references=references)
    reached = [1.0] + chain.acceptance_by_position
    conditional = [reached[i + 1] / reached[i] if reached[i] else None for i in range(CHAIN_TOKENS)]
    return {
        "chain_tau": round(chain.tau, 4), "chain_ci95": [round(x, 4) for x in chain.ci95],
        "tree_tau": round(tree.tau, 4), "tree_ci95": [round(x, 4) for x in tree.ci95],
        "chain_acceptance_by_position": [round(x, 4) for x in chain.acceptance_by_position],
        "chain_conditional_acceptance": [round(x, 4) if x is not None else None for x in conditional],
        "num_prompts": chain.num_prompts, "chain_steps": chain.num_steps, "tree_steps": tree.num_steps,
    }


def plot(results: dict, path: Path) -> None:
    plt = pyplot("the EAGLE-3 training-time-test plot")
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for name, row in results["rows"].items():
        if "eval" not in row:
            continue
        positions = range(1, CHAIN_TOKENS + 1)
        left.plot(positions, row["eval"]["chain_conditional_acceptance"], marker="o", label=name)
        right.errorbar([name], [row["eval"]["chain_tau"]], yerr=[[row["eval"]["chain_tau"] - row["eval"]["chain_ci95"][0]],
                       [row["eval"]["chain_ci95"][1] - row["eval"]["chain_tau"]]], fmt="o", capsize=4, color="C0")
        right.errorbar([name], [row["eval"]["tree_tau"]], yerr=[[row["eval"]["tree_tau"] - row["eval"]["tree_ci95"][0]],
                       [row["eval"]["tree_ci95"][1] - row["eval"]["tree_tau"]]], fmt="s", capsize=4, color="C1")
    left.set(xlabel="drafted position", ylabel="P(accept | previous accepted)", title="chain, held-out prompts")
    left.legend(fontsize=8)
    right.set(ylabel="tau (tokens per target forward)", title="chain (o) and tree (s), 95% CI")
    right.tick_params(axis="x", labelrotation=20)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", choices=list(TARGETS), default="smollm2")
    parser.add_argument("--work", help="Cache of every stage (default ~/.cache/eda_adapters/eagle3_ttt-<target>).")
    parser.add_argument("--train-prompts", type=int)
    parser.add_argument("--eval-prompts", type=int)
    parser.add_argument("--max-new-tokens", type=int, help="Answer length of the regenerated data.")
    parser.add_argument("--eval-max-new-tokens", type=int)
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--draft-vocab-size", type=int, help="0: the target's whole vocabulary.")
    parser.add_argument("--out", help="Result JSON (default docs/benchmarks/eagle3_ttt_<target>.json; PNG beside it).")
    parser.add_argument("--only", nargs="*", help="Train and measure only these rows (default: all, in order).")
    args = parser.parse_args()
    defaults = TARGETS[args.target]
    for key, value in defaults.items():
        if getattr(args, key, None) is None and key != "aux_layer_ids":
            setattr(args, key, value)
    args.draft_vocab_size = args.draft_vocab_size or None
    # the SmolLM2 cache kept its first name
    default_work = "eagle3_ttt" if args.target == "smollm2" else f"eagle3_ttt-{args.target}"
    work = Path(args.work or os.path.expanduser(f"~/.cache/eda_adapters/{default_work}"))
    out = Path(args.out or f"docs/benchmarks/eagle3_ttt_{args.target}.json")
    work.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    target, tokenizer, held_prompts, train_prompts = load_setup(args.target, work, args.eval_prompts)
    if args.eval_prompts > len(held_prompts) or args.train_prompts > len(train_prompts):
        raise SystemExit(f"only {len(held_prompts)} held-out and {len(train_prompts)} training prompts exist")
    held = regenerated(target, tokenizer, held_prompts[: args.eval_prompts], work / "regen-eval",
                       args.eval_max_new_tokens)
    regenerated(target, tokenizer, train_prompts[: args.train_prompts], work / "regen-train", args.max_new_tokens)
    prompts = prompts_from_dataset(held, len(held))
    results = json.loads(out.read_text()) if out.is_file() else {"rows": {}}
    results["setup"] = {
        "target": args.target, "target_layers": target.config.num_hidden_layers,
        "eagle3_aux_layer_ids": defaults["aux_layer_ids"] or "default", "dtype": "float32",
        "train_prompts": args.train_prompts, "eval_prompts": args.eval_prompts,
        "train_answers": len(load_regenerated(work / "regen-train")), "max_new_tokens": args.max_new_tokens,
        "eval_max_new_tokens": args.eval_max_new_tokens, "draft_vocab_size": args.draft_vocab_size,
        "epochs": args.epochs, "chain_tokens": CHAIN_TOKENS, "tree": vars(TREE) if hasattr(TREE, "__dict__") else str(TREE),
        "machine": {"processor": platform.machine(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                    "threads": torch.get_num_threads()},
        "command": "python benchmarks/eagle3_ttt.py " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k not in ("work", "only", "out") and v),
    }
    references: dict[tuple, list] = {}
    selected = rows(args.epochs, defaults["aux_layer_ids"])
    for name, settings in selected.items():
        if args.only and name not in args.only:
            continue
        record = train_row(name, settings, target, work, args)
        draft = load_draft(work / name, target_model=target).eval()
        key = tuple(draft.hidden_state_indices)
        if key not in references:
            references[key] = greedy_references(target, prompts, args.eval_max_new_tokens, hidden_state_indices=key)
        results["rows"][name] = {"train": record, "eval": evaluate(draft, target, prompts, references[key])}
        out.write_text(json.dumps(results, indent=2) + "\n")
        print(name, json.dumps(results["rows"][name]["eval"]), flush=True)
    finished = [name for name in selected if "eval" in results["rows"].get(name, {})]
    drafts = {}
    for architecture in ("eagle1", "eagle3_ttt3"):
        if architecture in finished:
            drafts[architecture.split("_")[0]] = load_draft(work / architecture, target_model=target).eval()
    if drafts:
        results["step_cost_ms"] = step_cost_ms(target, drafts)
    out.write_text(json.dumps(results, indent=2) + "\n")
    plot(results, out.with_suffix(".png"))
    print(json.dumps(results.get("step_cost_ms"), indent=1))


if __name__ == "__main__":
    main()
