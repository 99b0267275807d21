"""Start-up cost of the package and of the `eda` command line against the reference `import torch, transformers, peft`.

Run: python benchmarks/import_time.py [--repeats 3]
Each command runs in a fresh interpreter; the commands take turns in every round (so that load from other processes
hits them alike) and each keeps its best wall time. Ratios are against the reference measured in the same run.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time

REFERENCE = "import torch, transformers, peft"


def commands() -> dict[str, list[str]]:
    eda = [shutil.which("eda")] if shutil.which("eda") else [sys.executable, "-m", "eda_adapters"]
    return {
        f'python -c "{REFERENCE}"': [sys.executable, "-c", REFERENCE],
        'python -c "import eda_adapters"': [sys.executable, "-c", "import eda_adapters"],
        "eda --help": [*eda, "--help"],
        "eda adapt --help": [*eda, "adapt", "--help"],
    }


def best_times(repeats: int) -> dict[str, float]:
    best = dict.fromkeys(commands(), float("inf"))
    for _ in range(repeats):
        for name, argv in commands().items():
            start = time.perf_counter()
            subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="Rounds; each command keeps its best (default: 3).")
    args = parser.parse_args()
    best = best_times(args.repeats)
    reference = next(iter(best.values()))
    print(f"best of {args.repeats}, same run")
    print("| command | wall time (s) | ratio to reference |\n|---|---:|---:|")
    for name, seconds in best.items():
        print(f"| `{name}` | {seconds:.2f} | {seconds / reference:.2f}x |")


if __name__ == "__main__":
    main()
