"""Every stage of the data pipeline on SmolLM2-135M-Instruct, as tokens/s and as a fraction of the matmul peak that
`torch` reaches on this machine, measured in the same run, in float32 and in bfloat16.

Stages (the same self-written prompts feed all of them; nothing is downloaded):
  self-prompting       `self_prompts`: the target samples user turns (tokens sampled / s)
  regeneration         `regenerate`, the library's path, at several batch sizes (answer tokens / s)
  feature capture      `regenerate(capture_features=True)` (answer tokens / s, features kept)
  feature extraction   `extract_features`, the teacher-forced second pass capture replaces (tokens / s)
  stage-1 training     `EagleTrainer` on the captured features (float32, or bfloat16 autocast)
  greedy references    `greedy_references` (answer tokens / s)
  replay               `replay_acceptance`, chain and EAGLE-2 tree (answer tokens / s)

Useful FLOP/s: 2 x parameters x tokens/s for the stages that generate (the issue's definition); the FLOPs that
`torch.utils.flop_counter` counts for the others. It also reports how far captured features are from a
teacher-forced pass, their disk cost per token, and the matmul rate of decoding's own shapes (what bounds it).

    python benchmarks/pipeline_peak.py --json docs/benchmarks/pipeline_peak_cpu.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import TrainerCallback

from eda_adapters.compute_dtype import choose_dtype, measure_matmul_peak
from eda_adapters.data import CachedFeatureDataset, extract_features, regenerate, self_prompts
from eda_adapters.data.io import load_causal_lm, load_tokenizer
from eda_adapters.generation.replay import greedy_references, replay_acceptance
from eda_adapters.generation.tree import TreeConfig
from eda_adapters.models.eagle import EagleDraftModel
from eda_adapters.training import EagleTrainer, EagleTrainingConfig

MODEL = "smollm2-135m-instruct"


def shape_gflops(rows: int, inner: int, cols: int, dtype: torch.dtype, seconds: float = 0.2) -> float:
    """GFLOP/s of `[rows, inner] @ [inner, cols]`: the rate decoding's own matmuls can reach."""
    a, b = torch.randn(rows, inner, dtype=dtype), torch.randn(inner, cols, dtype=dtype)
    a @ b
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        count += 1
    return 2 * rows * inner * cols * count / (time.perf_counter() - start) / 1e9


def counted_flops(fn) -> tuple[object, float, float]:
    """(result, seconds, FLOPs) of one call; FLOPs as `torch.utils.flop_counter` counts them."""
    with FlopCounterMode(display=False) as counter:
        start = time.perf_counter()
        result = fn()
        seconds = time.perf_counter() - start
    return result, seconds, counter.get_total_flops()


def timed(fn) -> tuple[object, float]:
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


class StepClock(TrainerCallback):
    """Wall time of each optimizer step (the first, with its warm-up, is dropped by the caller)."""

    def __init__(self) -> None:
        self.ends: list[float] = []

    def on_step_end(self, args, state, control, **kwargs):
        self.ends.append(time.perf_counter())


class Rows:
    """The table: one row per (stage, dtype), its rate against the peak of the dtype it runs in."""

    def __init__(self, peak: dict[str, float]):
        self.peak = peak
        self.rows: list[dict] = []

    def add(self, stage: str, dtype: str, tokens: float, seconds: float, flops: float, **extra) -> dict:
        gflops = flops / seconds / 1e9
        row = {"stage": stage, "dtype": dtype, "tokens": int(tokens), "seconds": round(seconds, 3),
               "tokens_per_s": round(tokens / seconds, 1), "gflops": round(gflops, 1),
               "fraction_of_dtype_peak": round(gflops / self.peak[dtype], 3),
               "fraction_of_best_peak": round(gflops / max(self.peak.values()), 3), **extra}
        self.rows.append(row)
        print(f"{stage:34s} {dtype:9s} {row['tokens_per_s']:8.1f} tok/s {gflops:7.1f} GFLOP/s "
              f"{row['fraction_of_dtype_peak']:6.1%} of its peak", flush=True)
        return row


def feature_error(captured: CachedFeatureDataset, extracted: CachedFeatureDataset, head: torch.nn.Module) -> dict:
    """How far captured features are from the teacher-forced ones, and whether the head's argmax changes."""
    worst, sq_diff, sq_ref, same, total = 0.0, 0.0, 0.0, 0, 0
    for i in range(len(extracted)):
        a = captured[i]["hidden_states"].float()
        b = extracted[i]["hidden_states"].float()
        worst = max(worst, (a - b).abs().max().item())
        sq_diff += (a - b).pow(2).sum().item()
        sq_ref += b.pow(2).sum().item()
        with torch.no_grad():
            weight = head.weight.float()
            same += (a @ weight.T).argmax(-1).eq((b @ weight.T).argmax(-1)).sum().item()
        total += a.shape[0]
    return {"max_abs": worst, "relative_l2": (sq_diff / sq_ref) ** 0.5, "argmax_agreement": same / total}


