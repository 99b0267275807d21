"""The EDA experiment runner (the code behind `eda demo` and the real-model recipes) and the demo's offline data."""

from __future__ import annotations

import json
import re

import pytest
import torch
import yaml
from safetensors.torch import load_file

from eda_adapters.research.demo.corpus import code_corpus, general_corpus, math_corpus
from eda_adapters.research.demo.targets import TinyLMSpec, _atomic_save, new_tiny_lm, pack_tokens, train_lm, train_tokenizer
from eda_adapters.research.experiment import ExperimentConfig, run_experiment
from eda_adapters.research.experiment.report import METHOD_LABELS

SPEC = TinyLMSpec(vocab_size=300, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                  seq_len=32, batch_size=8)


def test_math_problems_are_correct_and_deterministic():
    corpus = math_corpus(num_problems=50, seed=3)
    assert corpus.train == math_corpus(num_problems=50, seed=3).train
    assert corpus.train != math_corpus(num_problems=50, seed=4).train
    for prompt, reference, text in zip(corpus.prompts, corpus.references, corpus.train):
        assert text == f"{prompt} {reference}" and prompt.endswith("now?")
        steps = re.findall(r"(\d+) ([-+*]) (\d+) = (\d+)\.", reference)
        assert steps, reference
        for a, op, b, result in steps:
            assert eval(f"{a} {op} {b}") == int(result)  # noqa: S307 - digits and one operator, matched above
        assert reference.endswith(f"The answer is {steps[-1][3]}.")


def test_code_and_general_corpora_pair_prompts_with_their_original_text():
    code = code_corpus()
    assert len(code.prompts) > 300
    assert all(p + r == t for p, r, t in zip(code.prompts, code.references, code.train))
    assert not any(p.endswith("\n") for p in code.prompts)
    general = general_corpus()
    assert all(f"{p} {r}" == t for p, r, t in zip(general.prompts, general.references, general.train))
    assert {"prompt", "reference"} == set(general.prompt_rows(1)[0])


