"""The side-by-side benchmark's real-target options (issue 13): a vanilla assistant cut from the target and
distilled on the same data, several drafts (full and reduced vocabulary) compared on draft step cost and tau,
held-out chat prompts per kind through `eda bench`, and the scripts around it."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest
import torch
from conftest import make_target
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

from eda_adapters import Eagle3DraftModel, EagleDraftModel, EdaInputError, TreeConfig, load_draft
from eda_adapters.bench import benchmark, draft_vocab_comparison
from eda_adapters.cli import build_parser, main
from eda_adapters.fingerprints import target_fingerprint
from eda_adapters.research.toys import assistant_from_target, greedy_continuations, quick_fit_assistant

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("family, overrides", [("llama", {}), ("qwen2", {"tie_word_embeddings": True})])
def test_assistant_from_target_is_the_target_cut_short(family, overrides):
    target = make_target(family, num_hidden_layers=3, **overrides)
    ids = torch.randint(3, 97, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(assistant_from_target(target, 3)(ids).logits, target(ids).logits, atol=1e-5)
    small = assistant_from_target(target, 1)
    assert type(small) is type(target) and small.config.num_hidden_layers == 1
    assert torch.equal(small.model.layers[0].mlp.up_proj.weight, target.model.layers[0].mlp.up_proj.weight)
    assert torch.equal(small.lm_head.weight, target.lm_head.weight)
    assert small.model.embed_tokens.weight.data_ptr() != target.model.embed_tokens.weight.data_ptr()  # a copy
    with pytest.raises(ValueError, match="between 1 and the target's 3 layers"):
        assistant_from_target(target, 4)


def test_quick_fit_assistant_ignores_padding_and_learns():
    target = make_target("llama", num_hidden_layers=2)
    sequences = torch.randint(3, 97, (4, 10), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(sequences)
    mask[:, 7:] = 0
    other = sequences.clone()
    other[:, 7:] = 5  # only the padding differs
    first = [quick_fit_assistant(target, assistant_from_target(target, 1), seqs, steps=1, batch_size=4,
                                 attention_mask=mask)[0] for seqs in (sequences, other)]
    assert first[0] == pytest.approx(first[1], rel=1e-5)
    with torch.no_grad():
        target.lm_head.weight.mul_(30)  # a peaked target distribution, far from a fresh 1-layer model's
    losses = quick_fit_assistant(target, make_target("llama", seed=1, num_hidden_layers=1), sequences, steps=15,
                                 lr=1e-2, batch_size=4, attention_mask=mask, loss_mask=torch.ones_like(mask))
    assert losses[-1] < 0.5 * losses[0]



def test_quick_fit_assistant_in_mixed_precision_keeps_float32_weights():
    target = make_target("qwen2", num_hidden_layers=2)
    sequences = torch.randint(3, 97, (4, 10), generator=torch.Generator().manual_seed(2))
    runs = {}
    for dtype in (None, torch.bfloat16):
        assistant = assistant_from_target(target, 1)
        runs[dtype] = quick_fit_assistant(target, assistant, sequences, steps=3, lr=1e-3, batch_size=4,
                                          autocast_dtype=dtype)
        assert all(p.dtype == torch.float32 for p in assistant.parameters())  # weights and AdamW stay float32
    # the same loss up to bfloat16's rounding, and not bit-identical: the forwards did run in bfloat16
    assert runs[torch.bfloat16][0] == pytest.approx(runs[None][0], rel=0.05)
    assert runs[torch.bfloat16][0] != runs[None][0]

def test_vanilla_assistant_rows_and_reduced_vocab_comparison():
    target = make_target("llama", num_hidden_layers=3)
    with torch.no_grad():  # confident predictions: transformers' assistant stops a chain below 0.4 confidence
        target.lm_head.weight.mul_(30)
    torch.manual_seed(0)
    drafts = {"full": EagleDraftModel.from_target(target),
              "reduced": EagleDraftModel.from_target(target, draft_vocab=torch.arange(40))}
    small = assistant_from_target(target, 1)
    prompts = torch.randint(3, 97, (4, 6), generator=torch.Generator().manual_seed(2))
    quick_fit_assistant(target, small, greedy_continuations(target, prompts, 12), steps=5, batch_size=4)
    # the target's own layers as the assistant: transformers' assisted generation must accept nearly everything
    assistants = {"1 layer": small, "all layers": assistant_from_target(target, 3)}
    results = benchmark(target, [p[None] for p in prompts[:2]], 8, draft=drafts, assistants=assistants,
                        num_draft_tokens=3, tree=TreeConfig(2, 2, 3), prompt_lookup=False, show_progress=False)
    rows = {r.method: r for r in results}
    assert list(rows)[-2:] == ["assisted generation (1 layer)", "assisted generation (all layers)"]
    assert all(r.matches_plain and r.new_tokens == 16 for r in results)
    assert rows["assisted generation (all layers)"].tau > 2.5  # tau counts the assistant's accepted tokens
    assert 1.0 <= rows["assisted generation (1 layer)"].tau < rows["assisted generation (all layers)"].tau
    chain, tree = rows["EAGLE chain (generate hook, reduced)"], rows["EAGLE-2 tree (d2 k2 n3, reduced)"]
    assert chain.draft == tree.draft == "reduced" and rows["assisted generation (1 layer)"].draft is None
    assert chain.draft_step_ms > 0 and tree.draft_step_ms is None

    (entry,) = draft_vocab_comparison(results, {"full": None, "reduced": 40})
    full_chain = rows["EAGLE chain (generate hook, full)"]
    assert entry["reduced"] == "reduced" and entry["full"] == "full" and entry["draft_vocab_size"] == 40
    assert entry["step_cost_ratio"] == pytest.approx(chain.draft_step_ms / full_chain.draft_step_ms)
    assert entry["EAGLE chain"]["tau_drop_percent"] == pytest.approx(100 * (full_chain.tau - chain.tau)
                                                                      / full_chain.tau)
    assert set(entry["EAGLE-2 tree"]) == {"tau_reduced", "tau_full", "tau_drop_percent"}
    assert draft_vocab_comparison(results, {"full": 40, "reduced": 40}) == []  # no full-head draft to compare with


def test_assistant_confidence_threshold_zero_drafts_every_token():
    target = make_target("llama", num_hidden_layers=2)  # flat predictions: the default threshold (0.4) stops chains
    prompts = [torch.randint(3, 97, (1, 6), generator=torch.Generator().manual_seed(i)) for i in range(2)]
    copy = {"copy": assistant_from_target(target, 2)}  # the target itself: every drafted token is right
    kwargs = dict(num_draft_tokens=3, prompt_lookup=False, show_progress=False, measure_draft_steps=False)
    default = benchmark(target, prompts, 12, assistants=copy, **kwargs)[-1]
    eager = benchmark(target, prompts, 12, assistants=copy, assistant_confidence_threshold=0.0, **kwargs)[-1]
    assert default.matches_plain and eager.matches_plain
    assert eager.tau > default.tau and eager.tau >= 3.5  # k=3 drafted + the bonus token per step, nearly always
    per_label = {"copy": assistant_from_target(target, 2), "copy, default": assistant_from_target(target, 2)}
    rows = benchmark(target, prompts, 12, assistants=per_label, assistant_confidence_threshold={"copy": 0.0},
                     **kwargs)
    by_name = {row.method: row for row in rows}
    assert by_name["assisted generation (copy)"].tau == eager.tau
    assert by_name["assisted generation (copy, default)"].tau == default.tau


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tiny Qwen2 target with a word-level tokenizer, a full and a reduced draft, and a 1-layer assistant."""
    root = tmp_path_factory.mktemp("bench_real")
    target = make_target("qwen2", num_hidden_layers=3)
    target.save_pretrained(root / "target")
    words = ["<unk>"] + [f"w{i}" for i in range(1, 97)]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>").save_pretrained(root / "tokenizer")
    EagleDraftModel.from_target(target).save_pretrained(root / "full")
    EagleDraftModel.from_target(target, draft_vocab=torch.arange(30)).save_pretrained(root / "reduced")
    assistant_from_target(target, 1).save_pretrained(root / "assistant")
    return root


