"""`eda train-draft` and `eda adapt`: flags and YAML map onto the trainer configs; bad input is one line."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from conftest import make_target
from peft import PeftModel

from eda_adapters import EagleDraftModel
from eda_adapters.cli import main




@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    make_target("llama").save_pretrained(root / "base")
    make_target("llama", seed=1).save_pretrained(root / "finetuned")
    generator = torch.Generator().manual_seed(0)
    with open(root / "data.jsonl", "w") as handle:
        for _ in range(16):
            ids = torch.randint(3, 97, (12,), generator=generator).tolist()
            handle.write(json.dumps({"input_ids": ids, "loss_mask": [0] * 4 + [1] * 8}) + "\n")
    return root


COMMON = ["--use_cpu", "true", "--report_to", "none", "--disable_tqdm", "true", "--save_strategy", "no"]


def test_train_draft_then_adapt(files, capsys):
    draft_dir = files / "draft"
    code = main([
        "train-draft", "--target", str(files / "base"), "--dataset", str(files / "data.jsonl"),
        "--output-dir", str(draft_dir), "--max_steps", "2", "--per_device_train_batch_size", "4",
        "--ce_weight", "0.5", *COMMON,
    ])
    assert code == 0
    assert "saved to" in capsys.readouterr().out
    finetuned = make_target("llama", seed=1)
    draft = EagleDraftModel.from_pretrained(draft_dir, target_model=finetuned)
    assert draft.config.num_hidden_layers == 1

    config = files / "adapt.yaml"
    config.write_text(yaml.safe_dump({
        "target": str(files / "finetuned"), "draft": str(draft_dir), "dataset": str(files / "data.jsonl"),
        "tau_dataset": str(files / "data.jsonl"), "tau_num_prompts": 2, "tau_max_new_tokens": 8,
        "num_private_experts": 2, "private_intermediate_size": 16, "max_steps": 5, "learning_rate": 0.01,
    }))
    adapter_dir = files / "adapter"
    code = main([
        "adapt", "--config", str(config), "--output-dir", str(adapter_dir), "--max_steps", "2",
        "--learning-rate", "0.002", *COMMON,
    ])
    assert code == 0
    out = capsys.readouterr().out
    assert "after 2 steps, tau" in out  # --max_steps 2 won over the YAML's 5
    adapter = json.loads((adapter_dir / "adapter_config.json").read_text())
    assert adapter["num_private_experts"] == 2 and adapter["private_intermediate_size"] == 16
    state = json.loads((adapter_dir / "run_signature.json").read_text())
    assert state["hyperparameters"]["learning_rate"] == 0.002  # the flag (dashed alias) won over the YAML value
    reloaded = PeftModel.from_pretrained(draft, adapter_dir)
    assert reloaded.peft_config["default"].num_private_experts == 2


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train-draft", "--dataset", "x.jsonl"], "needs --target"),
        (["adapt", "--target", "t", "--dataset", "d"], "needs --draft"),
        (["train-draft", "--config", "missing.yaml"], "missing.yaml does not exist"),
        (["train-draft", "--target", "{base}", "--dataset", "{root}/nope.jsonl"], "no dataset at"),
        (
            ["train-draft", "--target", "{base}", "--dataset", "{data}", "--feature_noise_std", "-1"],
            "feature_noise_std",
        ),
    ],
)
def test_bad_input_is_one_line(files, capsys, argv, message):
    argv = [a.format(base=files / "base", root=files, data=files / "data.jsonl") for a in argv]
    assert main([*argv, "--output-dir", str(files / "unused"), *COMMON]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err and err.startswith(f"eda {argv[0]}: error:")


def test_unknown_yaml_key(files, capsys):
    config = files / "bad.yaml"
    config.write_text("target: x\nlearning_rat: 0.1\n")
    assert main(["train-draft", "--config", str(config)]) == 2
    assert "Unknown key(s) ['learning_rat']" in capsys.readouterr().err


@pytest.mark.parametrize(
    "command, recipe", [("train-draft", "stage1_draft.yaml"), ("adapt", "stage2_adapt.yaml")]
)
def test_recipe_configs_map_onto_the_trainer_configs(command, recipe):
    from pathlib import Path

    from eda_adapters.cli import build_parser
    from eda_adapters.cli.train import resolve_arguments

    path = Path(__file__).parent.parent / "recipes" / "qwen2.5-math" / recipe
    args = build_parser().parse_args([command, "--config", str(path), "--use_cpu", "true"])
    script, config, adapter = resolve_arguments(command, args)
    raw = yaml.safe_load(path.read_text())
    assert script.target == raw["target"] and config.output_dir == raw["output_dir"]
    assert config.learning_rate == raw["learning_rate"] and config.bf16
    assert (adapter is not None) == (command == "adapt")
