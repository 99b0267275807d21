"""The `generate(assistant_model=draft)` hook: route our EAGLE drafts to [`EagleCandidateGenerator`].

transformers (5.x) picks the candidate generator of assisted generation in the private method
`GenerationMixin._get_candidate_generator`. We wrap it once, at `import eda_adapters`: when the assistant is one of our
drafts (an `EagleDraftModel`, a `PeftModel` wrapping one, or a merged draft) we return an `EagleCandidateGenerator`;
in every other case (vanilla assistant models, prompt lookup, early exit, MTP, DFlash, different tokenizers) the
original method runs unchanged. `GenerationMixin._validate_generation_mode` is wrapped as well, only to check our draft
against the target (clear one-line error) before transformers' generic vocabulary check, which would otherwise ask
for tokenizers. Every step of any assisted generation is reported to the `track_acceptance()` recorders.

Both methods are private: the hook is tested against the transformers version pinned in `pyproject.toml`.
"""

from __future__ import annotations

import functools
from typing import Any

from transformers.generation.utils import GenerationMixin

from .candidate_generator import EagleCandidateGenerator
from .drafts import as_eagle_draft, prepare_draft
from .stats import active_recorders

_MARK = "__eda_adapters_hook__"


def _uses_other_generator(generation_config: Any) -> bool:
    """Options that make transformers choose a generator that ignores the assistant model (it keeps precedence)."""
    return (
        generation_config.assistant_early_exit is not None
        or generation_config.prompt_lookup_num_tokens is not None
        or bool(getattr(generation_config, "use_mtp", False))
        or getattr(generation_config, "speculation_type", None) == "dflash"
    )


def _record_steps(candidate_generator: Any) -> Any:
    """Make the generator report each verification step (accepted drafted tokens) to the active recorders."""
    recorders = active_recorders()
    if not recorders:
        return candidate_generator
    original_update = candidate_generator.update_candidate_strategy
    state = {"first": True}

    @functools.wraps(original_update)
    def update_candidate_strategy(input_ids, scores, num_matches):
        drafted = scores.shape[1] - 1
        # the prompt prefill is not a verification step unless candidates were verified along with it
        if not (state["first"] and drafted == 0):
            for stats in recorders:
                stats.record(int(num_matches), drafted)
        state["first"] = False
        return original_update(input_ids, scores, num_matches)

    candidate_generator.update_candidate_strategy = update_candidate_strategy
    return candidate_generator


def install_generate_hook() -> None:
    """Install the hook (idempotent). Called by `import eda_adapters`."""
    if getattr(GenerationMixin._get_candidate_generator, _MARK, False):
        return
    original_get = GenerationMixin._get_candidate_generator
    original_validate = GenerationMixin._validate_generation_mode

    @functools.wraps(original_get)
    def _get_candidate_generator(self, generation_config, input_ids, inputs_tensor, logits_processor, model_kwargs,
                                 assistant_model=None, target_tokenizer=None, assistant_tokenizer=None):
        if as_eagle_draft(assistant_model) is not None and not _uses_other_generator(generation_config):
            generator = EagleCandidateGenerator(self, assistant_model, generation_config, logits_processor)
        else:
            generator = original_get(
                self, generation_config, input_ids, inputs_tensor, logits_processor, model_kwargs,
                assistant_model=assistant_model, target_tokenizer=target_tokenizer,
                assistant_tokenizer=assistant_tokenizer,
            )
        return _record_steps(generator)

    @functools.wraps(original_validate)
    def _validate_generation_mode(self, generation_mode, generation_config, generation_mode_kwargs):
        assistant = generation_mode_kwargs.get("assistant_model")
        if as_eagle_draft(assistant) is not None:
            prepare_draft(assistant, self)
        return original_validate(self, generation_mode, generation_config, generation_mode_kwargs)

    setattr(_get_candidate_generator, _MARK, True)
    GenerationMixin._get_candidate_generator = _get_candidate_generator
    GenerationMixin._validate_generation_mode = _validate_generation_mode
