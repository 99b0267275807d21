"""Configuration of the EDA private component, a PEFT adapter type."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from peft.config import PeftConfig
from peft.utils import PeftType
from ...errors import EdaInputError
from ...schemas.config_ranges import COUNT, NON_NEGATIVE, check_ranges, ranged


#: The EdaConfig fields a user chooses (the rest is filled in by PEFT or set automatically): the `eda adapt` flags
#: and, with `target_modules`, what a trainer's run signature records of the adapter.
USER_FIELDS = (
    "num_private_experts",
    "num_experts_per_tok",
    "private_intermediate_size",
    "router_aux_loss_coef",
    "init_private_weights",
    "init_private_from",
    "modules_to_save",
)

#: Shared draft modules that `EdaConfig.modules_to_save` may declare trainable in stage 2.
TRAINABLE_SHARED_MODULES = ("fc", "self_attn", "post_attention_layernorm", "input_layernorm", "hidden_norm")


@dataclass
class EdaConfig(PeftConfig):
    """Configuration of an EDA (Efficient Draft Adaptation) adapter: a *private* SwiGLU branch beside a draft's MLP.

    The wrapped MLP (the *shared* component, frozen) and the private branch run in parallel and their outputs add up:
    `mlp(x) = shared(x) + private(x)`. With one private expert (the reference configuration) the private branch is a
    plain SwiGLU MLP; with several, a softmax router picks the top-k experts per token and their outputs are mixed with
    the router weights renormalised over the chosen experts.

    Only the private parameters train. A router-free adapter merges exactly into the shared MLP (`merge_and_unload`),
    giving a plain, wider EAGLE draft.

    Args:
        target_modules (`list[str]` or `str`, *optional*):
            Names (or a regex) of the MLP modules to wrap. Defaults to every draft layer's `mlp`.
        num_private_experts (`int`, defaults to 1):
            Number of private SwiGLU experts per wrapped MLP.
        num_experts_per_tok (`int`, defaults to 1):
            Top-k: experts used per token when `num_private_experts > 1`.
        private_intermediate_size (`int`, *optional*):
            Width of each private expert. Defaults to the width of the wrapped shared MLP.
        router_aux_loss_coef (`float`, defaults to 0.01):
            Weight of the Switch-style load-balancing loss that trainers add for routed adapters (0 disables it).
        init_private_weights (`str`, defaults to `"zero"`):
            How the private experts start. `"zero"` zero-initialises each expert's down projection so that a fresh
            adapter leaves the draft's output unchanged (like LoRA's B=0); `"random"` initialises all private weights
            randomly (the authors' stage 2); `"copy"` copies them from the stage-1 adapter at `init_private_from`
            (the private expert trained jointly with the shared draft, see `EagleTrainer(peft_config=...)`).
        init_private_from (`str`, *optional*):
            With `init_private_weights="copy"`: a saved EDA adapter (directory with `adapter_model.safetensors`) of the
            same shape whose private weights the new adapter starts from. Read only when the adapter is created.
        modules_to_save (`list[str]`, *optional*, defaults to `["fc"]`):
            Shared modules that train with the private experts in stage 2: `["fc"]` by default, as the authors do
            (the demo's experiments show it is what lifts EDA, see docs/training.md); `None` or `[]` trains the
            private experts alone; `"self_attn"` / `"post_attention_layernorm"` may be added. PEFT's mechanism: the
            adapter holds a trained copy of each (saved with it, used by `merge_and_unload` and `eda export`) and the
            shared draft's own tensors stay untouched.
        draft_hidden_size (`int`, *optional*):
            Filled in when the adapter is created: the hidden size of the draft it belongs to, so that loading it onto
            another draft fails with a clear message.
        draft_intermediate_size (`int`, *optional*):
            Filled in when the adapter is created: the shared MLP width of the draft it belongs to.
        draft_fingerprint (`str`, *optional*):
            Filled in when the adapter is created: a short digest of the shared draft's weights (see
            `eda_adapters.draft_fingerprint`), used to detect an adapter loaded onto another draft.
        draft_model_type (`str`, *optional*):
            Filled in when the adapter is created: the draft's architecture, `"eagle_draft"` (EAGLE-1) or
            `"eagle3_draft"` (EAGLE-3); an adapter is refused on a draft of the other one.
    """

    target_modules: list[str] | str | None = field(
        default=None, metadata={"help": "MLP modules to wrap; defaults to every draft layer's `mlp`."}
    )
    num_private_experts: int = ranged(1, COUNT, "Private SwiGLU experts per wrapped MLP.")
    num_experts_per_tok: int = ranged(1, COUNT, "Top-k experts per token when routed.")
    private_intermediate_size: int | None = ranged(
        None, COUNT, "Width of each private expert; defaults to the shared MLP's width."
    )
    router_aux_loss_coef: float = ranged(0.01, NON_NEGATIVE, "Load-balancing loss weight when routed.")
    init_private_weights: Literal["zero", "random", "copy"] = field(
        default="zero",
        metadata={
            "help": "'zero': the fresh adapter leaves outputs unchanged; 'random'; 'copy': from init_private_from."
        },
    )
    init_private_from: str | None = field(
        default=None, metadata={"help": "With init_private_weights='copy': the stage-1 adapter directory to copy."}
    )
    modules_to_save: list[str] | None = field(
        default_factory=lambda: ["fc"],
        metadata={"help": "Shared modules trained with the adapter (saved as trained copies); default fc; none: no module."},
    )
    draft_hidden_size: int | None = field(default=None, metadata={"help": "Set automatically: the draft's hidden size."})
    draft_intermediate_size: int | None = field(
        default=None, metadata={"help": "Set automatically: the draft's shared MLP width."}
    )
    draft_fingerprint: str | None = field(
        default=None, metadata={"help": "Set automatically: digest of the shared draft's weights."}
    )
    draft_model_type: str | None = field(
        default=None, metadata={"help": "Set automatically: the draft's model_type (eagle_draft or eagle3_draft)."}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        self.peft_type = PeftType.EDA  # type: ignore[attr-defined]  # added by eda_adapters.tuners.eda
        if isinstance(self.target_modules, list | tuple | set):
            self.target_modules = sorted(set(self.target_modules))
        check_ranges(self)
        if self.num_experts_per_tok > self.num_private_experts:
            raise EdaInputError(
                f"EdaConfig.num_experts_per_tok must be between 1 and num_private_experts "
                f"({self.num_private_experts}), got {self.num_experts_per_tok!r}."
            )
        if self.init_private_weights not in ("zero", "random", "copy"):
            raise EdaInputError(
                f"EdaConfig.init_private_weights must be 'zero', 'random' or 'copy', got {self.init_private_weights!r}."
            )
        if self.init_private_weights == "copy" and not self.init_private_from:
            raise EdaInputError(
                "EdaConfig(init_private_weights='copy') needs init_private_from=<stage-1 adapter directory> (saved by "
                "EagleTrainer(peft_config=...) as <output_dir>/stage1_adapter)."
            )
        if isinstance(self.modules_to_save, str):
            self.modules_to_save = [self.modules_to_save]
        if self.modules_to_save is not None and [m.lower() for m in self.modules_to_save] in ([], ["none"]):
            self.modules_to_save = None  # `--modules_to_save none` on the command line: the private experts alone
        for name in self.modules_to_save or ():
            if name not in TRAINABLE_SHARED_MODULES:
                raise EdaInputError(
                    f"EdaConfig.modules_to_save accepts {list(TRAINABLE_SHARED_MODULES)}, got {name!r}: the shared "
                    "MLP itself stays frozen (the private experts are its trainable counterpart)."
                )

    @property
    def is_routed(self) -> bool:
        """Whether tokens are routed among several private experts (then no exact merge exists)."""
        return self.num_private_experts > 1
