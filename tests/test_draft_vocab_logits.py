"""Cached features store the target's top token, so a reduced draft head trains on the head's rows of its own
vocabulary alone: the same loss, accuracy and gradients as through the vocabulary-wide logits."""

from __future__ import annotations

import pytest
import torch
from conftest import make_target
from test_training_trainers import greedy_dataset, tiny_config

from eda_adapters.data import CachedFeatureDataset, compute_target_features, extract_features, pad_batch
from eda_adapters.data.feature_cache import TOP_TOKEN_KEY, draft_feature_layers
from eda_adapters.models import Eagle3DraftModel, EagleDraftModel
from eda_adapters.training import DraftVocabLogits, EagleTrainer, EagleTrainingConfig, draft_vocab_cross_entropy

LAYERS = 8  # EAGLE-3 default aux layers need 7 or more
VOCAB = torch.arange(3, 97, 2)  # every other token: the target's top token is often outside the draft's


@pytest.fixture(scope="module")
def target():
    return make_target("llama", num_hidden_layers=LAYERS)


@pytest.fixture(scope="module")
def data(target):
    return greedy_dataset(target, 6, seed=5)


def test_extracted_features_store_the_targets_top_token_after_the_final_norm_only(target, data, tmp_path):
    cached = extract_features(target, data, tmp_path / "last", batch_size=4, dtype=torch.float32,
                              show_progress=False)
    batch = pad_batch([cached[i] for i in range(len(cached))])
    online = pad_batch([data[i] for i in range(len(data))])
    with torch.no_grad():
        _, logits = compute_target_features(target, online["input_ids"], online["attention_mask"], return_logits=True)
    real = batch["attention_mask"].bool()
    assert torch.equal(batch[TOP_TOKEN_KEY][real], logits.argmax(-1)[real])
    assert not batch[TOP_TOKEN_KEY][~real].any()
    # features of inner layers only: no final norm, so no top token (training falls back to the full head)
    inner = extract_features(target, data, tmp_path / "inner", layers=[1, 2], show_progress=False)
    assert TOP_TOKEN_KEY not in inner[0]
    tokens_only = [{key: value for key, value in s.items() if key != "hidden_states"} for s in (cached[0], inner[0])]
    assert TOP_TOKEN_KEY not in pad_batch(tokens_only)  # a batch carries them only where every sample has them


def test_draft_vocab_logits_slice_positions_and_score_like_the_full_logits():
    generator = torch.Generator().manual_seed(0)
    full = torch.randn(2, 5, 97, generator=generator)
    full[0, 0, 4] = 50.0  # a top token outside the draft vocabulary: a miss whatever the draft says
    draft_logits = torch.randn(2, 5, len(VOCAB), generator=generator)
    mask = torch.ones(2, 5)
    reduced = DraftVocabLogits(full[..., VOCAB], full.argmax(-1))
    assert torch.equal(reduced[:, 1:].top_token, full.argmax(-1)[:, 1:]) and reduced[:, 1:].logits.shape == (2, 4, len(VOCAB))
    wide = draft_vocab_cross_entropy(draft_logits, full, VOCAB, mask)
    fast = draft_vocab_cross_entropy(draft_logits, reduced, VOCAB, mask)
    torch.testing.assert_close(fast.loss, wide.loss)
    assert fast.accuracy == wide.accuracy < 1


@pytest.mark.parametrize("architecture", ["eagle", "eagle3"])
def test_the_trainer_scores_a_reduced_head_on_its_rows_with_the_full_heads_result(architecture, target, data, tmp_path):
    torch.manual_seed(0)
    build = EagleDraftModel if architecture == "eagle" else Eagle3DraftModel
    draft = build.from_target(target, draft_vocab=VOCAB).eval()  # eval: no feature noise, the two passes compare
    layers = draft_feature_layers(draft, target)
    cache = tmp_path / "features"
    extract_features(target, data, cache, layers=layers, dtype=torch.float32, show_progress=False)
    args = tiny_config(EagleTrainingConfig, tmp_path / "run", draft_architecture=architecture, ttt_steps=2)
    trainer = EagleTrainer(model=draft, target_model=target, train_dataset=str(cache), args=args)
    cached = CachedFeatureDataset(cache)
    batch = trainer.data_collator([cached[i] for i in range(len(cached))])
    without = {key: value for key, value in batch.items() if key != TOP_TOKEN_KEY}

    results, grads = {}, {}
    for name, inputs in (("rows", batch), ("full", without)):
        features, logits = trainer._target_features(draft, inputs)
        assert isinstance(logits, DraftVocabLogits) == (name == "rows")
        if name == "rows":  # the stored top token is what the full head gives on the features as cached
            full = target.get_output_embeddings()(inputs["hidden_states"][..., -target.config.hidden_size:])
            real = inputs["attention_mask"].bool()
            assert torch.equal(logits.top_token[real], full.argmax(-1)[real])
            assert (~torch.isin(logits.top_token[real], VOCAB)).any()  # some are outside the draft's vocabulary
        result = trainer.objective(draft, inputs, features, logits, args, training=False)
        result.loss.backward()
        results[name] = result
        grads[name] = {key: p.grad.clone() for key, p in draft.named_parameters() if p.grad is not None}
        draft.zero_grad(set_to_none=True)
    torch.testing.assert_close(results["rows"].loss, results["full"].loss)
    assert results["rows"].metrics.keys() == results["full"].metrics.keys()
    for key, value in results["full"].metrics.items():
        torch.testing.assert_close(results["rows"].metrics[key], value, msg=key)
    assert grads["rows"].keys() == grads["full"].keys() and grads["full"]
    for key, grad in grads["full"].items():
        torch.testing.assert_close(grads["rows"][key], grad, msg=key)
