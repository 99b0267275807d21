"""How a scored pool becomes a selection: which `count` samples to keep, given each sample's representation-shift
score (and, for `cluster`, where its base-target representation lies).

    topk      the `count` highest scores: the most shifted samples, all of them from wherever the fine-tune moved
              most (it can spend the whole budget on one sub-type of the domain)
    weighted  a sample without replacement, each sample drawn with weight score ** (1 / temperature): temperature
              1 draws in proportion to the shift, towards 0 it becomes topk, large ones become random
    cluster   k-means clusters of the pool's base-target embeddings; each cluster gets a share of the budget in
              proportion to its total shift, and keeps its own highest scores: focus on shifted regions without
              dropping any region that moved
    random    a seeded uniform sample, the baseline

The default is `weighted` (`DEFAULT_STRATEGY`): on the real-LM comparison (docs/results.md, SmolLM2 code and
math fine-tunes, 3 seeds, 30% of the pool) it was level with the best strategy in both domains and never below
random, needing only the scores, while topk fell below random beyond the intervals by spending the budget on the
one sub-type the fine-tune moved most. No strategy beat random beyond the intervals there.

Every strategy is deterministic given its seed. Strategies only read lists of numbers, so they can be tested (and
compared) without any model.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch

from ..errors import EdaInputError
from ..schemas.config_ranges import COUNT, NON_NEGATIVE_INT, POSITIVE, check_ranges, ranged

SELECTION_STRATEGIES = ("topk", "weighted", "cluster", "random")
#: What `eda select` and `select_by_shift` use when no strategy is named (see the module docstring for why).
DEFAULT_STRATEGY = "weighted"
#: Names used before strategies had their own names (`method="shift"`), still accepted.
STRATEGY_ALIASES = {"shift": "topk"}


def canonical_strategy(name: str) -> str:
    """The strategy `name` stands for (`"shift"` is `"topk"`); a one-line error for an unknown one."""
    strategy = STRATEGY_ALIASES.get(name, name)
    if strategy not in SELECTION_STRATEGIES:
        raise EdaInputError(f"unknown selection strategy {name!r}; choose one of {SELECTION_STRATEGIES}")
    return strategy


@dataclass(frozen=True)
class SelectionStrategy:
    """A selection strategy and its options, as recorded in `selection.json`.

    Attributes:
        name: One of `SELECTION_STRATEGIES` (see the module docstring).
        temperature: `weighted` only: weights are `score ** (1 / temperature)`; must be > 0.
        num_clusters: `cluster` only: k-means clusters of the pool (at most the pool's size); must be >= 1.
        seed: Seeds `weighted`, `cluster` (k-means initialisation) and `random`.
    """

    name: str = DEFAULT_STRATEGY
    temperature: float = ranged(1.0, POSITIVE)
    num_clusters: int = ranged(8, COUNT)
    seed: int = ranged(0, NON_NEGATIVE_INT)

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", canonical_strategy(self.name))
        check_ranges(self)

    @property
    def needs_scores(self) -> bool:
        return self.name != "random"

    @property
    def needs_embeddings(self) -> bool:
        return self.name == "cluster"

    def to_dict(self) -> dict:
        """The options that shape this strategy's selection (unused ones left out)."""
        record = asdict(self)
        if self.name != "weighted":
            record.pop("temperature")
        if self.name != "cluster":
            record.pop("num_clusters")
        return record

    def choose(self, num_samples: int, count: int, scores: Sequence[float] | None = None,
               embeddings: Sequence[Sequence[float]] | None = None) -> list[int]:
        """Indices (ascending) of the `count` samples this strategy keeps from a pool of `num_samples`, given their
        shift `scores` (all strategies but `random`) and base-target `embeddings` (`cluster`)."""
        if self.name == "random":
            return sorted(random.Random(self.seed).sample(range(num_samples), count))
        if scores is None:
            raise EdaInputError(f"{self.name} selection needs shift scores: score the pool first")
        if self.name == "topk":
            return _top(range(len(scores)), scores, count)
        if self.name == "weighted":
            return _weighted(scores, count, self.temperature, self.seed)
        if embeddings is None:
            raise EdaInputError(
                "cluster selection needs the base target's embeddings of the pool: score it again with the base and "
                "fine-tuned targets (`recompute=True`, `eda select --recompute`)"
            )
        if self.num_clusters > len(scores):
            raise EdaInputError(
                f"num_clusters ({self.num_clusters}) is larger than the pool ({len(scores)} samples); lower it"
            )
        labels = kmeans(torch.tensor(embeddings, dtype=torch.float32), self.num_clusters, seed=self.seed)
        return cluster_quota_selection(scores, labels.tolist(), count)


def _top(indices: Sequence[int] | range, scores: Sequence[float], count: int) -> list[int]:
    """The `count` highest-scoring of `indices` (ties: the earlier sample), ascending."""
    return sorted(sorted(indices, key=lambda i: (-scores[i], i))[:count])


def _weighted(scores: Sequence[float], count: int, temperature: float, seed: int) -> list[int]:
    # Gumbel-top-k: the top `count` of log(weight) + Gumbel noise is a sample without replacement with probabilities
    # proportional to the weights (successive draws). Log weights keep tiny temperatures from underflowing.
    generator = torch.Generator().manual_seed(seed)
    values = torch.tensor(scores, dtype=torch.float64)
    if (values < 0).any():
        raise EdaInputError("weighted selection needs non-negative shift scores (cosine or l2)")
    log_weights = values.clamp_min(1e-12).log() / temperature
    uniform = torch.rand(len(values), generator=generator, dtype=torch.float64).clamp(1e-12, 1 - 1e-12)
    keys = log_weights - torch.log(-torch.log(uniform))
    return sorted(keys.topk(count).indices.tolist())


def kmeans(points: torch.Tensor, num_clusters: int, *, seed: int = 0, iterations: int = 50) -> torch.Tensor:
    """Cluster labels `[num_points]` of Lloyd's k-means with k-means++ initialisation (seeded)."""
    generator = torch.Generator().manual_seed(seed)
    points = points.double()
    centers = points[torch.randint(len(points), (1,), generator=generator)]
    for _ in range(1, num_clusters):
        distance = torch.cdist(points, centers).min(dim=1).values.square()
        if distance.sum() <= 0:  # fewer distinct points than clusters: the rest stay empty
            break
        centers = torch.cat([centers, points[torch.multinomial(distance, 1, generator=generator)]])
    labels = torch.cdist(points, centers).argmin(dim=1)
    for _ in range(iterations):
        new_centers = torch.stack([points[labels == c].mean(0) if (labels == c).any() else centers[c]
                                   for c in range(len(centers))])
        new_labels = torch.cdist(points, new_centers).argmin(dim=1)
        centers = new_centers
        if torch.equal(new_labels, labels):
            break
        labels = new_labels
    return labels


def cluster_quota_selection(scores: Sequence[float], labels: Sequence[int], count: int) -> list[int]:
    """Share `count` between the clusters in proportion to each cluster's total shift (largest remainders, never
    more than a cluster holds), then keep each cluster's highest scores. Returns ascending indices."""
    members: dict[int, list[int]] = {}
    for i, label in enumerate(labels):
        members.setdefault(label, []).append(i)
    mass = {c: max(sum(scores[i] for i in idx), 0.0) for c, idx in members.items()}
    quota = {c: 0 for c in members}
    remaining = count
    while remaining > 0:
        open_clusters = [c for c in members if quota[c] < len(members[c])]
        total = sum(mass[c] for c in open_clusters)
        shares = {c: remaining * (mass[c] / total if total > 0 else 1 / len(open_clusters)) for c in open_clusters}
        given = {c: min(int(shares[c]), len(members[c]) - quota[c]) for c in open_clusters}
        if sum(given.values()) == 0:  # hand out the largest remainders one by one
            for c in sorted(open_clusters, key=lambda c: (-(shares[c] - int(shares[c])), c))[:remaining]:
                given[c] = 1
        for c, n in given.items():
            quota[c] += n
            remaining -= n
    return sorted(i for c, idx in members.items() for i in _top(idx, scores, quota[c]))
