"""Bad input, tried as a new user would (issue 15): every case is refused in one line that names the input, with exit
code 2, before any expensive work; the silent cases (lost work, wrong results) are refused with nothing deleted.

The CLI runs in-process through `eda_adapters.cli.main(argv)`; the models are tiny and built from config.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import re
import shutil
import warnings
from pathlib import Path

import pytest
import torch
import yaml
from conftest import make_target
from peft import PeftModel, get_peft_model
from test_data_common import PROMPTS, fresh_process_state, make_tokenizer  # noqa: F401
from transformers import BertConfig, BertForMaskedLM

from eda_adapters import EagleDraftModel, EdaConfig, RunMismatchError
from eda_adapters.cli import main
from eda_adapters.errors import DraftMismatchWarning, EdaInputError, describe_input_error

TRAIN = ["--use_cpu", "true", "--report_to", "none", "--disable_tqdm", "true", "--save_strategy", "no"]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bad_input")
    tokenizer = make_tokenizer()
    for name, model in (
        ("base", make_target("llama")),
        ("ft", make_target("llama", seed=1)),
        ("qwen", make_target("qwen2", seed=2)),
    ):
        model.save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
    torch.manual_seed(0)
    bert = BertForMaskedLM(BertConfig(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=4, max_position_embeddings=256))
    bert.save_pretrained(root / "bert")
    tokenizer.save_pretrained(root / "bert")
    base = make_target("llama")
    for name, seed in (("draft", 0), ("draft2", 1)):  # same shapes, other weights
        torch.manual_seed(seed)
        EagleDraftModel.from_target(base).save_pretrained(root / name)
    draft = EagleDraftModel.from_pretrained(root / "draft", target_model=base)
    get_peft_model(draft, EdaConfig(init_private_weights="random")).save_pretrained(root / "adapter")
    (root / "prompts.jsonl").write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    (root / "prompts.txt").write_text("\n".join(PROMPTS) + "\n")
    rows = [{"input_ids": list(range(5, 17)), "loss_mask": [0] * 4 + [1] * 8} for _ in range(8)]
    (root / "data.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return root


def error(capsys, argv: list[str], *names: str) -> str:
    """Run the CLI, require exit code 2 and one line `eda CMD: error: ...` naming every one of `names`."""
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    line = err.splitlines()[-1] if err else ""
    command = next(a for a in argv if not a.startswith("-"))
    assert line.startswith(f"eda {command}: error: "), err
    assert "Traceback" not in err and not [x for x in err.splitlines() if x.startswith("eda ") and x != line]
    for name in names:
        assert str(name) in line, line
    return line


def truncated_copy(src: Path, dst: Path) -> Path:
    """A copy of the directory `src` whose every .safetensors file lost its second half."""
    shutil.copytree(src, dst)
    for file in dst.rglob("*.safetensors"):
        data = file.read_bytes()
        file.write_bytes(data[: len(data) // 2])
    return dst


def digest(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------------------------ the error boundary
def test_debug_shows_the_traceback_and_bugs_keep_theirs(files, tmp_path, monkeypatch, capsys):
    empty = tmp_path / "empty.jsonl"
    empty.touch()
    argv = ["regenerate", "--target", str(files / "ft"), "--prompts", str(empty), "--output-dir", str(tmp_path / "o")]
    error(capsys, argv, empty)
    with pytest.raises(EdaInputError, match="is empty"):
        main(["--debug", *argv])

    import eda_adapters.research.commands.demo as demo_cli

    def bug(args):
        raise RuntimeError("a bug, not bad input")

    monkeypatch.setattr(demo_cli, "run", bug)
    with pytest.raises(RuntimeError, match="a bug"):  # real bugs are not hidden behind one line
        main(["demo", "--cache-dir", str(tmp_path / "demo")])


@pytest.mark.parametrize("bug", [TypeError("unsupported operand type(s) for +: 'int' and 'str'"),
                                 ValueError("too many values to unpack (expected 2)")])
def test_a_type_or_value_error_from_a_bug_keeps_its_traceback(files, tmp_path, monkeypatch, capsys, bug):
    """Only `EdaInputError` (our checks), `OSError` and the listed load errors read as bad input: a `TypeError` or
    `ValueError` raised by a bug deep in a command reaches the user with its traceback, not as one line."""
    regenerate_module = importlib.import_module("eda_adapters.data.regenerate")  # the module, not the function

    def buggy(*args, **kwargs):
        raise bug

    monkeypatch.setattr(regenerate_module, "regenerate", buggy)
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "hello"}\n')
    argv = ["regenerate", "--target", str(files / "ft"), "--prompts", str(prompts), "--output-dir", str(tmp_path / "o")]
    with pytest.raises(type(bug), match=re.escape(str(bug))):
        main(argv)
    assert "error:" not in capsys.readouterr().err
    assert describe_input_error(bug) is None
    assert describe_input_error(EdaInputError("--budget must be >= 1")) == "--budget must be >= 1"


def test_foreign_errors_read_as_one_line(tmp_path):
    from datasets.exceptions import DatasetGenerationError
    from safetensors import SafetensorError

    try:
        yaml.safe_load("a: 1\n  b: [\n")
    except yaml.YAMLError as err:
        assert describe_input_error(err).startswith("malformed YAML at line 2")
    assert "damaged" in describe_input_error(SafetensorError("incomplete metadata"))
    try:
        try:
            json.loads("{oops")
        except json.JSONDecodeError as cause:
            raise DatasetGenerationError("An error occurred while generating the dataset") from cause
    except DatasetGenerationError as err:
        assert describe_input_error(err).startswith("cannot read the dataset: malformed JSON: Expecting property")
    assert describe_input_error(FileExistsError(17, "File exists", str(tmp_path))) == f"File exists: {tmp_path}"
    assert describe_input_error(RuntimeError("size mismatch")) is None  # a bug keeps its traceback
    assert describe_input_error(KeyError("x")) is None


# ------------------------------------------------------------------------------------------------ prompt files
@pytest.mark.parametrize(
    "content, expected",
    [
        (b"", "is empty"),
        (b'{"prompt": "what is two"}\n{"prompt": "add three"\n', "line 2: not valid JSON"),
        (b'{"prompt": "what is two"}\n["a list"]\n', "line 2: a list"),
        (b'{"prompt": "what is two"}\n{"prompt": "tw\xffo"}\n', "is not UTF-8 text: line 2"),
    ],
    ids=["empty", "broken-row", "not-an-object", "non-utf8"],
)
def test_bad_jsonl_prompts_name_the_file_and_line(files, tmp_path, capsys, content, expected):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_bytes(content)
    out = tmp_path / "out"
    line = error(capsys, ["regenerate", "--target", str(files / "ft"), "--prompts", str(prompts), "--output-dir",
                          str(out)], prompts, expected)
    assert "DatasetGenerationError" not in line and not out.exists()


def test_bench_non_utf8_prompts_before_loading(files, tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_bytes(b"what is two\nadd thr\xffee\n")
    error(capsys, ["bench", "--target", str(files / "ft"), "--draft", str(files / "draft"), "--prompts", str(prompts),
                   "--output-dir", str(tmp_path / "bench")], prompts, "not UTF-8", "line 2")


# ------------------------------------------------------------------------------------------------ damaged weights
def test_truncated_safetensors_are_named(files, tmp_path, capsys):
    model = truncated_copy(files / "ft", tmp_path / "ft")
    draft = truncated_copy(files / "draft", tmp_path / "draft")
    adapter = truncated_copy(files / "adapter", tmp_path / "adapter")
    for argv, damaged in [
        (["regenerate", "--target", str(model), "--prompts", str(files / "prompts.jsonl"), "--output-dir",
          str(tmp_path / "r")], model / "model.safetensors"),
        (["bench", "--target", str(files / "ft"), "--draft", str(draft), "--prompts", str(files / "prompts.txt"),
          "--output-dir", str(tmp_path / "b")], draft / "model.safetensors"),
        (["bench", "--target", str(files / "ft"), "--draft", str(files / "draft"), "--adapter", str(adapter),
          "--prompts", str(files / "prompts.txt"), "--output-dir", str(tmp_path / "b")],
         adapter / "adapter_model.safetensors"),
        (["export", "--draft", str(draft), "--output-dir", str(tmp_path / "e")], draft / "model.safetensors"),
        (["adapt", "--target", str(model), "--draft", str(files / "draft"), "--dataset", str(files / "data.jsonl"),
          "--output-dir", str(tmp_path / "a"), *TRAIN], model / "model.safetensors"),
    ]:
        error(capsys, argv, damaged, "is damaged")


def test_truncated_feature_shard_is_named(files, tmp_path, capsys):
    assert main(["extract-features", "--target", str(files / "ft"), "--dataset", str(files / "data.jsonl"),
                 "--output-dir", str(tmp_path / "features")]) == 0
    features = truncated_copy(tmp_path / "features", tmp_path / "damaged")
    shard = next(features.rglob("*.safetensors"))
    error(capsys, ["adapt", "--target", str(files / "ft"), "--draft", str(files / "draft"), "--dataset", str(features),
                   "--output-dir", str(tmp_path / "a"), "--max_steps", "1", *TRAIN], shard, "is damaged")


# ------------------------------------------------------------------------------------------------ YAML configs
def test_yaml_values_convert_like_flags(files, tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text(f"target: {files / 'base'}\ndataset: {files / 'data.jsonl'}\nlearning_rate: 1e-3\nmax_steps: 1\n")
    assert main(["train-draft", "--config", str(config), "--output-dir", str(tmp_path / "d"), *TRAIN]) == 0
    signature = json.loads((tmp_path / "d" / "run_signature.json").read_text())
    assert signature["hyperparameters"]["learning_rate"] == 0.001  # PyYAML's string "1e-3", read as the flag is

    config.write_text(f"target: {files / 'base'}\ndataset: {files / 'data.jsonl'}\nmax_steps: two\n")
    error(capsys, ["train-draft", "--config", str(config), "--output-dir", str(tmp_path / "d2"), *TRAIN],
          config, "max_steps must be an integer", "'two'")
    config.write_text(f"target: {files / 'base'}\n dataset: [\n")
    error(capsys, ["train-draft", "--config", str(config), "--output-dir", str(tmp_path / "d3"), *TRAIN],
          config, "line 2", "malformed YAML")
    assert not (tmp_path / "d2").exists() and not (tmp_path / "d3").exists()


@pytest.mark.parametrize(
    "change, expected",
    [
        ({"budget": 0}, "budget must be at least 1"),
        ({"budget_curve": [0.0]}, "budget_curve"),
        ({"num_eval_prompts": 50}, "50 are held out"),
        ({"budget": 100}, "budget 100 does not fit its pool of 5"),
        ({"stage1_learning_rate": "fast"}, "stage1_learning_rate must be a number"),
        ({"num_eval_prompts": "two"}, "num_eval_prompts must be an integer"),
        (None, "malformed YAML"),
    ],
    ids=["budget-0", "curve-0", "eval-over-pool", "budget-over-pool", "lr-string", "eval-string", "malformed"],
)
def test_experiment_config_is_checked_before_any_work(files, tmp_path, capsys, change, expected):
    domain = {"name": "math", "target": str(files / "ft"), "prompts": str(files / "prompts.jsonl"),
              "num_eval_prompts": 2}
    values = {"base_target": str(files / "base"), "general_prompts": str(files / "prompts.jsonl"),
              "output_dir": str(tmp_path / "exp"), "domains": [domain], "budget_curve": [0.5], "stage1_epochs": 1}
    for key, value in (change or {}).items():
        (domain if key == "num_eval_prompts" else values)[key] = value
    config = tmp_path / "exp.yaml"
    config.write_text(yaml.safe_dump(values) if change is not None else "base_target: x\n  domains: [\n")
    line = error(capsys, ["experiment", "--config", str(config)], expected)
    if change is None or isinstance(next(iter(change.values())), str):
        assert str(config) in line
    assert not (tmp_path / "exp").exists()  # nothing regenerated, nothing trained


def test_experiment_yaml_numbers_are_coerced(files, tmp_path):
    from eda_adapters.research.experiment import ExperimentConfig

    config = tmp_path / "exp.yaml"
    config.write_text(yaml.safe_dump({
        "base_target": "b", "general_prompts": "g", "output_dir": "o", "stage1_learning_rate": "1e-3", "budget": 3,
        "domains": [{"name": "math", "target": "t", "prompts": "p", "num_eval_prompts": "4"}],
    }))
    loaded = ExperimentConfig.from_yaml(config)
    assert loaded.stage1_learning_rate == 0.001 and loaded.domains[0].num_eval_prompts == 4
    assert loaded.budget == 3 and isinstance(loaded.budget, int)  # a count stays a count


# ------------------------------------------------------------------------------------------------ missing/odd paths
def test_adapt_missing_draft_says_the_directory_does_not_exist(files, tmp_path, capsys):
    missing = tmp_path / "no-such-draft"
    line = error(capsys, ["adapt", "--target", str(files / "ft"), "--draft", str(missing), "--dataset",
                          str(files / "data.jsonl"), "--output-dir", str(tmp_path / "a"), *TRAIN],
                 missing, "does not exist")
    assert "Hub" not in line


def test_output_paths_under_a_file_fail_before_any_work(files, tmp_path, capsys):
    a_file = tmp_path / "results"
    a_file.write_text("not a directory")
    error(capsys, ["bench", "--output-dir", str(a_file), "--target-steps", "1000000"], a_file, "is a file")
    error(capsys, ["demo", "--cache-dir", str(a_file / "demo")], a_file, "lies under the file")
    assert a_file.read_text() == "not a directory"


def test_extract_features_loss_mask_shorter_than_input_ids(files, tmp_path, capsys):
    data = tmp_path / "short.jsonl"
    data.write_text(json.dumps({"input_ids": [5, 6, 7, 8], "loss_mask": [1, 1, 1, 1]}) + "\n"
                    + json.dumps({"input_ids": [5, 6, 7, 8], "loss_mask": [0, 1]}) + "\n")
    error(capsys, ["extract-features", "--target", str(files / "ft"), "--dataset", str(data), "--output-dir",
                   str(tmp_path / "f")], data, "row 1 has 4 input_ids and 2 loss_mask values")


@pytest.mark.parametrize("field, value", [("num_private_experts", 2), ("private_intermediate_size", 16)])
def test_adapter_config_disagreeing_with_its_weights(files, tmp_path, capsys, field, value):
    adapter = tmp_path / "adapter"
    shutil.copytree(files / "adapter", adapter)
    config = json.loads((adapter / "adapter_config.json").read_text())
    config[field] = value
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    error(capsys, ["export", "--draft", str(files / "draft"), "--adapter", str(adapter), "--output-dir", str(tmp_path / "e")],
          adapter, "weights do not match its adapter_config.json")
    error(capsys, ["bench", "--target", str(files / "ft"), "--draft", str(files / "draft"), "--adapter", str(adapter),
                   "--prompts", str(files / "prompts.txt"), "--output-dir", str(tmp_path / "b")],
          adapter, "weights do not match its adapter_config.json")
    assert not (tmp_path / "e").exists() and not (tmp_path / "b").exists()


# ------------------------------------------------------------------------------------------------ silent case 1
def test_export_refuses_an_output_overlapping_its_inputs(files, tmp_path, capsys):
    adapter = tmp_path / "adapter"
    shutil.copytree(files / "adapter", adapter)
    before = digest(adapter)
    draft_before = digest(files / "draft")
    for out, relation in ((adapter, "is the input --adapter"), (adapter / "merged", "lies inside the input --adapter"),
                          (tmp_path, "contains the input --adapter")):
        error(capsys, ["export", "--draft", str(files / "draft"), "--adapter", str(adapter), "--output-dir", str(out),
                       "--overwrite"], out, relation)
    error(capsys, ["export", "--draft", str(files / "draft"), "--output-dir", str(files / "draft"), "--overwrite"],
          "is the input --draft")
    assert digest(adapter) == before and digest(files / "draft") == draft_before


# ------------------------------------------------------------------------------------------------ silent case 2
def test_trainers_refuse_another_runs_output_dir(files, tmp_path, capsys):
    draft_dir = tmp_path / "draft"
    assert main(["train-draft", "--target", str(files / "base"), "--dataset", str(files / "data.jsonl"),
                 "--output-dir", str(draft_dir), "--max_steps", "1", *TRAIN]) == 0
    before = digest(draft_dir)
    error(capsys, ["adapt", "--target", str(files / "ft"), "--draft", str(draft_dir), "--dataset",
                   str(files / "data.jsonl"), "--output-dir", str(draft_dir), "--max_steps", "1", *TRAIN],
          draft_dir, "holds another training run", "stage")
    assert digest(draft_dir) == before

    stranger = tmp_path / "notes"
    stranger.mkdir()
    (stranger / "todo.txt").write_text("mine")
    error(capsys, ["train-draft", "--target", str(files / "base"), "--dataset", str(files / "data.jsonl"),
                   "--output-dir", str(stranger), "--max_steps", "1", *TRAIN], stranger, "not a training run made here")
    assert sorted(p.name for p in stranger.iterdir()) == ["todo.txt"]

    # the run's own directory: the same run can go on (resume from its checkpoint)
    adapter_dir = tmp_path / "adapter"
    common = ["adapt", "--target", str(files / "ft"), "--draft", str(draft_dir), "--dataset", str(files / "data.jsonl"),
              "--output-dir", str(adapter_dir), "--use_cpu", "true", "--report_to", "none", "--disable_tqdm", "true",
              "--save_strategy", "steps", "--save_steps", "1", "--per_device_train_batch_size", "4"]
    assert main([*common, "--max_steps", "1"]) == 0
    assert main([*common, "--max_steps", "2", "--resume_from_checkpoint", "true"]) == 0
    assert (adapter_dir / "checkpoint-2").is_dir()
    # ... but not with another draft of the same shape (the adapter would meet a draft it was not trained on)
    before = digest(adapter_dir)
    error(capsys, [*common, "--draft", str(files / "draft"), "--max_steps", "3"], adapter_dir, "shared_fingerprint")
    assert digest(adapter_dir) == before


def test_python_trainer_refuses_another_runs_output_dir(files, tmp_path):
    from eda_adapters.training import EdaTrainer, EdaTrainingConfig

    out = tmp_path / "out"
    out.mkdir()
    (out / "model.safetensors").write_bytes(b"somebody's weights")
    target = make_target("llama", seed=1)
    trainer = EdaTrainer(
        model=EagleDraftModel.from_pretrained(files / "draft", target_model=target), target_model=target,
        args=EdaTrainingConfig(output_dir=str(out), max_steps=1, use_cpu=True, report_to=[], save_strategy="no"),
        train_dataset=str(files / "data.jsonl"), peft_config=EdaConfig(),
    )
    with pytest.raises(RunMismatchError, match="holds no run_signature.json: it is not a training run made here"):
        trainer.train()
    assert sorted(p.name for p in out.iterdir()) == ["model.safetensors"]


# ------------------------------------------------------------------------------------------------ silent case 3
@pytest.mark.parametrize("case", ["zero-masks", "zero-masks-cached-features", "max-length-below-prompts"])
def test_nothing_to_train_on(files, tmp_path, capsys, case):
    data = files / "data.jsonl"
    extra = ["--max_length", "4"]  # every row's first 4 tokens are prompt
    if case.startswith("zero-masks"):
        data = tmp_path / "zero.jsonl"
        data.write_text(json.dumps({"input_ids": list(range(5, 17)), "loss_mask": [0] * 12}) + "\n")
        extra = []
    if case == "zero-masks-cached-features":
        assert main(["extract-features", "--target", str(files / "ft"), "--dataset", str(data), "--output-dir",
                     str(tmp_path / "features")]) == 0
        data = tmp_path / "features"
    out = tmp_path / "adapter"
    error(capsys, ["adapt", "--target", str(files / "ft"), "--draft", str(files / "draft"), "--dataset", str(data),
                   "--output-dir", str(out), "--max_steps", "1", *extra, *TRAIN], "0 usable tokens")
    assert not out.exists() or not any(out.iterdir())  # no adapter saved


# ------------------------------------------------------------------------------------------------ silent case 4
def test_masked_lm_is_refused_everywhere(files, tmp_path, capsys):
    bert = files / "bert"
    error(capsys, ["regenerate", "--target", str(bert), "--prompts", str(files / "prompts.jsonl"), "--output-dir",
                   str(tmp_path / "r")], bert, "not a decoder-only causal LM")
    assert not (tmp_path / "r" / "data.jsonl").exists()
    error(capsys, ["extract-features", "--target", str(bert), "--dataset", str(files / "data.jsonl"), "--output-dir",
                   str(tmp_path / "f")], bert, "not a decoder-only causal LM")
    error(capsys, ["select", "--dataset", str(files / "data.jsonl"), "--base-target", str(files / "base"), "--target",
                   str(bert), "--budget", "2", "--output-dir", str(tmp_path / "s")], bert, "causal LM")
    error(capsys, ["train-draft", "--target", str(bert), "--dataset", str(files / "data.jsonl"), "--output-dir",
                   str(tmp_path / "d"), "--max_steps", "1", *TRAIN], bert, "not a decoder-only causal LM")
    assert not (tmp_path / "s").exists() and not (tmp_path / "d" / "model.safetensors").exists()


def test_select_needs_base_and_finetune_of_one_architecture(files, tmp_path, capsys):
    error(capsys, ["select", "--dataset", str(files / "data.jsonl"), "--base-target", str(files / "base"), "--target",
                   str(files / "qwen"), "--budget", "2", "--output-dir", str(tmp_path / "s")], "llama", "qwen2")
    assert not (tmp_path / "s").exists()


# ------------------------------------------------------------------------------------------------ silent case 5
def test_adapter_on_another_draft_of_the_same_shape(files, tmp_path, capsys):
    line = error(capsys, ["bench", "--target", str(files / "ft"), "--draft", str(files / "draft2"), "--adapter",
                          str(files / "adapter"), "--prompts", str(files / "prompts.txt"), "--num-prompts", "1",
                          "--max-new-tokens", "2", "--output-dir", str(tmp_path / "b")],
                 "trained on another draft", "--allow-fingerprint-mismatch")
    assert line.count("--allow-fingerprint-mismatch") == 1 and not (tmp_path / "b").exists()

    target = make_target("llama")
    other = EagleDraftModel.from_pretrained(files / "draft2", target_model=target)
    with pytest.warns(DraftMismatchWarning, match="trained on another draft"):
        PeftModel.from_pretrained(other, files / "adapter")
    own = EagleDraftModel.from_pretrained(files / "draft", target_model=target)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DraftMismatchWarning)
        PeftModel.from_pretrained(own, files / "adapter")  # its own draft: no warning


# ------------------------------------------------------------------------------------------------ found on the way
def test_other_bad_input_found_while_trying(files, tmp_path, capsys):
    data = str(files / "data.jsonl")
    adapt = ["adapt", "--target", str(files / "ft"), "--dataset", data, "--output-dir", str(tmp_path / "a"), *TRAIN]
    # an adapter directory given as the draft used to end in a Hub connection error
    error(capsys, [*adapt, "--draft", str(files / "adapter")], files / "adapter", "holds an EDA adapter")
    # a YAML key without a value used to fail deep in TrainingArguments ("'<=' not supported ...")
    config = tmp_path / "run.yaml"
    config.write_text(f"draft: {files / 'draft'}\nlearning_rate:\n")
    error(capsys, [*adapt, "--config", str(config)], config, "learning_rate has no value")
    error(capsys, [*adapt, "--config", str(tmp_path)], tmp_path, "is a directory")
    # zero training steps used to save an untrained draft with exit code 0
    error(capsys, ["train-draft", "--target", str(files / "base"), "--dataset", data, "--output-dir",
                   str(tmp_path / "d"), "--max_steps", "-1", "--num_train_epochs", "0", *TRAIN], "0 training steps")
    assert not (tmp_path / "d" / "model.safetensors").exists()
    # a masked LM as the benchmark target used to crash in generate ("'NoneType' object has no attribute 'crop'")
    error(capsys, ["bench", "--target", str(files / "bert"), "--draft", str(files / "draft"), "--prompts",
                   str(files / "prompts.txt"), "--output-dir", str(tmp_path / "b")], files / "bert", "causal LM")


def test_python_load_of_an_adapter_whose_config_disagrees_with_its_weights(files, tmp_path):
    adapter = tmp_path / "adapter"
    shutil.copytree(files / "adapter", adapter)
    config = json.loads((adapter / "adapter_config.json").read_text())
    config["num_private_experts"] = 2  # the weights hold one expert
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    draft = EagleDraftModel.from_pretrained(files / "draft", target_model=make_target("llama"))
    with pytest.raises(ValueError, match="do not match its adapter_config.json.*eda_"):
        PeftModel.from_pretrained(draft, adapter)
