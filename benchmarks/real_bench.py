"""Speculative decoding on a real target, side by side in one run, split by prompt kind: `eda bench` with the
real-CPU-target defaults of issue 13 (one implementation: this only prepends defaults to the CLI's arguments).

    python benchmarks/real_bench.py --draft DRAFT_DIR [--draft-label "full head"] [--draft OTHER --draft-label ...] \
        [--assistant ASSISTANT_DIR] [--early-exit-layers 6] [--json docs/benchmarks/real_cpu.json] [any eda bench flag]

is `eda bench` with `--target smollm2-135m-instruct --prompt-kinds prose,code,math --per-kind 11
--max-new-tokens 128 --num-draft-tokens 4 --tree-depth 5 --tree-top-k 4 --tree-total-tokens 16 --threads 2`
first; a flag given again on the command line wins. See `eda bench --help` and docs/benchmarks.md.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from eda_adapters.cli import main as eda

DEFAULTS = (
    "--target", "smollm2-135m-instruct", "--prompt-kinds", "prose,code,math", "--per-kind", "11",
    "--max-new-tokens", "128", "--num-draft-tokens", "4", "--tree-depth", "5", "--tree-top-k", "4",
    "--tree-total-tokens", "16", "--threads", "2", "--output-dir", "bench_real",
)


def main(argv: Sequence[str] | None = None) -> int:
    return eda(["bench", *DEFAULTS, *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
