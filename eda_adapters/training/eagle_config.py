"""Configuration of the stage-1 trainer (the shared EAGLE draft of a base target)."""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers import TrainingArguments

from ..console import is_quiet as console_is_quiet
from .losses import FEATURE_NOISE_TYPES

from ..errors import EdaInputError
from ..schemas.config_ranges import (
    COUNT, FRACTION, NON_NEGATIVE, NON_NEGATIVE_INT, POSITIVE, Range, check_ranges, ranged,
)

#: Values of `EagleTrainingConfig.draft_architecture`: the draft a trainer builds when it is given none.
DRAFT_ARCHITECTURES = ("eagle", "eagle3")
#: the draft predicts position t+1 from t: a sequence needs two tokens
SEQUENCE_LENGTH = Range(2, integer=True)
#: ranges of the `TrainingArguments` fields a user sets most (declared there without one)
INHERITED_RANGES = {
    "per_device_train_batch_size": COUNT,
    "per_device_eval_batch_size": COUNT,
    "gradient_accumulation_steps": COUNT,
    "num_train_epochs": NON_NEGATIVE,
    "warmup_steps": NON_NEGATIVE,
    "weight_decay": NON_NEGATIVE,
    "adam_beta1": Range(0, 1, high_open=True),
    "adam_beta2": Range(0, 1, high_open=True),
    "adam_epsilon": POSITIVE,
    "max_grad_norm": NON_NEGATIVE,
    "save_steps": POSITIVE,
    "eval_steps": POSITIVE,
    "save_total_limit": COUNT,
    "seed": NON_NEGATIVE_INT,
    "data_seed": NON_NEGATIVE_INT,
    "dataloader_num_workers": NON_NEGATIVE_INT,
}


