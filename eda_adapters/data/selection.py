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
import warnings
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
from .io import DatasetLike, describe_source, load_rows, load_tokenized_rows
from .runs import process_state
from .scores_record import read_scores_record, scores_to_recompute
from .signature import target_signature
from ..errors import EdaInputError
from ..schemas.tokenized_rows import EMBEDDING_COLUMN, SCORE_COLUMN
from .selection_strategies import DEFAULT_STRATEGY, SelectionStrategy

SHIFT_METRICS = ("cosine", "l2")
EMBEDDING_DIMS = 32


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
    if metric == "cosine":  # a distance: rounding must not make identical states score below 0
        return (1.0 - F.cosine_similarity(base_hidden.float(), ft_hidden.float(), dim=-1)).clamp_min(0.0)
    return (base_hidden.float() - ft_hidden.float()).norm(dim=-1)


@torch.no_grad()
def _score_pool(
    base: PreTrainedModel,
    finetuned: PreTrainedModel,
    dataset: DatasetLike,
    *,
    metric: str = "cosine",
    batch_size: int = 8,
    base_tokenizer: PreTrainedTokenizerBase | None = None,
    finetuned_tokenizer: PreTrainedTokenizerBase | None = None,
    show_progress: bool = True,
) -> tuple[list[float], torch.Tensor]:
    """Shift scores, and the base target's mean hidden state over the same tokens `[num_samples, hidden]`."""
    if metric not in SHIFT_METRICS:
        raise EdaInputError(f"unknown shift metric {metric!r}; choose one of {SHIFT_METRICS}")
    if batch_size < 1:
        raise EdaInputError(f"batch_size must be >= 1, got {batch_size}")
    check_same_tokens(base, finetuned, base_tokenizer, finetuned_tokenizer)
    rows = load_tokenized_rows(dataset, vocab_size=base.config.get_text_config().vocab_size)
    rows = rows.select_columns(["input_ids"] + (["loss_mask"] if "loss_mask" in rows.column_names else []))
    # several processes (accelerate launch): each scores a contiguous share of the batches, then all gather
    state = process_state()
    starts = list(range(0, len(rows), batch_size))
    scored: list[tuple[int, float, torch.Tensor]] = []
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
            weights = mask / mask.sum(-1, keepdim=True).clamp_min(1)
            means = torch.einsum("bt,bth->bh", weights, base_hidden.float().cpu())
            scored.extend(zip(range(start, stop), (per_token * weights).sum(-1).tolist(), means.unbind()))
    if state.num_processes > 1:
        scored = gather_object(scored)
    scored.sort(key=lambda item: item[0])
    means = torch.stack([mean for _, _, mean in scored]) if scored else torch.empty(0, 0)
    return [score for _, score, _ in scored], means


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
    scores, _ = _score_pool(base, finetuned, dataset, metric=metric, batch_size=batch_size,
                            base_tokenizer=base_tokenizer, finetuned_tokenizer=finetuned_tokenizer,
                            show_progress=show_progress)
    return scores


def pool_embeddings(mean_states: torch.Tensor, dims: int = EMBEDDING_DIMS) -> torch.Tensor:
    """The pool's coordinates on its first `dims` principal components `[num_samples, min(dims, ...)]`: what
    `cluster` selection clusters, small enough to store beside every sample."""
    centred = mean_states.double() - mean_states.double().mean(0, keepdim=True)
    u, s, _ = torch.linalg.svd(centred, full_matrices=False)
    keep = min(dims, s.numel())
    return (u[:, :keep] * s[:keep]).float()


def add_shift_scores(
    dataset: DatasetLike,
    base: PreTrainedModel,
    finetuned: PreTrainedModel,
    *,
    column: str = SCORE_COLUMN,
    embedding_column: str = EMBEDDING_COLUMN,
    **kwargs,
) -> Dataset:
    """`dataset` with a `column` of `representation_shift` scores and an `embedding_column` of the base target's
    embeddings of each sample (`pool_embeddings`, for `cluster` selection), replacing existing ones."""
    rows = load_rows(dataset)
    scores, means = _score_pool(base, finetuned, rows, **kwargs)
    embeddings = [[round(x, 5) for x in row] for row in pool_embeddings(means).tolist()] if len(rows) else []
    rows = rows.remove_columns([c for c in (column, embedding_column) if c in rows.column_names])
    return rows.add_column(column, scores).add_column(embedding_column, embeddings)


