"""Self-prompting: the target writes its own user turns (seeded, filtered, deduplicated, resumable, multi-turn)."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import make_target
from test_data_common import fresh_process_state, make_tokenizer  # noqa: F401

from eda_adapters import EdaInputError, RunMismatchError
from eda_adapters.data import DuplicateIndex, PromptFilter, load_self_prompts, regenerate, self_prompts
from eda_adapters.data import self_prompting
from eda_adapters.data.self_prompting import user_turn_opening

LOOSE = PromptFilter(min_words=1, min_letter_fraction=0.0, max_repeated_trigram_fraction=1.0)
RUN = dict(max_prompt_tokens=10, batch_size=4, prompt_filter=LOOSE, show_progress=False)


@pytest.fixture(scope="module")
def tok():
    return make_tokenizer(chat_template=True)


@pytest.fixture(scope="module")
def chatty(tok):
    """A tiny random target that closes its user turns often enough (its head favours `<|end|>`)."""
    model = make_target("qwen2", seed=3)
    with torch.no_grad():
        end = tok.convert_tokens_to_ids("<|end|>")
        model.lm_head.weight[end] *= 8
    return model


def test_user_turn_opening_follows_the_template(tok):
    assert user_turn_opening(tok) == ("<|user|> ", " <|end|> ")
    history = [{"role": "user", "content": "what is two"}, {"role": "assistant", "content": "four"}]
    before, _ = user_turn_opening(tok, history)
    assert before == "<|user|> what is two <|end|> <|assistant|> four <|end|> <|user|> "


def test_a_target_without_chat_template_is_refused_in_one_line(chatty, tmp_path):
    with pytest.raises(EdaInputError, match="no chat template.*--prompts"):
        self_prompts(chatty, make_tokenizer(chat_template=False), tmp_path / "sp", 4, **RUN)
    assert not (tmp_path / "sp").exists()  # refused before anything was written


def test_runs_are_seeded_and_the_prompts_distinct(chatty, tok, tmp_path):
    first = self_prompts(chatty, tok, tmp_path / "a", 6, seed=0, **RUN)
    again = self_prompts(chatty, tok, tmp_path / "b", 6, seed=0, **RUN)
    other = self_prompts(chatty, tok, tmp_path / "c", 6, seed=1, **RUN)
    assert len(first) == 6 and first["messages"] == again["messages"]
    assert first["messages"] != other["messages"]
    users = [m[-1]["content"] for m in first["messages"]]
    assert all(m[-1]["role"] == "user" and m[-1]["content"] for m in first["messages"])
    assert len({DuplicateIndex().add(u) for u in users}) == 1  # every kept prompt is new to the index
    assert load_self_prompts(tmp_path / "a")["messages"] == first["messages"]
    stats = json.loads((tmp_path / "a" / "stats.json").read_text())
    assert stats["kept"] >= 6 and stats["kept"] + sum(stats["rejected"].values()) == stats["candidates"]
    assert stats["sampled_tokens"] >= stats["candidates"]  # every candidate sampled at least its stop token


def test_an_interrupted_run_resumes_without_redoing_its_chunks(chatty, tok, tmp_path, monkeypatch):
    expected = self_prompts(chatty, tok, tmp_path / "whole", 6, **RUN)
    calls, crash = [], [True]
    real = self_prompting._ConversationWriter.__call__

    def crash_on_third(self, indices):
        calls.append(indices[0])
        if len(calls) == 3 and crash[0]:
            raise KeyboardInterrupt
        return real(self, indices)

    monkeypatch.setattr(self_prompting._ConversationWriter, "__call__", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        self_prompts(chatty, tok, tmp_path / "cut", 6, **RUN)
    calls.clear()
    crash[0] = False
    resumed = self_prompts(chatty, tok, tmp_path / "cut", 6, **RUN)
    assert resumed["messages"] == expected["messages"]
    assert calls and 0 not in calls and 4 not in calls  # the two chunks written before the crash were kept


def test_more_prompts_extend_the_run_and_other_settings_are_refused(chatty, tok, tmp_path):
    few = self_prompts(chatty, tok, tmp_path / "sp", 4, **RUN)
    more = self_prompts(chatty, tok, tmp_path / "sp", 12, **RUN)
    assert more["messages"][:4] == few["messages"] and len(more) == 12
    with pytest.raises(RunMismatchError, match="temperature"):
        self_prompts(chatty, tok, tmp_path / "sp", 4, **{**RUN, "temperature": 0.7})
    assert load_self_prompts(tmp_path / "sp")["messages"] == more["messages"]  # nothing lost


def test_multi_turn_conversations_feed_regeneration(chatty, tok, tmp_path):
    ds = self_prompts(chatty, tok, tmp_path / "sp", 3, num_turns=2, answer_max_new_tokens=4, **RUN)
    assert all([t["role"] for t in m] == ["user", "assistant", "user"] for m in ds["messages"])
    answered = regenerate(chatty, tok, tmp_path / "sp" / "data.jsonl", tmp_path / "regen", max_new_tokens=4,
                          batch_size=3, show_progress=False)
    assert [row["messages"][:3] for row in answered] == ds["messages"]
    assert all(row["prompt"].count("<|user|>") == 2 for row in answered)


def test_a_filter_nothing_passes_gives_up_with_the_counts(chatty, tok, tmp_path):
    strict = PromptFilter(min_words=50, max_words=60)
    with pytest.raises(EdaInputError, match=r"only 0 of 4 prompts .*too_short"):
        self_prompts(chatty, tok, tmp_path / "sp", 4, max_candidates=8, **{**RUN, "prompt_filter": strict})


def test_prompt_filter_reasons():
    rules = PromptFilter()
    assert rules.reject_reason("What's the best way to prepare before a marathon?") is None
    assert rules.reject_reason("What's the best way to prepare", finished=False) == "unfinished"
    assert rules.reject_reason("Hi there") == "too_short"
    assert rules.reject_reason("12 + 34 = 46 ; 7 * 8 = 56 !!") == "few_letters"
    assert rules.reject_reason("and the cat and the cat and the cat and the cat") == "repetitive"
    with pytest.raises(EdaInputError):
        PromptFilter(min_words=5, max_words=2)


def test_duplicate_index_finds_exact_and_near_repeats():
    index = DuplicateIndex()
    base = "Can you explain what is meant by artificial general intelligence and how it differs from narrow AI?"
    assert index.add(base) is None
    assert index.add("can you explain what is meant by Artificial General Intelligence, and how it differs "
                     "from narrow AI") == "duplicate"
    assert index.add(base.replace("narrow AI?", "narrow AI systems?")) == "near_duplicate"
    assert index.add("What's the best way to prepare before a marathon?") is None
    assert index.check("What's the best way to prepare before a marathon?") == "duplicate"


def test_cli_regenerates_self_written_prompts(chatty, tok, tmp_path, capsys):
    from eda_adapters.cli import main

    chatty.save_pretrained(tmp_path / "target")
    tok.save_pretrained(tmp_path / "target")
    out = tmp_path / "regen"
    common = ["--target", str(tmp_path / "target"), "--max-prompt-tokens", "10", "--min-words", "1", "--batch-size", "4"]
    assert main(["regenerate", *common, "--self-prompts", "3", "--output-dir", str(out), "--max-new-tokens", "4"]) == 0
    prompts = load_self_prompts(f"{out}-prompts")
    answered = [json.loads(line) for line in (out / "data.jsonl").read_text().splitlines()]
    assert len(prompts) == 3 and [row["messages"][:1] for row in answered] == prompts["messages"]
    # the same prompt run asked with other sampling settings: one line naming the difference, nothing lost
    code = main(["self-prompt", *common, "--num-prompts", "3", "--output-dir", f"{out}-prompts",
                 "--prompt-top-p", "0.5"])
    err = capsys.readouterr().err
    assert code != 0 and "top_p" in err and "Traceback" not in err
    assert load_self_prompts(f"{out}-prompts")["messages"] == prompts["messages"]
