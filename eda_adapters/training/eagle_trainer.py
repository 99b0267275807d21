"""Stage 1: train a shared EAGLE draft for a (frozen) target. What both stages share, and why it is built on
`transformers.Trainer` rather than TRL's bases, is in [`DraftTrainer`] (`draft_trainer.py`).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.trainer import TRAINING_ARGS_NAME

from ..data.draft_vocab import most_frequent_tokens
from ..errors import EdaInputError
from ..models import DRAFT_MODEL_CLASSES, Eagle3DraftModel, EagleDraftModel
from ..models.draft_loading import load_draft
from ..tuners import EdaConfig
from .draft_trainer import DraftTrainer, NonFiniteLossError
from .eagle_config import EagleTrainingConfig
from .joint import adapter_signature, joint_draft, load_joint_draft, save_joint_draft


class EagleTrainer(DraftTrainer):
    r"""Trainer for stage 1: the whole shared EAGLE draft learns from a frozen target.

    Each batch runs the target once (online features; or reads cached features, see `eda_adapters.data`) and shifts
    the sequences so the draft reads (feature_t, token_{t+1}). An EAGLE-1 draft then predicts feature_{t+1} from noisy
    input features and minimises `regression_weight * SmoothL1 + ce_weight * CE(target distribution, draft
    distribution)` ([`eda_adapters.training.eagle_loss`]). An EAGLE-3 draft runs the training-time test: `ttt_steps`
    passes, each on its own previous output, with a soft cross-entropy over its vocabulary per pass
    ([`eda_adapters.training.TrainingTimeTestObjective`]). Logged metrics: `loss`, `ce_loss`, `accuracy` (draft top-1
    == target top-1 on loss positions), `regression_loss` (EAGLE-1), `accuracy_step_k` (EAGLE-3), `num_tokens`, and
    `tau` when a `tau_dataset` is given.

    Args:
        model (`EagleDraftModel`, `Eagle3DraftModel`, `str` or `None`):
            The draft to train, a path to one, or `None` to build the one `args.draft_architecture` names with
            `from_target(target_model, ...)`. The draft is attached to `target_model` (it borrows the target's
            embedding, and an EAGLE-1 draft its output head, frozen).
        target_model (`PreTrainedModel` or `str`):
            The frozen target, or a reference `eda_adapters.load_target` accepts (HF folder, `.gguf`, packaged name).
        args ([`EagleTrainingConfig`]): Training configuration.
        train_dataset, eval_dataset: Samples with `input_ids` (+ optional `loss_mask`, `attention_mask`) for online
            features, or cached features (`CachedFeatureDataset`, or the path of a directory written by
            `eda_adapters.extract_features`; refused with a one-line `ValueError` if they came from another target).
            Paths of regenerated data / .jsonl / .parquet files are read with `eda_adapters.data.load_rows`.
        tau_dataset: Held-out samples whose prompts are used to measure tau (see [`EagleTrainingConfig`]).
        data_collator: Defaults to [`DraftDataCollator`] with the config's `max_length`/`pad_to_multiple_of`.
        callbacks, optimizers: As in `transformers.Trainer`.
        peft_config (`EdaConfig`, *optional*):
            The official EDA design's stage 1: the draft's MLP is a shared expert plus this private adapter from the
            start, and both train jointly (everything but the target's heads), so the shared expert learns what is
            common and the private one what is specific to the base target. `save_model` then writes the shared draft
            to `output_dir` and the stage-1 adapter to `output_dir/stage1_adapter` (start a stage-2 adapter from it
            with `EdaConfig(init_private_weights="copy", init_private_from=...)`). Without it the plain draft trains.

    Example:

    ```python
    >>> config = EagleTrainingConfig(output_dir="draft-qwen2.5-7b", max_steps=1000, bf16=True)
    >>> trainer = EagleTrainer(target_model=target, args=config, train_dataset=dataset)
    >>> trainer.train()
    >>> trainer.save_model()
    ```
    """

    stage = "eagle"
    card_stage = "shared EAGLE draft (stage 1)"

    @staticmethod
    def _draft_vocab(target: PreTrainedModel, args: EagleTrainingConfig, train_dataset: Any) -> torch.Tensor | None:
        """The reduced vocabulary of a draft built here: the most frequent label tokens of the training data."""
        if args.draft_vocab_size is None:
            return None
        if train_dataset is None:
            raise EdaInputError("draft_vocab_size needs a train_dataset to count token frequencies on.")
        eos = getattr(target.generation_config, "eos_token_id", None)
        always = [eos] if isinstance(eos, int) else list(eos or [])
        vocab_size = target.get_input_embeddings().weight.shape[0]
        return most_frequent_tokens(iter(train_dataset), args.draft_vocab_size, vocab_size, always=always)

    def _build_draft(
        self, target: PreTrainedModel, args: EagleTrainingConfig, train_dataset: Any
    ) -> EagleDraftModel | Eagle3DraftModel:
        """The draft `args.draft_architecture` names, sized for `target`."""
        draft_vocab = self._draft_vocab(target, args, train_dataset)
        if args.draft_architecture == "eagle":
            return EagleDraftModel.from_target(
                target,
                num_layers=args.draft_num_layers,
                draft_vocab=draft_vocab,
                draft_head_trainable=not args.freeze_draft_head,
            )
        if args.draft_num_layers != 1 or args.freeze_draft_head:
            raise EdaInputError(
                "An EAGLE-3 draft has one decoder layer and its own trainable head: leave draft_num_layers at 1 and "
                "freeze_draft_head off with draft_architecture='eagle3'."
            )
        return Eagle3DraftModel.from_target(target, draft_vocab=draft_vocab, aux_layer_ids=args.aux_layer_ids)

    def _prepare_draft(
        self,
        model: nn.Module | str | None,
        target: PreTrainedModel,
        args: EagleTrainingConfig,
        peft_config: Any,
        train_dataset: Any = None,
    ) -> nn.Module:
        """Return the trainable draft attached to `target` (stage 1: the whole draft minus the target's heads)."""
        if peft_config is not None and not isinstance(peft_config, EdaConfig):
            raise TypeError(
                f"EagleTrainer's peft_config is an EdaConfig (a private expert trained jointly with the shared draft), "
                f"got {type(peft_config).__name__}: train other adapters with EdaTrainer or PEFT."
            )
        if peft_config is not None and peft_config.init_private_weights == "copy":
            raise EdaInputError(
                "Stage 1 trains the whole draft with its private expert: init_private_weights='copy' is a stage-2 "
                "option (EdaTrainer); use 'random' or 'zero' here."
            )
        if peft_config is not None and peft_config.modules_to_save:
            # every shared module trains in stage 1 anyway: the stage-1 adapter holds the private expert alone
            peft_config = dataclasses.replace(peft_config, modules_to_save=None)
        if model is None:
            model = self._build_draft(target, args, train_dataset)
        elif isinstance(model, (str, os.PathLike)):
            model = load_draft(model, target_model=target)
        elif hasattr(model, "peft_config"):
            raise TypeError(
                "EagleTrainer trains the whole shared draft; this model carries PEFT adapters: train them with "
                "EdaTrainer, or pass the plain draft."
            )
        if not isinstance(model, DRAFT_MODEL_CLASSES):
            raise TypeError(
                "model must be an EagleDraftModel or Eagle3DraftModel, a path to one, or None; got "
                f"{type(model).__name__}."
            )
        model.attach_target(target)
        if peft_config is not None:
            model = joint_draft(model, peft_config)
        self._upcast_trainable(model, args)
        return model

    @property
    def _joint(self) -> bool:
        """Whether this stage-1 run trains the shared draft jointly with a private EDA adapter."""
        return hasattr(self.accelerator.unwrap_model(self.model), "peft_config")

    def _draft_signature(self, draft_config: Any) -> dict[str, Any]:
        signature = super()._draft_signature(draft_config)
        if self._joint:
            signature["adapter"] = adapter_signature(self.accelerator.unwrap_model(self.model))
        return signature

    def _write_model(self, output_dir: str, state_dict: dict[str, torch.Tensor] | None) -> None:
        """Joint stage 1 saves the shared draft to `output_dir` and the private adapter to `output_dir/stage1_adapter`."""
        if not self._joint:
            return super()._write_model(output_dir, state_dict)
        save_joint_draft(self.accelerator.unwrap_model(self.model), output_dir)
        torch.save(self.args, os.path.join(output_dir, TRAINING_ARGS_NAME))

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: nn.Module | None = None) -> None:
        if not self._joint:
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        load_joint_draft(self.accelerator.unwrap_model(model or self.model), resume_from_checkpoint)


__all__ = ["EagleTrainer", "NonFiniteLossError"]
