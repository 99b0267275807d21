"""Two real CPU processes (gloo) share regeneration, feature extraction and shift scoring; every row comes back once."""

from __future__ import annotations

import json
import os

import pytest
import torch
from accelerate import PartialState, debug_launcher
from conftest import make_target
from test_data_common import PROMPTS, fresh_process_state, make_tokenizer  # noqa: F401

from eda_adapters.data import (
    CachedFeatureDataset,
    extract_features,
    load_regenerated,
    regenerate,
    representation_shift,
)
from eda_adapters.data.runs import process_state

GEN = dict(max_new_tokens=5, batch_size=2, show_progress=False)


def _worker(root: str) -> None:
    state = PartialState(cpu=True)
    assert state.num_processes == 2, "the launcher did not start two processes"
    torch.set_num_threads(1)
    target = make_target("llama")  # same seed in both processes: the same target
    data = regenerate(target, make_tokenizer(), PROMPTS, os.path.join(root, "mp"), **GEN)
    assert len(data) == len(PROMPTS)  # every process gets the merged dataset back
    extract_features(target, data, os.path.join(root, "mp_feat"), batch_size=2, show_progress=False)
    scores = representation_shift(target, make_target("llama", seed=1), data, batch_size=2, show_progress=False)
    if state.is_main_process:
        with open(os.path.join(root, "mp_scores.json"), "w") as f:
            json.dump(scores, f)


def test_two_processes_shard_and_merge_without_duplicates(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # see tests/test_training_multiprocess.py: no OpenMP pool after fork
    target = make_target("llama")
    single = regenerate(target, make_tokenizer(), PROMPTS, tmp_path / "single", **GEN)
    single_feat = extract_features(target, single, tmp_path / "single_feat", batch_size=2, show_progress=False)
    single_scores = representation_shift(target, make_target("llama", seed=1), single, batch_size=2,
                                         show_progress=False)

    PartialState._reset_state()  # forked workers must not inherit this process's single-process state
    try:
        debug_launcher(_worker, args=(str(tmp_path),), num_processes=2)
    finally:
        PartialState._reset_state()

    for run in ("mp", "mp_feat"):
        shares = []
        for rank in (0, 1):
            lines = (tmp_path / run / f"progress-r{rank}.jsonl").read_text().splitlines()
            shares.append(sorted(i for line in lines for i in json.loads(line)["indices"]))
        assert shares[0] and shares[1] and not set(shares[0]) & set(shares[1])  # both worked, on different rows
        assert sorted(shares[0] + shares[1]) == list(range(len(PROMPTS)))

    merged = load_regenerated(tmp_path / "mp")
    assert merged["index"] == list(range(len(PROMPTS)))
    assert merged["input_ids"] == single["input_ids"]  # greedy: same rows as one process
    mp_feat = CachedFeatureDataset(tmp_path / "mp_feat", target=target)
    for i in range(len(PROMPTS)):
        torch.testing.assert_close(mp_feat[i]["hidden_states"], single_feat[i]["hidden_states"], atol=1e-5, rtol=1e-5)
    # shift scoring: each process scores a share of the batches, the gathered scores are in sample order
    mp_scores = json.loads((tmp_path / "mp_scores.json").read_text())
    assert len(mp_scores) == len(PROMPTS) and len(set(mp_scores)) == len(PROMPTS)
    torch.testing.assert_close(torch.tensor(mp_scores), torch.tensor(single_scores), atol=1e-5, rtol=1e-4)


def test_processes_accelerate_does_not_see_are_refused(monkeypatch):
    PartialState._reset_state()
    try:
        PartialState()  # initialised as one process, e.g. before the launcher's environment was read
        monkeypatch.setenv("WORLD_SIZE", "2")
        with pytest.raises(ValueError, match="2 processes were launched but accelerate sees one"):
            process_state()
    finally:
        PartialState._reset_state()