def missing_columns(strategy: SelectionStrategy, column_names: Sequence[str], score_column: str = SCORE_COLUMN
                    ) -> list[str]:
    """The columns `strategy` reads that a dataset with `column_names` lacks: the scores (every strategy but
    `random`) and the base embeddings (`cluster`); scoring the dataset adds both."""
    wanted = [score_column] * strategy.needs_scores + [EMBEDDING_COLUMN] * strategy.needs_embeddings
    return [column for column in wanted if column not in column_names]


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
    strategy: str | SelectionStrategy = DEFAULT_STRATEGY,
    temperature: float | None = None,
    num_clusters: int | None = None,
    metric: str | None = None,
    seed: int | None = None,
    score_column: str = SCORE_COLUMN,
    recompute: bool = False,
    plot: str | os.PathLike | None = None,
    method: str | None = None,
    **score_kwargs,
) -> Dataset:
    """Keep `budget` samples (a count, or a fraction of the dataset), in their original order.

    `strategy` (a name, whose options `temperature`/`num_clusters`/`seed` default to 1.0/8/0, or a
    [`SelectionStrategy`] that holds its options: then passing them here too is an error) decides which: `"topk"`
    the highest representation-shift samples, `"weighted"` (the default) a sample drawn with weights
    `score ** (1 / temperature)`, `"cluster"` the highest scores within `num_clusters` clusters of the pool, each
    cluster's share in proportion to its total shift, `"random"` a seeded uniform sample (the baseline); see
    `eda_adapters.data.selection_strategies`. Scores (and the embeddings `cluster` reads) are computed with `base`
    and `finetuned` and `metric` (default `"cosine"`) unless the dataset already holds `score_column`. Scores it
    holds are reused unless `recompute=True`, or unless they were not made with the `metric`, `base` or `finetuned`
    passed (`eda select`'s record beside a scores file says what made them; in-memory scores record nothing): then
    they are computed again, or refused when the targets are not passed (`eda_adapters.data.scores_record`). The
    returned rows carry the scores when there are any; `plot` saves a histogram of all scores with the selection
    drawn over them. Extra keyword arguments go to `representation_shift` (`batch_size`, `base_tokenizer`,
    `finetuned_tokenizer`, `show_progress`). `method` is the former name of `strategy` (`"shift"` is `"topk"`).
    """
    if method is not None:
        warnings.warn("select_by_shift(method=...) is deprecated; pass strategy=... ('shift' is now 'topk')",
                      FutureWarning, stacklevel=2)
        strategy = method
    options = {name: value for name, value in
               (("temperature", temperature), ("num_clusters", num_clusters), ("seed", seed)) if value is not None}
    if isinstance(strategy, SelectionStrategy):
        if options:  # two sources for one option: refuse rather than silently prefer one
            raise EdaInputError(f"select_by_shift got {', '.join(options)} besides a SelectionStrategy that holds its "
                                "own: set them on the SelectionStrategy")
    else:
        strategy = SelectionStrategy(strategy, **options)
    if metric is not None and metric not in SHIFT_METRICS:
        raise EdaInputError(f"unknown shift metric {metric!r}; choose one of {SHIFT_METRICS}")
    rows = load_tokenized_rows(dataset, required=())  # scores and embeddings too, before they are trusted
    count = resolve_budget(budget, len(rows))
    missing = missing_columns(strategy, rows.column_names, score_column)
    if score_column in rows.column_names and not recompute:
        recompute = bool(scores_to_recompute(
            describe_source(dataset), read_scores_record(dataset), metric=metric,
            base=target_signature(base) if base is not None else None,
            finetuned=target_signature(finetuned) if finetuned is not None else None,
            can_score=base is not None and finetuned is not None,
            fix="pass base= and finetuned= to score again, or leave metric= unset",
        ))
    if strategy.needs_scores and (recompute or missing):
        if base is None or finetuned is None:
            raise EdaInputError(
                f"{strategy.name} selection needs the base and fine-tuned targets, or a dataset that already has "
                f"{' and '.join(f'a {c!r} column' for c in missing)} (columns found: {rows.column_names})"
            )
        rows = add_shift_scores(rows, base, finetuned, column=score_column, metric=metric or "cosine", **score_kwargs)
    scores = rows[score_column] if score_column in rows.column_names else None
    embeddings = rows[EMBEDDING_COLUMN] if strategy.needs_embeddings else None
    keep = strategy.choose(len(rows), count, scores, embeddings)
    if plot is not None:
        if scores is None:
            raise EdaInputError("plot needs shift scores: pass the base and fine-tuned targets to score the dataset")
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