@dataclass
class EagleTrainingConfig(TrainingArguments):
    r"""Configuration of [`EagleTrainer`]: stage 1, training a whole shared EAGLE draft for a base target.

    This class holds only the parameters specific to draft training; every [`~transformers.TrainingArguments`] field
    (learning rate, batch size, `max_steps`, `save_steps`, `bf16`, `deepspeed`, ...) works as usual. Like TRL's
    `SFTConfig`, some defaults differ from `TrainingArguments`: `remove_unused_columns=False` (batches hold columns the
    draft's forward does not name), `learning_rate=1e-4`, `logging_steps=10`.

    Using [`~transformers.HfArgumentParser`] this class becomes command-line flags (`eda train-draft --help`).

    Parameters:
        > Parameters of the objective

        regression_weight (`float`, defaults to `1.0`):
            Weight of the SmoothL1 regression of the target's next hidden state.
        ce_weight (`float`, defaults to `0.1`):
            Weight of the cross-entropy between the draft's and the target's next-token distributions (both through the
            target's frozen output head).
        feature_noise_std (`float`, defaults to `0.1`):
            Scale of the noise added to the target features the draft reads (training only; EAGLE's robustness trick
            against its own prediction errors at inference time): the standard deviation for `"uniform"`/`"gaussian"`,
            the authors' `std` for `"length_scaled"` (they use 0.2). `0` disables it.
        feature_noise_type (`str`, defaults to `"uniform"`):
            `"uniform"`, `"gaussian"`, or `"length_scaled"` (the authors' uniform noise of half-width
            `feature_noise_std * 256 / sequence length`), see [`eda_adapters.training.add_feature_noise`].

        ttt_steps (`int`, defaults to `3`):
            EAGLE-3 drafts only: the unroll length of the training-time test, the draft's passes per batch on its own
            outputs ([`eda_adapters.training.TrainingTimeTestObjective`]). The EAGLE-3 references use 7 and
            `speculators` 3; each step costs one more draft forward and backward. EAGLE-3 drafts use neither
            `regression_weight`, `ce_weight` nor feature noise.
        ttt_step_weight (`float`, defaults to `0.8`):
            EAGLE-3 drafts only: step `k`'s loss is weighted `ttt_step_weight ** k`.

        > Parameters of the data

        max_length (`int` or `None`, defaults to `2048`):
            Sequences are truncated (right) to this many tokens. `None` keeps them whole.
        pad_to_multiple_of (`int` or `None`, defaults to `None`):
            Pad each batch to a multiple of this length (helps tensor cores on GPU).
        dataset_name (`str` or `None`, defaults to `None`):
            Name or path of the training data, recorded in the run signature's description and the model card.

        > Parameters of the draft built when the trainer gets no draft

        draft_architecture (`str`, defaults to `"eagle"`):
            The draft built when the trainer is given none: `"eagle"` (EAGLE-1, `EagleDraftModel`: reads the target's
            last hidden state and predicts the next one) or `"eagle3"` (`Eagle3DraftModel`: fuses three target hidden
            states and predicts the next token, trained with the training-time test). A given draft keeps its own.
        aux_layer_ids (`list[int]` or `None`, defaults to `None`):
            EAGLE-3 drafts only: the three `hidden_states` indices of the target the built draft fuses (index 0 is the
            embeddings, `L` the final normed state). `None`: the engines' default `[2, L//2, L-3]`, which needs a
            target of at least 7 layers (below, it repeats a layer). Serving engines capture states 0 .. L-1 (SGLang
            1 .. L-1; `eda export` checks).
        draft_num_layers (`int`, defaults to `1`):
            Decoder layers of the draft built with `EagleDraftModel.from_target(target, num_layers=...)` when the
            trainer is given no `model`.
        draft_vocab_size (`int` or `None`, defaults to `None`):
            Give the built draft a reduced vocabulary: its own head over the `draft_vocab_size` most frequent label
            tokens of the training data (plus the target's EOS), initialised from the target head's rows
            (`eda_adapters.data.most_frequent_tokens`). Draft steps then cost a fraction of a full-vocabulary head's
            on large-vocabulary targets. `None`: the target's full head.
        freeze_draft_head (`bool`, defaults to `False`):
            Keep the reduced head's rows equal to the target head's (only with `draft_vocab_size`; EAGLE-1 drafts only:
            an EAGLE-3 draft's head is its own and always trains).

        > Parameters of the acceptance-length evaluation

        tau_eval_steps (`int` or `None`, defaults to `None`):
            Measure tau (tokens per target forward of greedy chain speculative decoding) on the trainer's `tau_dataset`
            at the first log at or after every `tau_eval_steps` optimizer steps, and once at the end of training. `None`
            measures only at the end (when a `tau_dataset` is given).
        tau_num_draft_tokens (`int`, defaults to `5`):
            Tokens the draft proposes per target forward in that measurement.
        tau_max_new_tokens (`int`, defaults to `64`):
            Tokens generated per held-out prompt in that measurement.
        tau_num_prompts (`int`, defaults to `16`):
            Held-out prompts used (the first ones of `tau_dataset`).
    """

    # -- defaults that differ from TrainingArguments
    learning_rate: float = ranged(1e-4, NON_NEGATIVE, "Initial learning rate (AdamW).")
    logging_steps: float = ranged(10, POSITIVE, "Log every this many steps (or ratio if < 1).")
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Keep all dataset columns: the trainer reads input_ids/loss_mask/features."}
    )

    # -- objective
    regression_weight: float = ranged(1.0, NON_NEGATIVE, "Weight of the SmoothL1 hidden-state regression.")
    ce_weight: float = ranged(0.1, NON_NEGATIVE, "Weight of the cross-entropy to the target's distribution.")
    feature_noise_std: float = ranged(
        0.1, NON_NEGATIVE, "Scale of the noise on the input target features (0 disables)."
    )
    feature_noise_type: str = field(
        default="uniform",
        metadata={"help": "Noise kind.", "choices": list(FEATURE_NOISE_TYPES)},
    )

    ttt_steps: int = ranged(3, COUNT, "EAGLE-3: training-time test unroll length.")
    ttt_step_weight: float = ranged(0.8, FRACTION, "EAGLE-3: step k's loss weight is this ** k.")

    # -- data
    max_length: int | None = ranged(2048, SEQUENCE_LENGTH, "Truncate sequences to this many tokens.")
    pad_to_multiple_of: int | None = ranged(None, COUNT, "Pad batches to a multiple of this.")
    dataset_name: str | None = field(
        default=None, metadata={"help": "Name/path of the training data, recorded in the model card."}
    )

    # -- draft construction
    draft_architecture: str = field(
        default="eagle",
        metadata={"help": "Draft built when none is given.", "choices": list(DRAFT_ARCHITECTURES)},
    )
    aux_layer_ids: list[int] | None = ranged(
        None, NON_NEGATIVE_INT, "EAGLE-3: the three target hidden_states the draft fuses (default 2 L//2 L-3)."
    )
    draft_num_layers: int = ranged(1, COUNT, "Layers of a draft built from the target.")
    draft_vocab_size: int | None = ranged(
        None, COUNT, "Reduced draft vocabulary: the N most frequent training tokens (None: full)."
    )
    freeze_draft_head: bool = field(default=False, metadata={"help": "Keep the reduced head's target rows frozen."})

    # -- tau evaluation
    tau_eval_steps: int | None = ranged(None, COUNT, "Measure tau on the held-out prompts every this many steps.")
    tau_num_draft_tokens: int = ranged(5, COUNT, "Draft tokens per target forward for tau.")
    tau_max_new_tokens: int = ranged(64, COUNT, "Tokens generated per prompt for tau.")
    tau_num_prompts: int = ranged(16, COUNT, "Held-out prompts used for tau.")

    def __post_init__(self) -> None:
        check_ranges(self, INHERITED_RANGES)
        if self.regression_weight + self.ce_weight == 0:
            raise EdaInputError(
                f"{type(self).__name__}: regression_weight and ce_weight are both 0: the draft would learn nothing; "
                "set one above 0."
            )
        if self.feature_noise_type not in FEATURE_NOISE_TYPES:
            raise EdaInputError(
                f"{type(self).__name__}.feature_noise_type must be one of {list(FEATURE_NOISE_TYPES)}, got "
                f"{self.feature_noise_type!r}."
            )
        if self.draft_architecture not in DRAFT_ARCHITECTURES:
            raise EdaInputError(
                f"{type(self).__name__}.draft_architecture must be one of {list(DRAFT_ARCHITECTURES)}, got "
                f"{self.draft_architecture!r}."
            )
        if self.aux_layer_ids is not None and self.draft_architecture != "eagle3":
            raise EdaInputError(
                f"{type(self).__name__}.aux_layer_ids applies to EAGLE-3 drafts only: set draft_architecture='eagle3' "
                "or leave aux_layer_ids unset."
            )
        if self.disable_tqdm is None and console_is_quiet():
            # the quiet console lowers transformers' log level to hide its noise, and TrainingArguments derives
            # `disable_tqdm` from that level: without this, a training inside it would show no progress at all
            self.disable_tqdm = False
        try:
            super().__post_init__()
        except ValueError as err:  # TrainingArguments' own checks of the values it was given: bad input too
            raise EdaInputError(f"{type(self).__name__}: {' '.join(str(err).split())}") from err
