"""A reduced draft vocabulary (EAGLE-3 / FR-Spec style): the draft scores only the N most frequent target tokens with
its own head initialised from the target head's rows; outputs stay exact because the target verifies."""

from __future__ import annotations

import peft
import pytest
import torch
from conftest import make_target

from eda_adapters import EagleDraftModel, EdaConfig, TreeConfig, export_draft, speculative_generate, track_acceptance
from eda_adapters.data import most_frequent_tokens
from eda_adapters.research.toys import greedy_continuations, quick_fit_draft

NEW_TOKENS = 20


@pytest.fixture(scope="module")
def setup():
    target = make_target("qwen2", initializer_range=0.1, tie_word_embeddings=True)
    prompts = torch.randint(3, 97, (32, 6), generator=torch.Generator().manual_seed(7))
    sequences = greedy_continuations(target, prompts, 24)
    vocab = most_frequent_tokens([{"input_ids": row.tolist()} for row in sequences], size=40, vocab_size=97)
    return target, sequences, vocab


def test_most_frequent_tokens_ranks_by_count_over_loss_tokens():
    rows = [{"input_ids": [5, 5, 5, 7, 9], "loss_mask": [0, 1, 1, 1, 0]}, {"input_ids": [7, 7, 3]}]
    assert most_frequent_tokens(rows, size=2, vocab_size=10).tolist() == [7, 5]
    # ties and unseen tokens fill up in id order; `always` ids (e.g. EOS) are kept whatever their count
    assert most_frequent_tokens(rows, size=4, vocab_size=10, always=[9]).tolist() == [7, 5, 3, 9]
    with pytest.raises(ValueError, match="size"):
        most_frequent_tokens(rows, size=11, vocab_size=10)


def test_head_starts_as_target_rows_and_forward_masks_other_tokens(setup):
    target, _, vocab = setup
    draft = EagleDraftModel.from_target(target, draft_vocab=vocab)
    assert draft.config.draft_vocab_size == 40 and torch.equal(draft.d2t, vocab)
    torch.testing.assert_close(draft.draft_head.weight, target.get_output_embeddings().weight[vocab])
    ids, feats = torch.randint(0, 97, (1, 5)), torch.randn(1, 5, 32)
    out = draft(input_ids=ids, hidden_states=feats)
    full = target.get_output_embeddings()(out.last_hidden_state)
    outside = torch.ones(97, dtype=torch.bool)
    outside[vocab] = False
    assert torch.isinf(out.logits[..., outside]).all()
    torch.testing.assert_close(out.logits[..., vocab], full[..., vocab])  # same scores as the full head at start


def test_trained_reduced_draft_is_lossless_plain_adapted_and_merged(setup, tmp_path):
    target, sequences, vocab = setup
    torch.manual_seed(0)
    draft = EagleDraftModel.from_target(target, draft_vocab=vocab)
    losses = quick_fit_draft(target, draft, sequences, steps=40)
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]
    draft.save_pretrained(tmp_path / "draft")
    reloaded = EagleDraftModel.from_pretrained(tmp_path / "draft", target_model=target)
    assert torch.equal(reloaded.d2t, draft.d2t) and torch.equal(reloaded.draft_head.weight, draft.draft_head.weight)
    adapted = peft.get_peft_model(reloaded, EdaConfig(init_private_weights="random")).eval()
    for model in (draft, adapted, adapted.merge_and_unload()):
        for seed in (1, 2):
            prompt = torch.randint(3, 97, (1, 6), generator=torch.Generator().manual_seed(seed))
            reference = target.generate(prompt, do_sample=False, max_new_tokens=NEW_TOKENS)
            with track_acceptance() as stats:
                chain = target.generate(prompt, assistant_model=model, do_sample=False, max_new_tokens=NEW_TOKENS)
            tree = speculative_generate(target, model, prompt, tree=TreeConfig(3, 2, 6), max_new_tokens=NEW_TOKENS)
            assert torch.equal(chain, reference) and torch.equal(tree, reference)
    assert stats.tau >= 1.0


def test_frozen_head_keeps_target_rows(setup):
    target, sequences, vocab = setup
    draft = EagleDraftModel.from_target(target, draft_vocab=vocab, draft_head_trainable=False)
    before = draft.draft_head.weight.clone()
    quick_fit_draft(target, draft, sequences, steps=5)
    assert torch.equal(draft.draft_head.weight, before)