@pytest.fixture(scope="module")
def tiny_family(tmp_path_factory):
    """A tokenizer, a base LM and two 'fine-tunes' trained for a few steps on different offline text."""
    root = tmp_path_factory.mktemp("targets")
    general, math = general_corpus(), math_corpus(num_problems=200)
    code = code_corpus()
    tokenizer = train_tokenizer(general.train[:200] + math.train[:100] + code.train[:50], SPEC.vocab_size,
                                root / "tokenizer")
    base = new_tiny_lm(SPEC, tokenizer)
    train_lm(base, pack_tokens(general.train[:200], tokenizer, SPEC.seq_len), 30, 8, 3e-3)
    _atomic_save(base, root / "base")
    for name, texts in (("math", math.train), ("code", code.train)):
        finetuned = new_tiny_lm(SPEC, tokenizer)
        finetuned.load_state_dict(base.state_dict())
        train_lm(finetuned, pack_tokens(texts[:150], tokenizer, SPEC.seq_len), 30, 8, 3e-3)
        _atomic_save(finetuned, root / name)
        rows = (math if name == "math" else code).prompt_rows(14)
        if name == "math":  # prompt kinds: tau per held-out kind, selections per pool kind
            rows = [{**row, "kind": "short" if len(row["prompt"]) < 120 else "long"} for row in rows]
        (root / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "general.jsonl").write_text("".join(json.dumps(r) + "\n" for r in general.prompt_rows(16)))
    held = general.prompt_rows(20)[16:]  # never used in stage 1
    (root / "general-eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in held))
    return root


def _config(root, output_dir, **overrides) -> ExperimentConfig:
    values = dict(
        base_target=str(root / "base"), tokenizer=str(root / "tokenizer"), general_prompts=str(root / "general.jsonl"),
        general_eval_prompts=str(root / "general-eval.jsonl"),
        domains=[{"name": n, "target": str(root / n), "prompts": str(root / f"{n}.jsonl"), "num_eval_prompts": 4}
                 for n in ("math", "code")],
        output_dir=str(output_dir), max_new_tokens=8, eval_max_new_tokens=8, stage1_epochs=1, adapt_epochs=1,
        budget=0.5, budget_curve=[0.2, 0.5], train_batch_size=4, num_draft_tokens=3, seeds=[0],
    )
    return ExperimentConfig(**{**values, **overrides})


def test_experiment_runs_every_method_and_reuses_its_work(tiny_family, tmp_path, monkeypatch):
    lines: list[str] = []
    results = run_experiment(_config(tiny_family, tmp_path / "exp", seeds=[0, 1], budget_curve=[0.2, 0.5, 1.0]),
                             log=lines.append)

    expected = {(d, m) for d in ("math", "code") for m in METHOD_LABELS} | {("general", "base_on_base")}
    assert {(r.domain, r.method) for r in results.methods} == expected
    for row in results.methods:
        # at least the bonus token, at most k drafted + 1 (chain k=3) / depth + 1 (tree depth 6) per target forward
        assert 1.0 <= row.tau_chain <= 4.0 and 1.0 <= row.tau_tree <= 7.0
        assert row.ci95_chain[0] <= row.tau_chain <= row.ci95_chain[1]
        assert row.ci95_tree[0] <= row.tau_tree <= row.ci95_tree[1]
        assert len(row.acceptance_chain) == 3 and len(row.acceptance_tree) == ExperimentConfig.tree_depth == 6
        assert row.num_eval_prompts == 4  # the held-out prompts: 4 per domain, the 4 general-eval ones
        assert all(a >= b for a, b in zip(row.acceptance_chain, row.acceptance_chain[1:]))
    # the console gets the stages; experiment.log also every training and every method's tau
    logged = (tmp_path / "exp" / "experiment.log").read_text().splitlines()
    assert any(": done in " in line for line in lines)
    assert not any("] trained " in line or "[math] eda_shift: tau" in line for line in lines)
    assert any("trained math/eda-shift" in line for line in logged) and set(lines) <= set(logged)
    assert any("[math] eda_shift: tau chain" in line for line in logged)
    assert any("[math] eda_random at budget 0.2 (2 samples): tau chain" in line for line in logged)  # curve points
    by = {(r.domain, r.method): r for r in results.methods}
    eda, full = by["math", "eda_shift"], by["math", "full_retrain_converged"]
    assert eda.samples == 5 and full.samples == 10  # half of the 10-prompt pool vs all of it
    assert 0 < eda.trainable_params < full.trainable_params
    assert by["math", "direct_transfer"].trainable_params == 0
    # equal tokens seen: every trained row but the converged retraining sees adapt_epochs x 5 samples at the pool's
    # mean length, to within one batch (its steps follow from its own data's mean length)
    equal = ("full_retrain", "full_finetune", "lora", "eda_shift", "eda_random", "eda_original", "eda_official")
    pool = [json.loads(line)["input_ids"] for line in (tmp_path / "exp" / "math" / "scores.jsonl").open()]
    budget = 1 * 5 * sum(len(ids) for ids in pool) / len(pool)
    for m in equal:
        assert abs(by["math", m].train_tokens - budget) <= 4 * max(len(ids) for ids in pool), m
    assert full.steps > eda.steps
    # two seeds per trained row: each seed's tau, pooled in the row, the interval nested over seeds and prompts
    for row in results.methods:
        trained = row.method not in ("base_on_base", "direct_transfer")
        assert row.seeds == ([0, 1] if trained else []) and len(row.tau_chain_per_seed) == (2 if trained else 0)
        if trained:
            assert min(row.tau_chain_per_seed) - 1e-4 <= row.tau_chain <= max(row.tau_chain_per_seed) + 1e-4
    assert {by["math", m].samples for m in ("full_retrain", "full_finetune", "lora", "eda_official")} == {5}
    assert all(by["math", m].train_tokens > 0 and by["math", m].train_flops > 0 for m in equal)
    assert by["math", "full_retrain"].trainable_params > eda.trainable_params
    lora = by["math", "lora"].trainable_params
    assert 0.5 * eda.trainable_params < lora < 2 * eda.trainable_params  # rank matched to EDA's parameters
    # both train fc; the official design's private expert is the same size
    assert by["math", "eda_official"].trainable_params == eda.trainable_params
    assert {(p.selection, p.samples) for p in results.budgets if p.domain == "code"} == {
        (selection, n) for selection in ("shift", "weighted", "cluster", "random") for n in (2, 5, 10)
    }
    # the whole pool is the same data for every strategy: one adapter per seed, the same tau on every line
    assert {p.tau for p in results.budgets if p.domain == "code" and p.samples == 10} == {
        p.tau for p in results.budgets if p.domain == "code" and p.samples == 10 and p.selection == "random"}
    assert (tmp_path / "exp" / "code" / "eda-all-10-s1").is_dir()
    assert not (tmp_path / "exp" / "code" / "eda-shift-10-s0").exists()
    # math prompts have kinds: every row has tau per held-out kind; the selections' kinds are recorded
    held_kinds = {json.loads(line).get("kind") for line in (tiny_family / "math.jsonl").open()}
    for row in results.methods:
        if row.domain == "math":
            assert set(row.tau_chain_by_kind) <= held_kinds and row.tau_chain_by_kind
            for tau, low, high in row.tau_chain_by_kind.values():
                assert 1.0 <= low <= tau <= high
        else:
            assert row.tau_chain_by_kind == {}
    for key in ("json", "markdown", "tau_by_method", "tau_vs_budget", "tau_vs_cost"):
        assert results.files[key].stat().st_size > 0
    assert results.files["tau_by_method"].read_bytes()[:4] == b"\x89PNG"
    saved = json.loads(results.files["json"].read_text())
    shares = saved["selected_kinds"]["math"]
    assert set(shares) == {"pool", "shift", "weighted", "cluster", "random"} and "code" not in saved["selected_kinds"]
    assert all(abs(sum(share.values()) - 1) < 1e-3 for share in shares.values())
    markdown = results.files["markdown"].read_text()
    assert "tau chain, " in markdown and "nested" in markdown
    assert [m["tau"] for m in saved["methods"]] == [r.tau_chain for r in results.methods]
    for domain in ("math", "code"):
        for method, row in saved["domains"][domain].items():
            assert {"tau_chain", "tau_tree", "ci95_chain", "ci95_tree", "trainable_params", "train_tokens",
                    "train_seconds", "train_flops"} <= set(row)
            assert row["tau_tree"] == by[domain, method].tau_tree
    assert "EDA, regenerated + shift-selected" in results.table()
    run = saved["run"]
    assert run["config"]["eval_method"] == "replay" and run["config"]["budget"] == 0.5
    assert run["wall_seconds"] > 0 and run["versions"]["torch"] == torch.__version__
    assert (tmp_path / "exp" / "stage1" / "joint-draft" / "stage1_adapter" / "adapter_model.safetensors").exists()

    # a second run reuses regenerations, trained models and their measurements: nothing is trained or replayed again
    from eda_adapters.research.experiment import runner

    replays: list[str] = []
    measure = runner.measure_tau
    monkeypatch.setattr(runner, "measure_tau", lambda *a, **k: replays.append(k.get("method")) or measure(*a, **k))
    adapter = tmp_path / "exp" / "math" / "eda-shift-5-s1" / "adapter_model.safetensors"
    stamp = adapter.stat().st_mtime_ns
    again = run_experiment(_config(tiny_family, tmp_path / "exp", seeds=[0, 1]), log=lines.append)
    assert adapter.stat().st_mtime_ns == stamp and replays == []
    assert len(list((tmp_path / "exp" / "measurements").glob("*.json"))) >= len(results.methods)
    assert [r.trainable_params for r in again.methods] == [r.trainable_params for r in results.methods]
    assert [(r.tau_chain, r.tau_tree) for r in again.methods] == [(r.tau_chain, r.tau_tree) for r in results.methods]
    assert not any("training again" in line for line in lines)

    # a shared draft trained elsewhere: no stage 1 here, every row starts from it
    given = run_experiment(_config(tiny_family, tmp_path / "given", shared_draft=str(tmp_path / "exp" / "stage1" /
                                                                                   "draft"),
                                   methods=["base_on_base", "direct_transfer"], budget_curve=[]), log=lines.append)
    assert not any((tmp_path / "given" / "stage1" / part).exists() for part in ("draft", "regenerated"))
    for row in given.methods:
        assert (row.tau_chain, row.tau_tree) == (by[row.domain, row.method].tau_chain, by[row.domain, row.method].tau_tree)
    with pytest.raises(ValueError, match="shared_draft: .* has no config.json"):
        run_experiment(_config(tiny_family, tmp_path / "none", shared_draft=str(tmp_path)), log=lines.append)
    with pytest.raises(ValueError, match="shared_draft: this draft was trained for"):
        run_experiment(_config(tiny_family, tmp_path / "other", shared_draft=str(tmp_path / "exp" / "math" /
                                                                                "full-retrain-s0"),
                               methods=["base_on_base"], budget_curve=[]), log=lines.append)

    # decoding itself measures the same acceptance as the replay the experiment uses by default
    replays.clear()
    decoded = run_experiment(_config(tiny_family, tmp_path / "exp", eval_method="decode", seeds=[0, 1],
                                     methods=["base_on_base", "direct_transfer", "eda_shift"], budget_curve=[]),
                             log=lines.append)
    for row in decoded.methods:
        assert (row.tau_chain, row.tau_tree) == (by[row.domain, row.method].tau_chain, by[row.domain, row.method].tau_tree)
    assert replays and set(replays) == {"decode"}  # another evaluation method is measured, not read from the replay's

    # another configuration over the same output_dir is refused in one line, before anything is touched
    with pytest.raises(ValueError, match=r"another experiment run \(adapt_learning_rate: 0.003 there, 0.001 now; "
                       r"finetune_learning_rate: 0.003 there, 0.001 now\); use another output_dir") as err:
        run_experiment(_config(tiny_family, tmp_path / "exp", adapt_learning_rate=1e-3, methods=["eda_shift"],
                               budget_curve=[]), log=lines.append)
    assert "\n" not in str(err.value) and adapter.stat().st_mtime_ns == stamp
    # ... but a changed domain list, rows or evaluation settings reuse it
    again = run_experiment(_config(tiny_family, tmp_path / "exp", methods=["eda_shift"], budget_curve=[],
                                   domains=[{"name": "math", "target": str(tiny_family / "math"),
                                             "prompts": str(tiny_family / "math.jsonl"), "num_eval_prompts": 4}]),
                           log=lines.append)
    assert adapter.stat().st_mtime_ns == stamp
    assert [(r.domain, r.method) for r in again.methods] == [("math", "eda_shift")]


def test_cached_features_train_the_same_rows_as_online_features(tiny_family, tmp_path):
    """feature_cache runs each target once over its data; the adapters trained on it match the online ones."""
    common = dict(methods=["eda_shift", "full_retrain"], budget_curve=[], general_eval_prompts=None,
                  draft_vocab_size=40)
    online = run_experiment(_config(tiny_family, tmp_path / "online", **common), log=lambda _: None)
    lines: list[str] = []
    cached = run_experiment(_config(tiny_family, tmp_path / "cached", feature_cache=True, **common), log=lines.append)
    assert (tmp_path / "cached" / "stage1" / "features" / "index.json").exists()
    assert (tmp_path / "cached" / "math" / "features" / "index.json").exists()
    assert any("cache the target's features" in line for line in lines)
    for name in ("stage1/draft/model.safetensors", "math/eda-shift-5-s0/adapter_model.safetensors",
                 "code/full-retrain-5-s0/model.safetensors"):
        a, b = load_file(tmp_path / "online" / name), load_file(tmp_path / "cached" / name)
        assert a.keys() == b.keys()
        for key in a:
            torch.testing.assert_close(a[key], b[key], atol=2e-4, rtol=1e-3)
    # drafts built from scratch got the reduced head; the adapter sits on the shared draft's
    assert load_file(tmp_path / "cached" / "stage1/draft/model.safetensors")["d2t"].numel() == 40
    assert [(r.domain, r.method) for r in cached.methods] == [(r.domain, r.method) for r in online.methods]
    run = json.loads((tmp_path / "cached" / "results.json").read_text())["run"]
    stages = run["stage_seconds"]
    assert any(name.startswith("train ") for name in stages)
    assert sum(stages.values()) > 0 and max(stages.values()) <= run["wall_seconds"]  # each stage lies within the run


def test_experiment_config_errors(tmp_path, tiny_family):
    with pytest.raises(ValueError, match="at least one domain"):
        _config(tiny_family, tmp_path, domains=[])
    with pytest.raises(ValueError, match="unknown methods"):
        _config(tiny_family, tmp_path, methods=["eda_magic"])
    with pytest.raises(ValueError, match="seeds must be a non-empty list of distinct integers"):
        _config(tiny_family, tmp_path, seeds=[1, 1])
    with pytest.raises(ValueError, match="selection_clusters: SelectionStrategy.temperature must be"):
        _config(tiny_family, tmp_path, selection_temperature=0)
    with pytest.raises(ValueError, match="num_clusters must be an integer >= 1"):
        _config(tiny_family, tmp_path, selection_clusters=0)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"base_target": "x", "general_prompts": [], "domains": [], "outptu_dir": "y"}))
    with pytest.raises(ValueError, match="unknown fields \\['outptu_dir'\\]"):
        ExperimentConfig.from_yaml(recipe)
    with pytest.raises(FileNotFoundError):
        ExperimentConfig.from_yaml(tmp_path / "missing.yaml")
    too_few = _config(tiny_family, tmp_path / "few")
    too_few.domains[0].num_eval_prompts = 14
    with pytest.raises(ValueError, match="14 prompts, but 14 are held out"):
        run_experiment(too_few, log=lambda _: None)


