"""The official EDA design as selectable modes, on tiny real models: joint stage 1 (shared + private trained together,
saved as two parts), stage 2 with declared shared modules (`modules_to_save`), private-expert initialisations, and the
authors' length-scaled feature noise."""

from __future__ import annotations

import json
import os

import pytest
import torch
from conftest import make_target
from datasets import Dataset
from peft import PeftModel, get_peft_model
from safetensors import safe_open

from eda_adapters import EagleDraftModel, EdaConfig, draft_fingerprint
from eda_adapters.export import export_adapters, merge_for_export
from eda_adapters.training import (
    EagleTrainer,
    EagleTrainingConfig,
    EdaTrainer,
    EdaTrainingConfig,
    add_feature_noise,
)

SEQ = 24


def sequences(seed: int, step: int, num: int = 32) -> Dataset:
    """Arithmetic sequences x_{t+1} = x_t + step (mod 94): an easy, learnable stream."""
    start = torch.randint(0, 94, (num, 1), generator=torch.Generator().manual_seed(seed))
    ids = (start + step * torch.arange(SEQ)) % 94 + 3
    return Dataset.from_dict({"input_ids": ids.tolist(), "loss_mask": torch.ones_like(ids).tolist()})


def config(cls, output_dir, **overrides):
    values = dict(
        output_dir=str(output_dir), per_device_train_batch_size=8, learning_rate=3e-3, max_steps=12, logging_steps=6,
        save_strategy="no", report_to=[], use_cpu=True, disable_tqdm=True, seed=0,
    )
    values.update(overrides)
    return cls(**values)


def draft_outputs(model, target, data: Dataset) -> torch.Tensor:
    """The draft's predicted features on a batch of the target's real features (deterministic, eval mode)."""
    ids = torch.tensor(data["input_ids"][:4])
    with torch.no_grad():
        features = target(input_ids=ids, output_hidden_states=True).hidden_states[-1]
        model.eval()
        return model(input_ids=ids[:, 1:], hidden_states=features[:, :-1]).last_hidden_state


@pytest.fixture(scope="module")
def world():
    return {"base": make_target("llama"), "finetuned": make_target("llama", seed=1), "data": sequences(0, 7)}


@pytest.fixture(scope="module")
def joint(world, tmp_path_factory):
    """A joint stage-1 run (shared draft + random private expert), saved; returns (trainer, initial tensors)."""
    out = tmp_path_factory.mktemp("joint")
    torch.manual_seed(0)
    trainer = EagleTrainer(
        target_model=world["base"],
        args=config(EagleTrainingConfig, out, save_strategy="steps", save_steps=12),
        train_dataset=world["data"],
        peft_config=EdaConfig(init_private_weights="random"),
    )
    initial = {k: v.clone() for k, v in trainer.model.named_parameters()}
    trainer.train()
    trainer.save_model()
    return trainer, initial


def test_joint_stage1_trains_shared_and_private_together(joint):
    trainer, initial = joint
    trainable = {name for name, p in trainer.model.named_parameters() if p.requires_grad}
    assert any(".eda_" in n for n in trainable)
    assert any(n.endswith("fc.weight") for n in trainable) and any(".base_layer.gate_proj" in n for n in trainable)
    assert not any("embed_tokens" in n or "lm_head" in n for n in trainable)  # the target's heads stay frozen
    changed = {n for n, p in trainer.model.named_parameters() if not torch.equal(p, initial[n])}
    assert changed == trainable


def test_joint_stage1_saves_shared_draft_and_stage1_adapter(joint, world):
    trainer, _ = joint
    out = trainer.args.output_dir
    with safe_open(os.path.join(out, "model.safetensors"), "pt") as handle:
        keys = set(handle.keys())
    assert "layers.0.mlp.gate_proj.weight" in keys and "fc.weight" in keys
    assert not any(".eda_" in k or "base_layer" in k or k.startswith(("embed_tokens", "lm_head")) for k in keys)
    adapter_dir = os.path.join(out, "stage1_adapter")
    draft = EagleDraftModel.from_pretrained(out, target_model=world["base"])
    with open(os.path.join(adapter_dir, "adapter_config.json")) as handle:
        assert json.load(handle)["draft_fingerprint"] == draft_fingerprint(draft)  # belongs to the trained draft
    reloaded = PeftModel.from_pretrained(draft, adapter_dir)
    expected = draft_outputs(trainer.model, world["base"], world["data"])
    assert torch.equal(draft_outputs(reloaded, world["base"], world["data"]), expected)


