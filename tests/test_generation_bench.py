"""The side-by-side benchmark (`eda bench`): every method runs on the same prompts, outputs agree with plain greedy,
results are written atomically with a plot, and bad CLI input is a one-line error."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import make_target
from transformers import LlamaConfig, LlamaForCausalLM

from eda_adapters import EagleDraftModel, TreeConfig
from eda_adapters.cli import main
from eda_adapters.bench import benchmark, format_table, save_bench_results




def test_benchmark_runs_every_method(tmp_path):
    target = make_target("llama")
    torch.manual_seed(0)
    draft = EagleDraftModel.from_target(target)
    assistant = LlamaForCausalLM(LlamaConfig(vocab_size=97, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                             num_attention_heads=2, num_key_value_heads=1)).eval()
    prompts = [torch.randint(3, 97, (1, 6), generator=torch.Generator().manual_seed(i)) for i in range(2)]
    results = benchmark(target, prompts, 6, draft=draft, assistant=assistant, num_draft_tokens=3,
                        tree=TreeConfig(2, 2, 4), show_progress=False)
    names = [r.method for r in results]
    assert names[0] == "plain generate" and len(names) == 5
    assert any("tree" in n for n in names) and any("prompt lookup" in n for n in names)
    assert all(r.matches_plain for r in results)
    assert all(r.new_tokens == 12 and r.wall_time_s > 0 for r in results)
    plain = results[0]
    assert plain.tau == 1.0 and plain.num_steps == plain.new_tokens  # one target forward per token
    for r in results[1:]:  # at most the drafted tokens (3 per chain step, tree depth 2) plus the bonus per forward
        most = 2 + 1 if "tree" in r.method else 3 + 1
        assert 1.0 <= r.tau <= most and 0 < r.num_steps < plain.num_steps + len(prompts), r
    assert results[0].speedup == pytest.approx(1.0)
    table = format_table(results)
    assert table.count("\n") == len(results) + 1

    paths = save_bench_results(results, tmp_path / "out", {"setup": "test"})
    payload = json.loads(paths[0].read_text())
    assert [r["method"] for r in payload["results"]] == names
    assert paths[2].read_bytes()[:4] == b"\x89PNG"
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]  # no temp files left


def test_bench_cli_tiny_run(tmp_path, capsys):
    code = main([
        "bench", "--hidden-size", "32", "--num-layers", "1", "--target-steps", "1", "--fit-steps", "1",
        "--num-prompts", "1", "--max-new-tokens", "4", "--tree-depth", "2", "--tree-top-k", "2",
        "--tree-total-tokens", "3", "--no-progress", "--output-dir", str(tmp_path),
    ])
    assert code == 0
    out = capsys.readouterr().out
    assert "| plain generate |" in out and "EAGLE-2 tree" in out
    assert (tmp_path / "bench.json").is_file() and (tmp_path / "bench.png").is_file()


def test_bench_cli_bad_input(tmp_path, capsys):
    assert main(["bench", "--num-prompts", "0", "--output-dir", str(tmp_path)]) == 2
    assert "--num-prompts: must be an integer >= 1" in capsys.readouterr().err
    assert main(["bench", "--target", str(tmp_path), "--output-dir", str(tmp_path)]) == 2
    assert "--target needs --draft" in capsys.readouterr().err
    assert main(["bench", "--tree-depth", "0", "--output-dir", str(tmp_path)]) == 2
    assert "TreeConfig.depth" in capsys.readouterr().err


def test_bench_cli_with_saved_models(tmp_path, capsys):
    """The --target/--draft/--adapter/--assistant path loads saved models with the normal calls."""
    import peft
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from eda_adapters import EdaConfig

    target = make_target("qwen2")
    vocab = {f"w{i}": i for i in range(97)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="w0"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="w0").save_pretrained(tmp_path / "tokenizer")
    target.save_pretrained(tmp_path / "target")
    draft = EagleDraftModel.from_target(target)
    draft.save_pretrained(tmp_path / "draft")
    adapter = peft.get_peft_model(draft, EdaConfig(num_private_experts=1, num_experts_per_tok=1))
    adapter.save_pretrained(tmp_path / "adapter")
    make_target("qwen2", seed=1, num_hidden_layers=1).save_pretrained(tmp_path / "assistant")
    (tmp_path / "prompts.txt").write_text("w5 w6 w7 w8\n\nw9 w10 w11\n")

    code = main([
        "bench", "--target", str(tmp_path / "target"), "--draft", str(tmp_path / "draft"),
        "--adapter", str(tmp_path / "adapter"), "--assistant", str(tmp_path / "assistant"),
        "--prompts", str(tmp_path / "prompts.txt"), "--tokenizer", str(tmp_path / "tokenizer"),
        "--max-new-tokens", "5", "--tree-depth", "2", "--tree-top-k", "2",
        "--tree-total-tokens", "3", "--no-progress", "--output-dir", str(tmp_path / "out"), "--device", "cpu",
    ])
    assert code == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "2 prompts" in out and "| assisted generation (vanilla LM) |" in out
    payload = json.loads((tmp_path / "out" / "bench.json").read_text())
    assert all(r["matches_plain"] for r in payload["results"])
    assert main(["bench", "--target", str(tmp_path / "target"), "--draft", str(tmp_path / "nope"),
                 "--prompts", str(tmp_path / "prompts.txt"), "--output-dir", str(tmp_path / "out2")]) == 2
    assert "No draft at" in capsys.readouterr().err


def test_benchmark_several_drafts_early_exit_and_combined_kinds():
    from eda_adapters.bench import combine_results

    target = make_target("llama")
    torch.manual_seed(0)
    drafts = {"full head": EagleDraftModel.from_target(target),
              "reduced head": EagleDraftModel.from_target(target, draft_vocab=torch.arange(40))}
    kinds = [[torch.randint(3, 97, (1, 6), generator=torch.Generator().manual_seed(i))] for i in range(2)]
    parts = [benchmark(target, prompts, 5, draft=drafts, num_draft_tokens=2, tree=TreeConfig(2, 2, 3),
                       prompt_lookup=False, early_exit_layers=1, show_progress=False) for prompts in kinds]
    names = [r.method for r in parts[0]]
    assert names == ["plain generate", "EAGLE chain (generate hook, full head)", "EAGLE-2 tree (d2 k2 n3, full head)",
                     "EAGLE chain (generate hook, reduced head)", "EAGLE-2 tree (d2 k2 n3, reduced head)",
                     "early-exit assistant (1 target layers)"]
    assert all(r.matches_plain for part in parts for r in part)
    combined = combine_results(parts)
    for i, row in enumerate(combined):
        assert row.new_tokens == parts[0][i].new_tokens + parts[1][i].new_tokens
        assert row.num_steps == parts[0][i].num_steps + parts[1][i].num_steps
        assert row.tau == pytest.approx((parts[0][i].tau * parts[0][i].num_steps + parts[1][i].tau
                                         * parts[1][i].num_steps) / row.num_steps)
    assert combined[0].speedup == pytest.approx(1.0) and combined[0].tau == 1.0
