"""Import the EDA authors' draft checkpoints: the shared part becomes a shared draft, the private part an EDA adapter.

Their EAGLE-1 draft replaces each layer's MLP by a shared/private mixture (`layers.{i}.block_sparse_moe.*`):

    shared_gate.weight [S, H]          shared_experts.{s}.{gate,up,down}_proj.weight
    private_gate.weight [P, H]         private_experts.{p}.{gate,up,down}_proj.weight

and the MLP output is the top-k routed mixture of the shared experts (weights renormalised over the chosen ones) plus
the same over the private experts. With one shared expert its routing weight is always 1, so the shared group is a
plain SwiGLU MLP: it becomes the draft's `mlp`, and the private group becomes an EDA adapter with the same experts,
router and top-k. `PeftModel` outputs then equal the original forward. Several shared experts have no counterpart in
an EAGLE-1 draft and are refused. The rest of the checkpoint (`fc`, attention, norms) is an EAGLE-1 draft; see
`eda_adapters.models.eagle.checkpoints` for how it is read (safetensors, or plain tensors in `pytorch_model.bin`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel, get_peft_model

from ...models.eagle.checkpoints import draft_from_eagle1_tensors, read_checkpoint_config, read_checkpoint_tensors
from .config import EdaConfig
from ...errors import EdaInputError

_MOE_KEY = re.compile(r"^layers\.(\d+)\.block_sparse_moe\.(shared|private)_(experts\.(\d+)\.(\w+)_proj|gate)\.weight$")


def split_official_eda_tensors(
    tensors: dict[str, torch.Tensor], num_layers: int
) -> tuple[dict[str, torch.Tensor], dict[int, dict[str, torch.Tensor]], int]:
    """Split the authors' tensors into EAGLE-1 tensors (shared expert as `mlp`) and, per layer, the private tensors
    stacked as the adapter stores them (`gate`/`up`/`down` `[P, out, in]`, `router` `[P, H]`); also the number of
    shared experts found."""
    plain: dict[str, torch.Tensor] = {}
    shared: dict[tuple[int, int, str], torch.Tensor] = {}
    private: dict[tuple[int, int, str], torch.Tensor] = {}
    gates: dict[tuple[int, str], torch.Tensor] = {}
    for key, value in tensors.items():
        match = _MOE_KEY.match(key)
        if match is None:
            plain[key] = value
            continue
        layer, group, _, expert, proj = match.groups()
        if expert is None:
            gates[(int(layer), group)] = value
        else:
            (shared if group == "shared" else private)[(int(layer), int(expert), proj)] = value
    num_shared = 1 + max((expert for _, expert, _ in shared), default=-1)
    for (layer, expert, proj), value in shared.items():
        if expert == 0:
            plain[f"layers.{layer}.mlp.{proj}_proj.weight"] = value
    adapter: dict[int, dict[str, torch.Tensor]] = {}
    for layer in range(num_layers):
        experts = sorted({e for (l, e, _) in private if l == layer})
        if not experts:
            raise EdaInputError(f"Layer {layer} of the EDA checkpoint has no private experts.")
        adapter[layer] = {
            proj: torch.stack([private[(layer, e, proj)] for e in experts]) for proj in ("gate", "up", "down")
        }
        if (layer, "private") in gates:
            adapter[layer]["router"] = gates[(layer, "private")]
    return plain, adapter, num_shared


def load_official_eda_checkpoint(
    path: str | os.PathLike,
    target_model: Any = None,
    adapter_name: str = "default",
    dtype: torch.dtype | None = None,
) -> PeftModel:
    """Load an EDA checkpoint in the authors' layout as a `PeftModel`: shared draft + EDA adapter `adapter_name`.

    `model.get_base_model()` is the shared draft (save it with `save_pretrained` after `model.unload()`, or keep the
    folder), `model.save_pretrained(dir)` writes the adapter. `num_experts_per_tok` is read from the config's
    `top_k_private` (default 1).
    """
    folder = Path(path)
    checkpoint_config = read_checkpoint_config(folder)
    tensors = read_checkpoint_tensors(folder)
    if not any(".block_sparse_moe." in key for key in tensors):
        raise EdaInputError(
            f"{str(folder)!r} has no shared/private experts (layers.N.block_sparse_moe.*): load a plain EAGLE-1 draft "
            "with EagleDraftModel.from_eagle_checkpoint(path)."
        )
    layers = 1 + max(int(key.split(".")[1]) for key in tensors if key.startswith("layers."))
    plain, private, num_shared = split_official_eda_tensors(tensors, layers)
    if num_shared != 1:
        raise EdaInputError(
            f"{str(folder)!r} has {num_shared} shared experts per layer; an EAGLE-1 draft has one shared MLP, so only "
            "checkpoints with num_shared_experts=1 (the authors' reference configuration) can be imported."
        )
    draft = draft_from_eagle1_tensors(checkpoint_config, plain, folder, dtype, target_model)
    first = private[0]
    num_experts, width = first["gate"].shape[0], first["gate"].shape[1]
    config = EdaConfig(
        num_private_experts=num_experts,
        num_experts_per_tok=int(checkpoint_config.get("top_k_private", 1)) if num_experts > 1 else 1,
        private_intermediate_size=width,
        modules_to_save=None,  # the checkpoint's own fc is loaded into the shared draft part
    )
    model = get_peft_model(draft, config, adapter_name=adapter_name)
    with torch.no_grad():
        for layer, weights in private.items():
            mlp = model.get_base_model().layers[layer].mlp
            for proj in ("gate", "up", "down"):
                getattr(mlp, f"eda_{proj}_proj")[adapter_name].weight.copy_(weights[proj])
            if adapter_name in mlp.eda_router:
                mlp.eda_router[adapter_name].weight.copy_(weights["router"])
    return model.eval()
