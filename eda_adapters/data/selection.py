"""Shift-based sample selection: train on the samples where the fine-tuned target moved furthest from its base.

The representation shift of a sample is a mean over its response tokens (`loss_mask == 1`; all tokens when a
sample has none) of a per-token distance between the two targets' last hidden states on the same tokens:

    cosine (default)   1 - cos(h_base, h_finetuned)      in [0, 2], scale-free
    l2                 ||h_base - h_finetuned||_2

Scores are stored in a `shift_score` column, so a scored dataset can be re-selected at another budget without the
models.
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from accelerate.utils import gather_object
from datasets import Dataset
from tqdm.auto import tqdm

from ..console import bar_options
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..plotting import pyplot
from ..validation import check_causal_lm
from .feature_cache import pad_batch
from .features import compute_target_features
from .io import DatasetLike, check_token_ids, load_rows, require_columns
from .runs import process_state
from ..errors import EdaInputError

SHIFT_METRICS = ("cosine", "l2")
SELECTION_METHODS = ("shift", "random")
SCORE_COLUMN = "shift_score"


def check_same_tokens(
    base: PreTrainedModel,
    finetuned: PreTrainedModel,
    base_tokenizer: PreTrainedTokenizerBase | None = None,
    finetuned_tokenizer: PreTrainedTokenizerBase | None = None,
) -> None:
    """Representation shift compares the two targets on the same tokens: require equal hidden sizes, vocabularies
    and (when given) identical tokenizers. Raises a one-line `ValueError` otherwise."""
    check_causal_lm(base, "the base target")
    check_causal_lm(finetuned, "the fine-tuned target")
    base_cfg, ft_cfg = base.config.get_text_config(), finetuned.config.get_text_config()
    if base_cfg.model_type != ft_cfg.model_type:
        raise EdaInputError(
            f"the base target is a {base_cfg.model_type} model but the fine-tuned target a {ft_cfg.model_type} one: "
            "shift compares a fine-tune with its own base model; pass the model it was fine-tuned from"
        )
    if base_cfg.hidden_size != ft_cfg.hidden_size:
        raise EdaInputError(
            f"the base target has hidden size {base_cfg.hidden_size} but the fine-tuned target has "
            f"{ft_cfg.hidden_size}: shift needs a fine-tune of the same base model"
        )
    if base_cfg.vocab_size != ft_cfg.vocab_size:
        raise EdaInputError(
            f"the base target's vocabulary has {base_cfg.vocab_size} tokens but the fine-tuned target's has "
            f"{ft_cfg.vocab_size}: shift needs both targets on the same tokens"
        )
    if base_tokenizer is not None and finetuned_tokenizer is not None:
        base_vocab, ft_vocab = base_tokenizer.get_vocab(), finetuned_tokenizer.get_vocab()
        if base_vocab != ft_vocab:
            differing = sorted(set(base_vocab.items()) ^ set(ft_vocab.items()), key=str)[:3]
            raise EdaInputError(
                f"the base and fine-tuned tokenizers differ ({len(base_vocab)} vs {len(ft_vocab)} tokens, e.g. "
                f"{differing}): shift needs both targets on the same tokens; use the base model of this fine-tune"
            )


def _token_shift(base_hidden: torch.Tensor, ft_hidden: torch.Tensor, metric: str) -> torch.Tensor:
    if metric == "cosine":
        return 1.0 - F.cosine_similarity(base_hidden.float(), ft_hidden.float(), dim=-1)
    return (base_hidden.float() - ft_hidden.float()).norm(dim=-1)


@torch.no_grad()
def representation_shift(
    base: PreTrainedModel,
    finetuned: PreTrainedModel,
    dataset: DatasetLike,
    *,
    metric: str = "cosine",
    batch_size: int = 8,
    base_tokenizer: PreTrainedTokenizerBase | None = None,
    finetuned_tokenizer: PreTrainedTokenizerBase | None = None,
    show_progress: bool = True,
) -> list[float]:
    """One representation-shift score per sample of `dataset` (columns `input_ids`, optional `loss_mask`)."""
    if metric not in SHIFT_METRICS:
        raise EdaInputError(f"unknown shift metric {metric!r}; choose one of {SHIFT_METRICS}")
    if batch_size < 1:
        raise EdaInputError(f"batch_size must be >= 1, got {batch_size}")
    check_same_tokens(base, finetuned, base_tokenizer, finetuned_tokenizer)
    rows = load_rows(dataset)
    require_columns(rows, ["input_ids"], "shift scoring")
    columns = ["input_ids"] + (["loss_mask"] if "loss_mask" in rows.column_names else [])
    rows = rows.select_columns(columns)
    vocab_size = base.config.get_text_config().vocab_size
    check_token_ids(rows, vocab_size)
    # several processes (accelerate launch): each scores a contiguous share of the batches, then all gather
    state = process_state()
    starts = list(range(0, len(rows), batch_size))
    scored: list[tuple[int, float]] = []
    with state.split_between_processes(starts) as my_starts:
        for start in tqdm(my_starts, desc="scoring shift", unit="batch",
                          **bar_options(show_progress and state.is_main_process)):
            stop = min(start + batch_size, len(rows))
            batch = pad_batch(list(rows.select(range(start, stop))))
            base_hidden, _ = compute_target_features(
                base, batch["input_ids"].to(base.device), batch["attention_mask"].to(base.device)
            )
            ft_hidden, _ = compute_target_features(
                finetuned, batch["input_ids"].to(finetuned.device), batch["attention_mask"].to(finetuned.device)
            )
            per_token = _token_shift(base_hidden, ft_hidden.to(base_hidden.device), metric).cpu()
            mask = batch["loss_mask"] * batch["attention_mask"]
            # a sample without response tokens is scored on all of its tokens
            empty = mask.sum(-1) == 0
            mask[empty] = batch["attention_mask"][empty]
            mask = mask.float()
            scored.extend(zip(range(start, stop), ((per_token * mask).sum(-1) / mask.sum(-1).clamp_min(1)).tolist()))
    if state.num_processes > 1:
        scored = gather_object(scored)
    return [score for _, score in sorted(scored)]


def add_shift_scores(
    dataset: DatasetLike,
    base: PreTrainedModel,
    finetuned: PreTrainedModel,
    *,
    column: str = SCORE_COLUMN,
    **kwargs,
) -> Dataset:
    """`dataset` with a `column` of `representation_shift` scores (replacing an existing one)."""
    rows = load_rows(dataset)
    scores = representation_shift(base, finetuned, rows, **kwargs)
    if column in rows.column_names:
        rows = rows.remove_columns(column)
    return rows.add_column(column, scores)


def resolve_budget(budget: int | float, num_samples: int) -> int:
    """A budget as a count (int >= 1) or a fraction of the dataset (float in (0, 1]) -> a number of samples."""
    if isinstance(budget, bool) or not isinstance(budget, (int, float)):
        raise TypeError(f"budget must be a count (int) or a fraction (float in (0, 1]), got {budget!r}")
    if isinstance(budget, float):
        if not 0 < budget <= 1:
            raise EdaInputError(f"a fractional budget must be in (0, 1], got {budget}; pass an int for a count")
        return max(1, int(math.floor(budget * num_samples)))
    if budget < 1:
        raise EdaInputError(f"budget must be at least 1 sample, got {budget}")
    if budget > num_samples:
        raise EdaInputError(
            f"budget of {budget} samples is larger than the dataset ({num_samples} samples); lower it or pass a "
            "fraction"
        )
    return budget


def select_by_shift(
    dataset: DatasetLike,
    budget: int | float,
    base: PreTrainedModel | None = None,
    finetuned: PreTrainedModel | None = None,
    *,
    method: str = "shift",
    metric: str = "cosine",
    seed: int = 0,
    score_column: str = SCORE_COLUMN,
    recompute: bool = False,
    plot: str | os.PathLike | None = None,
    **score_kwargs,
) -> Dataset:
    """Keep `budget` samples (a count, or a fraction of the dataset), in their original order.

    `method="shift"` keeps the highest representation-shift samples: scores are computed with `base` and `finetuned`
    unless the dataset already holds `score_column` (pass `recompute=True` to score again). `method="random"` keeps a
    seeded uniform sample of the same size, the baseline to compare against. The returned rows carry the scores when
    there are any; `plot` saves a histogram of all scores with the selection threshold marked. Extra keyword arguments
    go to `representation_shift` (`batch_size`, `base_tokenizer`, `finetuned_tokenizer`, `show_progress`).
    """
    if method not in SELECTION_METHODS:
        raise EdaInputError(f"unknown selection method {method!r}; choose one of {SELECTION_METHODS}")
    rows = load_rows(dataset)
    count = resolve_budget(budget, len(rows))
    have_models = base is not None and finetuned is not None
    if method == "shift" and (recompute or score_column not in rows.column_names):
        if not have_models:
            raise EdaInputError(
                f"shift selection needs the base and fine-tuned targets, or a dataset that already has a "
                f"{score_column!r} column (columns found: {rows.column_names})"
            )
        rows = add_shift_scores(rows, base, finetuned, column=score_column, metric=metric, **score_kwargs)
    scores = rows[score_column] if score_column in rows.column_names else None

    if method == "shift":
        order = sorted(range(len(rows)), key=lambda i: (-scores[i], i))
        keep = sorted(order[:count])
    else:
        keep = sorted(random.Random(seed).sample(range(len(rows)), count))
    if plot is not None:
        if scores is None:
            raise EdaInputError("plot needs shift scores: select with method='shift' first, or score the dataset")
        plot_shift_histogram(scores, plot, selected=keep)
    return rows.select(keep)


def plot_shift_histogram(
    scores: Sequence[float], path: str | os.PathLike, selected: Sequence[int] | None = None
) -> None:
    """Save a histogram of shift scores to `path` (PNG), the selected samples drawn over all of them."""
    plt = pyplot("The shift histogram")

    import numpy as np

    fig, ax = plt.subplots(figsize=(6, 3.5))
    edges = np.histogram_bin_edges(np.asarray(scores, dtype=float), bins=min(50, max(5, len(scores) // 5)))
    ax.hist(list(scores), bins=edges, color="#9ab", label=f"all ({len(scores)})")
    if selected is not None:
        chosen = [scores[i] for i in selected]
        ax.hist(chosen, bins=edges, color="#d62", alpha=0.7, label=f"selected ({len(chosen)})")
    ax.set_xlabel("representation shift")
    ax.set_ylabel("samples")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
