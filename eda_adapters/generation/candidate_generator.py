"""`EagleCandidateGenerator`: chain drafting with an EAGLE draft inside transformers' assisted-generation loop."""

from __future__ import annotations

from typing import Any

import torch
from transformers import GenerationConfig, LogitsProcessorList, PreTrainedModel
from transformers.cache_utils import DynamicCache
from transformers.generation.candidate_generator import CandidateGenerator
from transformers.utils import ModelOutput

from .drafts import prepare_draft
from .eos import eos_token_ids
from ..errors import EdaInputError

# Number of draft tokens per step when the caller leaves transformers' `num_assistant_tokens` at its placeholder
# default (20, tuned for small vanilla LMs): EAGLE chains are usually verified 4-8 tokens at a time.
DEFAULT_NUM_DRAFT_TOKENS = 5
_TRANSFORMERS_DEFAULTS = GenerationConfig._get_default_generation_params()
_TRANSFORMERS_DEFAULT_NUM_ASSISTANT_TOKENS = _TRANSFORMERS_DEFAULTS["num_assistant_tokens"]
_TRANSFORMERS_DEFAULT_CONFIDENCE = _TRANSFORMERS_DEFAULTS.get("assistant_confidence_threshold")
SCHEDULES = ("constant", "heuristic", "heuristic_transient")


def resolve_num_draft_tokens(generation_config: GenerationConfig, target: PreTrainedModel) -> int:
    """Draft tokens per step: `generate(num_assistant_tokens=k)` if the caller set it, else the EAGLE default."""
    requested = generation_config.num_assistant_tokens
    set_on_target = getattr(getattr(target, "generation_config", None), "num_assistant_tokens", None)
    if requested is None or (requested == _TRANSFORMERS_DEFAULT_NUM_ASSISTANT_TOKENS and set_on_target is None):
        return DEFAULT_NUM_DRAFT_TOKENS
    if int(requested) < 1:
        raise EdaInputError(f"num_assistant_tokens must be >= 1, got {requested}.")
    return int(requested)


def resolve_confidence_threshold(generation_config: GenerationConfig, target: PreTrainedModel) -> float:
    """Stop a chain early once the draft's probability of its own token falls below this (0: never).

    `generate(assistant_confidence_threshold=p)` sets it; transformers' placeholder default (tuned for vanilla
    assistants) counts as unset, as for `num_assistant_tokens`. Each draft token the target verifies costs time (on a
    CPU, 5 verified tokens cost 1.6x one), so an unsure draft should hand over early.
    """
    requested = getattr(generation_config, "assistant_confidence_threshold", None)
    set_on_target = getattr(getattr(target, "generation_config", None), "assistant_confidence_threshold", None)
    if requested is None or (requested == _TRANSFORMERS_DEFAULT_CONFIDENCE and set_on_target is None):
        return 0.0
    if not 0.0 <= float(requested) <= 1.0:
        raise EdaInputError(f"assistant_confidence_threshold must be in [0, 1], got {requested}.")
    return float(requested)


def _eos_token_ids(generation_config: GenerationConfig, target: PreTrainedModel) -> set[int]:
    """The tokens that end this `generate` call: the call's own, else the target's generation config's."""
    prepared = getattr(generation_config, "_eos_token_tensor", None)  # set by generate() from every source
    if prepared is not None:
        return {int(t) for t in prepared.flatten().tolist()}
    return set(eos_token_ids(target, generation_config.eos_token_id))