def disk_bytes_per_token(cached: CachedFeatureDataset) -> float:
    files = (cached.path / "chunks").glob("*.safetensors")
    return sum(f.stat().st_size for f in files) / cached.index["num_tokens"]


def generation_stages(dtype: str, args, tok, prompts: list, root: str, table: Rows, report: dict) -> tuple:
    """Self-prompting, regeneration at each batch size, capture vs extraction, greedy references."""
    target = load_causal_lm(MODEL, dtype=dtype)
    params = sum(p.numel() for p in target.parameters())
    head_params = target.get_output_embeddings().weight.numel()
    regenerate(target, tok, ["Say hello.", "What is a list?"], f"{root}/{dtype}-warmup", max_new_tokens=8,
               show_progress=False)

    ds, seconds = timed(lambda: self_prompts(target, tok, f"{root}/{dtype}-self", args.prompts, seed=1,
                                             batch_size=args.capture_batch_size, show_progress=False))
    stats = json.loads(Path(f"{root}/{dtype}-self/stats.json").read_text())
    table.add("self-prompting", dtype, stats["sampled_tokens"], seconds, 2 * params * stats["sampled_tokens"],
              batch_size=args.capture_batch_size, kept=len(ds), candidates=stats["candidates"])
    if not prompts:  # every later stage, in both dtypes, answers the prompts of the first pass
        prompts.extend({"messages": m} for m in ds["messages"])

    common = dict(max_new_tokens=args.max_new_tokens, show_progress=False)
    rates = {}
    for batch in args.batch_sizes:
        data, seconds = timed(lambda: regenerate(target, tok, prompts, f"{root}/{dtype}-regen-{batch}",
                                                 batch_size=batch, **common))
        tokens = sum(data["num_response_tokens"])
        rates[batch] = table.add(f"regeneration, batch {batch}", dtype, tokens, seconds, 2 * params * tokens,
                                 batch_size=batch)["tokens_per_s"]
    batch = args.capture_batch_size
    run_dir = f"{root}/{dtype}-capture"
    data, seconds = timed(lambda: regenerate(target, tok, prompts, run_dir, batch_size=batch,
                                             capture_features=True, **common))
    tokens = sum(data["num_response_tokens"])
    table.add("regeneration + feature capture", dtype, tokens, seconds, 2 * params * tokens, batch_size=batch,
              overhead_vs_plain=round(rates.get(batch, tokens / seconds) / (tokens / seconds) - 1, 3))
    captured = CachedFeatureDataset(f"{run_dir}/features", target=target)
    extracted, seconds = timed(lambda: extract_features(target, data, f"{root}/{dtype}-extract", batch_size=batch,
                                                        show_progress=False))
    tokens = extracted.index["num_tokens"]
    # the head runs on one position per row (logits_to_keep=1): 2 x (parameters - head) per token
    table.add("feature extraction (second pass)", dtype, tokens, seconds, 2 * (params - head_params) * tokens,
              batch_size=batch)
    head = target.get_output_embeddings()
    errors = {"captured_vs_teacher_forced": feature_error(captured, extracted, head)}
    if dtype != "float32":  # the dtype's own error: both against a float32 teacher-forced pass over the same tokens
        exact = extract_features(load_causal_lm(MODEL, dtype="float32"), data, f"{root}/{dtype}-exact",
                                 batch_size=batch, show_progress=False)
        errors["captured_vs_float32"] = feature_error(captured, exact, head)
        errors["teacher_forced_vs_float32"] = feature_error(extracted, exact, head)
    report.setdefault("features", {})[dtype] = {
        **errors,
        "disk_bytes_per_token": round(disk_bytes_per_token(captured), 1),
        "bytes_per_token_of_the_vectors": target.config.hidden_size * torch.finfo(target.dtype).bits // 8,
    }
    print(f"  captured vs teacher-forced ({dtype}): {report['features'][dtype]}", flush=True)

    prompt_ids = [torch.tensor(r["input_ids"][: r["num_prompt_tokens"]]) for r in data]
    refs, seconds = timed(lambda: greedy_references(target, prompt_ids, args.max_new_tokens, batch_size=batch))
    tokens = sum(r.answer_length for r in refs)
    table.add("greedy references", dtype, tokens, seconds, 2 * params * tokens, batch_size=batch)
    return target, refs, f"{run_dir}/features"


