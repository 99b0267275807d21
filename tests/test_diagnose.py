"""`eda diagnose` on tiny targets: a draft fitted to a base, served unchanged to that base, to an identical copy, and
to a strongly changed fine-tune."""

from __future__ import annotations

import copy
import json
import sys

import pytest
import torch
from conftest import make_target
from test_data_common import fresh_process_state, make_tokenizer  # noqa: F401

from eda_adapters import EagleDraftModel, diagnose, speculative_generate
from eda_adapters.cli import main
from eda_adapters.diagnose import encode_prompts, paired_drop
from eda_adapters.fingerprints import target_fingerprint
from eda_adapters.research.toys import greedy_continuations, quick_fit_draft

PROMPTS = [{"prompt": text, "kind": kind} for text, kind in [
    ("what is the sum of two and three", "math"), ("add four and five", "math"), ("solve one number", "math"),
    ("write python code", "code"), ("return a list in python", "code"), ("explain this function", "code"),
]]


@pytest.fixture(scope="module")
def setup():
    tokenizer = make_tokenizer()
    base = make_target("llama", vocab_size=len(tokenizer))
    changed = copy.deepcopy(base)
    with torch.no_grad():
        generator = torch.Generator().manual_seed(3)
        for param in changed.model.layers.parameters():
            param.add_(torch.randn(param.shape, generator=generator) * param.std() * 2)
    draft = EagleDraftModel.from_target(base)
    prompts = torch.randint(8, len(tokenizer), (32, 6), generator=torch.Generator().manual_seed(0))
    quick_fit_draft(base, draft, greedy_continuations(base, prompts, 24), steps=120)
    draft.config.target_fingerprint = target_fingerprint(base)  # as a trained draft records it
    return tokenizer, base, changed, draft.eval()


def test_identical_fine_tune_loses_nothing(setup, tmp_path):
    tokenizer, base, _, draft = setup
    same = copy.deepcopy(base)
    result = diagnose(base, same, draft, PROMPTS, tokenizer, max_new_tokens=24, show_progress=False,
                      plot=tmp_path / "d.png")
    assert result.overall.tau_base > 1.2  # the fitted draft is accepted on its own base
    assert result.overall.tau_direct == result.overall.tau_base and result.overall.drop_percent == 0
    assert result.overall.drop_ci95 == (0, 0) and not result.worth_adapting
    assert max(result.shift_scores) < 1e-5 and result.verdict.startswith("No adapter needed")
    assert set(result.by_kind) == {"math", "code"} and result.by_kind["code"].num_prompts == 3
    assert (tmp_path / "d.png").stat().st_size > 5000


def test_changed_fine_tune_is_worth_adapting(setup):
    tokenizer, base, changed, draft = setup
    result = diagnose(base, changed, draft, PROMPTS, tokenizer, max_new_tokens=24, show_progress=False)
    overall = result.overall
    assert overall.drop_percent >= 20 and overall.drop_ci95[0] > 0 and result.worth_adapting
    assert result.verdict.startswith("Train an adapter")
    assert min(result.shift_scores) > 1e-3 and overall.mean_shift > 1e-3
    # the chain tau is the one decoding records: speculative decoding of the fine-tune with the draft, step by step
    encoded, _ = encode_prompts(tokenizer, PROMPTS)
    steps = []
    for prompt in encoded:
        _, stats = speculative_generate(changed, draft, prompt[None], max_new_tokens=24, return_stats=True,
                                        eos_token_id=tokenizer.eos_token_id)
        steps.extend(stats.accepted_lengths)
    assert overall.tau_direct == round(sum(n + 1 for n in steps) / len(steps), 4)
    assert result.reports["direct"]["chain"]["tau"] == overall.tau_direct
    assert draft.lm_head is base.get_output_embeddings()  # the draft is left serving its base


def test_draft_goes_back_to_its_base_when_decoding_fails(setup, monkeypatch):
    tokenizer, base, changed, draft = setup
    module = sys.modules["eda_adapters.diagnose"]  # the package's `diagnose` is the function of that name
    replay = module.replayed_lengths

    def fail_on_the_fine_tune(draft_model, model, *args, **kwargs):
        if model is changed:
            raise KeyboardInterrupt
        return replay(draft_model, model, *args, **kwargs)

    monkeypatch.setattr(module, "replayed_lengths", fail_on_the_fine_tune)
    with pytest.raises(KeyboardInterrupt):
        diagnose(base, changed, draft, PROMPTS[:2], tokenizer, max_new_tokens=8, show_progress=False)
    assert draft.lm_head is base.get_output_embeddings()


def test_paired_drop_interval():
    base = [[4, 4], [4, 4], [0, 0]]
    direct = [[1, 1], [1, 1], [0, 0]]
    drop, (low, high) = paired_drop(base, direct)
    assert drop == pytest.approx(100 * (1 - (10 / 6) / (22 / 6)))  # pooled tau 22/6 -> 10/6
    assert low <= drop <= high and low > 0


def test_bad_input(setup, tmp_path):
    tokenizer, base, changed, draft = setup
    other = make_tokenizer()
    other.add_tokens(["zebra"])
    with pytest.raises(ValueError, match="tokenizers differ"):
        diagnose(base, changed, draft, PROMPTS, tokenizer, target_tokenizer=other)
    with pytest.raises(ValueError, match="the draft is not one of the base target.*pass the base target"):
        diagnose(changed, base, draft, PROMPTS, tokenizer)
    with pytest.raises(ValueError, match="holds no prompt"):
        diagnose(base, changed, draft, [], tokenizer)


def test_cli_writes_the_diagnosis_and_refuses_bad_input(setup, tmp_path, capsys):
    tokenizer, base, changed, draft = setup
    for name, model in (("base", base), ("ft", changed)):
        model.save_pretrained(tmp_path / name)
        tokenizer.save_pretrained(tmp_path / name)
    draft.save_pretrained(tmp_path / "draft")
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps(p) + "\n" for p in PROMPTS))
    common = ["diagnose", "--base-target", str(tmp_path / "base"), "--target", str(tmp_path / "ft"), "--draft",
              str(tmp_path / "draft"), "--max-new-tokens", "24"]
    assert main(common + ["--prompts", str(prompts), "--json", str(tmp_path / "d.json")]) == 0
    out = capsys.readouterr().out
    record = json.loads((tmp_path / "d.json").read_text())
    assert record["overall"]["drop_percent"] >= 20 and record["verdict"] in out and "| math | 3 |" in out
    assert (tmp_path / "d.png").is_file() and record["command"]["dtype"] == "float32"

    def error(args):
        assert main(args) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and "Traceback" not in err
        return err

    (tmp_path / "empty.jsonl").write_text("")
    assert "is empty: it needs one JSON object per line" in error(common + ["--prompts", str(tmp_path / "empty.jsonl")])
    swapped = ["diagnose", "--base-target", str(tmp_path / "ft"), "--target", str(tmp_path / "base"), "--draft",
               str(tmp_path / "draft"), "--prompts", str(prompts)]
    assert "not one of the base target" in error(swapped)
    other = make_tokenizer()
    other.add_tokens(["zebra"])
    other.save_pretrained(tmp_path / "ft")
    assert "tokenizers differ" in error(common + ["--prompts", str(prompts)])
