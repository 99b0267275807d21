"""Stage 1 (EagleTrainer) and stage 2 (EdaTrainer) on tiny real models: they learn, stage 2 touches only private
weights, checkpoints have the right content, bad input fails in one line."""

from __future__ import annotations

import copy
import os

import pytest
import torch
from conftest import make_target
from datasets import Dataset
from peft import LoraConfig, PeftModel
from safetensors import safe_open
from torch import nn
from transformers import TrainerCallback

import eda_adapters
from eda_adapters import EagleDraftModel, EdaConfig
from eda_adapters.research.toys import greedy_continuations
from eda_adapters.training import (
    DraftTrainer,
    EagleObjective,
    EagleTrainer,
    EagleTrainingConfig,
    EdaTrainer,
    EdaTrainingConfig,
    NonFiniteLossError,
    greedy_acceptance_length,
    prompts_from_dataset,
)

PROMPT_LEN, NEW_TOKENS = 8, 24



def greedy_dataset(target, num: int, seed: int) -> Dataset:
    """The target's own greedy continuations of random prompts, with the response marked by `loss_mask`."""
    prompts = torch.randint(3, 97, (num, PROMPT_LEN), generator=torch.Generator().manual_seed(seed))
    sequences = greedy_continuations(target, prompts, NEW_TOKENS)
    loss_mask = torch.zeros_like(sequences)
    loss_mask[:, PROMPT_LEN:] = 1
    return Dataset.from_dict({"input_ids": sequences.tolist(), "loss_mask": loss_mask.tolist()})


def rule_finetuned(base, steps: int = 40):
    """A "fine-tuned" copy of `base`: briefly trained on a different language (x_{t+1} = x_t + 7, mod 94)."""
    model = copy.deepcopy(base).train()
    generator = torch.Generator().manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(steps):
        start = torch.randint(0, 94, (16, 1), generator=generator)
        sequence = (start + 7 * torch.arange(24)) % 94 + 3
        model(input_ids=sequence, labels=sequence).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return model.eval().requires_grad_(False)


def tiny_config(cls, output_dir, **overrides):
    values = dict(
        output_dir=str(output_dir),
        per_device_train_batch_size=8,
        learning_rate=3e-3,
        max_steps=60,
        logging_steps=20,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
    )
    values.update(overrides)
    return cls(**values)


@pytest.fixture(scope="module")
def world():
    base = make_target("llama")
    finetuned = rule_finetuned(base)
    return {
        "base": base,
        "finetuned": finetuned,
        "base_train": greedy_dataset(base, 64, seed=1),
        "base_held": greedy_dataset(base, 16, seed=2),
        "ft_train": greedy_dataset(finetuned, 64, seed=3),
        "ft_held": greedy_dataset(finetuned, 8, seed=4),
    }


@pytest.fixture(scope="module")
def stage1(world, tmp_path_factory):
    """A stage-1 run on the base target; returns (trainer, accuracy of the untrained draft on held-out data)."""
    out = tmp_path_factory.mktemp("stage1")
    torch.manual_seed(0)
    config = tiny_config(EagleTrainingConfig, out, save_strategy="steps", save_steps=30)
    trainer = EagleTrainer(
        target_model=world["base"], args=config, train_dataset=world["base_train"], eval_dataset=world["base_held"]
    )
    before = trainer.evaluate()["eval_accuracy"]
    trainer.train()
    trainer.save_model()
    return trainer, before


def test_stage1_improves_draft_accuracy(stage1):
    trainer, before = stage1
    after = trainer.evaluate()["eval_accuracy"]
    assert after > before + 0.05, (before, after)
    logged = [row for row in trainer.state.log_history if "accuracy" in row]
    assert logged and {"regression_loss", "ce_loss", "num_tokens"} <= set(logged[0])


