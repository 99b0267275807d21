"""The shared-draft recipe (`recipes/smollm2/shared_draft.py`) on a tiny chat target: the prompt mix stays apart from
the held-out prompts, every stage stops at its budget and resumes to the same result, and the comparison exports a
draft that loads."""

from __future__ import annotations

import gzip
import json

import pytest
import torch
from conftest import make_target
from test_data_common import fresh_process_state, make_tokenizer  # noqa: F401

from eda_adapters.data import PromptFilter
from eda_adapters.models.draft_loading import load_draft
from eda_adapters.research.shared_draft import answers, compare, training
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


def test_chunk_log_rates_and_compressed_rows(tmp_path):
    log = ChunkLog(tmp_path / "chunks.jsonl")
    assert log.chunk == 1 and log.last_rate("answers", "prompts", default=2.0) == 2.0
    log.record("answers", 30.0, prompts=10)
    log.record("answers", 12.0, prompts=4)
    assert ChunkLog(tmp_path / "chunks.jsonl").chunk == 2  # the next invocation is the next chunk
    assert log.last_rate("answers", "prompts", default=2.0) == 3.0
    assert log.seconds_by_stage() == {"answers": 42.0}
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
    stages = [row["stage"] for row in log.rows()]
    assert stages.count("answers") == 3
    # answers made with other settings are refused in one line, nothing is overwritten
    before = (data / "answers-000.jsonl.gz").read_bytes()
    other = answers.AnswerSettings(max_new_tokens=7, batch_size=4, part_size=5)
    with pytest.raises(ValueError, match="other settings.*max_new_tokens"):
        answers.answer_parts(chatty, tok, data, work, other, CountdownBudget(9), log)
    assert (data / "answers-000.jsonl.gz").read_bytes() == before
