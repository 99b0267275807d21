"""Checkpoints resume exactly (optimizer, scheduler, RNG, data position), and a checkpoint of another run is refused."""

from __future__ import annotations

import os

import pytest
import torch
from conftest import make_target
from datasets import Dataset
from peft import PeftModel

from eda_adapters import EagleDraftModel, EdaConfig, RunMismatchError
from eda_adapters.errors import EdaInputError
from eda_adapters.training import EagleTrainer, EagleTrainingConfig, EdaTrainer, EdaTrainingConfig

STEPS, SAVE_AT = 6, 3




@pytest.fixture(scope="module")
def target():
    return make_target("qwen2")


def random_dataset(num: int = 24, seed: int = 0) -> Dataset:
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(6, 14, (num,), generator=generator)  # ragged: exercises padding
    rows = [torch.randint(3, 97, (int(n),), generator=generator).tolist() for n in lengths]
    return Dataset.from_dict({"input_ids": rows})


def config(cls, output_dir, **overrides):
    values = dict(
        output_dir=str(output_dir), max_steps=STEPS, save_steps=SAVE_AT, per_device_train_batch_size=4,
        learning_rate=1e-2, logging_steps=1, report_to=[], use_cpu=True, disable_tqdm=True, seed=3,
        feature_noise_std=0.2,  # RNG inside the step must be restored too
    )
    values.update(overrides)
    return cls(**values)


def stage1_trainer(target, output_dir, **overrides):
    return EagleTrainer(
        target_model=target, args=config(EagleTrainingConfig, output_dir, **overrides), train_dataset=random_dataset()
    )


def test_stage1_resume_matches_uninterrupted_run(target, tmp_path):
    full = stage1_trainer(target, tmp_path / "full")
    full.train()
    resumed = stage1_trainer(target, tmp_path / "resumed")
    resumed.train(resume_from_checkpoint=str(tmp_path / "full" / f"checkpoint-{SAVE_AT}"))
    assert resumed.state.global_step == STEPS
    full_state, resumed_state = full.model.state_dict(), resumed.model.state_dict()
    for name, tensor in full_state.items():
        assert torch.equal(tensor, resumed_state[name]), name
    # the resumed run really trained past the checkpoint
    at_save = EagleDraftModel.from_pretrained(tmp_path / "full" / f"checkpoint-{SAVE_AT}", target_model=target)
    assert not torch.equal(at_save.fc.weight, full.model.fc.weight)


def test_resume_from_another_run_is_refused(target, tmp_path):
    stage1_trainer(target, tmp_path / "a", max_steps=SAVE_AT).train()
    checkpoint = str(tmp_path / "a" / f"checkpoint-{SAVE_AT}")
    other_lr = stage1_trainer(target, tmp_path / "b", learning_rate=5e-3)
    with pytest.raises(RunMismatchError, match=r"another training run .*learning_rate: 0.01 there, 0.005 now"):
        other_lr.train(resume_from_checkpoint=checkpoint)
    other_data = EagleTrainer(
        target_model=target, args=config(EagleTrainingConfig, tmp_path / "c"), train_dataset=random_dataset(seed=1)
    )
    with pytest.raises(RunMismatchError, match=r"another training run .*data\.digest"):
        other_data.train(resume_from_checkpoint=checkpoint)
    other_target = EagleTrainer(
        target_model=make_target("qwen2", seed=1), args=config(EagleTrainingConfig, tmp_path / "d"),
        train_dataset=random_dataset(),
    )
    with pytest.raises(RunMismatchError, match=r"another training run .*target\.fingerprint"):
        other_target.train(resume_from_checkpoint=checkpoint)
    empty = stage1_trainer(target, tmp_path / "e")
    with pytest.raises(FileNotFoundError, match="no finished checkpoint"):
        empty.train(resume_from_checkpoint=True)


def test_the_seed_decides_the_fresh_draft(target, tmp_path):
    """Like `Trainer(model_init=...)`: the draft a trainer builds starts from `args.seed`, whatever the RNG was."""
    def first_weights(name, seed):
        torch.manual_seed(len(name))  # the global RNG before the trainer differs every time
        return stage1_trainer(target, tmp_path / name, seed=seed).model.fc.weight.detach().clone()

    assert torch.equal(first_weights("a", 3), first_weights("bb", 3))
    assert not torch.equal(first_weights("a", 3), first_weights("ccc", 4))


