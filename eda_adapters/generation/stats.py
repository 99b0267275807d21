"""Acceptance statistics of speculative decoding, computed the same way for every decoding path."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from ..errors import EdaInputError


def compute_tau(accepted_lengths: Iterable[int]) -> float:
    """Mean number of tokens produced per target verification forward, the bonus token included.

    `accepted_lengths` holds, for each verification forward, how many *drafted* tokens the target accepted; each
    forward also yields one token of its own (the correction or bonus token), so `tau = mean(accepted + 1)`. The
    prompt prefill is not a verification step and is not counted. Returns `0.0` when there was no step.
    """
    lengths = [int(n) for n in accepted_lengths]
    if any(n < 0 for n in lengths):
        raise EdaInputError("accepted lengths must be >= 0 (number of drafted tokens accepted per step).")
    if not lengths:
        return 0.0
    return sum(n + 1 for n in lengths) / len(lengths)


@dataclass
class SpeculativeStats:
    """Per-step acceptance record of one or more speculative generations.

    Attributes:
        accepted_lengths: Drafted tokens accepted at each target verification forward (bonus token excluded).
        drafted_lengths: Drafted tokens proposed at each step (for a tree: the number of tree nodes verified).
    """

    accepted_lengths: list[int] = field(default_factory=list)
    drafted_lengths: list[int] = field(default_factory=list)

    def record(self, accepted: int, drafted: int) -> None:
        self.accepted_lengths.append(int(accepted))
        self.drafted_lengths.append(int(drafted))

    @property
    def num_steps(self) -> int:
        """Number of target verification forwards."""
        return len(self.accepted_lengths)

    @property
    def tau(self) -> float:
        """Mean tokens per target forward, bonus token included (see [`compute_tau`])."""
        return compute_tau(self.accepted_lengths)

    @property
    def acceptance_rate(self) -> float:
        """Accepted drafted tokens / proposed drafted tokens along the verified chain or path."""
        drafted = sum(self.drafted_lengths)
        return sum(self.accepted_lengths) / drafted if drafted else 0.0


_ACTIVE: list[SpeculativeStats] = []


@contextlib.contextmanager
def track_acceptance() -> Iterator[SpeculativeStats]:
    """Record the acceptance of every assisted `generate` call (any candidate generator) inside the block.

    Works for our EAGLE drafts, vanilla assistant models and prompt lookup alike, because the record is taken from
    the verification loop of `generate` itself (see `eda_adapters.generation.hook`).

    ```python
    >>> with track_acceptance() as stats:
    ...     target.generate(input_ids, assistant_model=draft, max_new_tokens=64)
    >>> stats.tau
    ```
    """
    stats = SpeculativeStats()
    _ACTIVE.append(stats)
    try:
        yield stats
    finally:
        _ACTIVE.remove(stats)


def active_recorders() -> list[SpeculativeStats]:
    """The recorders of the enclosing [`track_acceptance`] blocks (innermost last)."""
    return list(_ACTIVE)
