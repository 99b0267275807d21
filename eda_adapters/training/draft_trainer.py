"""The base of the draft trainers: a frozen target, its features, and a draft that learns from them through a
pluggable objective, on accelerate through `transformers.Trainer`. [`EagleTrainer`] (stage 1) and [`EdaTrainer`]
(stage 2) are siblings over it; each says how its draft is built and what it saves.

Why `transformers.Trainer` and not TRL's base classes: TRL's trainer/config bases are private API and default to
`bf16=True` and gradient checkpointing, which fail on CPU and on a draft model; TRL has nothing for draft training.
Subclassing `Trainer`/`TrainingArguments` directly keeps everything users know (accelerate launch, DDP, DeepSpeed,
checkpoints that resume exactly, `push_to_hub`) and TRL's conventions are copied: a documented config dataclass paired
with a trainer, `peft_config=` for adapters, metrics accumulated per step and averaged in `log()`, and the frozen
second model prepared with `accelerator.prepare_model(target, evaluation_mode=True)`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn
from datasets import Dataset
from transformers import PreTrainedModel, Trainer, TrainerCallback, TrainerState
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_pt_utils import LengthGroupedSampler
from transformers.trainer_utils import TrainOutput, enable_full_determinism, set_seed

from ..atomic import atomic_files
from ..console import quiet_trainer
from ..schemas import check_tokenized_rows
from ..data import CachedFeatureDataset, check_target_signature, compute_target_features
from ..data.io import load_tokenized_rows
from ..data.feature_cache import INDEX_FILE as FEATURE_INDEX_FILE
from ..data.feature_cache import TOP_TOKEN_KEY, draft_feature_layers
from ..data.signature import target_signature
from ..fingerprints import dataset_sample_fingerprint, target_fingerprint
from ..models.loading import load_target
from ..tuners import router_aux_loss
from ..validation import check_causal_lm
from .acceptance import greedy_acceptance_length, prompts_from_dataset
from .collator import FEATURES_KEY, DraftDataCollator
from .eagle_config import EagleTrainingConfig
from .losses import DraftVocabLogits
from .objectives import DraftObjective, default_objective, unwrap_draft
from .run_signature import (
    SIGNATURE_HYPERPARAMETERS,
    check_training_output_dir,
    check_run_signature,
    is_complete_checkpoint,
    last_complete_checkpoint,
    write_run_signature,
)
from ..errors import EdaInputError

logger = logging.getLogger(__name__)


def _loss_masks(data: Any) -> Any:
    """Each training row's loss mask (all ones where a row has none), read lazily: a datasets.Dataset in batches of
    one column, any other map-style dataset (e.g. cached features) row by row."""
    columns = getattr(data, "column_names", None)
    if columns is not None and hasattr(data, "iter"):
        if "input_ids" not in columns:
            return
        column = "loss_mask" if "loss_mask" in columns else "input_ids"
        for batch in data.select_columns([column]).iter(batch_size=256):
            for values in batch[column]:
                yield values if column == "loss_mask" else [1] * len(values)
        return
    for index in range(len(data)):
        row = data[index]
        mask = row.get("loss_mask") if hasattr(row, "get") else None
        if mask is None:
            mask = [1] * len(row["input_ids"])
        yield mask.tolist() if hasattr(mask, "tolist") else list(mask)


class NonFiniteLossError(EdaInputError, FloatingPointError):
    """Training stopped because the loss became NaN or infinite (the last good checkpoint is kept). Reported like bad
    input: its message names the settings to change."""


def _load_target(target: PreTrainedModel | str) -> PreTrainedModel:
    if isinstance(target, (str, os.PathLike)):
        # an HF folder or Hub id, a .gguf file, or a packaged name such as "smollm2-135m-instruct"
        target = load_target(target)
    if not isinstance(target, PreTrainedModel):
        raise TypeError(
            f"target_model must be a transformers causal LM or a path to one, got {type(target).__name__}."
        )
    check_causal_lm(target, "target_model")  # a masked LM loads as a "causal LM" (BertLMHeadModel) without a word
    return target


def resolve_dataset(dataset: Any, target: PreTrainedModel, what: str) -> Any:
    """Turn a path into a dataset, checked against `target`: tokenized rows against their schema (ids within its
    vocabulary, masks as long as the ids; `eda_adapters.schemas.tokenized_rows`), cached features against its
    signature.

    A directory holding cached features (`index.json`, see `eda_adapters.data.extract_features`) becomes a
    `CachedFeatureDataset`; any other path is read with `eda_adapters.data.load_rows` (regenerated-data directory,
    .jsonl/.json/.parquet/.arrow, `save_to_disk` directory). A `datasets.Dataset` or a `CachedFeatureDataset` is
    checked and passed through; other datasets (torch datasets, lists) pass unchecked.
    """
    if dataset is None:
        return None
    vocab_size = target.config.get_text_config().vocab_size
    if isinstance(dataset, (str, os.PathLike)):
        if os.path.isfile(os.path.join(dataset, FEATURE_INDEX_FILE)):
            # the target is checked here, the layers once the draft that reads them is known (`select_layers`)
            return CachedFeatureDataset(dataset, target=target_signature(target))
        return load_tokenized_rows(dataset, vocab_size=vocab_size)
    if isinstance(dataset, CachedFeatureDataset):
        check_target_signature(dataset.signature, target, what=f"the cached features of the {what}")
    elif isinstance(dataset, Dataset):
        check_tokenized_rows(dataset, vocab_size=vocab_size, source=f"the {what}")
    return dataset


class DraftTrainer(Trainer):
    r"""What every draft trainer shares: target features (online or cached), the objective's loss averaged over the
    loss tokens of a whole optimizer step, the router's balancing loss, a stop on a non-finite loss, logged metrics,
    tau, checkpoints that refuse another run's, and a model card.

    A sibling sets `stage` (recorded in the run signature) and `card_stage`, builds its draft in `_prepare_draft`, and
    may save differently. The loss comes from `objective` (default: the draft's own, see `default_objective`):
    [`EagleObjective`] for EAGLE-1 drafts, [`TrainingTimeTestObjective`] for EAGLE-3 ones. Arguments are
    [`EagleTrainer`]'s.
    """

    #: recorded in the run signature: a checkpoint of another stage is refused on resume
    stage: ClassVar[str]
    #: the "stage" row of the model card
    card_stage: ClassVar[str]
    # compute_loss normalises by the loss tokens of the whole accumulated batch (see get_batch_samples), so the
    # Trainer must not divide by the accumulation steps again
    loss_is_scaled_for_ga = True

    def __init__(
        self,
        model: nn.Module | str | None = None,
        target_model: PreTrainedModel | str | None = None,
        args: EagleTrainingConfig | None = None,
        train_dataset: Any = None,
        eval_dataset: Any = None,
        tau_dataset: Any = None,
        data_collator: Any = None,
        callbacks: list[TrainerCallback] | None = None,
        optimizers: tuple[Any, Any] = (None, None),
        peft_config: Any = None,
        objective: DraftObjective | None = None,
    ) -> None:
        if target_model is None:
            raise EdaInputError(
                f"{type(self).__name__} needs target_model= (the frozen target whose features it predicts)."
            )
        if args is None:
            args = self._default_config()
        elif not isinstance(args, EagleTrainingConfig):
            raise TypeError(
                f"{type(self).__name__} needs args={self._default_config_class().__name__}(...), got "
                f"{type(args).__name__}: the draft objective has its own fields (ce_weight, feature_noise_std, ...)."
            )
        target = _load_target(target_model)
        target.requires_grad_(False)
        target.eval()
        train_dataset = resolve_dataset(train_dataset, target, "training data")
        # seeded as `Trainer(model_init=...)` is: a draft or adapter built here starts the same for the same seed
        enable_full_determinism(args.seed) if args.full_determinism else set_seed(args.seed)
        model = self._prepare_draft(model, target, args, peft_config, train_dataset=train_dataset)
        self.objective = objective if objective is not None else default_objective(model)
        draft = unwrap_draft(model)
        _check_aux_layers(draft, args)
        self.feature_layers = draft_feature_layers(draft, target)
        eval_dataset = resolve_dataset(eval_dataset, target, "evaluation data")
        tau_dataset = resolve_dataset(tau_dataset, target, "tau data")
        for data in (train_dataset, eval_dataset):
            if isinstance(data, CachedFeatureDataset):
                data.select_layers(target, self.feature_layers)
        if data_collator is None:
            data_collator = DraftDataCollator(max_length=args.max_length, pad_to_multiple_of=args.pad_to_multiple_of)
        if train_dataset is not None and hasattr(train_dataset, "column_names") and "input_ids" not in (
            train_dataset.column_names or []
        ):
            raise EdaInputError(
                f"The training dataset needs an `input_ids` column, it has {train_dataset.column_names}: tokenize it "
                "(prompt + response) first, see eda_adapters.data."
            )
        self.target_model = target
        self.tau_dataset = tau_dataset
        self.last_tau: float | None = None
        self._last_tau_step = 0
        self._metrics: dict[str, defaultdict[str, list[float]]] = {
            "train": defaultdict(list),
            "eval": defaultdict(list),
        }
        super().__init__(
            model=model,
            args=args,
            data_collator=data_collator,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            callbacks=callbacks,
            optimizers=optimizers,
        )
        quiet_trainer(self, f"train {Path(self.args.output_dir).name}")  # a bar, not a printed dict per log step
        # The draft takes no loss kwargs; compute_loss scales its own loss to the whole optimizer step.
        self.model_accepts_loss_kwargs = False
        self.target_model = self.accelerator.prepare_model(self.target_model, evaluation_mode=True)

    # ------------------------------------------------------------------ construction
    @classmethod
    def _default_config_class(cls) -> type[EagleTrainingConfig]:
        return EagleTrainingConfig

    def _default_config(self) -> EagleTrainingConfig:
        return self._default_config_class()(output_dir=f"{self.stage}-draft")

    def _prepare_draft(
        self,
        model: nn.Module | str | None,
        target: PreTrainedModel,
        args: EagleTrainingConfig,
        peft_config: Any,
        train_dataset: Any = None,
    ) -> nn.Module:
        """Return the trainable draft, attached to `target`."""
        raise NotImplementedError(f"{type(self).__name__} must say how its draft is built (_prepare_draft).")

    @staticmethod
    def _upcast_trainable(model: nn.Module, args: EagleTrainingConfig) -> None:
        """Keep float32 master weights for the trainable parameters under bf16/fp16 mixed precision."""
        if args.bf16 or args.fp16:
            for param in model.parameters():
                if param.requires_grad and param.dtype != torch.float32:
                    param.data = param.data.float()

    # ------------------------------------------------------------------ the objective
    def _target_features(
        self, model: nn.Module, inputs: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor | DraftVocabLogits]:
        """The draft's input features and the target's logits: from cached features (`self.feature_layers`
        concatenated; the logits through the frozen head from the last layer's), or from one target forward.

        A reduced draft head, an objective that reads it and features that store the target's top token need only
        the head's rows of the draft vocabulary: the logits come as [`DraftVocabLogits`]."""
        layers = self.feature_layers
        if FEATURES_KEY not in inputs:
            return compute_target_features(
                self.target_model, inputs["input_ids"], inputs.get("attention_mask"), return_logits=True,
                layers=layers[:-1] if len(layers) > 1 else None,
            )
        features = inputs[FEATURES_KEY]
        head = self.target_model.get_output_embeddings()
        with torch.no_grad():
            features = features.to(head.weight.dtype)
            width = features.shape[-1] // len(layers)
            draft_input, last = features[..., :-width], features[..., -width:]
            if len(layers) == 1:
                draft_input = features
            token_ids = self._draft_vocab_ids(model, inputs, head)
            if token_ids is None:
                return draft_input, head(last)
            return draft_input, DraftVocabLogits.from_head(head, last, token_ids, inputs[TOP_TOKEN_KEY])

    def _draft_vocab_ids(self, model: nn.Module, inputs: dict[str, torch.Tensor], head: nn.Module) -> torch.Tensor | None:
        """The target ids of a reduced draft head's tokens, where the draft-vocabulary logits suffice; else `None`."""
        if TOP_TOKEN_KEY not in inputs or not getattr(self.objective, "reads_draft_vocab_logits", False):
            return None
        token_ids = getattr(unwrap_draft(model), "draft_token_ids", None)
        if not isinstance(head, nn.Linear) or token_ids is None or token_ids.numel() >= head.out_features:
            return None
        return token_ids.to(head.weight.device)

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, torch.Tensor],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, Any]:
        mode = "train" if model.training else "eval"
        features, target_logits = self._target_features(model, inputs)
        result = self.objective(model, inputs, features, target_logits, self.args, training=mode == "train")
        loss, metrics, outputs = result.loss, dict(result.metrics), result.outputs
        if mode == "train":
            loss = self._scale_for_accumulation(loss, result.num_tokens, num_items_in_batch)
        aux_coef = self._router_aux_loss_coef()
        if aux_coef:
            aux = router_aux_loss(model)
            if aux is not None:
                scale = self.current_gradient_accumulation_steps if mode == "train" else 1
                loss = loss + aux_coef * aux / scale
                metrics["router_aux_loss"] = aux.detach()
        if mode == "train":
            self._check_finite(loss)
        for name, value in metrics.items():
            self._metrics[mode][name].append(self.accelerator.gather(value.reshape(1)).float().mean().item())
        num_tokens = torch.tensor([float(result.num_tokens)], device=loss.device)
        self._metrics[mode]["num_tokens"].append(self.accelerator.gather(num_tokens).sum().item())
        return (loss, outputs) if return_outputs else loss

    def _get_train_sampler(self, train_dataset: Any = None) -> Any:
        """transformers' sampler, except that a length-grouped one over cached features reads the lengths from the
        shards' headers instead of loading every sample's features to count its tokens."""
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if self.args.train_sampling_strategy == "group_by_length" and isinstance(dataset, CachedFeatureDataset):
            return LengthGroupedSampler(self.args.train_batch_size * self.args.gradient_accumulation_steps,
                                        lengths=dataset.lengths)
        return super()._get_train_sampler(train_dataset)

    def get_batch_samples(
        self, epoch_iterator: Iterator, num_batches: int, device: torch.device
    ) -> tuple[list, torch.Tensor | int | None]:
        """The micro-batches of one optimizer step, and the loss tokens among them (over every process when
        `average_tokens_across_devices`), which `compute_loss` divides by."""
        batch_samples, _ = super().get_batch_samples(epoch_iterator, num_batches, device)
        if not batch_samples:
            return batch_samples, None
        count = sum(self.objective.loss_tokens(batch) for batch in batch_samples).to(device)
        if self.args.average_tokens_across_devices and self.accelerator.num_processes > 1:
            count = self.accelerator.gather(count.reshape(1)).sum()
        return batch_samples, count

    def _scale_for_accumulation(
        self, loss: torch.Tensor, num_tokens: int, num_items_in_batch: torch.Tensor | int | None
    ) -> torch.Tensor:
        """This micro-batch's token-mean `loss` as its share of the mean over the whole optimizer step: accumulated
        micro-batches (and processes) of ragged rows then make the gradient of one big batch."""
        if num_items_in_batch is None:  # no count (a caller of compute_loss outside the training loop)
            return loss / self.current_gradient_accumulation_steps
        # the ratio first: with one micro-batch on one process it is exactly 1 and the loss stays bit-identical
        share = loss * (num_tokens / torch.as_tensor(num_items_in_batch, device=loss.device).clamp_min(1))
        if self.args.average_tokens_across_devices and self.accelerator.num_processes > 1:
            share = share * self.accelerator.num_processes  # DDP averages the gradients of the processes
        return share

    def _router_aux_loss_coef(self) -> float:
        model = self.accelerator.unwrap_model(self.model)
        if not hasattr(model, "peft_config"):
            return 0.0  # a plain draft has no router
        adapter = model.peft_config[model.active_adapter]
        return adapter.router_aux_loss_coef if getattr(adapter, "is_routed", False) else 0.0

    def _check_finite(self, loss: torch.Tensor) -> None:
        """Stop before the optimizer step if the loss is NaN/inf on any process (weights and checkpoints stay good)."""
        finite = torch.isfinite(loss.detach()).reshape(1).float()
        if self.accelerator.num_processes > 1:
            finite = self.accelerator.gather(finite).min().reshape(1)
        if finite.item() == 1.0:
            return
        step = self.state.global_step + 1
        last, _ = last_complete_checkpoint(self.args.output_dir)
        kept = (
            f"the last good checkpoint is {last} (resume_from_checkpoint={last!r})"
            if last
            else "no checkpoint was saved before it"
        )
        raise NonFiniteLossError(
            f"Training stopped at step {step}: the loss is not finite ({loss.detach().float().item()} on this "
            f"process); {kept}. "
            "Lower the learning rate, check the data, or train in float32/bf16 rather than fp16."
        )

    def prediction_step(
        self,
        model: nn.Module,
        inputs: dict[str, torch.Tensor],
        prediction_loss_only: bool,
        ignore_keys: list[str] | None = None,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None

    # ------------------------------------------------------------------ logging
    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        mode = "train" if self.model.training else "eval"
        metrics = {name: sum(values) / len(values) for name, values in self._metrics[mode].items() if values}
        if "num_tokens" in metrics:
            metrics["num_tokens"] = sum(self._metrics[mode]["num_tokens"])
        if mode == "eval":
            metrics = {f"eval_{name}": value for name, value in metrics.items()}
            self._last_eval_metrics = metrics
        logs = {**logs, **metrics}
        self._metrics[mode].clear()
        if (
            mode == "train"
            and "loss" in logs
            and self.args.tau_eval_steps
            and self.state.global_step - self._last_tau_step >= self.args.tau_eval_steps
        ):
            tau = self.measure_tau()
            if tau is not None:
                logs["tau"] = tau
        super().log(logs, start_time)

    def evaluate(self, *args: Any, **kwargs: Any) -> dict[str, float]:
        """`Trainer.evaluate`, returning the draft metrics (`eval_accuracy`, `eval_regression_loss`, ...) as well."""
        self._last_eval_metrics: dict[str, float] = {}
        metrics = super().evaluate(*args, **kwargs)
        return {**metrics, **self._last_eval_metrics}

    def measure_tau(self) -> float | None:
        """tau of the current draft on the first `tau_num_prompts` prompts of `tau_dataset` (None without one)."""
        if self.tau_dataset is None:
            return None
        self._last_tau_step = self.state.global_step
        prompts = prompts_from_dataset(self.tau_dataset, self.args.tau_num_prompts)
        self.last_tau = greedy_acceptance_length(
            self.accelerator.unwrap_model(self.model),
            self.accelerator.unwrap_model(self.target_model),
            prompts,
            num_draft_tokens=self.args.tau_num_draft_tokens,
            max_new_tokens=self.args.tau_max_new_tokens,
            show_progress=not self.args.disable_tqdm and self.is_world_process_zero(),
        )
        return self.last_tau

    # ------------------------------------------------------------------ run signature, resume, checkpoints
    def run_signature(self) -> dict[str, Any]:
        """What this run is made of; a checkpoint with another signature is refused on resume."""
        target = self.accelerator.unwrap_model(self.target_model)
        draft_config = self._draft_base().config
        hyper = {name: getattr(self.args, name) for name in SIGNATURE_HYPERPARAMETERS}
        signature = {
            "stage": self.stage,
            "draft": self._draft_signature(draft_config),
            "target": {
                "name_or_path": getattr(target.config, "_name_or_path", None) or None,
                "model_type": target.config.model_type,
                "fingerprint": target_fingerprint(target),
            },
            "data": dataset_sample_fingerprint(self.train_dataset) if self.train_dataset is not None else None,
            "hyperparameters": hyper,
        }
        objective = self.objective.signature(self.args) if hasattr(self.objective, "signature") else None
        if objective is not None:
            signature["objective"] = objective
        return json.loads(json.dumps(signature, default=str))  # the form it takes once read back from disk

    def _draft_base(self) -> nn.Module:
        return unwrap_draft(self.accelerator.unwrap_model(self.model))

    def _draft_signature(self, draft_config: Any) -> dict[str, Any]:
        return {
            key: getattr(draft_config, key)
            for key in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size")
        }

    def train(
        self,
        resume_from_checkpoint: str | bool | None = None,
        trial: Any = None,
        ignore_keys_for_eval: list[str] | None = None,
        **kwargs: Any,
    ) -> Any:
        """`Trainer.train`, refusing to resume from another run's checkpoint and measuring tau at the end.

        `resume_from_checkpoint` is a checkpoint's path, `True` (the newest finished checkpoint of `output_dir`; an
        error if there is none) or `"last"` (the same, or a fresh start if there is none: one command that both
        starts a run and resumes it after a crash). Unfinished checkpoints, left by a run killed while saving, are
        never resumed from.
        """
        signature = self.run_signature()
        if resume_from_checkpoint in (True, "last"):
            resume_from_checkpoint = self._last_checkpoint(required=resume_from_checkpoint is True)
        if resume_from_checkpoint:
            if not os.path.isdir(resume_from_checkpoint):
                raise FileNotFoundError(f"Checkpoint {resume_from_checkpoint} does not exist.")
            if not is_complete_checkpoint(resume_from_checkpoint):
                raise EdaInputError(
                    f"Checkpoint {resume_from_checkpoint} is unfinished (no readable trainer_state.json: the run was "
                    "stopped while saving it); resume from an earlier one, or pass resume_from_checkpoint='last'"
                )
            check_run_signature(resume_from_checkpoint, signature)
        # every process checks (they see the same directory), so none is left waiting for the others
        check_training_output_dir(self.args.output_dir, signature)  # never train over another run's files
        self._check_trainable_tokens()
        self._signature = signature
        # every process has looked at the directory before the main one writes into it (else a slower rank sees the
        # signature's temporary file and takes the directory for another run's)
        self.accelerator.wait_for_everyone()
        if self.args.should_save:
            write_run_signature(self.args.output_dir, signature)
        output = self._restore_finished_run(resume_from_checkpoint) or super().train(
            resume_from_checkpoint=resume_from_checkpoint,
            trial=trial,
            ignore_keys_for_eval=ignore_keys_for_eval,
            **kwargs,
        )
        if self.tau_dataset is not None:
            tau = self.measure_tau()
            output.metrics["tau"] = tau
            self.log({"tau": tau})
        return output

    def _restore_finished_run(self, checkpoint: str | None) -> TrainOutput | None:
        """Load a checkpoint already at `max_steps` and train nothing. `Trainer` (transformers 5.23) resumed from one
        that ends in the middle of an epoch trains one step more than `max_steps` before it stops."""
        if not checkpoint or self.args.max_steps <= 0:
            return None
        state = TrainerState.load_from_json(os.path.join(checkpoint, TRAINER_STATE_NAME))
        if state.global_step < self.args.max_steps:
            return None
        self._load_from_checkpoint(checkpoint)
        self.state = state
        return TrainOutput(state.global_step, 0.0, {})

    def _last_checkpoint(self, required: bool) -> str | None:
        """The newest whole checkpoint of `output_dir` to resume from; unfinished ones after it (a run killed while
        saving) are deleted, since training writes them again. Without one: an error if `required`, else `None`
        (a fresh start)."""
        last, unfinished = last_complete_checkpoint(self.args.output_dir)
        if unfinished and self.args.should_save:
            for folder in unfinished:
                logger.warning(f"{folder} is unfinished (the run was stopped while saving it): deleting it")
                shutil.rmtree(folder)
        self.accelerator.wait_for_everyone()
        if last is None and required:
            raise FileNotFoundError(
                f"resume_from_checkpoint=True but {self.args.output_dir} holds no finished checkpoint-* folder: start "
                "without resuming, pass resume_from_checkpoint='last' (resume if there is one), or the checkpoint's "
                "path."
            )
        return str(last) if last is not None else None

    def _check_trainable_tokens(self) -> None:
        """Refuse a run with nothing to learn: no training step, or no token with a loss (all loss masks zero within
        `max_length`)."""
        if self.args.max_steps <= 0 and self.args.num_train_epochs <= 0:
            raise EdaInputError(
                f"Nothing to train: max_steps={self.args.max_steps} and num_train_epochs={self.args.num_train_epochs} "
                "make 0 training steps; set max_steps or num_train_epochs above 0."
            )
        data = self.train_dataset
        if data is None or not hasattr(data, "__len__") or len(data) == 0:
            return
        limit = self.args.max_length
        for mask in _loss_masks(data):  # the first position has no previous feature: it is never a loss position
            if any(mask[1:limit]):
                return  # usually the first row: the scan stops at once
        where = f" within max_length={limit}" if limit is not None else ""
        raise EdaInputError(
            f"Nothing to train on: the {len(data)} training samples have 0 usable tokens (loss_mask is 0 everywhere"
            f"{where}, the first token excepted): check the data's loss_mask, or raise max_length above the prompts' "
            "length."
        )

    def _save(self, output_dir: str | None = None, state_dict: dict[str, torch.Tensor] | None = None) -> None:
        """Write the model files beside `output_dir`, then move each into it (`atomic_files`): a crash or a full disk
        part-way leaves the previous files whole, never half a weights file."""
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        if not self.args.should_save:
            return super()._save(output_dir, state_dict)
        with atomic_files(output_dir) as tmp:
            self._write_model(str(tmp), state_dict)

    def _write_model(self, output_dir: str, state_dict: dict[str, torch.Tensor] | None) -> None:
        """Write what `save_model` saves into the (empty, temporary) `output_dir`; siblings may save differently."""
        super()._save(output_dir, state_dict)

    def _save_checkpoint(self, model: nn.Module, trial: Any) -> None:
        super()._save_checkpoint(model, trial)
        if self.args.should_save:
            folder = os.path.join(self._get_output_dir(trial=trial), f"checkpoint-{self.state.global_step}")
            if os.path.isdir(folder):
                write_run_signature(folder, getattr(self, "_signature", None) or self.run_signature())

    # ------------------------------------------------------------------ hub
    def model_card_info(self) -> dict[str, Any]:
        """Rows of the model card's Details table: base draft, target, data and the measured tau."""
        target = self.accelerator.unwrap_model(self.target_model)
        data = self.args.dataset_name
        if data is None and self.train_dataset is not None:
            data = getattr(getattr(self.train_dataset, "info", None), "dataset_name", None)
        rows: dict[str, Any] = {
            "stage": self.card_stage,
            "target": getattr(target.config, "_name_or_path", None) or target.config.model_type,
            "training data": data,
            "training samples": len(self.train_dataset) if hasattr(self.train_dataset, "__len__") else None,
            "optimizer steps": self.state.global_step,
        }
        if self.last_tau is not None:
            rows["tau"] = (
                f"{self.last_tau:.3f} (greedy chain, {self.args.tau_num_draft_tokens} draft tokens, "
                f"{self.args.tau_num_prompts} held-out prompts)"
            )
        return rows

    def push_to_hub(
        self,
        commit_message: str | None = "End of training",
        blocking: bool = True,
        token: str | None = None,
        revision: str | None = None,
        private: bool | None = None,
        repo_id: str | None = None,
        info: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> Any:
        """Upload the trained draft (stage 1) or adapter (stage 2) with an `eda_adapters` model card.

        The card records the base draft, the target, the data and the last measured tau ([`model_card_info`], plus
        `info`). `repo_id` defaults to `args.hub_model_id`, else the output directory's name.
        """
        from ..hub import push_to_hub

        if not self.is_world_process_zero():
            return None
        repo_id = repo_id or self.args.hub_model_id or os.path.basename(os.path.normpath(self.args.output_dir))
        return push_to_hub(
            self.accelerator.unwrap_model(self.model),
            repo_id,
            commit_message=commit_message,
            private=self.args.hub_private_repo if private is None else private,
            token=token or self.args.hub_token,
            revision=revision or self.args.hub_revision,
            info={**self.model_card_info(), **(info or {})},
        )


def _check_aux_layers(draft: nn.Module, args: EagleTrainingConfig) -> None:
    """`args.aux_layer_ids` names the aux layers of a draft the trainer builds; a given draft keeps its own."""
    fused = list(getattr(draft.config, "eagle_aux_hidden_state_layer_ids", None) or [])
    if args.aux_layer_ids is not None and fused != list(args.aux_layer_ids):
        raise EdaInputError(
            f"aux_layer_ids={list(args.aux_layer_ids)} but the draft fuses {fused or 'the last state only'}: a given "
            "draft keeps its own aux layers, so leave aux_layer_ids unset (or let the trainer build the draft)."
        )
