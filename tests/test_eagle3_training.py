"""EAGLE-3 training with the training-time test, on tiny real targets: the unrolled objective equals the single-step
loss at one step and inference's own chain at more, and the trainers (stage 1, joint stage 1, EDA stage 2, cached
features) train EAGLE-3 drafts."""

from __future__ import annotations

import peft
import pytest
import torch
from conftest import make_target
from test_training_trainers import greedy_dataset, tiny_config

from eda_adapters import EdaConfig
from eda_adapters.data import extract_features
from eda_adapters.data.feature_cache import draft_feature_layers
from eda_adapters.errors import EdaInputError
from eda_adapters.models import Eagle3DraftModel
from eda_adapters.training import (
    EagleTrainer,
    EagleTrainingConfig,
    EdaTrainer,
    EdaTrainingConfig,
    TrainingTimeTestObjective,
    eagle_loss,
)

LAYERS = 8


@pytest.fixture(scope="module")
def target():
    return make_target("llama", num_hidden_layers=LAYERS)


def _batch(target, draft):
    """Two right-padded rows, their loss masks, the draft's fused aux features and the target's logits."""
    generator = torch.Generator().manual_seed(3)
    input_ids = torch.randint(3, 97, (2, 14), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 10:] = 0
    loss_mask = torch.ones_like(input_ids)
    loss_mask[:, :3] = 0
    with torch.no_grad():
        out = target(input_ids, attention_mask=attention_mask, output_hidden_states=True)
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "loss_mask": loss_mask}
    return inputs, draft.target_features(out.hidden_states), out.logits


def _reduced_draft(target, seed: int = 0) -> Eagle3DraftModel:
    torch.manual_seed(seed)
    vocab = torch.arange(3, 97, 2)  # every other token: the target distribution is renormalised over these
    return Eagle3DraftModel.from_target(target, draft_vocab=vocab, head_init="random").eval()


def test_an_unroll_of_one_equals_the_single_step_loss(target):
    draft = _reduced_draft(target)
    inputs, features, logits = _batch(target, draft)
    args = EagleTrainingConfig(output_dir="unused", use_cpu=True, ttt_steps=1, report_to=[])
    result = TrainingTimeTestObjective()(draft, inputs, features, logits, args, training=True)

    # the single step, written independently: a plain forward with a 2D padding mask, EAGLE-1's loss with only its
    # cross-entropy term over the draft's target-vocabulary logits (-inf outside the draft vocabulary)
    mask = inputs["attention_mask"]
    out = draft(input_ids=inputs["input_ids"][:, 1:], hidden_states=features[:, :-1], attention_mask=mask[:, 1:])
    expected = eagle_loss(
        out.last_hidden_state, draft.target_vocab_logits(out.logits), out.last_hidden_state, logits[:, 1:],
        (inputs["loss_mask"] * mask)[:, 1:], regression_weight=0.0, ce_weight=1.0,
    )
    torch.testing.assert_close(result.loss, expected.loss, rtol=1e-6, atol=1e-6)
    assert result.num_tokens == expected.num_tokens
    torch.testing.assert_close(result.metrics["accuracy"], expected.accuracy)


def test_unrolled_steps_read_the_drafts_own_outputs_as_inference_does(target):
    """Step k at position t must be exactly what the draft computes at inference for the token k places after t: the
    prefix fed the target's features, then its own chain. Reading the target's features at step k fails this."""
    draft = _reduced_draft(target)
    inputs, features, logits = _batch(target, draft)
    steps = 3
    args = EagleTrainingConfig(output_dir="unused", use_cpu=True, ttt_steps=steps, report_to=[])
    with torch.no_grad():
        result = TrainingTimeTestObjective()(draft, inputs, features, logits, args, training=False)
    assert set(result.metrics) >= {"accuracy", "accuracy_step_1", "accuracy_step_2"}
    ids = inputs["input_ids"][:1]  # the unpadded row
    length = ids.shape[1]
    with torch.no_grad():
        for t in range(length - steps):
            out = draft(input_ids=ids[:, 1:t + 2], hidden_states=features[:1, :t + 1], use_cache=True)
            cache, hidden = out.past_key_values, out.last_hidden_state[:, -1:]
            for k in range(1, steps):
                out = draft(input_ids=ids[:, t + 1 + k:t + 2 + k], hidden_states=hidden, past_key_values=cache,
                            use_cache=True)
                cache, hidden = out.past_key_values, out.last_hidden_state
            torch.testing.assert_close(result.outputs.logits[0, t], out.logits[0, 0], rtol=1e-4, atol=1e-5)