def test_stage1_checkpoints_hold_the_draft_without_target_heads(stage1, world):
    trainer, _ = stage1
    out = trainer.args.output_dir
    checkpoint = os.path.join(out, "checkpoint-30")
    for name in ("model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth", "run_signature.json"):
        assert os.path.isfile(os.path.join(checkpoint, name)), name
    with safe_open(os.path.join(out, "model.safetensors"), "pt") as handle:
        keys = set(handle.keys())
    assert "fc.weight" in keys and not any(k.startswith(("embed_tokens", "lm_head")) for k in keys)
    reloaded = EagleDraftModel.from_pretrained(out, target_model=world["base"])
    for name, tensor in reloaded.state_dict().items():
        assert torch.equal(tensor, trainer.model.state_dict()[name]), name


@pytest.fixture(scope="module")
def stage2(stage1, world, tmp_path_factory):
    """A stage-2 run on the fine-tuned target from the stage-1 draft; returns (trainer, shared weights before)."""
    out = tmp_path_factory.mktemp("stage2")
    draft = EagleDraftModel.from_pretrained(stage1[0].args.output_dir, target_model=world["finetuned"])
    shared_before = {k: v.clone() for k, v in draft.state_dict().items()}
    prompts = prompts_from_dataset(world["ft_held"], 8)
    tau_before = greedy_acceptance_length(draft, world["finetuned"], prompts, num_draft_tokens=4, max_new_tokens=24)
    config = tiny_config(
        EdaTrainingConfig, out, save_strategy="steps", save_steps=30, tau_num_draft_tokens=4, tau_max_new_tokens=24,
        tau_num_prompts=8, tau_eval_steps=30,
    )
    trainer = EdaTrainer(
        model=draft,
        target_model=world["finetuned"],
        args=config,
        train_dataset=world["ft_train"],
        tau_dataset=world["ft_held"],
        peft_config=EdaConfig(num_private_experts=1),
    )
    trainer.train()
    trainer.save_model()
    return trainer, shared_before, tau_before


def test_stage2_raises_tau_on_the_finetuned_target(stage2):
    trainer, _, tau_before = stage2
    assert trainer.last_tau is not None
    # measured at the first log at or after step 30 (logs every 20 steps: step 40), and at the end (60)
    assert [row["step"] for row in trainer.state.log_history if "tau" in row] == [40, 60]
    assert trainer.last_tau > tau_before + 0.2, (tau_before, trainer.last_tau)


def test_stage2_changes_only_adapter_parameters(stage2):
    trainer, shared_before, _ = stage2
    model = trainer.model
    assert isinstance(model, PeftModel)
    base_state = model.get_base_model().state_dict()
    private = {k: v for k, v in base_state.items() if ".eda_" in k}
    assert private and any(v.abs().sum() > 0 for k, v in private.items() if "down" in k)  # zero-init moved
    # the default adapter also trains its own copy of fc; the shared fc stays as it was
    assert not torch.equal(base_state["fc.modules_to_save.default.weight"], shared_before["fc.weight"])
    shared_after = {
        k.replace(".mlp.base_layer.", ".mlp.").replace("fc.original_module.", "fc."): v
        for k, v in base_state.items() if ".eda_" not in k and ".modules_to_save." not in k
    }
    assert shared_after.keys() == shared_before.keys()  # every shared tensor (target heads included) is compared
    for name, before in shared_before.items():
        assert torch.equal(shared_after[name], before), f"shared tensor {name} changed"


def test_stage2_checkpoints_hold_only_the_adapter(stage2, world, stage1):
    trainer, _, _ = stage2
    out = trainer.args.output_dir
    for folder in (out, os.path.join(out, "checkpoint-30")):
        assert os.path.isfile(os.path.join(folder, "adapter_model.safetensors"))
        assert os.path.isfile(os.path.join(folder, "adapter_config.json"))
        assert not os.path.exists(os.path.join(folder, "model.safetensors"))
        with safe_open(os.path.join(folder, "adapter_model.safetensors"), "pt") as handle:
            assert all(".eda_" in key or key == "base_model.model.fc.weight" for key in handle.keys())
    draft = EagleDraftModel.from_pretrained(stage1[0].args.output_dir, target_model=world["finetuned"])
    reloaded = PeftModel.from_pretrained(draft, out)
    ids = torch.tensor([world["ft_held"][0]["input_ids"]])
    features = torch.randn(1, ids.shape[1], 32)
    trainer.model.eval()
    torch.testing.assert_close(reloaded(input_ids=ids, hidden_states=features).logits,
                               trainer.model(input_ids=ids, hidden_states=features).logits)