def test_bench_cli_prompt_kinds_several_drafts_and_assistant(saved, tmp_path, capsys):
    out = tmp_path / "out"
    code = main([
        "bench", "--target", str(saved / "target"), "--tokenizer", str(saved / "tokenizer"),
        "--draft", str(saved / "full"), "--draft-label", "full head", "--draft", str(saved / "reduced"),
        "--assistant", str(saved / "assistant"), "--prompt-kinds", "prose,math", "--per-kind", "2",
        "--max-new-tokens", "4", "--num-draft-tokens", "2", "--tree-depth", "2", "--tree-top-k", "2",
        "--tree-total-tokens", "3", "--early-exit-layers", "1", "--no-progress", "--output-dir", str(out),
        "--json", str(tmp_path / "docs" / "real.json"), "--device", "cpu",
    ])
    assert code == 0, capsys.readouterr().err
    text = capsys.readouterr().out
    assert "## prose" in text and "## math" in text and "## all" in text and "## code" not in text
    assert "| assisted generation (vanilla LM) |" in text and "early-exit assistant (1 target layers)" in text
    assert re.search(r"reduced \(30 tokens\) vs full head: draft step [\d.]+ / [\d.]+ ms = cost ratio [\d.]+; "
                     r"EAGLE chain tau [\d.]+ vs [\d.]+ \(drop -?[\d.]+%\)", text)
    payload = json.loads((out / "bench.json").read_text())
    assert (tmp_path / "docs" / "real.json").read_text() == (out / "bench.json").read_text()
    methods = payload["methods"]
    assert len(methods) == 8  # plain, 2 x (chain, tree), early exit, assistant, prompt lookup
    for per_kind in methods.values():
        assert set(per_kind) == {"prose", "math", "all"}
        assert per_kind["all"]["new_tokens"] == per_kind["prose"]["new_tokens"] + per_kind["math"]["new_tokens"] == 16
        assert per_kind["all"]["lossless"] is True
        # all prompts together: a step-weighted mean of the kinds, so between them
        assert min(per_kind["prose"]["tau"], per_kind["math"]["tau"]) - 1e-9 <= per_kind["all"]["tau"] \
            <= max(per_kind["prose"]["tau"], per_kind["math"]["tau"]) + 1e-9
    info = payload["info"]
    assert info["prompts_per_kind"] == {"prose": 2, "math": 2} and info["dtype"] == "float32"
    assert info["drafts"]["reduced"]["draft_vocab_size"] == 30 and info["drafts"]["full head"]["draft_vocab_size"] is None
    assert {"torch", "transformers", "peft", "eda_adapters"} <= set(info["versions"]) and info["threads"] >= 1
    assert info["assistants"] == {"vanilla LM": str(saved / "assistant")} and info["machine"]["processor"]
    (comparison,) = payload["draft_vocab_comparison"]
    assert comparison["reduced"] == "reduced" and comparison["full"] == "full head"