def test_the_training_time_test_objective_refuses_a_zero_unroll():
    with pytest.raises(EdaInputError, match="num_steps >= 1"):
        TrainingTimeTestObjective(num_steps=0)
    with pytest.raises(EdaInputError, match="ttt_steps must be an integer >= 1"):
        EagleTrainingConfig(output_dir="unused", use_cpu=True, ttt_steps=0)
    with pytest.raises(EdaInputError, match="draft_architecture must be one of"):
        EagleTrainingConfig(output_dir="unused", use_cpu=True, draft_architecture="medusa")


def test_stage_one_builds_and_trains_an_eagle3_draft(target, tmp_path):
    data = greedy_dataset(target, 24, seed=1)
    args = tiny_config(EagleTrainingConfig, tmp_path / "e3", draft_architecture="eagle3", ttt_steps=3,
                       max_steps=40, draft_vocab_size=60)
    trainer = EagleTrainer(target_model=target, args=args, train_dataset=data)
    assert isinstance(trainer.model, Eagle3DraftModel) and trainer.model.config.draft_vocab_size == 60
    assert isinstance(trainer.objective, TrainingTimeTestObjective)
    trainer.train()
    logs = [row for row in trainer.state.log_history if "accuracy_step_2" in row]
    assert len(logs) == 2 and logs[-1]["loss"] < logs[0]["loss"]
    assert logs[-1]["accuracy"] > logs[0]["accuracy"]
    assert trainer.run_signature()["objective"] == {"name": "training_time_test", "steps": 3, "step_weight": 0.8}
    trainer.save_model()
    loaded = EdaTrainer(model=str(tmp_path / "e3"), target_model=target, peft_config=EdaConfig(),
                        args=tiny_config(EdaTrainingConfig, tmp_path / "stage2", max_steps=1))
    assert isinstance(loaded.model.get_base_model(), Eagle3DraftModel)  # a saved EAGLE-3 draft loads by its config
    with pytest.raises(EdaInputError, match="one decoder layer and its own trainable head"):
        EagleTrainer(target_model=target, train_dataset=data, args=tiny_config(
            EagleTrainingConfig, tmp_path / "x", draft_architecture="eagle3", draft_num_layers=2))


def test_aux_layer_ids_choose_the_fused_states_of_a_built_draft(tmp_path):
    shallow = make_target("llama", num_hidden_layers=2)  # too few layers for the default [2, L//2, L-3]
    data = greedy_dataset(shallow, 16, seed=2)
    with pytest.raises(EdaInputError, match="too few for the default aux states"):
        EagleTrainer(target_model=shallow, train_dataset=data, args=tiny_config(
            EagleTrainingConfig, tmp_path / "default", draft_architecture="eagle3"))
    args = tiny_config(EagleTrainingConfig, tmp_path / "aux", draft_architecture="eagle3", aux_layer_ids=[0, 1, 2],
                       max_steps=2)
    trainer = EagleTrainer(target_model=shallow, train_dataset=data, args=args)
    assert trainer.model.config.eagle_aux_hidden_state_layer_ids == [0, 1, 2]
    assert trainer.feature_layers == [0, 1, 2, 2]  # the fused states, then the one the target's logits come from
    trainer.train()
    with pytest.raises(EdaInputError, match="applies to EAGLE-3 drafts only"):
        EagleTrainingConfig(output_dir="unused", use_cpu=True, aux_layer_ids=[0, 1, 2])
    with pytest.raises(EdaInputError, match="a given draft keeps its own aux layers"):
        EdaTrainer(model=trainer.model, target_model=shallow, peft_config=EdaConfig(), train_dataset=data,
                   args=tiny_config(EdaTrainingConfig, tmp_path / "s2", draft_architecture="eagle3",
                                    aux_layer_ids=[0, 1, 1]))