def test_routed_adapter_logs_router_loss(stage1, world, tmp_path):
    draft = EagleDraftModel.from_pretrained(stage1[0].args.output_dir, target_model=world["finetuned"])
    config = tiny_config(EdaTrainingConfig, tmp_path, max_steps=2, logging_steps=1)
    trainer = EdaTrainer(
        model=draft, target_model=world["finetuned"], args=config, train_dataset=world["ft_train"],
        peft_config=EdaConfig(num_private_experts=2, num_experts_per_tok=1, router_aux_loss_coef=0.1),
    )
    trainer.train()
    logged = [row for row in trainer.state.log_history if "router_aux_loss" in row]
    assert len(logged) == 2 and all(row["router_aux_loss"] > 0 for row in logged)


class _PoisonWeights(TrainerCallback):
    """Make the draft produce NaN after optimizer step `at` (as a diverging run would)."""

    def __init__(self, at: int) -> None:
        self.at = at

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step == self.at:
            with torch.no_grad():
                model.fc.weight.fill_(float("nan"))


def test_nonfinite_loss_stops_with_step_and_keeps_last_good_checkpoint(world, tmp_path):
    config = tiny_config(EagleTrainingConfig, tmp_path, max_steps=10, save_strategy="steps", save_steps=2)
    trainer = EagleTrainer(
        target_model=world["base"], args=config, train_dataset=world["base_train"], callbacks=[_PoisonWeights(3)]
    )
    with pytest.raises(NonFiniteLossError, match=r"stopped at step 4: .*checkpoint-2"):
        trainer.train()
    assert sorted(os.listdir(tmp_path)) == ["checkpoint-2", "run_signature.json"]
    good = EagleDraftModel.from_pretrained(tmp_path / "checkpoint-2", target_model=world["base"])
    assert all(torch.isfinite(p).all() for p in good.parameters())


def test_push_to_hub_writes_our_card(stage2, monkeypatch, tmp_path):
    from huggingface_hub import HfApi

    uploaded = {}

    def create_repo(self, repo_id, **kwargs):
        return type("Repo", (), {"repo_id": repo_id})()

    def upload_folder(self, repo_id, folder_path, **kwargs):
        uploaded.update({name: open(os.path.join(folder_path, name), "rb").read() for name in os.listdir(folder_path)})
        return "commit"

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    trainer, _, _ = stage2
    assert trainer.push_to_hub(repo_id="me/eda-rule") == "commit"
    card = uploaded["README.md"].decode()
    assert "adapter_model.safetensors" in uploaded and "model.safetensors" not in uploaded
    assert f"| tau | {trainer.last_tau:.3f}" in card and "| base draft |" in card and "EDA adapter (stage 2)" in card


def test_bad_input_is_one_line(world, stage1, tmp_path):
    config = tiny_config(EdaTrainingConfig, tmp_path)
    draft = EagleDraftModel.from_pretrained(stage1[0].args.output_dir, target_model=world["finetuned"])
    with pytest.raises(ValueError, match="peft_config=EdaConfig"):
        EdaTrainer(model=draft, target_model=world["finetuned"], args=config, train_dataset=world["ft_train"])
    with pytest.raises(TypeError, match="peft_config is an EdaConfig"):  # EdaConfig itself: joint stage 1
        EagleTrainer(model=draft, target_model=world["base"], args=config, peft_config=LoraConfig(r=2))
    no_mlp = EagleDraftModel.from_pretrained(stage1[0].args.output_dir, target_model=world["finetuned"])
    no_mlp.layers[0].mlp = nn.Identity()
    with pytest.raises(ValueError, match="no.*shared SwiGLU MLP|not a shared SwiGLU MLP"):
        EdaTrainer(model=no_mlp, target_model=world["finetuned"], args=config, peft_config=EdaConfig())
    with pytest.raises(TypeError, match="EagleTrainingConfig"):
        EagleTrainer(target_model=world["base"], args=object())
    with pytest.raises(ValueError, match="ce_weight"):
        EagleTrainingConfig(output_dir=str(tmp_path), regression_weight=0, ce_weight=0, use_cpu=True)
    wrong = make_target("llama", hidden_size=48)
    with pytest.raises(ValueError, match="does not fit this target"):
        EdaTrainer(model=draft, target_model=wrong, args=config, peft_config=EdaConfig())


