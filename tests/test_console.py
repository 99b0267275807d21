"""The quiet console: one bar and a summary per training, Trainer log dicts in a file, noise silenced, --verbose."""

from __future__ import annotations

import json
import warnings

import datasets
import torch
from conftest import make_target
from datasets import Dataset
from transformers import logging as transformers_logging

from eda_adapters.console import TRAINER_LOG, bar_options, quiet_console
from eda_adapters.training import EagleTrainer, EagleTrainingConfig


def _train(tmp_path, name: str, disable_tqdm: bool | None) -> EagleTrainer:
    target = make_target("llama")
    generator = torch.Generator().manual_seed(0)
    data = Dataset.from_dict({"input_ids": torch.randint(3, 97, (16, 12), generator=generator).tolist()})
    config = EagleTrainingConfig(
        output_dir=str(tmp_path / name), max_steps=6, logging_steps=2, per_device_train_batch_size=4,
        save_strategy="no", report_to=[], use_cpu=True, disable_tqdm=disable_tqdm, seed=0,
        include_num_input_tokens_seen="non_padding",
    )
    trainer = EagleTrainer(target_model=target, args=config, train_dataset=data)
    trainer.train()
    return trainer


def test_quiet_training_shows_a_summary_and_writes_the_log_dicts_to_a_file(tmp_path, capsys):
    with quiet_console():  # the default disable_tqdm: transformers would derive True from the lowered log level
        _train(tmp_path, "quiet", disable_tqdm=None)
        hidden = EagleTrainingConfig(output_dir=str(tmp_path / "hidden"), use_cpu=True, disable_tqdm=True)
    assert hidden.disable_tqdm is True  # an explicit choice stands
    out, err = capsys.readouterr()
    assert "{'loss'" not in out + err and "'grad_norm'" not in out + err
    summary = [line for line in out.splitlines() if line.startswith("train quiet:")]
    assert len(summary) == 1 and "6 steps" in summary[0] and "loss" in summary[0] and "tokens/s" in summary[0]
    logged = [json.loads(line) for line in (tmp_path / "quiet" / TRAINER_LOG).read_text().splitlines()]
    assert [entry["step"] for entry in logged if "loss" in entry] == [2, 4, 6]


def test_outside_the_quiet_console_the_trainer_prints_as_transformers_does(tmp_path, capsys):
    _train(tmp_path, "loud", disable_tqdm=True)  # transformers' PrinterCallback
    out = capsys.readouterr().out
    assert out.count("'loss'") == 3
    assert not (tmp_path / "loud" / TRAINER_LOG).exists()


def test_quiet_console_silences_noise_and_restores_it(capsys):
    assert datasets.utils.logging.is_progress_bar_enabled()
    with warnings.catch_warnings(record=True) as caught, quiet_console():
        assert not datasets.utils.logging.is_progress_bar_enabled()
        assert not transformers_logging.is_progress_bar_enabled()
        assert bar_options(True) == {"disable": False, "leave": False}
        warnings.warn_explicit("old API", FutureWarning, "modeling_utils.py", 1, module="transformers.modeling_utils")
        warnings.warn_explicit("kept", UserWarning, "ours.py", 1, module="eda_adapters.ours")
        Dataset.from_dict({"a": [1, 2]}).map(lambda row: row)
    assert [str(w.message) for w in caught] == ["kept"]  # only transformers' FutureWarning is silenced
    assert "Map" not in capsys.readouterr().err
    assert datasets.utils.logging.is_progress_bar_enabled() and transformers_logging.is_progress_bar_enabled()
    assert bar_options(True) == {"disable": False, "leave": True}
    with quiet_console(verbose=True):
        assert datasets.utils.logging.is_progress_bar_enabled()
