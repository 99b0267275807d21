"""The trainers on 2 real processes (gloo on CPU), through accelerate's debug launcher: the DDP path of N GPUs."""

from __future__ import annotations

import json
import os

import pytest
import torch
from accelerate import debug_launcher

LENGTHS = [6, 12, 7, 11, 8, 10, 9, 12, 6, 9, 12, 7, 10, 8, 11, 6]  # ragged: a per-process token mean would weigh them wrong


def _ragged_rows():
    generator = torch.Generator().manual_seed(0)
    return [torch.randint(3, 97, (n,), generator=generator).tolist() for n in LENGTHS]


def _stage1_args(output_dir: str, batch_size: int, architecture: str) -> dict:
    return dict(
        output_dir=output_dir, max_steps=3, per_device_train_batch_size=batch_size, learning_rate=1e-2, logging_steps=1,
        save_strategy="no", report_to=[], use_cpu=True, disable_tqdm=True, seed=0, feature_noise_std=0.0,
        draft_architecture=architecture, ttt_steps=3,  # EAGLE-3: three forwards of the DDP model per batch
    )


def _target(architecture: str):
    from conftest import make_target

    # an EAGLE-3 draft reads three hidden states: [2, L//2, L-3] repeats a layer below 7
    return make_target("mistral", **({"num_hidden_layers": 7} if architecture == "eagle3" else {}))


def _train_on_two_processes(output_dir: str, architecture: str) -> None:
    # Runs in each spawned process: everything is built here (no state shared with the pytest process).
    import sys

    sys.path.insert(0, os.path.dirname(__file__))
    from datasets import Dataset
    from safetensors.torch import save_file

    from eda_adapters import EdaConfig
    from eda_adapters.training import EagleTrainer, EagleTrainingConfig, EdaTrainer, EdaTrainingConfig

    torch.set_num_threads(1)
    target = _target(architecture)
    data = Dataset.from_dict({"input_ids": _ragged_rows()})
    common = dict(
        max_steps=3, per_device_train_batch_size=2, learning_rate=1e-2, logging_steps=1, save_strategy="no",
        report_to=[], use_cpu=True, disable_tqdm=True, seed=0, ttt_steps=2,
    )
    stage1 = EagleTrainer(
        target_model=target, args=EagleTrainingConfig(**_stage1_args(f"{output_dir}/stage1", 2, architecture)),
        train_dataset=data,
    )
    assert stage1.accelerator.num_processes == 2, "debug_launcher did not start 2 processes"
    before = stage1.model.fc.weight.detach().clone()
    if stage1.is_world_process_zero():
        save_file({k: v.contiguous() for k, v in stage1.model.state_dict().items()}, f"{output_dir}/initial.safetensors")
    stage1.train()
    draft = stage1.accelerator.unwrap_model(stage1.model)
    weights = draft.fc.weight.detach()
    # DDP kept the replicas identical, and they moved
    gathered = stage1.accelerator.gather(weights[None])
    assert torch.equal(gathered[0], gathered[1])
    assert not torch.equal(weights, before)

    stage2 = EdaTrainer(
        model=draft, target_model=target, args=EdaTrainingConfig(output_dir=f"{output_dir}/stage2", **common),
        train_dataset=data, peft_config=EdaConfig(num_private_experts=2, init_private_weights="random"),
    )
    stage2.train()
    private = [p.detach() for n, p in stage2.model.named_parameters() if "eda_down_proj" in n][0]
    gathered = stage2.accelerator.gather(private[None])
    assert torch.equal(gathered[0], gathered[1])
    assert torch.equal(draft.fc.original_module.weight, weights)  # shared weights untouched by stage 2
    fc_copy = draft.fc.modules_to_save["default"].weight.detach()  # the adapter's own fc (default) trained
    assert not torch.equal(fc_copy, weights) and torch.equal(*stage2.accelerator.gather(fc_copy[None]))
    if stage2.is_world_process_zero():
        save_file({"fc.weight": weights.contiguous()}, f"{output_dir}/stage1_fc.safetensors")
        logs = [row for row in stage1.state.log_history + stage2.state.log_history if "accuracy" in row]
        with open(os.path.join(output_dir, "result.json"), "w") as handle:
            json.dump({"world_size": stage2.accelerator.num_processes, "logs": logs}, handle)


@pytest.mark.parametrize("architecture", ["eagle", "eagle3"])
def test_two_process_training(tmp_path, monkeypatch, architecture):
    # With OMP_NUM_THREADS unset, accelerate raises the forked workers' torch threads; an OpenMP pool re-used after
    # fork (the pytest process has already run models) deadlocks. One thread per worker is also what CPU DDP wants.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    debug_launcher(_train_on_two_processes, args=(str(tmp_path), architecture), num_processes=2)
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["world_size"] == 2
    assert len(result["logs"]) == 6 and all(row["num_tokens"] > 0 for row in result["logs"])

    # 2 processes x 2 rows make the same steps as 1 process x 4 rows: the loss is the token mean over both processes
    from datasets import Dataset
    from safetensors.torch import load_file

    from eda_adapters import Eagle3DraftModel, EagleDraftModel
    from eda_adapters.training import EagleTrainer, EagleTrainingConfig

    target = _target(architecture)
    draft = (EagleDraftModel if architecture == "eagle" else Eagle3DraftModel).from_target(target)
    draft.load_state_dict(load_file(tmp_path / "initial.safetensors"))
    single = EagleTrainer(model=draft, target_model=target, args=EagleTrainingConfig(**_stage1_args(
        str(tmp_path / "single"), 4, architecture)), train_dataset=Dataset.from_dict({"input_ids": _ragged_rows()}))
    single.train()
    torch.testing.assert_close(single.model.fc.weight, load_file(tmp_path / "stage1_fc.safetensors")["fc.weight"],
                               rtol=1e-5, atol=1e-6)