def test_export_layouts_without_a_vocabulary_map_refuse(setup, tmp_path):
    target, _, vocab = setup
    draft = EagleDraftModel.from_target(target, draft_vocab=vocab)
    with pytest.raises(ValueError, match="reduced draft vocabulary"):
        export_draft(draft, tmp_path / "vllm", engine="vllm")
    out = export_draft(draft, tmp_path / "hf", format="hf")
    assert torch.equal(EagleDraftModel.from_pretrained(out, target_model=target).d2t, vocab)


def test_bad_vocabulary_ids_are_refused(setup):
    target, _, _ = setup
    for ids, message in (([], "empty"), ([1, 1], "repeated"), ([97], "outside")):
        with pytest.raises(ValueError, match=message):
            EagleDraftModel.from_target(target, draft_vocab=ids)


def test_stage1_trainer_builds_and_trains_a_reduced_draft(setup, tmp_path):
    from datasets import Dataset

    from eda_adapters import EagleTrainer, EagleTrainingConfig

    target, sequences, _ = setup
    loss_mask = torch.zeros_like(sequences)
    loss_mask[:, 6:] = 1
    data = Dataset.from_dict({"input_ids": sequences.tolist(), "loss_mask": loss_mask.tolist()})
    config = EagleTrainingConfig(
        output_dir=str(tmp_path / "run"), per_device_train_batch_size=8, learning_rate=3e-3, max_steps=20,
        save_strategy="no", report_to=[], use_cpu=True, disable_tqdm=True, draft_vocab_size=24,
    )
    trainer = EagleTrainer(target_model=target, args=config, train_dataset=data)
    draft = trainer.model
    counts = torch.bincount(sequences[:, 7:].flatten(), minlength=97)  # label tokens of the masked responses
    assert draft.config.draft_vocab_size == 24
    assert set(draft.d2t.tolist()) >= set(counts.argsort(descending=True)[:10].tolist())
    before = draft.draft_head.weight.detach().clone()
    trainer.train()
    assert not torch.equal(draft.draft_head.weight, before)  # the head trains unless frozen
    trainer.save_model()
    reloaded = EagleDraftModel.from_pretrained(tmp_path / "run", target_model=target)
    assert torch.equal(reloaded.d2t, draft.d2t)


def test_the_reduced_head_loss_equals_the_vocabulary_wide_one_in_value_and_gradient(setup):
    """EAGLE-1's objective scores a reduced head on its own logits; the result is the loss over the forward's
    target-vocabulary logits (-inf outside the draft's tokens), only cheaper."""
    from eda_adapters.training import EagleTrainingConfig
    from eda_adapters.training.losses import eagle_loss, shift_for_draft
    from eda_adapters.training.objectives import EagleObjective

    target, _, vocab = setup
    torch.manual_seed(0)
    draft = EagleDraftModel.from_target(target, draft_vocab=vocab)
    ids = torch.randint(0, target.config.vocab_size, (2, 12))
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "loss_mask": torch.ones_like(ids)}
    with torch.no_grad():
        out = target(ids, output_hidden_states=True)
    features, target_logits = out.hidden_states[-1], out.logits
    args = EagleTrainingConfig(output_dir="unused", feature_noise_std=0.0, report_to=[], use_cpu=True)
    result = EagleObjective()(draft, inputs, features, target_logits, args, training=False)
    result.loss.backward()
    fast = {name: p.grad.clone() for name, p in draft.named_parameters() if p.grad is not None}
    draft.zero_grad()
    draft_ids, draft_features, target_features, mask = shift_for_draft(ids, features, inputs["loss_mask"])
    wide = draft(input_ids=draft_ids, hidden_states=draft_features)
    assert torch.isinf(wide.logits).any()  # the forward maps the reduced head onto the whole vocabulary
    reference = eagle_loss(wide.last_hidden_state, wide.logits, target_features, target_logits[:, 1:], mask)
    reference.loss.backward()
    torch.testing.assert_close(result.loss, reference.loss)
    assert result.metrics["accuracy"] == reference.accuracy
    torch.testing.assert_close(result.metrics["ce_loss"], reference.ce_loss)
    for name, p in draft.named_parameters():
        if p.grad is not None:
            torch.testing.assert_close(fast[name], p.grad, msg=name)
    torch.testing.assert_close(result.outputs.logits, wide.logits.detach())  # not training: what forward gives