def test_joint_stage1_resumes_from_its_checkpoint(joint, world, tmp_path):
    trainer, _ = joint
    checkpoint = os.path.join(trainer.args.output_dir, "checkpoint-12")
    torch.manual_seed(1)  # another initialisation: only loading the checkpoint can restore the trained weights
    resumed = EagleTrainer(
        target_model=world["base"],
        args=config(EagleTrainingConfig, tmp_path),
        train_dataset=world["data"],
        peft_config=EdaConfig(init_private_weights="random"),
    )
    resumed.train(resume_from_checkpoint=checkpoint)  # already at max_steps: loads, trains nothing
    for name, param in trainer.model.named_parameters():
        assert torch.equal(param, dict(resumed.model.named_parameters())[name]), name


def test_stage1_refuses_copy_init_and_drops_modules_to_save(world, tmp_path):
    bad = EdaConfig(init_private_weights="copy", init_private_from="x")
    with pytest.raises(ValueError, match="stage-2 option"):
        EagleTrainer(target_model=world["base"], args=config(EagleTrainingConfig, tmp_path), peft_config=bad)
    # stage 1 trains fc (and everything shared) anyway: the stage-1 adapter holds no copy of it
    trainer = EagleTrainer(target_model=world["base"], args=config(EagleTrainingConfig, tmp_path),
                           peft_config=EdaConfig(init_private_weights="random", modules_to_save=["fc"]))
    assert not any("modules_to_save" in n for n, _ in trainer.model.named_parameters())
    assert trainer.model.get_base_model().fc.weight.requires_grad


@pytest.fixture(scope="module")
def official(joint, world, tmp_path_factory):
    """Stage 2 as the authors run it: private expert (random) + fc trained, from the joint stage-1 draft."""
    out = tmp_path_factory.mktemp("official")
    draft = EagleDraftModel.from_pretrained(joint[0].args.output_dir, target_model=world["finetuned"])
    before = {k: v.clone() for k, v in draft.state_dict().items()}
    trainer = EdaTrainer(
        model=draft,
        target_model=world["finetuned"],
        args=config(EdaTrainingConfig, out),
        train_dataset=sequences(1, 11),
        peft_config=EdaConfig(init_private_weights="random", modules_to_save=["fc"]),
    )
    trainer.train()
    trainer.save_model()
    return trainer, joint[0].args.output_dir, before