def test_tiny_lm_training_lowers_the_loss(tmp_path):
    tokenizer = train_tokenizer(math_corpus(num_problems=100).train, 280, tmp_path / "tokenizer")
    model = new_tiny_lm(SPEC, tokenizer)
    blocks = pack_tokens(math_corpus(num_problems=100).train, tokenizer, SPEC.seq_len)
    losses = train_lm(model, blocks, 40, 8, 3e-3)
    assert sum(losses[-5:]) / 5 < losses[0] - 1.0
    assert tokenizer("Tom has")["input_ids"][0] == tokenizer.bos_token_id
    assert not model.training and torch.isfinite(torch.tensor(losses)).all()


def test_window_prompts_cover_a_paragraph_with_its_rest_as_reference():
    from eda_adapters.research.demo.corpus import window_prompt_rows

    paragraph = " ".join(f"w{i}" for i in range(40))
    rows = window_prompt_rows([paragraph], stride=12, prompt_words=8, min_reference_words=8)
    assert [r["prompt"].split()[0] for r in rows] == ["w0", "w12", "w24"]  # w36 would leave fewer than 8 words
    for row in rows:
        assert paragraph.endswith(row["prompt"] + " " + row["reference"])
        assert len(row["prompt"].split()) == 8 and len(row["reference"].split()) >= 8