def training_stage(target, features: str, args, root: str, table: Rows) -> str:
    """Stage 1 on captured features: float32, then bfloat16 autocast; returns the trained draft's directory."""
    data = CachedFeatureDataset(features, target=target)
    tokens_per_step = args.train_batch_size * data.index["num_tokens"] / len(data)
    draft_dir = f"{root}/draft"
    for dtype, bf16 in (("float32", False), ("bfloat16", True)):
        draft = EagleDraftModel.from_target(target)
        config = EagleTrainingConfig(
            output_dir=f"{root}/train-{dtype}", per_device_train_batch_size=args.train_batch_size,
            max_steps=args.train_steps, bf16=bf16, use_cpu=True, save_strategy="no", report_to=[],
            disable_tqdm=True, logging_steps=10**6, dataloader_num_workers=0,
        )
        clock = StepClock()
        trainer = EagleTrainer(model=draft, target_model=target, args=config, train_dataset=data, callbacks=[clock])
        trainer.current_gradient_accumulation_steps = 1  # set by train(); one counted step runs before it
        with FlopCounterMode(display=False) as counter:
            trainer.training_step(trainer.model, next(iter(trainer.get_train_dataloader())))
        start = time.perf_counter()
        trainer.train()
        steps = [b - a for a, b in zip(clock.ends[1:], clock.ends[2:])]  # steady steps: no warm-up, no setup
        seconds = sum(steps) if steps else time.perf_counter() - start
        table.add("stage-1 training" + (" (autocast)" if bf16 else ""), dtype, tokens_per_step * len(steps or [1]),
                  seconds, counter.get_total_flops() * len(steps or [1]), batch_size=args.train_batch_size)
        if not bf16:
            draft.save_pretrained(draft_dir)
    return draft_dir


def replay_stage(dtype: str, target, refs, draft_dir: str, table: Rows, report: dict) -> None:
    draft = EagleDraftModel.from_pretrained(draft_dir, target_model=target)
    draft = draft.to(target.dtype).eval()
    tokens = sum(r.answer_length for r in refs)
    for name, tree in (("chain", None), ("tree", TreeConfig())):
        with FlopCounterMode(display=False) as counter:  # FLOPs of a few references, per answer token
            for ref in refs[:4]:
                replay_acceptance(draft, target, ref, tree=tree)
        flops_per_token = counter.get_total_flops() / sum(r.answer_length for r in refs[:4])
        stats, seconds = timed(lambda: [replay_acceptance(draft, target, ref, tree=tree) for ref in refs])
        tau = sum(s.tau for s in stats) / len(stats)
        table.add(f"replay ({name})", dtype, tokens, seconds, flops_per_token * tokens, mean_tau=round(tau, 2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=48, help="Self-written prompts (every stage answers them).")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 32, 64])
    parser.add_argument("--capture-batch-size", type=int, default=32,
                        help="Batch of self-prompting, capture, extraction and references.")
    parser.add_argument("--train-batch-size", type=int, default=8)
    parser.add_argument("--train-steps", type=int, default=8)
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--json", help="Write the results here.")
    args = parser.parse_args()

    peak = measure_matmul_peak(size=1024, seconds=0.3)
    print("matmul peak (GFLOP/s, 1024x1024):", {k: round(v) for k, v in peak.items()}, flush=True)
    shapes = {"mlp": (576, 1536), "head": (576, 49152)}
    report = {
        "command": "python " + " ".join(sys.argv),
        "machine": {"cpu": platform.processor() or platform.machine(), "capability":
                    torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads(),
                    "torch": torch.__version__, "machine_dtype": str(choose_dtype("cpu")).replace("torch.", "")},
        "model": MODEL, "matmul_peak_gflops": peak,
        "decode_shape_gflops": {
            dtype: {f"{name} {rows}x{inner}x{cols}": round(shape_gflops(rows, inner, cols, getattr(torch, dtype)), 1)
                    for rows in args.batch_sizes for name, (inner, cols) in shapes.items()}
            for dtype in args.dtypes
        },
    }
    print("decoding-shaped matmuls (GFLOP/s):", report["decode_shape_gflops"], flush=True)
    tok = load_tokenizer(MODEL)
    table = Rows(peak)
    prompts: list = []
    draft_dir = None
    with tempfile.TemporaryDirectory() as root:
        for dtype in args.dtypes:
            target, refs, features = generation_stages(dtype, args, tok, prompts, root, table, report)
            if draft_dir is None:
                draft_dir = training_stage(load_causal_lm(MODEL, dtype="float32"), features, args, root, table)
            replay_stage(dtype, target, refs, draft_dir, table, report)
    report["rows"] = table.rows
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
