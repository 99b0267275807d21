"""The shared-draft recipe (`recipes/smollm2/shared_draft.py`): the strongest stage-1 draft a small machine can train
for one target, built in resumable, time-limited chunks whose small outputs are committed as they appear.

| module | what it holds |
|---|---|
| `prompt_mix` | the training prompts (embedded sources + the target's self-written ones), kept apart from the held-out set |
| `chunks` | the time budget of one invocation, the log of what every chunk did and cost, committed-settings checks |
| `answers` | the target's answers, regenerated part by part and committed as token ids |
| `training` | feature caches, the equal-compute training plan, and the drafts trained (and resumed) to it |
| `assistant` | the distilled vanilla assistant that `eda bench` compares against |
| `evaluation` | held-out tau (chain, tree, per kind), per-position acceptance, step and verify costs, predicted speedups |
| `compare` | both drafts side by side on the held-out prompts, the better one exported with its model card |
"""
