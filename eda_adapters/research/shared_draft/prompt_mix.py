"""The training prompts of a shared draft, and the guarantee that none of them is a held-out one.

Four sources, all offline:
- `docs`: questions about the Python documentation topics and standard-library functions (`general_chat_prompts`);
- `stdlib-code`: "implement this standard-library function" requests (`code_chat_rows`, without its HumanEval rows,
  since the held-out code prompts are built from HumanEval);
- `math`: counting and shopping word problems (`math_chat_rows`; the held-out ones come from another generator);
- `self`: user turns the target writes itself (`self_prompts`), for what a chat model is asked in general.

Every training prompt is checked against the held-out benchmark prompts (`benchmark_chat_prompts`, every prose
subject and the first `HELD_OUT_PER_KIND` of each other kind): exact and near duplicates (word 3-gram Jaccard >= 0.5)
are dropped and counted.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from ...data.prompt_filter import DuplicateIndex
from ..demo.chat_prompts import benchmark_chat_prompts, general_chat_prompts
from ..domains.domain_chats import code_chat_rows, math_chat_rows

HELD_OUT_PER_KIND = 40  # all 40 prose subjects
BENCH_PER_KIND = 11  # `eda bench --per-kind 11` times the first 11 of each kind; the drafts are compared on the others
EMBEDDED_SOURCES = ("docs", "stdlib-code", "math")


@dataclass(frozen=True)
class PromptMix:
    """How many prompts each source gives: `docs` and `stdlib_code` cap their fixed lists (`None`: all of them),
    `math` problems are generated, `self_written` user turns are kept from the target's own."""

    docs: int | None = None
    stdlib_code: int | None = None
    math: int = 1000
    self_written: int = 6000
    held_out_threshold: float = 0.5


def held_out_prompts(per_kind: int = HELD_OUT_PER_KIND, seed: int = 0) -> list[dict[str, str]]:
    """The held-out chat prompts (`{"kind", "prompt"}`), the ones `eda bench --prompt-kinds` draws from."""
    return benchmark_chat_prompts(per_kind, seed=seed)


def embedded_prompts(mix: PromptMix) -> list[dict[str, str]]:
    """The embedded sources' prompts as rows `{"source", "prompt"}`, in a fixed order."""
    rows = [{"source": "docs", "prompt": p} for p in general_chat_prompts(mix.docs)]
    code = [r["prompt"] for r in code_chat_rows() if r["prompt"].startswith("Implement")]
    rows += [{"source": "stdlib-code", "prompt": p} for p in code[:mix.stdlib_code]]
    rows += [{"source": "math", "prompt": r["prompt"]} for r in math_chat_rows(mix.math, seed=1)]
    return rows


class HeldOutGuard:
    """Drops training prompts that are (near) duplicates of a held-out prompt, and counts them per source."""

    def __init__(self, held_out: list[str], threshold: float) -> None:
        self._index = DuplicateIndex(threshold=threshold)
        for prompt in held_out:
            self._index.add(prompt)
        self.dropped: Counter[str] = Counter()

    def keep(self, source: str, prompt: str) -> bool:
        if self._index.check(prompt) is None:
            return True
        self.dropped[source] += 1
        return False


def last_user_turn(messages: list[dict[str, str]]) -> str:
    return next(m["content"] for m in reversed(messages) if m["role"] == "user")