def test_experiment_config_refuses_bad_adapter_settings(tiny_family, tmp_path):
    with pytest.raises(ValueError, match="ExperimentConfig.eda: .*unexpected keyword argument 'num_privat_experts'"):
        _config(tiny_family, tmp_path, eda={"num_privat_experts": 2})
    with pytest.raises(ValueError, match="ExperimentConfig.official: .*modules_to_save accepts"):
        _config(tiny_family, tmp_path, official={"modules_to_save": ["mlp"]})
    with pytest.raises(ValueError, match="official.feature_noise_type must be one of"):
        _config(tiny_family, tmp_path, official={"feature_noise_type": "pink"})
    with pytest.raises(ValueError, match="tree_depth must be a number > 0"):
        _config(tiny_family, tmp_path, tree_depth=0)
    assert _config(tiny_family, tmp_path, official={"init_private_weights": "copy"}).official


def test_tau_summary_pools_steps_and_bootstraps_over_prompts():
    from eda_adapters.research.experiment.evaluation import summarize

    # prompt A: steps accepting 4 and 2 drafted tokens; prompt B: 0, 0, 0
    summary = summarize([[4, 2], [0, 0, 0]], depth=5, seed=0)
    assert summary.tau == (5 + 3 + 1 + 1 + 1) / 5  # pooled over the 5 verification steps, bonus token included
    assert summary.acceptance_by_position == [2 / 5, 2 / 5, 1 / 5, 1 / 5, 0.0]
    low, high = summary.ci95
    assert 1.0 <= low < summary.tau < high <= 4.0  # resampling prompts: all-B gives 1.0, all-A gives 4.0
    assert summarize([[1, 1], [1, 1]], depth=2).ci95 == (2.0, 2.0)  # identical prompts: no spread
    with pytest.raises(ValueError, match="No verification step"):
        summarize([[], []], depth=2)


