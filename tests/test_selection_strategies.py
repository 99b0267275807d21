"""Selection strategies on constructed pools whose right answer is known (no model needed)."""

from __future__ import annotations

import random

import pytest
import torch

from eda_adapters import SelectionStrategy
from eda_adapters.data.selection_strategies import cluster_quota_selection, kmeans


def two_regions(size_a: int = 50, size_b: int = 50, seed: int = 0):
    """Region A moved a lot (scores 0.5-0.9), region B less (0.2-0.4); their embeddings are far apart."""
    rng = random.Random(seed)
    scores = [rng.uniform(0.5, 0.9) for _ in range(size_a)] + [rng.uniform(0.2, 0.4) for _ in range(size_b)]
    generator = torch.Generator().manual_seed(seed)
    points = torch.randn(size_a + size_b, 4, generator=generator)
    points[:size_a, 0] += 20.0
    return scores, points.tolist()


def test_topk_keeps_the_highest_scores():
    scores, _ = two_regions()
    keep = SelectionStrategy("topk").choose(len(scores), 20, scores)
    assert keep == sorted(keep) and len(keep) == 20
    assert sorted(scores[i] for i in keep) == sorted(scores)[-20:]
    assert all(i < 50 for i in keep)  # all from region A: the collapse that cluster avoids


def test_weighted_draws_in_proportion_to_the_weights():
    scores = [1.0] * 10 + [3.0] * 10
    hits = sum(SelectionStrategy("weighted", seed=s).choose(20, 1, scores)[0] >= 10 for s in range(2000))
    assert abs(hits / 2000 - 0.75) < 0.04  # P(high) = 30 / 40 for a single draw
    # temperature moves it between topk and random
    pool, _ = two_regions()
    cold = SelectionStrategy("weighted", temperature=1e-3, seed=1).choose(len(pool), 20, pool)
    assert cold == SelectionStrategy("topk").choose(len(pool), 20, pool)
    hot = [i for s in range(50) for i in SelectionStrategy("weighted", temperature=1e3, seed=s).choose(100, 20, pool)]
    share_a = sum(i < 50 for i in hot) / len(hot)
    assert 0.4 < share_a < 0.6
    warm = [i for s in range(50) for i in SelectionStrategy("weighted", seed=s).choose(100, 20, pool)]
    assert 0.6 < sum(i < 50 for i in warm) / len(warm) < 0.8  # mass of A is about 0.7 of the pool's
    assert SelectionStrategy("weighted", seed=3).choose(100, 20, pool) == \
        SelectionStrategy("weighted", seed=3).choose(100, 20, pool)


def test_kmeans_finds_separated_regions():
    _, points = two_regions()
    labels = kmeans(torch.tensor(points), 2, seed=0).tolist()
    assert len(set(labels[:50])) == 1 and len(set(labels[50:])) == 1 and labels[0] != labels[50]


def test_cluster_covers_every_region_in_proportion_to_its_shift():
    scores, points = two_regions()
    keep = SelectionStrategy("cluster", num_clusters=2).choose(len(scores), 20, scores, points)
    from_a = [i for i in keep if i < 50]
    mass_a = sum(scores[:50]) / sum(scores)
    assert len(keep) == 20 and abs(len(from_a) - round(20 * mass_a)) <= 1
    # within each region, its own highest scores
    assert sorted(scores[i] for i in from_a) == sorted(scores[:50])[-len(from_a):]
    from_b = [i for i in keep if i >= 50]
    assert sorted(scores[i] for i in from_b) == sorted(scores[50:])[-len(from_b):]


def test_cluster_quota_is_capped_and_redistributed():
    # cluster 0 holds 2 samples but nearly all the shift: it gives both, the rest go to cluster 1
    scores = [10.0, 10.0] + [0.1] * 8
    labels = [0, 0] + [1] * 8
    keep = cluster_quota_selection(scores, labels, 5)
    assert keep[:2] == [0, 1] and len(keep) == 5
    assert cluster_quota_selection([0.0] * 6, [0, 0, 0, 1, 1, 1], 4) != []  # no shift at all: equal shares
    assert len(cluster_quota_selection([0.0] * 6, [0, 0, 0, 1, 1, 1], 6)) == 6


def test_strategy_record_and_aliases():
    assert SelectionStrategy("shift").name == "topk"
    assert SelectionStrategy("weighted", temperature=0.5).to_dict() == {"name": "weighted", "temperature": 0.5,
                                                                          "seed": 0}
    assert SelectionStrategy("cluster", num_clusters=4).to_dict() == {"name": "cluster", "num_clusters": 4, "seed": 0}
    assert SelectionStrategy("random", seed=2).choose(10, 3) == SelectionStrategy("random", seed=2).choose(10, 3)


@pytest.mark.parametrize("kwargs, message", [
    ({"name": "best"}, "unknown selection strategy 'best'"),
    ({"name": "weighted", "temperature": 0}, "temperature must be a finite number > 0"),
    ({"name": "weighted", "temperature": float("inf")}, "temperature must be a finite number > 0"),
    ({"name": "cluster", "num_clusters": 0}, "num_clusters must be an integer >= 1"),
])
def test_bad_options_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SelectionStrategy(**kwargs)


def test_cluster_needs_embeddings_and_enough_samples():
    with pytest.raises(ValueError, match="needs the base target's embeddings"):
        SelectionStrategy("cluster").choose(3, 2, [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match=r"num_clusters \(8\) is larger than the pool \(3 samples\)"):
        SelectionStrategy("cluster").choose(3, 2, [0.1, 0.2, 0.3], [[0.0], [1.0], [2.0]])
    with pytest.raises(ValueError, match="needs shift scores"):
        SelectionStrategy("topk").choose(3, 2)


def test_select_by_shift_takes_options_from_one_place():
    from datasets import Dataset

    from eda_adapters import select_by_shift

    pool = Dataset.from_dict({"input_ids": [[1, 2, 3]] * 6, "loss_mask": [[0, 1, 1]] * 6,
                              "shift_score": [0.1, 0.6, 0.2, 0.9, 0.3, 0.5]})
    by_name = select_by_shift(pool, 3, strategy="weighted", temperature=0.5, seed=1)
    by_object = select_by_shift(pool, 3, strategy=SelectionStrategy("weighted", temperature=0.5, seed=1))
    assert by_name["shift_score"] == by_object["shift_score"] and len(by_name) == 3
    with pytest.raises(ValueError, match="got temperature, seed besides a SelectionStrategy.*set them on"):
        select_by_shift(pool, 3, strategy=SelectionStrategy("weighted"), temperature=0.5, seed=1)