def test_stage2_trains_declared_fc_and_keeps_every_other_shared_tensor(official):
    trainer, _, before = official
    trainable = {n for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert {n for n in trainable if ".eda_" not in n} == {"base_model.model.fc.modules_to_save.default.weight"}
    state = trainer.model.get_base_model().state_dict()
    trained_fc = state["fc.modules_to_save.default.weight"]
    assert not torch.equal(trained_fc, before["fc.weight"])
    shared = {
        k.replace(".base_layer.", ".").replace("fc.original_module.", "fc."): v
        for k, v in state.items()
        if ".eda_" not in k and ".modules_to_save." not in k
    }
    assert shared.keys() == before.keys()
    for name, tensor in before.items():
        assert torch.equal(shared[name], tensor), f"shared tensor {name} changed"


def test_stage2_fc_survives_save_load_merge_and_export(official, world, tmp_path):
    trainer, stage1_dir, _ = official
    out = trainer.args.output_dir
    with safe_open(os.path.join(out, "adapter_model.safetensors"), "pt") as handle:
        assert "base_model.model.fc.weight" in set(handle.keys())
    trained_fc = trainer.model.get_base_model().fc.modules_to_save["default"].weight
    expected = draft_outputs(trainer.model, world["finetuned"], world["data"])
    fresh = EagleDraftModel.from_pretrained(stage1_dir, target_model=world["finetuned"])
    reloaded = PeftModel.from_pretrained(fresh, out)
    assert torch.equal(draft_outputs(reloaded, world["finetuned"], world["data"]), expected)
    merged = merge_for_export(reloaded)
    assert torch.equal(merged.fc.weight, trained_fc)
    merged.attach_target(world["finetuned"])
    torch.testing.assert_close(draft_outputs(merged, world["finetuned"], world["data"]), expected)
    shared = EagleDraftModel.from_pretrained(stage1_dir, target_model=world["finetuned"])
    exported = export_adapters(shared, out, tmp_path / "export", format="hf")
    with safe_open(os.path.join(next(iter(exported.values())), "model.safetensors"), "pt") as handle:
        assert torch.equal(handle.get_tensor("fc.weight"), trained_fc.detach())


def test_stage2_refuses_undeclared_trainable_shared_parameters(joint, world, tmp_path):
    draft = EagleDraftModel.from_pretrained(joint[0].args.output_dir, target_model=world["finetuned"])
    model = get_peft_model(draft, EdaConfig(modules_to_save=["fc"]))
    model.get_base_model().layers[0].self_attn.requires_grad_(True)
    with pytest.raises(ValueError, match=r"modules_to_save \['fc'\].*self_attn"):
        EdaTrainer(model=model, target_model=world["finetuned"], args=config(EdaTrainingConfig, tmp_path))
    with pytest.raises(ValueError, match="accepts"):
        EdaConfig(modules_to_save=["mlp"])  # the shared MLP never trains in stage 2


def test_stage2_attention_can_be_declared_too(joint, world, tmp_path):
    draft = EagleDraftModel.from_pretrained(joint[0].args.output_dir, target_model=world["finetuned"])
    trainer = EdaTrainer(
        model=draft, target_model=world["finetuned"], args=config(EdaTrainingConfig, tmp_path),
        peft_config=EdaConfig(modules_to_save=["fc", "self_attn", "post_attention_layernorm"]),
    )
    trainable = {n for n, p in trainer.model.named_parameters() if p.requires_grad and ".eda_" not in n}
    assert any("self_attn.modules_to_save" in n for n in trainable)
    assert any("post_attention_layernorm.modules_to_save" in n for n in trainable)


@pytest.mark.parametrize("init", ["zero", "random", "copy"])
def test_stage2_private_initialisation(joint, world, tmp_path, init):
    stage1_dir = joint[0].args.output_dir
    adapter_dir = os.path.join(stage1_dir, "stage1_adapter")
    draft = EagleDraftModel.from_pretrained(stage1_dir, target_model=world["base"])
    source = dict(init_private_from=adapter_dir) if init == "copy" else {}
    trainer = EdaTrainer(
        model=draft, target_model=world["base"], args=config(EdaTrainingConfig, tmp_path),
        peft_config=EdaConfig(init_private_weights=init, **source),
    )
    down = trainer.model.get_base_model().layers[0].mlp.eda_down_proj["default"].weight
    stage1_down = joint[0].model.get_base_model().layers[0].mlp.eda_down_proj["default"].weight
    assert (down.abs().sum() == 0) == (init == "zero")
    assert torch.equal(down, stage1_down) == (init == "copy")
    if init == "copy":  # the copied expert on the shared draft is exactly the stage-1 joint draft
        expected = draft_outputs(joint[0].model, world["base"], world["data"])
        assert torch.equal(draft_outputs(trainer.model, world["base"], world["data"]), expected)


def test_copy_init_needs_its_source(joint, world, tmp_path):
    with pytest.raises(ValueError, match="init_private_from"):
        EdaConfig(init_private_weights="copy")
    draft = EagleDraftModel.from_pretrained(joint[0].args.output_dir, target_model=world["base"])
    with pytest.raises(FileNotFoundError, match="stage1_adapter"):
        EdaTrainer(
            model=draft, target_model=world["base"], args=config(EdaTrainingConfig, tmp_path),
            peft_config=EdaConfig(init_private_weights="copy", init_private_from=str(tmp_path / "missing")),
        )
    wide = EdaConfig(init_private_weights="copy", init_private_from=os.path.join(joint[0].args.output_dir,
                                                                                  "stage1_adapter"),
                     private_intermediate_size=8)
    with pytest.raises(ValueError, match="shape"):
        get_peft_model(draft, wide)


def test_length_scaled_noise_follows_the_authors_formula():
    torch.manual_seed(0)
    zeros = torch.zeros(2, 64, 256)
    noisy = add_feature_noise(zeros, 0.2, kind="length_scaled", lengths=torch.tensor([64, 128]))
    # (rand - 0.5) * std * 512 / L: uniform on [-std * 256 / L, +std * 256 / L]
    for row, length in enumerate((64, 128)):
        bound = 0.2 * 256 / length
        assert noisy[row].abs().max() <= bound and noisy[row].abs().max() > 0.99 * bound
        assert abs(noisy[row].std().item() - bound / 3**0.5) < 0.02 * bound
    gaussian = add_feature_noise(zeros, 0.5, kind="gaussian")
    assert abs(gaussian.std().item() - 0.5) < 0.01 and gaussian.abs().max() > 0.5 * 3**0.5
    uniform = add_feature_noise(zeros, 0.5)
    assert abs(uniform.std().item() - 0.5) < 0.01 and uniform.abs().max() <= 0.5 * 3**0.5
    assert torch.equal(add_feature_noise(zeros, 0.0, kind="length_scaled"), zeros)


def test_noise_type_is_validated(tmp_path):
    with pytest.raises(ValueError, match="feature_noise_type"):
        config(EagleTrainingConfig, tmp_path, feature_noise_type="pink")
    assert config(EagleTrainingConfig, tmp_path, feature_noise_type="length_scaled").feature_noise_type


def test_cli_joint_stage1_then_official_stage2(world, tmp_path, capsys):
    from eda_adapters.cli import main

    world["base"].save_pretrained(tmp_path / "base")
    world["finetuned"].save_pretrained(tmp_path / "finetuned")
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in world["data"].to_list()))
    common = ["--use_cpu", "true", "--report_to", "none", "--disable_tqdm", "true", "--save_strategy", "no",
              "--max_steps", "2", "--per_device_train_batch_size", "4", "--dataset", str(data)]
    assert main(["train-draft", "--target", str(tmp_path / "base"), "--output-dir", str(tmp_path / "s1"),
                 "--joint-private", "true", "--private_intermediate_size", "16", *common]) == 0
    adapter = json.loads((tmp_path / "s1" / "stage1_adapter" / "adapter_config.json").read_text())
    assert adapter["private_intermediate_size"] == 16
    assert main(["adapt", "--target", str(tmp_path / "finetuned"), "--draft", str(tmp_path / "s1"),
                 "--output-dir", str(tmp_path / "s2"), "--init_private_weights", "copy", "--private_intermediate_size",
                 "16", "--init_private_from", str(tmp_path / "s1" / "stage1_adapter"), "--modules_to_save", "fc",
                 "--feature_noise_type", "length_scaled", "--feature_noise_std", "0.2", *common]) == 0
    saved = json.loads((tmp_path / "s2" / "adapter_config.json").read_text())
    assert saved["modules_to_save"] == ["fc"] and saved["init_private_weights"] == "copy"
    signature = json.loads((tmp_path / "s2" / "run_signature.json").read_text())
    assert signature["hyperparameters"]["feature_noise_type"] == "length_scaled"
    assert main(["train-draft", "--target", str(tmp_path / "base"), "--output-dir", str(tmp_path / "s3"),
                 "--num_private_experts", "2", *common]) == 2  # adapter flags without --joint_private
    assert "--joint-private" in capsys.readouterr().err


