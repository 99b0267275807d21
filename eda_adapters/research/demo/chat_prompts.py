"""Chat prompts for real instruction-tuned targets, built offline, in kinds that never overlap.

- `general_chat_prompts`: what a shared (stage-1) draft is trained on: questions about the Python documentation
  topics (`pydoc_data.topics`) and about standard-library modules and functions, by their docstrings.
- `benchmark_chat_prompts`: held-out prompts of three kinds for `eda bench`: everyday *prose* questions, *code*
  requests built from HumanEval docstrings, and generated arithmetic word problems (*math*). None is built from the
  sources or templates of the general prompts, and `benchmark_chat_prompts` checks that none of its prompts is one
  of them.
"""

from __future__ import annotations

import importlib
import inspect
import random

import pydoc_data.topics

from .corpus import STDLIB_MODULES, _word_problem, human_eval_problems
from ...errors import EdaInputError

PROMPT_KINDS = ("prose", "code", "math")

_PROSE_SUBJECTS = (
    "why the sky is blue", "how bees make honey", "what causes the seasons", "how a bicycle stays upright",
    "why bread rises", "how rainbows form", "what a volcano is", "how plants drink water", "why cats purr",
    "how a compass works", "what makes a good night's sleep", "how clouds form", "why leaves change colour",
    "how a refrigerator keeps food cold", "what tides are", "how birds migrate", "why ice floats",
    "how vaccines work", "what a black hole is", "how to brew a good cup of tea", "why we dream",
    "how a library organises its books", "what photosynthesis does", "how earthquakes happen",
    "why the ocean is salty", "how a hot air balloon flies", "what recycling achieves", "how the heart pumps blood",
    "why stars twinkle", "how to plan a weekend hike", "what makes music sound happy", "how glaciers move",
    "why onions make you cry", "how a camera captures light", "what a healthy breakfast looks like",
    "how wind turbines make electricity", "why the moon has phases", "how to keep a houseplant alive",
    "what coral reefs are", "how a train stays on its tracks",
)
_PROSE_TEMPLATES = ("Explain {} in a short paragraph.", "Can you tell me {}?", "Describe {} to a curious child.")


def general_chat_prompts(count: int | None = None, seed: int = 0) -> list[str]:
    """Questions about Python documentation topics and standard-library functions, shuffled, de-duplicated."""
    prompts = [f"Explain the Python topic '{topic}' in a few sentences." for topic in pydoc_data.topics.topics]
    prompts += [f"What is the '{topic}' part of Python about? Give an example." for topic in pydoc_data.topics.topics]
    for module_name in STDLIB_MODULES:
        if module_name == "this":  # importing it prints the Zen of Python
            continue
        try:
            module = importlib.import_module(module_name)
        except ImportError:  # a module missing from this Python build
            continue
        prompts.append(f"What is the Python module {module_name} used for?")
        for name, member in sorted(vars(module).items()):
            doc = inspect.getdoc(member) if callable(member) and not name.startswith("_") else None
            if doc and getattr(member, "__module__", None) == module_name:
                prompts.append(f"What does {module_name}.{name} do in Python? Show a short usage example.")
                prompts.append(f"Write a short Python snippet that uses {module_name}.{name}, and explain it.")
    prompts = list(dict.fromkeys(prompts))
    random.Random(seed).shuffle(prompts)
    return prompts[:count]


def benchmark_chat_prompts(per_kind: int, seed: int = 0) -> list[dict[str, str]]:
    """`per_kind` held-out prompts of each kind in `PROMPT_KINDS`, as rows `{"kind", "prompt"}`."""
    rng = random.Random(seed)
    subjects = list(_PROSE_SUBJECTS)
    rng.shuffle(subjects)
    prose = [_PROSE_TEMPLATES[i % len(_PROSE_TEMPLATES)].format(s) for i, s in enumerate(subjects)]
    problems = human_eval_problems()
    rng.shuffle(problems)
    code = [f"Write a Python function that does the following.\n{_docstring(p['prompt'])}" for p in problems]
    math = [f"Solve step by step: {_word_problem(rng)[0]}" for _ in range(per_kind)]
    kinds = {"prose": prose, "code": code, "math": math}
    short = [kind for kind, prompts in kinds.items() if len(prompts) < per_kind]
    if short:
        raise EdaInputError(
            f"Only {min(len(kinds[k]) for k in short)} {short[0]} prompts exist; ask for fewer per kind."
        )
    rows = [{"kind": kind, "prompt": prompt} for kind in PROMPT_KINDS for prompt in kinds[kind][:per_kind]]
    overlap = {row["prompt"] for row in rows} & set(general_chat_prompts())
    if overlap:  # cannot happen with these templates; a guard for whoever edits them
        raise AssertionError(f"benchmark prompts overlap the general training prompts: {sorted(overlap)[:2]}")
    return rows


def _docstring(function_prompt: str) -> str:
    """The docstring text of a HumanEval prompt (signature + docstring), without its doctest examples."""
    text = function_prompt.split('"""')[1] if '"""' in function_prompt else function_prompt.split("'''")[1]
    lines = []
    for line in text.strip().splitlines():
        if line.strip().startswith((">>>", "Example", "For example")):
            break
        lines.append(line.strip())
    return " ".join(line for line in lines if line)
