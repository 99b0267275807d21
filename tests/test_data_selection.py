"""Shift-based selection on a constructed pair of targets whose true shift is known."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import make_target
from datasets import Dataset
from test_data_common import fresh_process_state, make_tokenizer  # noqa: F401

from eda_adapters.data import (DEFAULT_STRATEGY, SelectionStrategy, add_shift_scores, representation_shift,
                                resolve_budget, select_by_shift)
from eda_adapters.errors import EdaInputError

DOMAIN = [90, 91, 92, 93, 94, 95]  # tokens whose embeddings the "fine-tune" changes
PLAIN = list(range(10, 40))
RESPONSE_LEN = 6


@pytest.fixture(scope="module")
def pair():
    """base, and a copy that differs from it only on the DOMAIN tokens' embeddings.

    A causal LM's hidden state at position t depends only on tokens <= t, so on a sample the two targets agree
    exactly up to the first DOMAIN token and differ from there on: a response whose last m tokens are DOMAIN tokens
    has m shifted response positions out of RESPONSE_LEN, and the true ranking is by m.
    """
    base = make_target("llama", tie_word_embeddings=False)
    finetuned = copy.deepcopy(base)
    with torch.no_grad():
        generator = torch.Generator().manual_seed(1)
        emb = finetuned.get_input_embeddings().weight
        emb[DOMAIN] = torch.randn(len(DOMAIN), emb.shape[1], generator=generator) * emb.std() * 3
    return base, finetuned


def constructed_dataset(order=(3, 0, 5, 1, 4, 2, 0, 6)) -> tuple[Dataset, list[int]]:
    rows = []
    for k, m in enumerate(order):
        prompt = PLAIN[k : k + 4]
        response = PLAIN[k + 4 : k + 4 + RESPONSE_LEN - m] + DOMAIN[:m]
        rows.append({"input_ids": prompt + response, "loss_mask": [0] * len(prompt) + [1] * len(response)})
    return Dataset.from_list(rows), list(order)


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_shift_ranks_the_constructed_case(pair, metric):
    base, finetuned = pair
    dataset, shifted = constructed_dataset()
    scores = representation_shift(base, finetuned, dataset, metric=metric, batch_size=3, show_progress=False)
    for score, m in zip(scores, shifted):
        if m == 0:
            assert abs(score) < 1e-5  # identical targets on these tokens
        else:
            assert score > 1e-3
    # the true ranking: more shifted response positions -> higher score (ties: the two m == 0 samples)
    by_score = sorted(range(len(scores)), key=lambda i: -scores[i])
    assert [shifted[i] for i in by_score] == sorted(shifted, reverse=True)


def test_select_top_budget_random_baseline_and_reselect(pair, tmp_path):
    base, finetuned = pair
    dataset, shifted = constructed_dataset()
    top = select_by_shift(dataset, 3, base, finetuned, strategy="topk", show_progress=False,
                          plot=tmp_path / "hist.png")
    kept = [shifted[dataset["input_ids"].index(ids)] for ids in top["input_ids"]]
    assert sorted(kept, reverse=True) == [6, 5, 4]
    assert (tmp_path / "hist.png").stat().st_size > 1000
    assert "shift_score" in top.column_names

    # scores saved with the dataset: re-select at another budget without the models
    scored = add_shift_scores(dataset, base, finetuned, show_progress=False)
    half = select_by_shift(scored, 0.5, strategy="topk")
    assert sorted(half["shift_score"], reverse=True) == sorted(scored["shift_score"], reverse=True)[:4]
    assert half["input_ids"] == [r for r in scored["input_ids"] if r in half["input_ids"]]  # original order kept

    # the default strategy is the shift-weighted sample (seed 0), not top-k
    assert SelectionStrategy().name == DEFAULT_STRATEGY == "weighted"
    weighted = select_by_shift(scored, 4, strategy="weighted", seed=0)
    assert select_by_shift(scored, 4)["input_ids"] == weighted["input_ids"]

    rand_a = select_by_shift(scored, 4, strategy="random", seed=0)
    rand_b = select_by_shift(scored, 4, strategy="random", seed=0)
    rand_c = select_by_shift(scored, 4, strategy="random", seed=5)
    assert len(rand_a) == 4 and rand_a["input_ids"] == rand_b["input_ids"] != rand_c["input_ids"]
    with pytest.warns(FutureWarning, match="strategy="):
        assert select_by_shift(scored, 4, method="random", seed=5)["input_ids"] == rand_c["input_ids"]


def test_scores_carry_the_base_embeddings_cluster_reads(pair):
    base, finetuned = pair
    dataset, shifted = constructed_dataset()
    scored = add_shift_scores(dataset, base, finetuned, show_progress=False)
    embeddings = torch.tensor(scored["base_embedding"])
    assert embeddings.shape == (len(dataset), len(dataset))  # min(32, pool size, hidden size) components
    assert torch.allclose(embeddings.mean(0), torch.zeros(len(dataset)), atol=1e-3)  # centred on the pool
    # cluster selection from the saved columns, no model: every sample of a one-sample-per-cluster pool is kept
    assert len(select_by_shift(scored, len(dataset), strategy="cluster", num_clusters=len(dataset))) == len(dataset)
    by_cluster = select_by_shift(scored, 3, strategy="cluster", num_clusters=1)
    assert by_cluster["input_ids"] == select_by_shift(scored, 3, strategy="topk")["input_ids"]  # one cluster is topk
    # a pool scored before embeddings existed: cluster scores it again when the models are there, else says so
    old = scored.remove_columns("base_embedding")
    with pytest.raises(ValueError, match="'base_embedding' column"):
        select_by_shift(old, 3, strategy="cluster", num_clusters=2)
    again = select_by_shift(old, 3, base, finetuned, strategy="cluster", num_clusters=2, show_progress=False)
    assert len(again) == 3 and "base_embedding" in again.column_names


def test_selection_bad_input(pair):
    base, finetuned = pair
    dataset, _ = constructed_dataset()
    with pytest.raises(ValueError, match="larger than the dataset"):
        select_by_shift(dataset, 100, base, finetuned)
    with pytest.raises(ValueError, match="needs the base and fine-tuned targets"):
        select_by_shift(dataset, 2)
    with pytest.raises(ValueError, match=r"needs column\(s\) \['input_ids'\].*\['text'\]"):
        representation_shift(base, finetuned, Dataset.from_dict({"text": ["a"]}))
    with pytest.raises(ValueError, match="hidden size 32 but the fine-tuned target has 48"):
        representation_shift(base, make_target("llama", hidden_size=48), dataset)
    other_tok = make_tokenizer()
    other_tok.add_tokens(["zebra"])
    with pytest.raises(ValueError, match="tokenizers differ"):
        representation_shift(base, finetuned, dataset, base_tokenizer=make_tokenizer(), finetuned_tokenizer=other_tok)
    with pytest.raises(ValueError, match=r"fraction|\(0, 1\]"):
        resolve_budget(1.5, 10)
    with pytest.raises(TypeError):
        resolve_budget("3", 10)
    assert resolve_budget(0.25, 10) == 2 and resolve_budget(10, 10) == 10


def test_in_memory_scores_asked_for_by_metric_are_refused_or_scored_again(pair):
    """In-memory scores record nothing: a metric asked for is refused without the targets, and with them the scores
    are computed again with that metric."""
    base, finetuned = pair
    dataset, _ = constructed_dataset()
    scored = add_shift_scores(dataset, base, finetuned, show_progress=False)  # cosine
    with pytest.raises(EdaInputError, match="metric 'l2' asked for; what made the scores is not recorded"):
        select_by_shift(scored, 3, strategy="topk", metric="l2")
    rescored = select_by_shift(scored, len(scored), base, finetuned, strategy="topk", metric="l2",
                               show_progress=False)
    l2 = representation_shift(base, finetuned, dataset, metric="l2", show_progress=False)
    assert sorted(rescored["shift_score"]) == pytest.approx(sorted(l2), rel=1e-4)
    with pytest.raises(EdaInputError, match="unknown shift metric 'dot'"):
        select_by_shift(scored, 3, metric="dot")
