"""Offline tiny tokenizers for the data tests (importable by the other test_data_* files), and the input readers."""

from __future__ import annotations

import json

import pytest
from accelerate import PartialState
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from eda_adapters.data.io import load_rows
from eda_adapters.data.prompts import find_prompt_column, render_prompt, to_messages

WORDS = (
    "the a of to and is in it that for on with as was at by an be this from or are not have "
    "what how why when which who solve add sum two three four five number code python math answer "
    "question please explain write function return value list one six seven eight nine ten"
).split()
SPECIAL = ["<pad>", "<unk>", "<s>", "</s>", "<|user|>", "<|assistant|>", "<|system|>", "<|end|>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} <|end|> {% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


@pytest.fixture(autouse=True)
def fresh_process_state():
    """The data functions initialise accelerate's process state; leave none behind for the next test (a forked
    `debug_launcher` worker would inherit it and run as a single process)."""
    yield
    PartialState._reset_state()


def make_tokenizer(chat_template: bool = True) -> PreTrainedTokenizerFast:
    """A word-level tokenizer of fewer than 97 tokens (fits the conftest targets), built offline."""
    vocab = {token: i for i, token in enumerate(SPECIAL + WORDS + [str(d) for d in range(10)])}
    assert len(vocab) <= 97
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Digits(True)])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        additional_special_tokens=SPECIAL[4:],
    )
    if chat_template:
        tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


PROMPTS = [
    "what is two add three",
    "write a python function to add two number",
    "explain the sum of a list",
    "how to solve this math question",
    "what is the answer",
    "please explain why",
    "return the value of one",
]


def test_tiny_tokenizer_round_trip():
    tok = make_tokenizer()
    ids = tok("what is 42")["input_ids"]
    assert tok.decode(ids) == "what is 4 2" and max(ids) < len(tok) <= 97
    text, ids = render_prompt(tok, [{"role": "user", "content": "what is two"}], use_chat_template=True)
    assert text == "<|user|> what is two <|end|> <|assistant|>"
    assert tok.convert_ids_to_tokens(ids)[0] == "<|user|>" and tok.convert_ids_to_tokens(ids)[-1] == "<|assistant|>"


def test_load_rows_from_files_and_lists(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS[:3]))
    assert load_rows(path)["prompt"] == PROMPTS[:3]
    assert load_rows(PROMPTS[:2])["prompt"] == PROMPTS[:2]
    with pytest.raises(FileNotFoundError, match="no dataset"):
        load_rows(tmp_path / "missing.jsonl")
    (tmp_path / "x.csv").write_text("a")
    with pytest.raises(ValueError, match="unknown dataset file type"):
        load_rows(tmp_path / "x.csv")


def test_prompt_normalisation_and_errors():
    sharegpt = [{"from": "system", "value": "be short"}, {"from": "human", "value": "add two"},
                {"from": "gpt", "value": "four"}, {"from": "human", "value": "add three"},
                {"from": "gpt", "value": "x"}]
    messages = to_messages(sharegpt, 0)
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[-1]["content"] == "add three"
    with pytest.raises(ValueError, match="prompt 3 has no text"):
        to_messages("   ", 3)
    with pytest.raises(ValueError, match="no user turn"):
        to_messages([{"role": "assistant", "content": "hi"}], 1)
    with pytest.raises(ValueError, match=r"columns found: \['question'\]"):
        find_prompt_column(load_rows([{"question": "q"}]))
