"""Side-by-side speculative-decoding benchmark; the same as `eda bench` (see docs/benchmarks.md).

    python benchmarks/speculative.py                     # tiny CPU setup, built offline
    python benchmarks/speculative.py --target Qwen/Qwen2.5-7B-Instruct --draft path/to/draft --prompts prompts.txt
"""

import sys

from eda_adapters.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
