"""Target features: cached (sharded safetensors + index) equal online, resume, and refusal of another target's."""

from __future__ import annotations

import json
import pickle

import pytest
import torch
from conftest import make_target
from datasets import Dataset
from test_data_common import fresh_process_state  # noqa: F401
from torch.utils.data import DataLoader

from eda_adapters import RunMismatchError
from eda_adapters.data import (
    CachedFeatureDataset,
    check_target_signature,
    compute_target_features,
    extract_features,
    load_feature_index,
    pad_batch,
    target_signature,
)


def token_dataset(n: int = 7, seed: int = 0) -> Dataset:
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for i in range(n):
        prompt_len, response_len = 2 + i % 3, 3 + (i * 2) % 5
        ids = torch.randint(4, 97, (prompt_len + response_len,), generator=generator).tolist()
        rows.append({"input_ids": ids, "loss_mask": [0] * prompt_len + [1] * response_len})
    return Dataset.from_list(rows)


def test_cached_features_equal_online_features(target, tmp_path):
    data = token_dataset()
    cached = extract_features(target, data, tmp_path / "feat", batch_size=3, dtype=torch.float32, show_progress=False)
    index = load_feature_index(tmp_path / "feat")
    assert index["hidden_size"] == 32 and index["num_samples"] == 7 and index["dtype"] == "float32"
    shards = [s["samples"] for s in index["shards"]]
    assert sorted(len(s) for s in shards) == [1, 3, 3] and sorted(sum(shards, [])) == list(range(7))
    assert index["num_tokens"] == sum(len(ids) for ids in data["input_ids"])
    assert index["target"] == target_signature(target)

    # the trainer's online path: the same padded batch through the target inside the step
    loader = DataLoader(cached, batch_size=4, collate_fn=pad_batch)
    offset = 0
    for batch in loader:
        rows = [data[i] for i in range(offset, offset + len(batch["input_ids"]))]
        online_batch = pad_batch(rows)
        online, _ = compute_target_features(target, online_batch["input_ids"], online_batch["attention_mask"])
        assert torch.equal(batch["input_ids"], online_batch["input_ids"])
        assert torch.equal(batch["loss_mask"], online_batch["loss_mask"])
        real = batch["attention_mask"].bool()
        torch.testing.assert_close(batch["hidden_states"][real], online[real], atol=1e-5, rtol=1e-5)
        assert not batch["hidden_states"][~real].any()
        offset += len(rows)
    assert offset == len(data)


def test_bf16_storage_and_pickling(llama_target, tmp_path):
    data = token_dataset(3)
    cached = extract_features(llama_target, data, tmp_path / "f", dtype="bfloat16", show_progress=False)
    item = cached[1]
    assert item["hidden_states"].dtype == torch.bfloat16 and cached.dtype == torch.bfloat16
    assert item["hidden_states"].shape == (len(data[1]["input_ids"]), 32)
    assert item["loss_mask"].tolist() == data[1]["loss_mask"]
    clone = pickle.loads(pickle.dumps(cached))  # what a DataLoader worker receives
    assert torch.equal(clone[1]["hidden_states"], item["hidden_states"])
    with pytest.raises(IndexError):
        cached[3]


def test_resume_and_refusals(tmp_path):
    target = make_target("qwen2")
    data = token_dataset(6)
    reference = extract_features(target, data, tmp_path / "ref", batch_size=2, show_progress=False)

    calls = {"n": 0}
    real_forward = target.forward

    def crashing_forward(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("killed")
        return real_forward(*args, **kwargs)

    target.forward = crashing_forward
    with pytest.raises(RuntimeError, match="killed"):
        extract_features(target, data, tmp_path / "run", batch_size=2, show_progress=False)
    with pytest.raises(FileNotFoundError, match="unfinished"):
        CachedFeatureDataset(tmp_path / "run")
    calls["n"] = 10
    resumed = extract_features(target, data, tmp_path / "run", batch_size=2, show_progress=False)
    assert calls["n"] == 12  # two batches left after the first one was committed
    for i in range(len(data)):
        assert torch.equal(resumed[i]["hidden_states"], reference[i]["hidden_states"])
    del target.forward

    other = make_target("qwen2", seed=1)
    with pytest.raises(ValueError, match="came from target .*fingerprint"):
        CachedFeatureDataset(tmp_path / "run", target=other)
    with pytest.raises(ValueError, match="hidden_size 32 != 48"):
        check_target_signature(resumed.signature, make_target("qwen2", hidden_size=48))
    CachedFeatureDataset(tmp_path / "run", target=target.to(torch.bfloat16))  # same checkpoint, other dtype: fine
    with pytest.raises(RunMismatchError, match="another feature extraction run"):
        extract_features(other, data, tmp_path / "run", batch_size=2, show_progress=False)
    with pytest.raises(ValueError, match=r"needs column\(s\) \['input_ids'\]; it has columns \['text'\]"):
        extract_features(other, Dataset.from_dict({"text": ["x"]}), tmp_path / "y")
    with pytest.raises(ValueError, match="holds ids outside .*tokenized for another model"):
        extract_features(make_target("qwen2", vocab_size=16), data, tmp_path / "z", show_progress=False)
    assert json.loads((tmp_path / "run" / "run.json").read_text())["kind"] == "feature extraction"


def test_signature_ignores_dtype_and_wrappers_but_not_weights():
    target = make_target("mistral")
    wrapped = torch.nn.Module()
    wrapped.module = target  # what DDP / accelerator.prepare look like
    wrapped.config = target.config
    assert target_signature(wrapped)["fingerprint"] == target_signature(target)["fingerprint"]
    tuned = make_target("mistral")
    with torch.no_grad():
        tuned.model.layers[0].mlp.up_proj.weight[0, 0] += 0.5
    assert target_signature(tuned)["fingerprint"] != target_signature(target)["fingerprint"]
    bf16 = target_signature(make_target("mistral").to(torch.bfloat16))
    assert bf16["fingerprint"] == target_signature(target)["fingerprint"] and bf16["dtype"] == "bfloat16"