def test_seeds_pool_and_their_interval_nests_seeds_and_prompts():
    from eda_adapters.research.experiment.evaluation import summarize, summarize_seeds

    same_prompts = [[1, 1], [3, 3]]
    one = summarize(same_prompts, depth=4)
    assert summarize_seeds([one]) is one  # one seed: its own measurement
    # two seeds that agree: the nested interval is the prompts' interval alone (the same draws, the same statistic)
    agreeing = summarize_seeds([one, summarize(same_prompts, depth=4)])
    assert agreeing.tau == one.tau and agreeing.num_prompts == 2 and agreeing.num_steps == 8
    assert one.ci95[0] <= agreeing.ci95[0] <= agreeing.tau <= agreeing.ci95[1] <= one.ci95[1]
    # seeds that disagree on every prompt: tau pools both, the interval also spans the seeds' difference
    low_seed, high_seed = summarize([[0, 0], [0, 0]], depth=4), summarize([[4, 4], [4, 4]], depth=4)
    assert low_seed.ci95 == (1.0, 1.0) and high_seed.ci95 == (5.0, 5.0)  # no spread between prompts
    both = summarize_seeds([low_seed, high_seed])
    assert both.tau == 3.0 and both.ci95[0] <= 1.5 and both.ci95[1] >= 4.5
    with pytest.raises(ValueError, match="same prompts"):
        summarize_seeds([low_seed, summarize([[1]], depth=4)])


def test_eda_experiment_interrupted_says_what_is_kept(tmp_path, monkeypatch, capsys):
    from eda_adapters.cli import main
    import eda_adapters.research.experiment as experiment

    config = tmp_path / "exp.yaml"
    config.write_text(yaml.safe_dump({
        "base_target": "base", "general_prompts": "general.jsonl", "output_dir": str(tmp_path / "out"),
        "domains": [{"name": "math", "target": "math", "prompts": "math.jsonl"}],
    }))

    def interrupted(config, log=print, verbose=False):
        raise KeyboardInterrupt

    monkeypatch.setattr(experiment, "run_experiment", interrupted)
    assert main(["experiment", "--config", str(config)]) == 130
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "run the same command again to resume" in err and str(tmp_path / "out") in err