@pytest.mark.parametrize("extra, message", [
    (["--draft", "{full}", "--draft-label", "a", "--draft-label", "b"], "2 --draft-label for 1 --draft"),
    (["--draft", "{full}", "--draft", "{full}"], "share a label"),
    (["--draft", "{full}", "--draft", "{reduced}", "--adapter", "{full}"], "--adapter applies to one draft"),
    (["--draft", "{full}", "--prompt-kinds", "prose,poetry"], "choose from prose,code,math"),
    (["--draft", "{full}", "--prompt-kinds", "prose", "--per-kind", "0"], "--per-kind: must be an integer >= 1"),
    (["--draft", "{full}", "--prompt-kinds", "prose", "--early-exit-layers", "3"], "between 1 and 2"),
    (["--draft", "{full}"], "needs --prompts (a text file with one prompt per line) or --prompt-kinds"),
])
def test_bench_cli_refuses_bad_real_target_options(saved, tmp_path, capsys, extra, message):
    argv = ["bench", "--target", str(saved / "target"), "--tokenizer", str(saved / "tokenizer"),
            *[arg.format(full=saved / "full", reduced=saved / "reduced") for arg in extra],
            "--output-dir", str(tmp_path / "out")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err.strip().splitlines()[-1] and "Traceback" not in err
    assert not (tmp_path / "out" / "bench.json").exists()


def test_bench_cli_tiny_mode_refuses_real_target_flags(tmp_path, capsys):
    assert main(["bench", "--prompt-kinds", "prose", "--output-dir", str(tmp_path)]) == 2
    assert "--prompt-kinds needs --target" in capsys.readouterr().err


def test_real_bench_script_is_the_cli_with_defaults():
    real_bench = _script("real_bench")
    args = build_parser().parse_args(["bench", *real_bench.DEFAULTS, "--draft", "d1", "--draft", "d2",
                                      "--per-kind", "3", "--json", "x.json"])
    assert args.target == "smollm2-135m-instruct" and args.prompt_kinds == "prose,code,math"
    assert args.draft == ["d1", "d2"] and args.per_kind == 3 and args.json == "x.json"  # later flags win
    assert (args.num_draft_tokens, args.tree_depth, args.tree_top_k, args.tree_total_tokens) == (4, 5, 4, 16)
    assert args._run.__module__ == "eda_adapters.cli.bench"


def test_real_bench_models_trains_twins_and_assistant_alike(saved, tmp_path, capsys):
    generator = torch.Generator().manual_seed(0)
    with open(tmp_path / "data.jsonl", "w") as handle:
        for _ in range(6):
            ids = torch.randint(3, 97, (12,), generator=generator).tolist()
            handle.write(json.dumps({"input_ids": ids, "loss_mask": [0] * 4 + [1] * 8}) + "\n")
    out = tmp_path / "models"
    bench_args = _script("real_bench_models").main([
        "--target", str(saved / "target"), "--dataset", str(tmp_path / "data.jsonl"), "--output-dir", str(out),
        "--draft-vocab", "24", "--assistant-layers", "1", "--epochs", "1", "--batch-size", "4", "--threads", "1",
        "--train-arg=--use_cpu", "--train-arg=--disable_tqdm=true",
    ])
    text = capsys.readouterr().out
    assert re.findall(r"after (\d+) steps", text) == ["2", "2"]  # both drafts: 6 rows / batch 4, one epoch
    assert EagleDraftModel.from_pretrained(out / "draft_full").config.draft_vocab_size is None
    assert EagleDraftModel.from_pretrained(out / "draft_r24").config.draft_vocab_size == 24
    fit = json.loads((out / "assistant_l1" / "fit.json").read_text())
    assert fit["steps"] == 2 and len(fit["losses"]) == 2 and fit["rows"] == 6
    assert bench_args[:3] == ["bench", "--target", str(saved / "target")]
    assert bench_args.count("--draft") == 2 and str(out / "assistant_l1") in bench_args
    # a second run keeps what exists
    _script("real_bench_models").main(["--target", str(saved / "target"), "--dataset", str(tmp_path / "data.jsonl"),
                                       "--output-dir", str(out), "--draft-vocab", "24", "--assistant-layers", "1"])
    assert capsys.readouterr().out.count("keeping") == 3


def test_bench_cli_runs_an_eagle3_draft(saved, tmp_path, capsys):
    """`eda bench --draft` loads whichever draft architecture the folder holds (eda_adapters.load_draft)."""
    target = make_target("qwen2", num_hidden_layers=3)
    Eagle3DraftModel.from_target(target, aux_layer_ids=[1, 2, 3]).save_pretrained(tmp_path / "eagle3")
    out = tmp_path / "out"
    code = main([
        "bench", "--target", str(saved / "target"), "--tokenizer", str(saved / "tokenizer"),
        "--draft", str(tmp_path / "eagle3"), "--prompt-kinds", "prose", "--per-kind", "2", "--max-new-tokens", "4",
        "--num-draft-tokens", "2", "--tree-depth", "2", "--tree-top-k", "2", "--tree-total-tokens", "3",
        "--no-progress", "--output-dir", str(out), "--device", "cpu",
    ])
    assert code == 0, capsys.readouterr().err
    methods = json.loads((out / "bench.json").read_text())["methods"]
    eagle_rows = [name for name in methods if "EAGLE" in name or "tree" in name]
    assert eagle_rows and all(methods[name]["all"]["lossless"] is True for name in methods)
    with pytest.raises(EdaInputError, match="not a draft of this library"):
        load_draft(saved / "target")


def test_a_draft_trained_for_other_weights_gets_one_line_naming_both(saved, tmp_path, capsys):
    other = make_target("qwen2", num_hidden_layers=3, seed=1)  # same shapes, other weights
    EagleDraftModel.from_target(other).save_pretrained(tmp_path / "other")
    target = AutoModelForCausalLM.from_pretrained(saved / "target")
    for draft_class in (EagleDraftModel, Eagle3DraftModel):
        kwargs = {"aux_layer_ids": [0, 1, 2]} if draft_class is Eagle3DraftModel else {}
        assert draft_class.from_target(target, **kwargs).check_target(target) is None
        line = draft_class.from_target(other, **kwargs).check_target(target)
        assert line.count(target_fingerprint(other)) == 1 and line.count(target_fingerprint(target)) == 1
    args = ["bench", "--target", str(saved / "target"), "--tokenizer", str(saved / "tokenizer"),
            "--prompt-kinds", "prose", "--per-kind", "1", "--max-new-tokens", "2", "--num-draft-tokens", "1",
            "--tree-depth", "1", "--tree-top-k", "1", "--tree-total-tokens", "1", "--no-progress", "--device", "cpu"]
    assert main([*args, "--draft", str(tmp_path / "other"), "--output-dir", str(tmp_path / "a")]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and target_fingerprint(other) in warnings[0] and "eda adapt" in warnings[0]
    assert main([*args, "--draft", str(saved / "full"), "--output-dir", str(tmp_path / "b")]) == 0
    assert "warning:" not in capsys.readouterr().err


def test_one_assistant_twice_at_two_confidence_thresholds(saved, tmp_path, capsys):
    args = ["bench", "--target", str(saved / "target"), "--tokenizer", str(saved / "tokenizer"),
            "--draft", str(saved / "full"), "--prompt-kinds", "prose", "--per-kind", "1", "--max-new-tokens", "3",
            "--num-draft-tokens", "2", "--tree-depth", "1", "--tree-top-k", "1", "--tree-total-tokens", "1",
            "--no-progress", "--device", "cpu",
            "--assistant", str(saved / "assistant"), "--assistant-label", "distilled (default threshold)",
            "--assistant", str(saved / "assistant"), "--assistant-label", "distilled (threshold 0)"]
    assert main([*args, "--assistant-confidence-threshold", "0", "--assistant-confidence-threshold", "0",
                 "--assistant-confidence-threshold", "0", "--output-dir", str(tmp_path / "bad")]) == 2
    assert "3 --assistant-confidence-threshold for 2 --assistant" in capsys.readouterr().err
    assert main([*args, "--assistant-confidence-threshold", "default", "--assistant-confidence-threshold", "0",
                 "--output-dir", str(tmp_path / "out")]) == 0, capsys.readouterr().err
    payload = json.loads((tmp_path / "out" / "bench.json").read_text())
    assert payload["info"]["assistant_confidence_thresholds"] == {
        "distilled (default threshold)": None, "distilled (threshold 0)": 0.0}
    rows = {name: kinds["all"] for name, kinds in payload["methods"].items() if name.startswith("assisted")}
    assert set(rows) == {"assisted generation (distilled (default threshold))",
                         "assisted generation (distilled (threshold 0))"}
    assert all(row["lossless"] for row in rows.values())
