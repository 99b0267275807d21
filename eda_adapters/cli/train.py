"""`eda train-draft` (stage 1) and `eda adapt` (stage 2): the trainers from the command line, like `trl sft`.

Every field of the trainer's config ([`EagleTrainingConfig`] / [`EdaTrainingConfig`], i.e. all of
`transformers.TrainingArguments` plus the draft objective) is a flag of the same name, and so is every adapter field
of [`EdaConfig`] for `eda adapt`. `--config run.yaml` reads the same names from a YAML file; flags given on the command
line win over the file. `--resume_from_checkpoint last` resumes from the newest finished checkpoint, or starts
afresh if there is none: rerun the same command after a crash. Launch on several GPUs with
`accelerate launch -m eda_adapters train-draft ...`.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import os
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, get_type_hints

from transformers import HfArgumentParser

from ..schemas.config_ranges import RANGE_KEY
from ..training.eagle_config import EagleTrainingConfig
from ..training.eda_config import EdaTrainingConfig
from ..tuners import EdaConfig
from ..tuners.eda.config import USER_FIELDS
from ..errors import EdaInputError

#: Fields of EdaConfig exposed as `eda adapt` flags (the rest is filled in by PEFT or set automatically).
ADAPTER_FIELDS = USER_FIELDS
#: Fields of EdaConfig exposed as `eda train-draft --joint_private` flags (the stage-1 private expert's shape).
JOINT_ADAPTER_FIELDS = ADAPTER_FIELDS[:5]


@dataclass
class DraftScriptArguments:
    """Models and data of `eda train-draft`."""

    target: str | None = field(
        default=None,
        metadata={"help": "Base target: HF folder, Hub id, .gguf file or smollm2-135m-instruct (required)."},
    )
    dataset: str | None = field(
        default=None,
        metadata={
            "help": "Training data (required): a regenerated-data directory, a .jsonl/.json/.parquet/.arrow file or a "
            "save_to_disk directory with an input_ids column (+ optional loss_mask), or a cached-feature directory "
            "(eda extract-features)."
        },
    )
    eval_dataset: str | None = field(default=None, metadata={"help": "Held-out data in the same format."})
    tau_dataset: str | None = field(
        default=None, metadata={"help": "Held-out samples whose prompts measure tau during/after training."}
    )
    draft: str | None = field(default=None, metadata={"help": "Warm-start from this draft instead of a fresh one."})
    config: str | None = field(default=None, metadata={"help": "YAML file with any of these flags as keys."})


@dataclass
class TrainDraftScriptArguments(DraftScriptArguments):
    """Models and data of `eda train-draft`, and whether a private expert trains jointly with the shared draft."""

    joint_private: bool = field(
        default=False,
        metadata={
            "help": "The official EDA design's stage 1: train a private EDA expert jointly with the shared draft; "
            "the shared draft is saved to output_dir, the stage-1 adapter to output_dir/stage1_adapter."
        },
    )


@dataclass
class AdaptScriptArguments(DraftScriptArguments):
    """Models and data of `eda adapt`."""

    target: str | None = field(
        default=None, metadata={"help": "Fine-tuned target: HF folder, Hub id, .gguf file or packaged name (required)."}
    )
    draft: str | None = field(default=None, metadata={"help": "The shared stage-1 draft directory (required)."})


COMMANDS = {
    # name: (help, script arguments, trainer config, adapter fields)
    "train-draft": (
        "Stage 1: train a shared EAGLE draft for a base target (EagleTrainer).",
        TrainDraftScriptArguments,
        EagleTrainingConfig,
        JOINT_ADAPTER_FIELDS,
    ),
    "adapt": (
        "Stage 2: train a private EDA adapter of a shared draft for a fine-tuned target (EdaTrainer).",
        AdaptScriptArguments,
        EdaTrainingConfig,
        ADAPTER_FIELDS,
    ),
}


def _dataclass_fields(dtype: type, names: tuple[str, ...] | None = None) -> list[dataclasses.Field]:
    hints = get_type_hints(dtype)
    fields = [f for f in dataclasses.fields(dtype) if f.init and (names is None or f.name in names)]
    for f in fields:
        f.type = hints[f.name]
    return fields


def _add_fields(parser: argparse.ArgumentParser, title: str, fields: list[dataclasses.Field]) -> None:
    """Add one flag per dataclass field (HfArgumentParser's conversion), with no default in the namespace.

    Defaults are suppressed so that `run` can tell flags given on the command line (which win) from the values of a
    `--config` YAML file and the dataclass defaults.
    """
    group = parser.add_argument_group(title)
    start = len(parser._actions)
    for f in fields:
        if RANGE_KEY in f.metadata:  # HfArgumentParser hands every metadata key to argparse: keep ours back
            f = copy.copy(f)  # (the config checks its ranges itself, for flags and YAML alike, in one line)
            f.metadata = MappingProxyType({k: v for k, v in f.metadata.items() if k != RANGE_KEY})
        HfArgumentParser._parse_dataclass_field(group, f)  # registers --name_with_underscores and --name-with-dashes
    for action in parser._actions[start:]:
        if action.default is not argparse.SUPPRESS and action.help is not None and action.default is not None:
            action.help = f"{action.help} (default: {action.default})"
        action.default = argparse.SUPPRESS
        action.required = False


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register `train-draft` and `adapt` (both live here); returns the one not registered before."""
    for name, (help_text, script_cls, config_cls, adapter_fields) in COMMANDS.items():
        if name in subparsers.choices:
            continue
        parser = subparsers.add_parser(name, help=help_text, description=help_text + " " + __doc__.split("\n\n")[1])
        _add_fields(parser, "models and data", _dataclass_fields(script_cls))
        if adapter_fields:
            _add_fields(parser, "adapter (EdaConfig)", _dataclass_fields(EdaConfig, adapter_fields))
        _add_fields(parser, f"training ({config_cls.__name__})", _dataclass_fields(config_cls))
        return parser
    raise RuntimeError("train-draft and adapt are both registered already.")


def _read_yaml(path: str, hints: dict[str, Any]) -> dict[str, Any]:
    """The `--config` file's values, converted to the fields' types the way the same values given as flags are."""
    from ..validation import coerce_config_values, read_yaml_mapping

    return coerce_config_values(read_yaml_mapping(path, "--config"), hints, f"--config {path}")


def resolve_arguments(command: str, args: argparse.Namespace) -> tuple[Any, Any, EdaConfig | None]:
    """(script arguments, trainer config, adapter config or None) from flags over `--config` YAML over defaults."""
    _, script_cls, config_cls, adapter_fields = COMMANDS[command]
    groups = {
        "script": [f.name for f in _dataclass_fields(script_cls)],
        "adapter": list(adapter_fields),
        "config": [f.name for f in _dataclass_fields(config_cls)],
    }
    flags = {k: v for k, v in vars(args).items() if not k.startswith("_") and k != "command"}
    hints = {
        f.name: f.type
        for cls, names in ((script_cls, None), (EdaConfig, adapter_fields), (config_cls, None))
        for f in _dataclass_fields(cls, names)
    }
    values = _read_yaml(flags["config"], hints) if flags.get("config") else {}
    known = {name for names in groups.values() for name in names}
    unknown = sorted(set(values) - known)
    if unknown:
        raise EdaInputError(
            f"Unknown key(s) {unknown} in {flags['config']}: use the names of `eda {command} --help` flags."
        )
    values.update(flags)
    pick = {group: {k: values[k] for k in names if k in values} for group, names in groups.items()}
    script = script_cls(**pick["script"])
    for required in ("target", "dataset", "draft") if command == "adapt" else ("target", "dataset"):
        if getattr(script, required) is None:
            flag = "--" + required.replace("_", "-")
            raise EdaInputError(f"eda {command} needs {flag} (a flag or a key of the --config YAML file).")
    wants_adapter = command == "adapt" or getattr(script, "joint_private", False)
    if pick["adapter"] and not wants_adapter:
        raise EdaInputError(f"{sorted(pick['adapter'])} shape the joint private expert: add --joint-private true.")
    adapter = EdaConfig(**pick["adapter"]) if wants_adapter else None
    return script, config_cls(**pick["config"]), adapter


def _check_inputs(script: Any, config: Any, stage: str) -> None:
    """What can be checked before any model is loaded: damaged weights, a missing draft, an unusable output_dir."""
    from ..training.run_signature import check_training_output_dir
    from ..validation import check_model_dir, check_output_path

    check_model_dir(script.target, "--target", "target model")
    check_model_dir(script.draft, "--draft", "draft", required=True)
    check_output_path(config.output_dir, "--output-dir")
    check_training_output_dir(config.output_dir, {"stage": stage})  # the trainer compares the whole run signature later


def run(args: argparse.Namespace) -> int:
    from ..training import EagleTrainer, EdaTrainer

    script, config, adapter = resolve_arguments(args.command, args)
    datasets = {  # paths: the trainer reads them (cached-feature directories included)
        "train_dataset": script.dataset,
        "eval_dataset": script.eval_dataset,
        "tau_dataset": script.tau_dataset,
    }
    for flag, path in (
        ("dataset", script.dataset), ("eval_dataset", script.eval_dataset), ("tau_dataset", script.tau_dataset)
    ):
        if path is not None and not os.path.exists(path):  # fail before loading any model
            raise FileNotFoundError(f"--{flag}: no dataset at {path!r}.")
    if config.dataset_name is None:
        config.dataset_name = script.dataset
    trainer_cls = EdaTrainer if args.command == "adapt" else EagleTrainer
    _check_inputs(script, config, trainer_cls.stage)
    trainer = trainer_cls(
        model=script.draft, target_model=script.target, args=config, peft_config=adapter, **datasets
    )
    resume = config.resume_from_checkpoint  # "last": the newest finished checkpoint if any, else a fresh start
    if isinstance(resume, str) and resume.lower() in ("true", "last"):
        resume = True if resume.lower() == "true" else "last"
    trainer.train(resume_from_checkpoint=resume)  # a NonFiniteLossError is reported in one line, like bad input
    trainer.save_model()  # with --push_to_hub, this also uploads with our model card (EagleTrainer.push_to_hub)
    if trainer.is_world_process_zero():
        tau = f", tau {trainer.last_tau:.3f}" if trainer.last_tau is not None else ""
        print(f"eda {args.command}: saved to {config.output_dir} after {trainer.state.global_step} steps{tau}.")
    return 0
