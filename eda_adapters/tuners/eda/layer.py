"""The EDA tuner layer: wraps a draft's shared SwiGLU MLP and adds private experts beside it."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from peft.tuners.tuners_utils import BaseTunerLayer, check_adapters_to_merge
from torch import nn

from .config import EdaConfig
from ...errors import EdaInputError


class ExpertLinear(nn.Module):
    """`num_experts` bias-free linear maps stored as one `[num_experts, out_features, in_features]` weight."""

    def __init__(self, num_experts: int, in_features: int, out_features: int, **factory: Any) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_experts, out_features, in_features, **factory))

    def forward(self, x: torch.Tensor, expert: int = 0) -> torch.Tensor:
        return F.linear(x, self.weight[expert])


class EdaLayer(nn.Module, BaseTunerLayer):
    """A shared SwiGLU MLP plus, per adapter, a private branch: `shared(x) + private(x)`.

    The private branch of adapter `name` is `eda_gate_proj[name]`, `eda_up_proj[name]`, `eda_down_proj[name]` (one
    weight per projection holding all experts) and, when routed, `eda_router[name]`. Keys are flat per adapter so a
    checkpoint loads under any adapter name.
    """

    adapter_layer_names = ("eda_gate_proj", "eda_up_proj", "eda_down_proj", "eda_router")
    other_param_names = ("eda_top_k",)

    def __init__(self, base_layer: nn.Module, adapter_name: str, config: EdaConfig) -> None:
        super().__init__()
        for proj in ("gate_proj", "up_proj", "down_proj"):
            if not isinstance(getattr(base_layer, proj, None), nn.Linear):
                raise TypeError(
                    f"EDA wraps a SwiGLU MLP with gate_proj/up_proj/down_proj linear layers; "
                    f"{type(base_layer).__name__} has no `{proj}`: target the draft's `mlp` modules "
                    "(EdaConfig(target_modules=None) does this for EagleDraftModel)."
                )
        self.base_layer = base_layer
        self.eda_gate_proj = nn.ModuleDict()
        self.eda_up_proj = nn.ModuleDict()
        self.eda_down_proj = nn.ModuleDict()
        self.eda_router = nn.ModuleDict()
        self.eda_top_k: dict[str, int] = {}
        # merged adapters in merge order: their private rows sit after the shared ones in that order
        self.merged_adapters = []
        self._disable_adapters = False
        self._active_adapter = adapter_name
        # The last routed forward's load-balancing loss per adapter (read by trainers; see `router_aux_loss`).
        self.eda_aux_loss: dict[str, torch.Tensor] = {}
        self.update_layer(adapter_name, config)

    @property
    def hidden_size(self) -> int:
        return self.get_base_layer().gate_proj.in_features

    @property
    def shared_intermediate_size(self) -> int:
        return self.get_base_layer().gate_proj.out_features - sum(map(self.private_width, self.merged_adapters))

    def private_width(self, adapter_name: str) -> int:
        """Intermediate width of `adapter_name`'s private MLP (rows it adds to the shared MLP when merged)."""
        return self.eda_gate_proj[adapter_name].weight.shape[1]

    def update_layer(self, adapter_name: str, config: EdaConfig) -> None:
        """Create the private experts (and router) of `adapter_name`."""
        hidden = self.hidden_size
        width = config.private_intermediate_size or self.shared_intermediate_size
        experts = config.num_private_experts
        ref = self.get_base_layer().gate_proj.weight
        factory = {"device": ref.device, "dtype": ref.dtype if ref.dtype.is_floating_point else torch.float32}
        self.eda_gate_proj[adapter_name] = ExpertLinear(experts, hidden, width, **factory)
        self.eda_up_proj[adapter_name] = ExpertLinear(experts, hidden, width, **factory)
        self.eda_down_proj[adapter_name] = ExpertLinear(experts, width, hidden, **factory)
        if config.is_routed:
            self.eda_router[adapter_name] = nn.Linear(hidden, experts, bias=False, **factory)
        self.eda_top_k[adapter_name] = config.num_experts_per_tok
        self.reset_private_parameters(adapter_name, config.init_private_weights)
        self.set_adapter(self.active_adapters)

    @torch.no_grad()
    def reset_private_parameters(self, adapter_name: str, init: str = "zero") -> None:
        for proj in (self.eda_gate_proj, self.eda_up_proj, self.eda_down_proj):
            weight = proj[adapter_name].weight
            bound = 1.0 / math.sqrt(weight.shape[-1])
            nn.init.uniform_(weight, -bound, bound)
        if init == "zero":
            nn.init.zeros_(self.eda_down_proj[adapter_name].weight)
        # "copy": EdaModel.inject_adapter overwrites these random weights with the source adapter's
        if adapter_name in self.eda_router:
            nn.init.normal_(self.eda_router[adapter_name].weight, std=0.02)

    # ------------------------------------------------------------------ forward
    def private_forward(self, adapter_name: str, x: torch.Tensor) -> torch.Tensor:
        """Output of the private branch of `adapter_name` alone (zero-cost to call on any input shape)."""
        act = self.get_base_layer().act_fn
        gate, up, down = self.eda_gate_proj[adapter_name], self.eda_up_proj[adapter_name], self.eda_down_proj[adapter_name]
        x = x.to(gate.weight.dtype)
        if adapter_name not in self.eda_router:
            return down(act(gate(x)) * up(x))

        flat = x.reshape(-1, x.shape[-1])
        probs = torch.softmax(self.eda_router[adapter_name](flat).float(), dim=-1)
        top_k = self.eda_top_k[adapter_name]
        top_weights, top_experts = probs.topk(top_k, dim=-1)
        top_weights = (top_weights / top_weights.sum(dim=-1, keepdim=True)).to(flat.dtype)
        out = torch.zeros_like(flat)
        num_experts = probs.shape[-1]
        for expert in range(num_experts):
            tokens, slot = (top_experts == expert).nonzero(as_tuple=True)
            if tokens.numel() == 0:
                continue
            h = flat[tokens]
            h = down(act(gate(h, expert)) * up(h, expert), expert) * top_weights[tokens, slot, None]
            out.index_add_(0, tokens, h)
        # Switch-Transformer load balancing: num_experts * sum_e (fraction of routed slots to e) * (mean prob of e)
        fraction = F.one_hot(top_experts, num_experts).float().sum(dim=(0, 1)) / top_experts.numel()
        self.eda_aux_loss[adapter_name] = num_experts * (fraction * probs.mean(dim=0)).sum()
        return out.view_as(x)

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if self.disable_adapters and self.merged:  # as LoRA does: the base layer alone must not carry an adapter
            self.unmerge()
        result = self.base_layer(x, *args, **kwargs)
        if self.disable_adapters:
            return result
        for adapter_name in self.active_adapters:
            if adapter_name in self.eda_gate_proj and adapter_name not in self.merged_adapters:
                result = result + self.private_forward(adapter_name, x).to(result.dtype)
        return result

    # ------------------------------------------------------------------ merging
    @torch.no_grad()
    def merge(self, safe_merge: bool = False, adapter_names: list[str] | None = None) -> None:
        """Append router-free private experts to the shared MLP's weights, in place (exact: the MLP gets wider).

        The shared `gate_proj`/`up_proj`/`down_proj` stay the same modules and the same `nn.Parameter` objects, so
        optimizers and hooks that hold them keep working; [`unmerge`] slices an adapter's rows back out.
        """
        adapter_names = check_adapters_to_merge(self, adapter_names)
        for name in adapter_names:
            if name in self.eda_router:
                raise EdaInputError(
                    f"EDA adapter '{name}' routes tokens among {self.eda_gate_proj[name].weight.shape[0]} experts; its "
                    "output depends on the input through the router, so it cannot be merged exactly into one MLP. "
                    "Keep it unmerged (use the PeftModel directly) or train a single-expert adapter to export."
                )
        base = self.get_base_layer()
        for name in adapter_names:
            private = {
                proj: getattr(self, f"eda_{proj}")[name].weight[0].to(getattr(base, proj).weight)
                for proj in ("gate_proj", "up_proj", "down_proj")
            }
            if safe_merge and not all(torch.isfinite(weight).all() for weight in private.values()):
                raise EdaInputError(f"NaNs or infs found in the merged weights of EDA adapter '{name}'; not merging.")
            width = self.private_width(name)
            for proj in ("gate_proj", "up_proj"):  # new output rows; their bias rows are zero
                linear = getattr(base, proj)
                _set_rows(linear, torch.cat((linear.weight, private[proj])), extra_bias=width)
            _set_columns(base.down_proj, torch.cat((base.down_proj.weight, private["down_proj"]), dim=1))
            base.intermediate_size = base.gate_proj.out_features
            self.merged_adapters.append(name)

    @torch.no_grad()
    def unmerge(self, adapter_names: list[str] | None = None) -> None:
        """Slice merged adapters (all, or only `adapter_names`) back out of the shared MLP's weights, in place."""
        names = list(self.merged_adapters if adapter_names is None else adapter_names)
        base = self.get_base_layer()
        for name in names:
            if name not in self.merged_adapters:
                continue
            earlier = self.merged_adapters[: self.merged_adapters.index(name)]
            width = self.private_width(name)
            start = self.shared_intermediate_size + sum(map(self.private_width, earlier))
            keep = torch.cat((torch.arange(start), torch.arange(start + width, base.gate_proj.out_features)))
            keep = keep.to(base.gate_proj.weight.device)
            for proj in ("gate_proj", "up_proj"):
                _set_rows(getattr(base, proj), getattr(base, proj).weight[keep], keep_bias=keep)
            _set_columns(base.down_proj, base.down_proj.weight[:, keep])
            base.intermediate_size = base.gate_proj.out_features
            self.merged_adapters.remove(name)

    def router_aux_loss(self) -> torch.Tensor | None:
        """Sum of the load-balancing losses of the active routed adapters from the last forward (None if unrouted)."""
        losses = [self.eda_aux_loss[n] for n in self.active_adapters if n in self.eda_aux_loss]
        return torch.stack(losses).sum() if losses else None

    def __repr__(self) -> str:
        return "eda." + super().__repr__()


def _set_rows(
    linear: nn.Linear, weight: torch.Tensor, extra_bias: int = 0, keep_bias: torch.Tensor | None = None
) -> None:
    """Give `linear` new output rows in place (same `nn.Parameter` objects); its bias is zero-padded or re-indexed."""
    linear.weight.data = weight.contiguous()
    linear.out_features = weight.shape[0]
    if linear.bias is not None:
        bias = linear.bias.data if keep_bias is None else linear.bias.data[keep_bias]
        linear.bias.data = torch.cat((bias, bias.new_zeros(extra_bias)))


def _set_columns(linear: nn.Linear, weight: torch.Tensor) -> None:
    """Give `linear` new input columns in place (same `nn.Parameter`)."""
    linear.weight.data = weight.contiguous()
    linear.in_features = weight.shape[1]