class EagleCandidateGenerator(CandidateGenerator):
    """Propose a chain of tokens with an EAGLE draft that reads the target's hidden states (EAGLE-1: the last one;
    EAGLE-3: three of them).

    Selected automatically by `target.generate(..., assistant_model=draft)` once `eda_adapters` is imported. Each step
    the draft first consumes the target features of the tokens accepted at the previous step (paired with the next
    token, as in training), then rolls out `num_assistant_tokens` tokens autoregressively on its own predicted
    features. The draft keeps its own KV cache, cropped back to the accepted prefix at every step.

    With `do_sample=True` the candidates are sampled from the draft's distribution after the same logits processors
    as the target (temperature, top-k/top-p, ...), and their logits are returned so that transformers applies the
    standard speculative-sampling acceptance rule: the output distribution is the target's.

    Args:
        target: The model that calls `generate` (the verifier).
        draft: An `EagleDraftModel` or `Eagle3DraftModel`, a `PeftModel` wrapping one, or a merged draft.
        generation_config: The generation config of the `generate` call (`num_assistant_tokens`,
            `num_assistant_tokens_schedule`, `do_sample`, `max_length`, `output_hidden_states`).
        logits_processor: The target's logits processors, applied to the draft logits as well.
    """

    requires_model_outputs: bool = True
    model_kwargs_overrides: dict[str, Any]  # set per draft in __init__: the target states it reads

    def __init__(
        self,
        target: PreTrainedModel,
        draft: Any,
        generation_config: GenerationConfig,
        logits_processor: LogitsProcessorList | None = None,
    ) -> None:
        self.draft = prepare_draft(draft, target)
        self.logits_processor = logits_processor if logits_processor is not None else LogitsProcessorList()
        self.do_sample = bool(generation_config.do_sample)
        self.max_length = generation_config.max_length
        self.schedule = generation_config.num_assistant_tokens_schedule or "constant"
        if self.schedule not in SCHEDULES:
            raise EdaInputError(f"num_assistant_tokens_schedule must be one of {SCHEDULES}, got {self.schedule!r}.")
        self.num_assistant_tokens = resolve_num_draft_tokens(generation_config, target)
        self.confidence_threshold = resolve_confidence_threshold(generation_config, target)
        self.eos_token_ids = _eos_token_ids(generation_config, target)
        self.eos_tensor = None
        if self.eos_token_ids:
            self.eos_tensor = torch.tensor(sorted(self.eos_token_ids), dtype=torch.long, device=self.draft.device)
        # the target returns only the states the draft reads, unless the caller asked for all of them
        selection = True if generation_config.output_hidden_states else self.draft.hidden_state_indices
        self.model_kwargs_overrides = {"output_hidden_states": selection}
        self.cache = DynamicCache()
        self.num_committed = 0  # draft cache entries built from real target features
        self.num_candidates = 0  # tokens proposed at the last step

    @torch.no_grad()
    def get_candidates(
        self,
        input_ids: torch.LongTensor,
        model_kwargs: dict[str, Any] | None = None,
        model_outputs: ModelOutput | None = None,
        is_first_iteration: bool = False,
        n_last_matches: int = 0,
        **kwargs: Any,
    ) -> tuple[torch.LongTensor, torch.Tensor | None]:
        """Return `input_ids` extended with the drafted tokens, and the (processed) draft logits `[1, k, vocab]`."""
        if is_first_iteration:
            # the draft needs the target's features of the prompt: let the target run the prefill alone first
            self.num_candidates = 0
            return input_ids, None
        if model_outputs is None or getattr(model_outputs, "hidden_states", None) is None:
            raise EdaInputError(
                "EagleCandidateGenerator needs the target's hidden states (model_outputs.hidden_states)."
            )
        device = self.draft.device
        seq_len = input_ids.shape[1]
        features = self.draft.target_features(model_outputs.hidden_states)
        # Features of the tokens the target has verified at the last forward: positions [start, seq_len - 1). The last
        # token of `input_ids` (the target's own bonus token) has no feature yet.
        num_new = features.shape[1] if self.num_committed == 0 else n_last_matches + 1
        start = seq_len - 1 - num_new
        if start != self.num_committed and self.num_committed != 0:
            raise RuntimeError(f"EAGLE draft out of sync with the target ({start} != {self.num_committed}).")
        self.cache.crop(-(self.cache.get_seq_length() - self.num_committed))

        # 1. consume the real features: pairs (feature_t, token_{t+1}) for t in [start, seq_len - 1)
        out = self.draft(
            input_ids=input_ids[:, start + 1 :].to(device),
            hidden_states=features[:, :num_new].to(device),
            position_ids=torch.arange(start, seq_len - 1, device=device)[None],
            past_key_values=self.cache,
            use_cache=True,
        )
        self.num_committed = seq_len - 1

        num_tokens = min(self.num_assistant_tokens, self.max_length - seq_len - 1)
        self.num_candidates = max(num_tokens, 0)
        if num_tokens <= 0:
            return input_ids, None

        # 2. roll out the chain on the draft's own predicted features. Everything stays on the device and is written
        # into preallocated buffers; the host reads the drafted tokens once, after the rollout (for EOS).
        candidate_ids = input_ids.new_empty((input_ids.shape[0], seq_len + num_tokens), device=device)
        candidate_ids[:, :seq_len] = input_ids
        positions = torch.arange(seq_len - 1, seq_len - 1 + num_tokens, device=device)[None]
        all_logits = torch.empty((input_ids.shape[0], num_tokens, self.draft.config.vocab_size), dtype=torch.float32,
                                 device=device)
        drafted = num_tokens
        for i in range(num_tokens):
            logits = self.draft.target_vocab_logits(out.logits[:, -1]).float()
            logits = self.logits_processor(candidate_ids[:, : seq_len + i], logits)
            all_logits[:, i] = logits
            if self.do_sample:
                token = torch.multinomial(torch.softmax(logits, dim=-1), num_samples=1)
            else:
                token = logits.argmax(dim=-1, keepdim=True)
            candidate_ids[:, seq_len + i] = token[:, 0]
            if self.confidence_threshold:
                # a host sync per token, paid only when asked for: stopping early is what saves the draft forwards
                confidence = float(torch.softmax(logits, dim=-1).gather(-1, token))
                if confidence < self.confidence_threshold:
                    drafted = i + 1
                    break  # the draft is unsure: let the target verify what it has
            if i + 1 < num_tokens:
                out = self.draft(
                    input_ids=token,
                    hidden_states=out.last_hidden_state[:, -1:],
                    position_ids=positions[:, i : i + 1],
                    past_key_values=self.cache,
                    use_cache=True,
                )
        drafted = self._cut_after_eos(candidate_ids[0, seq_len : seq_len + drafted], drafted)
        self.num_candidates = drafted
        return candidate_ids[:, : seq_len + drafted], all_logits[:, :drafted]

    def _cut_after_eos(self, drafted_ids: torch.Tensor, drafted: int) -> int:
        """How many drafted tokens to propose: all of them, or up to and including the first EOS. Drafting past the
        end would let `generate` accept tokens after EOS, which plain decoding never produces; with EOS last,
        `generate` lets the target emit it itself and stops. One host read per step."""
        if self.eos_tensor is None:
            return drafted
        is_eos = torch.isin(drafted_ids, self.eos_tensor).tolist()
        return is_eos.index(True) + 1 if True in is_eos else drafted

    def update_candidate_strategy(self, input_ids: torch.LongTensor, scores: torch.Tensor, num_matches: int) -> None:
        """Dynamic chain length (`num_assistant_tokens_schedule="heuristic"`): +2 after a fully accepted chain, -1
        otherwise, as transformers does for assistant models. The value lives for one `generate` call."""
        if self.num_candidates == 0 or self.schedule == "constant":
            return
        if num_matches == self.num_candidates:
            self.num_assistant_tokens += 2
        else:
            self.num_assistant_tokens = max(1, self.num_assistant_tokens - 1)