def test_lora_baseline_trains_only_its_factors(joint, world, tmp_path):
    from peft import LoraConfig

    from eda_adapters.research.experiment.evaluation import LORA_TARGET_MODULES, eda_trainable_parameters, lora_rank_matching

    draft = EagleDraftModel.from_pretrained(joint[0].args.output_dir, target_model=world["finetuned"])
    before = {k: v.clone() for k, v in draft.state_dict().items()}
    rank = lora_rank_matching(draft, EdaConfig())
    eda = eda_trainable_parameters(draft, EdaConfig())  # before LoRA wraps the draft's modules in place
    trainer = EdaTrainer(
        model=draft, target_model=world["finetuned"], args=config(EdaTrainingConfig, tmp_path),
        train_dataset=sequences(1, 11), peft_config=LoraConfig(r=rank, target_modules=LORA_TARGET_MODULES),
    )
    trainable = {n: p.numel() for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_" in n for n in trainable)
    assert abs(sum(trainable.values()) - eda) < sum(trainable.values()) / rank  # within one rank step of EDA's
    trainer.train()
    base = trainer.model.get_base_model().state_dict()
    for name, tensor in before.items():
        key = name if name in base else name.replace(".weight", ".base_layer.weight")
        assert torch.equal(base[key], tensor), name
