"""The shared-draft recipe (`recipes/smollm2/shared_draft.py`) on a tiny chat target: the prompt mix stays apart from
the held-out prompts, every stage stops at its budget and resumes to the same result, and the comparison exports a
draft that loads."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM
from conftest import make_target
from test_data_common import make_tokenizer

from eda_adapters.cli import build_parser
from eda_adapters.data import CachedFeatureDataset, PromptFilter
from eda_adapters.fingerprints import target_fingerprint
from eda_adapters.models.draft_loading import load_draft
from eda_adapters.research.shared_draft import answers, assistant, compare, training
from eda_adapters.research.shared_draft.chunks import ChunkBudget, ChunkLog, read_jsonl_gz, write_jsonl_gz
from eda_adapters.research.shared_draft.prompt_mix import (
    HeldOutGuard, PromptMix, embedded_prompts, held_out_prompts,
)

LOOSE = PromptFilter(min_words=1, min_letter_fraction=0.0, max_repeated_trigram_fraction=1.0)
MIX = PromptMix(docs=3, stdlib_code=2, math=2, self_written=6)
SETTINGS = answers.AnswerSettings(max_new_tokens=6, batch_size=4, part_size=5, self_prompt_batch_size=4,
                                  max_prompt_tokens=8, self_prompt_step=3)


class CountdownBudget(ChunkBudget):
    """A budget that allows `units` units of work whatever they cost, then none (deterministic, unlike a clock)."""

    def __init__(self, units: int) -> None:
        super().__init__(max_minutes=60)
        self.units = units

    def allows(self, estimated_seconds: float) -> bool:
        self.units -= 1
        return self.units >= 0

    def left(self) -> float:
        return 1e6 if self.units > 0 else 0.0


@pytest.fixture(scope="module")
def tok():
    return make_tokenizer(chat_template=True)


@pytest.fixture(scope="module")
def chatty(tok):
    """A 7-layer tiny target (EAGLE-3's default aux layers need 7) that closes its user turns often."""
    model = make_target("llama", seed=3, num_hidden_layers=7)
    with torch.no_grad():
        model.lm_head.weight[tok.convert_tokens_to_ids("<|end|>")] *= 8
    return model.eval()


def test_training_prompts_never_repeat_a_held_out_prompt():
    held_out = held_out_prompts()
    assert {row["kind"] for row in held_out} == {"prose", "code", "math"}
    mix = embedded_prompts(PromptMix())
    assert not {row["prompt"] for row in mix} & {row["prompt"] for row in held_out}
    assert not any("HumanEval" in row["prompt"] or row["prompt"].startswith("Write a Python function `")
                   for row in mix)  # the held-out code prompts come from HumanEval: its rows stay out
    guard = HeldOutGuard([row["prompt"] for row in held_out], threshold=0.5)
    prose = next(row["prompt"] for row in held_out if row["kind"] == "prose")
    assert not guard.keep("self", prose + " Please.")  # a near copy of a held-out prompt is dropped and counted
    assert guard.dropped == {"self": 1}
    assert guard.keep("self", "How do I plant tomatoes in a small balcony garden?")


def test_drafts_are_compared_on_other_held_out_prompts_than_eda_bench_times(tok):
    from eda_adapters.research.bench_fixtures import benchmark_chat_prompts

    timed = {row["prompt"] for row in benchmark_chat_prompts(11)}  # `eda bench --prompt-kinds ... --per-kind 11`
    compared = compare.comparison_prompts(29)
    assert len(timed) == 33 and not timed & {row["prompt"] for row in compared}
    assert timed <= {row["prompt"] for row in held_out_prompts()}  # both are held out from training
    ids, kinds = compare.held_out_ids(tok, 29)
    assert len(ids) == 87 and [kinds.count(kind) for kind in ("prose", "code", "math")] == [29, 29, 29]
    with pytest.raises(ValueError, match="at most 29 per kind"):
        compare.comparison_prompts(30)


def test_chunk_log_rates_and_compressed_rows(tmp_path):
    log = ChunkLog(tmp_path / "chunks.jsonl")
    assert log.chunk == 1 and log.last_rate("answers", "prompts", default=2.0) == 2.0
    log.record("answers", 30.0, prompts=10)
    log.record("answers", 12.0, prompts=4)
    assert ChunkLog(tmp_path / "chunks.jsonl").chunk == 2  # the next invocation is the next chunk
    assert log.last_rate("answers", "prompts", default=2.0) == 3.0
    assert log.seconds_by_stage() == {"answers": 42.0}
    assert "| 1 | " in log.markdown() and "answers 0.7" in log.markdown() and "(0.01 h)" in log.markdown()
    rows = [{"input_ids": [1, 2, 3]}, {"input_ids": [4]}]
    write_jsonl_gz(tmp_path / "a.jsonl.gz", rows)
    write_jsonl_gz(tmp_path / "b.jsonl.gz", rows)
    assert read_jsonl_gz(tmp_path / "a.jsonl.gz") == rows
    assert (tmp_path / "a.jsonl.gz").read_bytes() == (tmp_path / "b.jsonl.gz").read_bytes()  # no timestamp inside
    assert not list(tmp_path.glob(".*tmp*"))


def test_data_stages_stop_at_the_budget_and_resume_to_the_same_answers(chatty, tok, tmp_path):
    data, work = tmp_path / "data", tmp_path / "work"
    log = ChunkLog(data / "chunks.jsonl")
    # self-written prompts grow 3 at a time: a budget of one step stops before the prompt file is written
    assert not answers.build_prompts(chatty, tok, data, work, MIX, SETTINGS, CountdownBudget(1), log, LOOSE)
    assert not (data / answers.PROMPTS_FILE).exists()
    assert answers.build_prompts(chatty, tok, data, work, MIX, SETTINGS, CountdownBudget(9), log, LOOSE)
    prompts = read_jsonl_gz(data / answers.PROMPTS_FILE)
    sources = [row["source"] for row in prompts]
    assert sources.count("self") == 6 and sources.count("docs") == 3 and sources.count("math") == 2
    assert json.loads((data / "prompts.json").read_text())["kept"]["self"] == 6
    # 13 prompts in parts of 5: one part per unit of budget
    assert not answers.answer_parts(chatty, tok, data, work, SETTINGS, CountdownBudget(1), log)
    assert sorted(p.name for p in data.glob("answers-*.jsonl.gz")) == ["answers-000.jsonl.gz"]
    assert answers.answer_parts(chatty, tok, data, work, SETTINGS, CountdownBudget(9), log)
    assert len(list(data.glob("answers-*.jsonl.gz"))) == 3
    dataset = answers.load_answers(data)
    assert len(dataset) == 13
    first = read_jsonl_gz(data / "answers-000.jsonl.gz")[0]
    assert dataset[0]["loss_mask"] == [0] * first["num_prompt_tokens"] + [1] * (
        len(first["input_ids"]) - first["num_prompt_tokens"])
    # the committed answers are the target's own greedy answers to the committed prompts
    prompt_ids = torch.tensor([first["input_ids"][: first["num_prompt_tokens"]]])
    greedy = chatty.generate(prompt_ids, max_new_tokens=SETTINGS.max_new_tokens, do_sample=False,
                             attention_mask=torch.ones_like(prompt_ids), pad_token_id=tok.pad_token_id)
    answer = first["input_ids"][first["num_prompt_tokens"]:]
    assert greedy[0, prompt_ids.shape[1]:].tolist()[: len(answer)] == answer
    with pytest.raises(ValueError, match=r"other settings \(math, self_written\)"):
        answers.build_prompts(chatty, tok, data, work, PromptMix(docs=3, stdlib_code=2, math=3), SETTINGS,
                              CountdownBudget(9), log, LOOSE)
    stages = [row["stage"] for row in log.rows()]
    assert stages.count("answers") == 3
    # answers made with other settings are refused in one line, nothing is overwritten
    before = (data / "answers-000.jsonl.gz").read_bytes()
    other = answers.AnswerSettings(max_new_tokens=7, batch_size=4, part_size=5)
    with pytest.raises(ValueError, match="other settings.*max_new_tokens"):
        answers.answer_parts(chatty, tok, data, work, other, CountdownBudget(9), log)
    assert (data / "answers-000.jsonl.gz").read_bytes() == before


class StepsBudget(ChunkBudget):
    """A budget whose time runs out after `calls` questions (each training step asks once)."""

    def __init__(self, calls: int) -> None:
        super().__init__(max_minutes=60)
        self.calls = calls

    def left(self) -> float:
        self.calls -= 1
        return 1e6 if self.calls >= 0 else 0.0


def test_training_seconds_count_the_run_that_made_the_draft_and_apart_the_lost_ones(tmp_path):
    log = ChunkLog(tmp_path / "chunks.jsonl")
    log.record("train", 60.0, architecture="eagle", resumed=False, global_step=10)  # its checkpoint was lost
    log.record("train", 30.0, architecture="eagle3", resumed=False, global_step=4)
    log.record("train", 50.0, architecture="eagle", resumed=False, global_step=8)  # started over
    log.record("train", 20.0, architecture="eagle", resumed=True, global_step=12)
    assert training.training_seconds(log, "eagle") == {"train_seconds": 70.0, "lost_seconds": 60.0}
    assert training.training_seconds(log, "eagle3") == {"train_seconds": 30.0, "lost_seconds": 0.0}


def test_both_drafts_train_at_equal_compute_stop_resume_and_compare(chatty, tok, tmp_path):
    data, work = tmp_path / "data", tmp_path / "work"
    log = ChunkLog(data / "chunks.jsonl")
    assert answers.build_prompts(chatty, tok, data, work, MIX, SETTINGS, CountdownBudget(9), log, LOOSE)
    assert answers.answer_parts(chatty, tok, data, work, SETTINGS, CountdownBudget(9), log)
    settings = training.TrainSettings(train_minutes=0.004, draft_vocab_size=48, per_device_train_batch_size=4,
                                      warmup_steps=1, max_length=64, probe_steps=5)
    assert training.feature_cache(chatty, data, work, settings, CountdownBudget(0), log) is None
    cache = training.feature_cache(chatty, data, work, settings, CountdownBudget(1), log)
    # one extraction serves both: EAGLE-3's three aux layers and the last one, which EAGLE-1 reads alone
    eagle3_layers = training.draft_feature_layers(training.Eagle3DraftModel.from_target(chatty), chatty)
    assert CachedFeatureDataset(cache).stored_layers == eagle3_layers and len(eagle3_layers) == 4
    assert [row["stage"] for row in log.rows()].count("features") == 1
    plan = training.training_plan(chatty, cache, data, work, settings, log)
    steps = {arch: plan["architectures"][arch]["max_steps"] for arch in training.ARCHITECTURES}
    assert all(n >= 1 for n in steps.values())
    for arch in training.ARCHITECTURES:  # equal seconds: steps in inverse proportion to the probed step cost
        probed = plan["architectures"][arch]["seconds_per_step"]
        assert steps[arch] == int(settings.train_minutes * 60 / probed)
    assert json.loads((data / training.PLAN_FILE).read_text()) == plan  # committed, so chunks never re-plan
    with pytest.raises(ValueError, match=r"training plan .* other settings \(learning_rate\)"):
        training.training_plan(chatty, cache, data, work, training.TrainSettings(
            **{**dataclasses.asdict(settings), "learning_rate": 0.5}), log)
    plan["architectures"]["eagle"]["max_steps"] = 6  # fixed here so that the stop falls mid-run
    # time is left for 3 questions (one before starting, one after each step): the third step saves and stops
    assert training.train_draft(chatty, "eagle", cache, plan, data, work, settings, StepsBudget(3),
                                log) is None
    assert list((work / "train-eagle").glob("checkpoint-3"))
    final = training.train_draft(chatty, "eagle", cache, plan, data, work, settings, StepsBudget(99), log)
    assert final == training.finished_draft(data, "eagle") and (final / "config.json").exists()
    assert load_draft(final).dtype == torch.bfloat16  # kept beside the committed data, at half the size
    trains = [row for row in log.rows() if row["stage"] == "train"]
    assert [(row["global_step"], row["resumed"]) for row in trains] == [(3, False), (6, True)]
    record = json.loads((data / "training-eagle.json").read_text())
    assert record["global_step"] == 6 and record["lost_seconds"] == 0 and record["train_seconds"] == pytest.approx(
        sum(row["seconds"] for row in trains), abs=0.2)
    # on a new machine (no cache: no features, no checkpoint) the committed draft is done: nothing trains again
    assert training.train_draft(chatty, "eagle", None, plan, data, tmp_path / "new-machine", settings,
                                CountdownBudget(0), log) == final
    drafts = {"eagle": final, "eagle3": training.train_draft(chatty, "eagle3", cache, plan, data, work,
                                                            settings, StepsBudget(10**6), log)}
    assert assistant.train_assistant(chatty, data, work, settings, CountdownBudget(0), log) is None
    small = assistant.train_assistant(chatty, data, work, settings, CountdownBudget(1), log)
    assert AutoModelForCausalLM.from_pretrained(small).config.num_hidden_layers == assistant.ASSISTANT_LAYERS
    record = json.loads((data / "training-assistant-l2.json").read_text())
    assert record["steps"] >= 1 and log.rows()[-1]["stage"] == "assistant"
    results = compare.compare_drafts(chatty, tok, drafts, per_kind=2, max_new_tokens=6, log=log)
    for arch, row in results["rows"].items():
        assert 1.0 <= row["chain"]["tau"] <= 6.0 and row["chain"]["ci95"][0] <= row["chain"]["tau"]
        assert set(row["chain"]["by_kind"]) == {"prose", "code", "math"}
        assert row["tree"]["by_kind"]["math"]["num_prompts"] == 2
        assert len(row["chain"]["conditional_acceptance"]) == 5 and row["draft_step_ms"] > 0
        speedups = row["predicted_chain_speedup"]
        assert list(speedups) == [1, 2, 3, 4, 5] and speedups[row["best_chain_tokens"]] == max(speedups.values())
        verify, draft_ms = results["verify_ms"], row["draft_step_ms"]
        tau2 = 1 + sum(row["chain"]["acceptance_by_position"][:2])
        assert speedups[2] == pytest.approx(tau2 * verify[1] / (2 * draft_ms + verify[3]), abs=1e-3)
    chosen = results["chosen"]
    assert chosen == compare.better_draft(results["rows"])
    shapes = results["rows"][chosen]["tree_shapes"]  # the smaller trees, measured for the better draft only
    assert len(shapes) == 3 and shapes[0]["predicted_speedup"] == max(s["predicted_speedup"] for s in shapes)
    assert all(s["total_tokens"] in {int(n) for n in results["verify_ms"]} for s in shapes)
    assert sum("tree_shapes" in row for row in results["rows"].values()) == 1
    assert results["rows"][chosen]["chain"]["tau"] == max(r["chain"]["tau"] for r in results["rows"].values())
    for arch, path in drafts.items():  # either may win
        compare.export_draft(path, tmp_path / f"export-{arch}")
        assert load_draft(tmp_path / f"export-{arch}", target_model=chatty).config.model_type == load_draft(
            path).config.model_type
    compare.export_draft(drafts[chosen], tmp_path / "shared-draft")
    assert chatty.dtype == torch.float32  # the target is left as it was
    exported = load_draft(tmp_path / "shared-draft", target_model=chatty)
    assert type(exported) is type(load_draft(drafts[chosen], target_model=chatty))
    with safe_open(tmp_path / "shared-draft" / "model.safetensors", "pt") as weights:
        dtypes = {weights.get_slice(name).get_dtype() for name in weights.keys()}
    assert "F32" not in dtypes and "BF16" in dtypes
    assert load_draft(tmp_path / "shared-draft", target_model=chatty, dtype=torch.float32).dtype == torch.float32
    compare.write_results(results, tmp_path / "results.json")
    assert (tmp_path / "results.png").stat().st_size > 0


def test_the_recipe_reports_its_chunks_without_loading_a_model(tmp_path):
    import subprocess
    import sys

    ChunkLog(tmp_path / "chunks.jsonl").record("answers", 90.0, prompts=3)
    script = Path(__file__).resolve().parents[1] / "recipes" / "smollm2" / "shared_draft.py"
    done = subprocess.run([sys.executable, str(script), "--report", "--data-dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "| 1 | " in done.stdout and "answers 1.5" in done.stdout


def test_the_recipe_script_reports_bad_input_and_interruptions_in_one_line(tmp_path, capsys, monkeypatch):
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "recipes" / "smollm2" / "shared_draft.py"
    spec = importlib.util.spec_from_file_location("smollm2_shared_draft", path)
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    where = ["--data-dir", str(tmp_path / "data"), "--work-dir", str(tmp_path / "work")]
    assert recipe.main(["--target", str(tmp_path / "no-such-model"), *where]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "no-such-model" in err and len(err.splitlines()) == 1

    def interrupted(*args):
        raise KeyboardInterrupt

    results = {"chosen": "eagle3", "rows": {"eagle3": {"best_chain_tokens": 3, "tree_shapes": [
        {"depth": 4, "top_k": 4, "total_tokens": 8}]}}}
    command = " ".join(recipe.bench_arguments(recipe.parse_args([]), results, tmp_path / "a", relative=True))
    assert "--draft recipes/smollm2/shared-draft " in command and "--num-draft-tokens 3 " in command
    assert "--tree-depth 4 --tree-top-k 4 --tree-total-tokens 8" in command and command.count("--assistant ") == 2
    assert "--json docs/benchmarks/real_cpu.json" in command
    parsed = build_parser().parse_args(recipe.bench_arguments(recipe.parse_args([]), results, tmp_path / "a"))
    assert parsed.assistant_confidence_threshold == [None, 0.0] and Path(parsed.draft[0]).is_absolute()

    monkeypatch.setattr(recipe, "run_stages", interrupted)
    assert recipe.main(where) == 130
    err = capsys.readouterr().err.strip()
    assert err.startswith("interrupted; ") and "run the same command again" in err and len(err.splitlines()) == 1


def test_the_recipe_runs_end_to_end_on_a_tiny_target_and_a_second_run_does_nothing(chatty, tok, tmp_path, capsys):
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "recipes" / "smollm2" / "shared_draft.py"
    spec = importlib.util.spec_from_file_location("smollm2_shared_draft_e2e", path)
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    chatty.save_pretrained(tmp_path / "target")
    tok.save_pretrained(tmp_path / "target")
    argv = ["--target", str(tmp_path / "target"), "--data-dir", str(tmp_path / "data"),
            "--work-dir", str(tmp_path / "work"), "--draft-dir", str(tmp_path / "shared-draft"),
            "--results", str(tmp_path / "results.json"), "--self-prompts", "0", "--docs-prompts", "3",
            "--code-prompts", "2", "--math-prompts", "2", "--max-new-tokens", "6", "--part-size", "4",
            "--draft-vocab-size", "48", "--train-minutes", "0.004", "--held-out-per-kind", "1",
            "--eval-max-new-tokens", "4", "--until", "compare", "--max-minutes", "30"]
    assert recipe.main(argv) == 0, capsys.readouterr().err
    assert "every stage is done" in capsys.readouterr().out
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results["rows"]) == {"eagle", "eagle3"} and results["bench_command"].startswith("eda bench ")
    shared = load_draft(tmp_path / "shared-draft", target_model=chatty)
    assert shared.config.target_fingerprint == target_fingerprint(chatty) and shared.check_target(chatty) is None
    assert (tmp_path / "results.png").exists() and len(list((tmp_path / "data").glob("answers-*.jsonl.gz"))) == 2
    card = (tmp_path / "shared-draft" / "README.md").read_text()
    chosen = results["rows"][results["chosen"]]
    assert f"{chosen['chain']['tau']} [{chosen['chain']['ci95'][0]}" in card and "python recipes/smollm2" in card
    stages = {row["stage"] for row in ChunkLog(tmp_path / "data" / "chunks.jsonl").rows()}
    assert {"answers", "features", "probe", "train", "compare"} <= stages
    assert "assistant" not in stages  # the bench's baseline: trained in the chunk that benches
    rows_before = len(ChunkLog(tmp_path / "data" / "chunks.jsonl").rows())
    assert recipe.main(argv) == 0  # everything is on disk: nothing runs again
    assert len(ChunkLog(tmp_path / "data" / "chunks.jsonl").rows()) == rows_before
    shutil.rmtree(tmp_path / "work")  # a new machine: the cache is gone, the committed drafts and data are not
    assert recipe.main(argv) == 0 and "every stage is done" in capsys.readouterr().out
    assert len(ChunkLog(tmp_path / "data" / "chunks.jsonl").rows()) == rows_before
    assert not list((tmp_path / "work").glob("features-*"))  # no feature extraction, no training


def test_drafts_of_a_bfloat16_target_train_with_float32_weights_in_mixed_precision(tmp_path):
    from datasets import Dataset

    from eda_adapters.training import EagleTrainer

    settings = training.TrainSettings(draft_vocab_size=48)
    data = Dataset.from_dict({"input_ids": [[5, 6, 7, 8]] * 4})
    for dtype in (torch.bfloat16, torch.float32):
        target = make_target("llama").to(dtype)
        config = training._config("eagle", settings, tmp_path / str(dtype), 2, 3, target)
        assert config.bf16 == (dtype == torch.bfloat16)
        trainer = EagleTrainer(target_model=target, args=config, train_dataset=data)
        trained = [p.dtype for p in trainer.model.parameters() if p.requires_grad]
        assert trained and set(trained) == {torch.float32} and target.dtype == dtype