def test_public_names():
    for name in ("EagleTrainingConfig", "EagleTrainer", "EdaTrainingConfig", "EdaTrainer"):
        assert getattr(eda_adapters, name) is getattr(eda_adapters.training, name)


def test_cached_features_train_like_online_features(world, tmp_path):
    from eda_adapters.data import CachedFeatureDataset, extract_features

    extract_features(world["base"], world["base_train"], tmp_path / "features", batch_size=16, show_progress=False)
    losses = {}
    for source, data in (("online", world["base_train"]), ("cached", str(tmp_path / "features"))):
        torch.manual_seed(0)
        config = tiny_config(EagleTrainingConfig, tmp_path / source, max_steps=3, logging_steps=1)
        trainer = EagleTrainer(target_model=world["base"], args=config, train_dataset=data)
        assert isinstance(trainer.train_dataset, CachedFeatureDataset) == (source == "cached")
        trainer.train()
        losses[source] = [row["loss"] for row in trainer.state.log_history if "loss" in row]
    assert len(losses["cached"]) == 3
    assert losses["cached"] == pytest.approx(losses["online"], rel=1e-4)
    with pytest.raises(ValueError, match="came from target"):
        EagleTrainer(target_model=world["finetuned"], args=config, train_dataset=str(tmp_path / "features"))


def test_length_grouped_batches_over_cached_features_read_lengths_from_headers(world, tmp_path, monkeypatch):
    from transformers.trainer_pt_utils import LengthGroupedSampler

    from eda_adapters.data import CachedFeatureDataset, extract_features

    cache = extract_features(world["base"], world["base_train"], tmp_path / "features", batch_size=16,
                             show_progress=False)
    assert cache.lengths == [len(ids) for ids in world["base_train"]["input_ids"]]
    config = tiny_config(EagleTrainingConfig, tmp_path / "out", max_steps=2,
                         train_sampling_strategy="group_by_length")
    trainer = EagleTrainer(target_model=world["base"], args=config, train_dataset=str(tmp_path / "features"))
    loaded = []
    original = CachedFeatureDataset.__getitem__
    monkeypatch.setattr(CachedFeatureDataset, "__getitem__", lambda self, i: loaded.append(i) or original(self, i))
    sampler = trainer._get_train_sampler()
    assert isinstance(sampler, LengthGroupedSampler) and sampler.lengths == cache.lengths and not loaded
    trainer.train()
    assert trainer.state.global_step == 2


def test_bf16_mixed_precision_keeps_float32_trainable_weights(tmp_path):
    target = make_target("qwen2").to(torch.bfloat16)
    rows = torch.randint(3, 97, (8, 12), generator=torch.Generator().manual_seed(0)).tolist()
    data = Dataset.from_dict({"input_ids": rows})
    config = tiny_config(EagleTrainingConfig, tmp_path, max_steps=2, bf16=True, per_device_train_batch_size=4)
    trainer = EagleTrainer(target_model=target, args=config, train_dataset=data)
    before = trainer.model.fc.weight.detach().clone()
    trainer.train()
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters() if p.requires_grad)
    assert trainer.model.lm_head.weight.dtype == torch.bfloat16  # the target's shared head is left alone
    assert not torch.equal(before, trainer.model.fc.weight)