def test_eda_stage_two_trains_only_the_private_weights_of_an_eagle3_draft(target, tmp_path):
    draft = Eagle3DraftModel.from_target(target)
    shared = {name: value.clone() for name, value in draft.state_dict().items()}
    trainer = EdaTrainer(
        model=draft, target_model=target, train_dataset=greedy_dataset(target, 16, seed=2),
        peft_config=EdaConfig(num_private_experts=2, init_private_weights="random"),
        args=tiny_config(EdaTrainingConfig, tmp_path / "stage2", max_steps=6, logging_steps=3, ttt_steps=2),
    )
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    trainer.train()
    moved = [n for n, p in trainer.model.named_parameters() if p.requires_grad and not torch.equal(p, before[n])]
    assert any("eda_" in name for name in moved)
    wrapped = trainer.model.get_base_model().state_dict()
    for name, value in shared.items():  # the shared draft underneath is untouched (PEFT renames the wrapped modules)
        key = name.replace("mlp.", "mlp.base_layer.").replace("fc.", "fc.original_module.")
        assert torch.equal(wrapped[key], value), name


def test_joint_stage_one_trains_an_eagle3_draft_with_its_private_expert(target, tmp_path):
    trainer = EagleTrainer(
        model=Eagle3DraftModel.from_target(target), target_model=target,
        train_dataset=greedy_dataset(target, 16, seed=3),
        peft_config=EdaConfig(num_private_experts=1, init_private_weights="random"),
        args=tiny_config(EagleTrainingConfig, tmp_path / "joint", max_steps=4, logging_steps=2, ttt_steps=2),
    )
    fc_before = trainer.model.get_base_model().fc.weight.detach().clone()
    trainer.train()
    trainer.save_model()
    assert not torch.equal(trainer.model.get_base_model().fc.weight, fc_before)
    assert (tmp_path / "joint" / "stage1_adapter" / "adapter_config.json").is_file()
    assert isinstance(peft.PeftModel.from_pretrained(
        Eagle3DraftModel.from_pretrained(tmp_path / "joint", target_model=target), tmp_path / "joint" / "stage1_adapter"
    ).get_base_model(), Eagle3DraftModel)


def test_cached_features_hold_the_aux_layers_and_the_last_and_train_like_online(target, tmp_path):
    data = greedy_dataset(target, 8, seed=4)
    draft = Eagle3DraftModel.from_target(target)
    layers = draft_feature_layers(draft, target)
    assert layers == [*draft.hidden_state_indices, LAYERS]
    cached = extract_features(target, data, tmp_path / "features", layers=layers, show_progress=False)
    losses = {}
    for name, train in (("online", data), ("cached", str(tmp_path / "features"))):
        torch.manual_seed(0)
        model = Eagle3DraftModel.from_target(target)
        model.load_state_dict(draft.state_dict(), strict=False)
        trainer = EagleTrainer(model=model, target_model=target, train_dataset=train,
                               args=tiny_config(EagleTrainingConfig, tmp_path / name, max_steps=1, logging_steps=1))
        trainer.train()
        losses[name] = next(row["loss"] for row in trainer.state.log_history if "loss" in row)
    assert losses["cached"] == pytest.approx(losses["online"], rel=1e-4)
    assert cached[0]["hidden_states"].shape[-1] == 4 * target.config.hidden_size  # 4 states per token
    eagle1_cache = extract_features(target, data, tmp_path / "last", show_progress=False)
    with pytest.raises(EdaInputError, match=r"hold the target's hidden_states \[8\], but this draft reads"):
        EagleTrainer(model=Eagle3DraftModel.from_target(target), target_model=target, train_dataset=eagle1_cache,
                     args=tiny_config(EagleTrainingConfig, tmp_path / "wrong"))
