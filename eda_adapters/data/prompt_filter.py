"""Which generated user turns to keep: a quality filter and exact / near-duplicate removal.

Self-prompting samples user turns from the target (`eda_adapters.data.self_prompts`). Sampling at temperature 1
gives varied turns, some of them rambling, cut off, or the same question again in other words; this module decides
which to keep. Both pieces are deterministic (no Python `hash`, whose seed changes per process), so every process of
a sharded run reaches the same decision from the same candidates.
"""

from __future__ import annotations

import re
import string
import zlib
from dataclasses import dataclass, field

import numpy as np

from ..errors import EdaInputError
from ..schemas.config_ranges import COUNT, PROBABILITY, check_ranges, ranged

_WORD = re.compile(r"\w+", re.UNICODE)
_PUNCTUATION = str.maketrans("", "", string.punctuation)
_MERSENNE = (1 << 61) - 1


@dataclass
class PromptFilter:
    """Quality rules for one generated user turn; `reject_reason` returns why a turn fails, or `None` to keep it.

    Attributes:
        min_words: Fewer words is a fragment ("Hi", "Yes.").
        max_words: More is usually a ramble the target did not close; the token cap of the run cuts the rest.
        min_letter_fraction: Share of non-space characters that are letters; code and math prompts pass at the
            default, lines of symbols or numbers do not.
        max_repeated_trigram_fraction: Share of word 3-grams that repeat an earlier one in the same turn; sampling
            loops ("and the and the and the") fail.
    """

    min_words: int = ranged(4, COUNT)
    max_words: int = ranged(200, COUNT)
    min_letter_fraction: float = ranged(0.6, PROBABILITY)
    max_repeated_trigram_fraction: float = ranged(0.2, PROBABILITY)

    def __post_init__(self) -> None:
        check_ranges(self)
        if self.min_words > self.max_words:
            raise EdaInputError(f"need min_words <= max_words, got {self.min_words} and {self.max_words}")

    def reject_reason(self, text: str, finished: bool = True) -> str | None:
        """`None` if `text` is a keepable user turn, else a short reason (used as a key of the run's statistics)."""
        if not finished:
            return "unfinished"  # ran into the token cap: the target did not close its turn
        words = _WORD.findall(text.lower())
        if len(words) < self.min_words:
            return "too_short"
        if len(words) > self.max_words:
            return "too_long"
        visible = [c for c in text if not c.isspace()]
        if sum(c.isalpha() for c in visible) < self.min_letter_fraction * len(visible):
            return "few_letters"
        trigrams = list(zip(words, words[1:], words[2:]))
        if trigrams and 1 - len(set(trigrams)) / len(trigrams) > self.max_repeated_trigram_fraction:
            return "repetitive"
        return None


def normalize(text: str) -> str:
    """The exact-duplicate key: lower case, punctuation dropped, whitespace collapsed."""
    return " ".join(text.lower().translate(_PUNCTUATION).split())


def shingles(text: str, size: int = 3) -> set[int]:
    """CRC32 of the word `size`-grams of the normalised text (the whole text when it is shorter)."""
    words = normalize(text).split()
    grams = [" ".join(words[i : i + size]) for i in range(max(1, len(words) - size + 1))]
    return {zlib.crc32(gram.encode("utf-8")) for gram in grams}


def jaccard(a: set[int], b: set[int]) -> float:
    return len(a & b) / max(1, len(a | b))


@dataclass
class DuplicateIndex:
    """Exact and near-duplicate detection over a growing set of texts.

    Near duplicates are texts whose word 3-gram sets have Jaccard similarity >= `threshold` with a text already kept.
    Candidates are found by MinHash locality-sensitive hashing (`num_bands` bands of `rows_per_band` hashes), then
    confirmed with the exact Jaccard, so the cost per text stays constant as the index grows. With the defaults a
    pair at Jaccard 0.7 is found with probability 1 - (1 - 0.7^4)^8 ~ 0.98.
    """

    threshold: float = 0.7
    num_bands: int = 8
    rows_per_band: int = 4
    seed: int = 0
    _exact: set[str] = field(default_factory=set, init=False, repr=False)
    _buckets: dict[tuple[int, bytes], list[int]] = field(default_factory=dict, init=False, repr=False)
    _kept: list[set[int]] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        if not 0 < self.threshold <= 1:
            raise EdaInputError(f"the near-duplicate threshold must be in (0, 1], got {self.threshold}")
        rng = np.random.default_rng(self.seed)
        num_hashes = self.num_bands * self.rows_per_band
        self._a = rng.integers(1, _MERSENNE, num_hashes, dtype=np.uint64).astype(object)
        self._b = rng.integers(0, _MERSENNE, num_hashes, dtype=np.uint64).astype(object)

    def _signature(self, grams: set[int]) -> np.ndarray:
        values = np.fromiter(grams, dtype=np.uint64).astype(object)
        # (a * x + b) mod p over Python ints (exact, no uint64 overflow); one row per hash function
        hashed = (self._a[:, None] * values[None, :] + self._b[:, None]) % _MERSENNE
        return hashed.min(axis=1).astype(np.uint64)

    def check(self, text: str) -> str | None:
        """`"duplicate"` or `"near_duplicate"` if `text` repeats a kept text, else `None`; does not add it."""
        return self._check(text)[0]

    def _check(self, text: str) -> tuple[str | None, list[tuple[int, bytes]], set[int]]:
        if normalize(text) in self._exact:
            return "duplicate", [], set()
        grams = shingles(text)
        signature = self._signature(grams).reshape(self.num_bands, self.rows_per_band)
        keys = [(band, signature[band].tobytes()) for band in range(self.num_bands)]
        for key in keys:
            for other in self._buckets.get(key, ()):
                if jaccard(grams, self._kept[other]) >= self.threshold:
                    return "near_duplicate", keys, grams
        return None, keys, grams

    def add(self, text: str) -> str | None:
        """Keep `text` unless it duplicates a kept one; returns the reason it was not kept, or `None`."""
        reason, keys, grams = self._check(text)
        if reason is None:
            self._exact.add(normalize(text))
            for key in keys:
                self._buckets.setdefault(key, []).append(len(self._kept))
            self._kept.append(grams)
        return reason


__all__ = ["DuplicateIndex", "PromptFilter", "jaccard", "normalize", "shingles"]
