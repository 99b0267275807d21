"""Regeneration by the target: chat template and plain prompts, determinism, resume after a crash, bad input."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import make_target
from test_data_common import PROMPTS, fresh_process_state, make_tokenizer  # noqa: F401

from eda_adapters import RunMismatchError
from eda_adapters.data import load_regenerated, regenerate
from eda_adapters.data.regenerate import _cut_at_eos, _eos_ids

GEN = dict(max_new_tokens=6, batch_size=3, show_progress=False)


@pytest.fixture(scope="module")
def qwen():
    return make_target("qwen2")


def plain_greedy(target, ids: list[int], max_new_tokens: int, eos: list[int]) -> list[int]:
    """The target answering one prompt alone (no padding), cut after its first EOS."""
    out = target.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                          max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=0, eos_token_id=eos)
    return _cut_at_eos(out[0, len(ids):].tolist(), eos)[0]


def test_chat_template_rows_match_unbatched_greedy(qwen, tmp_path):
    tok = make_tokenizer(chat_template=True)
    conversations = [{"messages": [{"role": "system", "content": "be short"}, {"role": "user", "content": p}]}
                     for p in PROMPTS[:5]]
    ds = regenerate(qwen, tok, conversations, tmp_path / "out", **GEN)
    assert ds["index"] == list(range(5))
    for row, conv in zip(ds, conversations):
        assert row["prompt"].startswith("<|system|> be short <|end|> <|user|>")
        assert row["prompt"].endswith("<|assistant|>")
        n = row["num_prompt_tokens"]
        assert row["input_ids"][:n] == tok(row["prompt"], add_special_tokens=False)["input_ids"]
        assert row["loss_mask"] == [0] * n + [1] * row["num_response_tokens"]
        # left-padded batched greedy decoding == the target answering this prompt alone
        expected = plain_greedy(qwen, row["input_ids"][:n], 6, _eos_ids(qwen, tok))
        assert row["input_ids"][n:] == expected
        assert row["messages"] == conv["messages"] + [{"role": "assistant", "content": row["response"]}]
        assert row["response"] == tok.decode(expected, skip_special_tokens=True)


def test_plain_prompts_sampling_is_seeded(qwen, tmp_path):
    tok = make_tokenizer(chat_template=False)
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps({"question": p}) + "\n" for p in PROMPTS))
    kwargs = dict(prompt_column="question", temperature=1.0, top_p=0.9, **GEN)
    a = regenerate(qwen, tok, str(path), tmp_path / "a", seed=1, **kwargs)
    b = regenerate(qwen, tok, str(path), tmp_path / "b", seed=1, **kwargs)
    c = regenerate(qwen, tok, str(path), tmp_path / "c", seed=2, **kwargs)
    assert a["prompt"] == PROMPTS  # no template: the prompt text itself
    assert a["input_ids"] == b["input_ids"] != c["input_ids"]
    assert a["response"] == load_regenerated(tmp_path / "a")["response"]


class Crash(RuntimeError):
    pass


def test_resume_after_interruption_neither_duplicates_nor_loses(tmp_path):
    tok = make_tokenizer()
    target = make_target("llama")
    reference = regenerate(target, tok, PROMPTS, tmp_path / "ref", **GEN)

    calls = {"n": 0}
    real_generate = target.generate

    def crashing_generate(*args, **kwargs):  # the machine "dies" during the third batch
        calls["n"] += 1
        if calls["n"] == 3:
            raise Crash("killed")
        return real_generate(*args, **kwargs)

    target.generate = crashing_generate
    with pytest.raises(Crash):
        regenerate(target, tok, PROMPTS, tmp_path / "run", **GEN)
    records = (tmp_path / "run" / "progress-r0.jsonl").read_text().splitlines()
    committed = [json.loads(r)["indices"] for r in records]
    assert [len(c) for c in committed] == [3, 3] and len(set(committed[0] + committed[1])) == 6
    assert not (tmp_path / "run" / "data.jsonl").exists()
    # a crash while appending the record leaves a torn line: it must be ignored, not fatal
    with open(tmp_path / "run" / "progress-r0.jsonl", "a") as f:
        f.write('{"chunk": "chunk-0000')

    calls["n"] = 0
    resumed = regenerate(target, tok, PROMPTS, tmp_path / "run", **GEN)
    assert calls["n"] == 1  # only the missing batch (prompt 6) was generated again
    assert resumed["index"] == list(range(len(PROMPTS)))
    assert resumed["input_ids"] == reference["input_ids"]


def test_bad_input_is_refused_clearly(qwen, tmp_path):
    tok = make_tokenizer()
    regenerate(qwen, tok, PROMPTS[:2], tmp_path / "run", **GEN)
    with pytest.raises(RunMismatchError, match=r"another regeneration run \(decoding.temperature: [0-9.]+ there, 0.7 now"):
        regenerate(qwen, tok, PROMPTS[:2], tmp_path / "run", temperature=0.7, **GEN)
    with pytest.raises(RunMismatchError, match="prompts.fingerprint"):
        regenerate(qwen, tok, PROMPTS[:3], tmp_path / "run", **GEN)
    with pytest.raises(RunMismatchError, match="target.fingerprint"):
        regenerate(make_target("qwen2", seed=3), tok, PROMPTS[:2], tmp_path / "run", **GEN)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(RunMismatchError, match="not empty and holds no run.json"):
        regenerate(qwen, tok, PROMPTS[:2], tmp_path / "other", **GEN)
    with pytest.raises(ValueError, match="prompt 1 has no text"):
        regenerate(qwen, tok, ["hi", "  "], tmp_path / "x", **GEN)
    with pytest.raises(ValueError, match=r"none of the columns.*columns found: \['text'\]"):
        regenerate(qwen, tok, [{"text": "hi"}], tmp_path / "x", **GEN)
    with pytest.raises(ValueError, match="no chat_template"):
        regenerate(qwen, make_tokenizer(chat_template=False), PROMPTS, tmp_path / "x", use_chat_template=True, **GEN)
    with pytest.raises(ValueError, match="temperature must be a finite number >= 0"):
        regenerate(qwen, tok, PROMPTS, tmp_path / "x", temperature=-1, **GEN)
    with pytest.raises(ValueError, match="vocabulary has 16"):
        regenerate(make_target("qwen2", vocab_size=16), tok, PROMPTS, tmp_path / "x", **GEN)
    with pytest.raises(ImportError, match="pip install vllm"):
        regenerate("some/model", tok, PROMPTS, tmp_path / "x", backend="vllm", **GEN)
    with pytest.raises(ValueError, match="unknown backend"):
        regenerate(qwen, tok, PROMPTS, tmp_path / "x", backend="tgi", **GEN)
