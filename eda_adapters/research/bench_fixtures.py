"""What `eda bench` runs on when the user brings neither a target nor prompts.

- `build_tiny_setup`: the tiny mode (no `--target`): a byte-level target trained offline, with a briefly fitted
  EAGLE draft and vanilla assistant.
- `PROMPT_KINDS` and `benchmark_chat_prompts`: the held-out prose / code / math prompt sets of `--prompt-kinds`.

The runtime's `eda bench` loads this module through the `eda_adapters.bench_fixtures` entry point (see
`pyproject.toml`), so it never imports the research side.
"""

from __future__ import annotations

from .demo.chat_prompts import PROMPT_KINDS, benchmark_chat_prompts
from .toys import TinySetup, build_tiny_setup

__all__ = ["PROMPT_KINDS", "TinySetup", "benchmark_chat_prompts", "build_tiny_setup"]
