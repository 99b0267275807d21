"""Bad input refused by schema: the property-based harness of `benchmarks/fuzz_inputs.py`, derandomized with a
small budget, over every input kind, and the schemas' own reports."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import load_script
from datasets import Dataset

from eda_adapters import EagleDraftModel, speculative_generate
from eda_adapters.errors import EdaInputError
from eda_adapters.schemas import check_tokenized_rows, prompt_conversations

fuzz = load_script("benchmarks/fuzz_inputs.py")
CASES_PER_KIND = 100


@pytest.mark.parametrize("kind", fuzz.all_kinds(), ids=lambda kind: kind.name.replace(" ", "-"))
def test_every_generated_case_is_refused_in_one_line_or_accepted_rightly(kind):
    tally = fuzz.Tally()
    fuzz.fuzz(kind, CASES_PER_KIND, tally, derandomize=True)
    counts = tally.counts[kind.name]
    assert sum(counts.values()) == CASES_PER_KIND
    assert not tally.failures, json.dumps(tally.failures[:5], indent=1)
    # both sides of the property were exercised: bad inputs refused, harmless variations accepted
    assert counts["refused"] > 0 and counts["accepted"] > 0, counts


def test_the_harness_catches_a_silent_acceptance_and_a_traceback():
    """The outcome rules are what makes the property fail: check them on hand-made results."""
    bad = fuzz.Mutation("x", "input_ids", True, lambda draw, value: value)
    harmless = fuzz.Mutation("y", "", False, lambda draw, value: value)
    right, wrong = (lambda output: True), (lambda output: False)
    assert fuzz.outcome(bad, fuzz.Result(ok=True), right, False) == "silent"
    assert fuzz.outcome(harmless, fuzz.Result(ok=True), wrong, False) == "silent"
    assert fuzz.outcome(harmless, fuzz.Result(ok=True), right, False) == "accepted"
    assert fuzz.outcome(bad, fuzz.Result(ok=False, error="column 'input_ids' is empty"), right, False) == "refused"
    assert fuzz.outcome(bad, fuzz.Result(ok=False, error="something went wrong"), right, False) == "unnamed"
    assert fuzz.outcome(bad, fuzz.Result(ok=False, traceback="IndexError"), right, False) == "traceback"
    assert fuzz.outcome(bad, fuzz.Result(ok=False, error="column 'input_ids'"), right, True) == "changed bytes"
    assert fuzz.outcome(harmless, fuzz.Result(ok=False, error="no"), right, False) == "false refusal"


def test_tokenized_rows_name_the_first_rows_and_the_count():
    rows = Dataset.from_dict({"input_ids": [[1, 200]] * 8 + [[3]], "loss_mask": [[0, 1]] * 8 + [[1]]})
    with pytest.raises(EdaInputError) as refused:
        check_tokenized_rows(rows, vocab_size=100, source="pool.jsonl")
    message = str(refused.value)
    assert message.startswith("pool.jsonl: column 'input_ids'") and "up to 200" in message
    assert "in 8 rows (rows 0, 1, 2, 3, 4 and 3 more)" in message and "\n" not in message
    check_tokenized_rows(rows.select([8]), vocab_size=100)  # the one good row passes
    selected = rows.select([8, 0])  # an index mapping: the rows are read through it
    with pytest.raises(EdaInputError, match=r"in 1 row \(row 1\)"):
        check_tokenized_rows(selected, vocab_size=100)


def test_prompts_report_every_bad_item_by_index():
    with pytest.raises(EdaInputError) as refused:
        prompt_conversations(["ok", 3, "", [{"role": "robot", "content": "x"}], "fine"], "prompts.jsonl")
    assert str(refused.value).startswith("prompts.jsonl: 3 unusable prompt(s) (items 1, 2, 3)")
    assert prompt_conversations(["a", [{"from": "human", "value": "b"}]]) == [
        [{"role": "user", "content": "a"}], [{"role": "user", "content": "b"}]]


def test_a_1d_prompt_is_one_sequence_everywhere(llama_target):
    draft = EagleDraftModel.from_target(llama_target)
    prompt = torch.randint(4, 97, (5,), generator=torch.Generator().manual_seed(0))
    assert torch.equal(speculative_generate(llama_target, draft, prompt, max_new_tokens=3),
                       speculative_generate(llama_target, draft, prompt[None], max_new_tokens=3))
    hidden = torch.randn(1, 5, llama_target.config.hidden_size)
    with torch.no_grad():
        assert torch.equal(draft(input_ids=prompt, hidden_states=hidden).logits,
                           draft(input_ids=prompt[None], hidden_states=hidden).logits)


def test_every_config_default_lies_in_its_declared_range():
    """The declared ranges agree with the defaults they guard (a range that refused its own default would break
    every run that leaves the field alone)."""
    for name, (build, fields) in fuzz.config_classes().items():
        config = build()
        for field_name, (rng, _default) in fields.items():
            value = getattr(config, field_name)
            assert value is None or rng.admits(value), (name, field_name, value, rng.rule)


def test_config_ranges_name_the_class_field_rule_and_value():
    import argparse

    from eda_adapters.schemas.config_ranges import COUNT, FRACTION, flag_type
    from eda_adapters.data.regenerate import DecodingSettings

    with pytest.raises(EdaInputError, match=r"^DecodingSettings.top_p must be a number in \(0, 1\], got nan\.$"):
        DecodingSettings(top_p=float("nan"))
    with pytest.raises(EdaInputError, match=r"max_new_tokens must be an integer >= 1, got True"):
        DecodingSettings(max_new_tokens=True)
    assert flag_type(COUNT)("3") == 3 and flag_type(FRACTION)("0.5") == 0.5
    for parse, text in ((flag_type(COUNT), "2.0"), (flag_type(FRACTION), "inf"), (flag_type(FRACTION), "0")):
        with pytest.raises(argparse.ArgumentTypeError, match="must be"):
            parse(text)
