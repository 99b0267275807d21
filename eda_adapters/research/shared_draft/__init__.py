"""The shared-draft recipe (`recipes/smollm2/shared_draft.py`): the strongest stage-1 draft a small machine can train
for one target, built in resumable, time-limited chunks whose small outputs are committed as they appear.

| module | what it holds |
|---|---|
| `prompt_mix` | the training prompts (embedded sources + the target's self-written ones), kept apart from the held-out set |
| `chunks` | the time budget of one invocation and the log of what every chunk did and cost |
| `answers` | the target's answers, regenerated part by part and committed as token ids |
"""
