from .draft_vocab import count_tokens, most_frequent_tokens
from .feature_cache import CachedFeatureDataset, extract_features, load_feature_index, pad_batch
from .features import compute_target_features
from .io import load_rows
from .prompt_filter import DuplicateIndex, PromptFilter
from .regenerate import DecodingSettings, load_regenerated, regenerate
from .selection import (
    add_shift_scores,
    check_same_tokens,
    plot_shift_histogram,
    pool_embeddings,
    representation_shift,
    resolve_budget,
    select_by_shift,
)
from .selection_strategies import DEFAULT_STRATEGY, SELECTION_STRATEGIES, SelectionStrategy
from .self_prompting import load_self_prompts, self_prompts, user_turn_opening
from .signature import check_target_signature, target_fingerprint, target_signature

__all__ = [
    "CachedFeatureDataset",
    "DecodingSettings",
    "DuplicateIndex",
    "PromptFilter",
    "DEFAULT_STRATEGY",
    "SELECTION_STRATEGIES",
    "SelectionStrategy",
    "add_shift_scores",
    "check_same_tokens",
    "check_target_signature",
    "compute_target_features",
    "count_tokens",
    "extract_features",
    "load_feature_index",
    "load_regenerated",
    "load_rows",
    "load_self_prompts",
    "most_frequent_tokens",
    "pad_batch",
    "plot_shift_histogram",
    "pool_embeddings",
    "regenerate",
    "representation_shift",
    "resolve_budget",
    "select_by_shift",
    "self_prompts",
    "target_fingerprint",
    "target_signature",
    "user_turn_opening",
]