def test_a_checkpoint_cut_short_is_never_resumed_from(target, tmp_path):
    """A run killed while saving leaves a checkpoint folder without trainer_state.json: "last" resumes from the
    checkpoint before it (deleting the unfinished one) and ends where an uninterrupted run ends; naming the unfinished
    one is refused; "last" with no finished checkpoint starts afresh."""
    full = stage1_trainer(target, tmp_path / "full")
    full.train()
    crashed = tmp_path / "crashed"
    stage1_trainer(target, crashed).train()
    (crashed / f"checkpoint-{STEPS}" / "trainer_state.json").write_text('{"global_st')  # cut short while writing
    with pytest.raises(EdaInputError, match=f"checkpoint-{STEPS} is unfinished"):
        stage1_trainer(target, crashed).train(resume_from_checkpoint=str(crashed / f"checkpoint-{STEPS}"))
    resumed = stage1_trainer(target, crashed)
    resumed.train(resume_from_checkpoint="last")
    assert resumed.state.global_step == STEPS and (crashed / f"checkpoint-{STEPS}" / "trainer_state.json").is_file()
    fresh = stage1_trainer(target, tmp_path / "fresh")
    fresh.train(resume_from_checkpoint="last")
    for trainer in (resumed, fresh):
        for name, tensor in full.model.state_dict().items():
            assert torch.equal(tensor, trainer.model.state_dict()[name]), name


def test_stage2_resume_matches_uninterrupted_run(target, tmp_path):
    torch.manual_seed(0)
    draft = EagleDraftModel.from_target(target)
    draft.save_pretrained(tmp_path / "draft")

    def trainer(output_dir):
        shared = EagleDraftModel.from_pretrained(tmp_path / "draft", target_model=target)
        torch.manual_seed(len(str(output_dir)))
        return EdaTrainer(
            model=shared, target_model=target, args=config(EdaTrainingConfig, output_dir),
            train_dataset=random_dataset(), peft_config=EdaConfig(init_private_weights="random"),
        )

    full = trainer(tmp_path / "full")
    full.train()
    checkpoint = tmp_path / "full" / f"checkpoint-{SAVE_AT}"
    assert (checkpoint / "adapter_model.safetensors").is_file() and not (checkpoint / "model.safetensors").exists()
    resumed = trainer(tmp_path / "resumed")
    resumed.train(resume_from_checkpoint=str(checkpoint))
    assert isinstance(resumed.model, PeftModel)
    for name, tensor in full.model.state_dict().items():
        assert torch.equal(tensor, resumed.model.state_dict()[name]), name
    # a different shared draft is another run
    other = EagleDraftModel.from_target(target)
    other_trainer = EdaTrainer(
        model=other, target_model=target, args=config(EdaTrainingConfig, tmp_path / "other"),
        train_dataset=random_dataset(), peft_config=EdaConfig(init_private_weights="random"),
    )
    with pytest.raises(ValueError, match="shared_fingerprint"):
        other_trainer.train(resume_from_checkpoint=str(checkpoint))
    assert os.path.isfile(tmp_path / "full" / "run_signature.json")


def test_gradient_accumulation_trains_like_one_big_batch(target, tmp_path):
    """Two accumulated micro-batches of 4 make the same optimizer steps as batches of 8: the loss is normalised by
    the tokens of the whole accumulated batch, not averaged per micro-batch (the ragged rows make the two differ)."""

    def trained(output_dir, batch_size, accumulation):
        torch.manual_seed(0)
        args = config(EagleTrainingConfig, output_dir, max_steps=3, per_device_train_batch_size=batch_size,
                      gradient_accumulation_steps=accumulation, feature_noise_std=0.0, save_strategy="no")
        trainer = EagleTrainer(model=EagleDraftModel.from_target(target), target_model=target, args=args,
                               train_dataset=random_dataset())
        trainer.train()
        return trainer

    big, accumulated = trained(tmp_path / "big", 8, 1), trained(tmp_path / "accumulated", 4, 2)
    big_state, accumulated_state = big.model.state_dict(), accumulated.model.state_dict()
    torch.manual_seed(0)
    initial = EagleDraftModel.from_target(target).state_dict()
    assert not torch.equal(big_state["fc.weight"], initial["fc.weight"])  # it trained
    for name, tensor in big_state.items():
        torch.testing.assert_close(accumulated_state[name], tensor, rtol=1e-5, atol=1e-6, msg=name)
    losses = [[log["loss"] for log in t.state.log_history if "loss" in log] for t in (big, accumulated)]
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)


def test_a_run_resumed_at_its_last_step_trains_no_further(target, tmp_path):
    """Resumed from a checkpoint at max_steps that ends mid-epoch, `Trainer` alone trains one step more (and saves
    checkpoint-5); the draft trainer loads the checkpoint and stops."""
    args = dict(max_steps=4, save_steps=2, lr_scheduler_type="constant", feature_noise_std=0.0)
    done = stage1_trainer(target, tmp_path, **args)
    done.train()
    again = stage1_trainer(target, tmp_path, **args)
    again.train(resume_from_checkpoint="last")
    assert again.state.global_step == 4 and not (tmp_path / "checkpoint-5").exists()
    for name, tensor in done.model.state_dict().items():
        assert torch.equal(tensor, again.model.state_dict()[name]), name