def test_stage2_accepts_a_loaded_trainable_adapter(stage1, stage2, world, tmp_path):
    adapter_dir = stage2[0].args.output_dir

    def draft():
        return EagleDraftModel.from_pretrained(stage1[0].args.output_dir, target_model=world["finetuned"])

    config = tiny_config(EdaTrainingConfig, tmp_path, max_steps=2)
    frozen = PeftModel.from_pretrained(draft(), adapter_dir)  # inference mode: nothing to train
    with pytest.raises(ValueError, match="is_trainable=True"):
        EdaTrainer(model=frozen, target_model=world["finetuned"], args=config, train_dataset=world["ft_train"])
    loaded = PeftModel.from_pretrained(draft(), adapter_dir, is_trainable=True)
    with pytest.raises(ValueError, match="not both"):
        EdaTrainer(model=loaded, target_model=world["finetuned"], args=config, peft_config=EdaConfig())
    before = {k: v.clone() for k, v in loaded.state_dict().items()}
    trainer = EdaTrainer(model=loaded, target_model=world["finetuned"], args=config, train_dataset=world["ft_train"])
    trainer.train()
    changed = {k for k, v in trainer.model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and all(".eda_" in k or ".modules_to_save." in k for k in changed)


def test_collator_truncates_strips_padding_and_pads_to_multiple():
    from eda_adapters.training import DraftDataCollator

    collate = DraftDataCollator(max_length=4, pad_to_multiple_of=8)
    batch = collate([
        {"input_ids": [5, 6, 7, 8, 9], "loss_mask": [0, 1, 1, 1, 1], "hidden_states": torch.ones(5, 3)},
        {"input_ids": [0, 0, 4, 5], "attention_mask": [0, 0, 1, 1], "loss_mask": [0, 0, 1, 1],
         "hidden_states": torch.full((4, 3), 2.0)},
    ])
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8, 0, 0, 0, 0], [4, 5, 0, 0, 0, 0, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0, 0, 0]]
    assert batch["loss_mask"].tolist() == [[0, 1, 1, 1, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0, 0, 0]]
    assert batch["hidden_states"].shape == (2, 8, 3) and batch["hidden_states"][1, :2].eq(2).all()
    assert batch["hidden_states"][:, 4:].eq(0).all()
    with pytest.raises(ValueError, match="loss_mask has length 2, input_ids 3"):
        collate([{"input_ids": [1, 2, 3], "loss_mask": [1, 1]}])
    with pytest.raises(ValueError, match="need an `input_ids` column"):
        collate([{"text": "hello"}])


class _CountingObjective(EagleObjective):
    """EAGLE's objective plus a logged metric: a stand-in for a new objective (e.g. training-time test)."""

    def __init__(self):
        self.training_calls = 0

    def __call__(self, model, inputs, features, target_logits, args, training):
        result = super().__call__(model, inputs, features, target_logits, args, training)
        self.training_calls += int(training)
        result.metrics["doubled_accuracy"] = 2 * result.metrics["accuracy"]
        return result


@pytest.mark.parametrize("trainer_cls", [EagleTrainer, EdaTrainer])
def test_the_objective_plugs_into_both_sibling_trainers(trainer_cls, world, stage1, tmp_path):
    assert issubclass(trainer_cls, DraftTrainer) and not issubclass(EdaTrainer, EagleTrainer)
    objective = _CountingObjective()
    config_cls = EagleTrainingConfig if trainer_cls is EagleTrainer else EdaTrainingConfig
    stage2 = trainer_cls is EdaTrainer
    trainer = trainer_cls(
        model=stage1[0].args.output_dir if stage2 else None,
        target_model=world["finetuned" if stage2 else "base"],
        args=tiny_config(config_cls, tmp_path / "run", max_steps=4, logging_steps=2),
        train_dataset=world["ft_train" if stage2 else "base_train"],
        peft_config=EdaConfig() if stage2 else None,
        objective=objective,
    )
    trainer.train()
    assert objective.training_calls == 4
    logged = [entry for entry in trainer.state.log_history if "doubled_accuracy" in entry]
    assert len(logged) == 2
    assert all(entry["doubled_accuracy"] == pytest.approx(2 * entry["accuracy"]) for entry in logged)
