"""Chat prompts with reference answers for the real-LM experiment's two domains, built offline.

- `code_chat_rows`: "write this function" requests for the HumanEval problems (docstring) and the top-level
  functions of the standard-library modules in `STDLIB_MODULES` (signature, module, first docstring line); the
  reference answer is the real function in a Python code block.
- `math_chat_rows`: generated multi-step word problems (counting and shopping) whose reference answer is a worked,
  step-by-step solution in one fixed style, every step checked by evaluating its arithmetic.

The templates differ from `chat_prompts.benchmark_chat_prompts` and `general_chat_prompts`, so no domain prompt is a
bench or stage-1 prompt. Rows are `{"prompt", "reference", "kind"}`, deterministic for a seed; `kind` says which
generator wrote the row (code: `humaneval` or `stdlib`; math: `counting` or `shopping`), so the experiment reports tau
and selection shares per kind.
"""

from __future__ import annotations

import random
import re
import sysconfig
from pathlib import Path

from ..demo.chat_prompts import _docstring
from ..demo.corpus import STDLIB_MODULES, _top_level_functions, counting_events, human_eval_problems, tell_counting
from ...errors import EdaInputError

_STEP = re.compile(r"(-?\d+) ([-+*/]) (-?\d+) = (-?\d+)")


def code_chat_rows(seed: int = 0) -> list[dict[str, str]]:
    """HumanEval problems and standard-library functions as chat requests, the real function as the answer."""
    rows = []
    for problem in human_eval_problems():
        head = next(line for line in problem["prompt"].splitlines() if line.startswith("def "))
        function = problem["prompt"][problem["prompt"].index(head):] + problem["canonical_solution"]
        function = _without_docstring(function)
        rows.append({
            "prompt": f"Write a Python function `{head[4:].rstrip(':')}`. {_docstring(problem['prompt'])}",
            "reference": f"```python\n{function.strip()}\n```",
            "kind": "humaneval",
        })
    libdir = Path(sysconfig.get_paths()["stdlib"])
    for module in STDLIB_MODULES:
        path = libdir / f"{module}.py"
        if not path.exists():
            continue
        for function in _top_level_functions(path.read_text(encoding="utf-8", errors="replace")):
            lines = function.splitlines()
            signature = lines[0][4:].rstrip(":")
            summary = _first_docstring_line(lines[1:])
            prompt = f"Implement `{signature}` as in Python's `{module}` module."
            rows.append({
                "prompt": prompt + (f" {summary}" if summary else ""),
                "reference": f"```python\n{_without_docstring(function).strip()}\n```",
                "kind": "stdlib",
            })
    rows = list({row["prompt"]: row for row in rows}.values())
    random.Random(seed).shuffle(rows)
    return rows


def math_chat_rows(count: int, seed: int = 0) -> list[dict[str, str]]:
    """`count` distinct word problems with worked answers ("Step 1: ... The answer is N."), every step checked."""
    rng = random.Random(seed)
    rows: dict[str, tuple[str, str]] = {}
    attempts = 0
    while len(rows) < count:
        attempts += 1
        if attempts > 50 * count + 1000:
            raise EdaInputError(f"could not generate {count} distinct math problems; ask for fewer")
        kind, write = ("counting", _counting_problem) if rng.random() < 0.5 else ("shopping", _shopping_problem)
        question, answer = write(rng)
        check_worked_answer(answer)
        rows.setdefault(question, (answer, kind))
    return [{"prompt": q, "reference": a, "kind": kind} for q, (a, kind) in rows.items()]


def check_worked_answer(answer: str) -> None:
    """Raise `ValueError` if a step's arithmetic is wrong or the final answer is not the last step's result."""
    results = []
    for a, op, b, c in _STEP.findall(answer):
        a, b, c = int(a), int(b), int(c)
        value = {"+": a + b, "-": a - b, "*": a * b, "/": a // b if b and a % b == 0 else None}[op]
        if value != c:
            raise EdaInputError(f"wrong step in a worked answer: {a} {op} {b} = {c}")
        results.append(c)
    final = re.search(r"The answer is (-?\d+)\.$", answer)
    if not results or final is None or int(final.group(1)) != results[-1]:
        raise EdaInputError(f"a worked answer must end with 'The answer is <last step's result>.': {answer[-60:]!r}")


_NAMES = ("Tom", "Ann", "Maria", "Omar", "Lena", "Ravi", "Chen", "Sara", "Ivan", "Nora", "Yuki", "Pablo")
_ITEMS = ("apples", "books", "coins", "stamps", "pencils", "marbles", "cards", "shells", "stickers", "buttons")
_GOODS = (("notebook", "notebooks"), ("pen", "pens"), ("sandwich", "sandwiches"), ("ticket", "tickets"),
          ("mug", "mugs"), ("plant", "plants"), ("ball", "balls"), ("candle", "candles"))


_WORKED_WORDING = {
    "add": ("{name} gets {n} more {item}.", "{name} gets {n} more, so {before} + {n} = {after}."),
    "give": ("{name} gives {n} {item} to {other}.", "{name} gives away {n}, so {before} - {n} = {after}."),
    "half": ("{name} gives half of the {item} to {other}.", "Half of them go to {other}, so {before} / 2 = {after}."),
    "multiply": ("Then the number of {item} {times}.", "The number is multiplied by {n}, so {before} * {n} = {after}."),
}


def _counting_problem(rng: random.Random) -> tuple[str, str]:
    name, other, item, start, events = counting_events(
        rng, _NAMES, _ITEMS, (5, 60), (2, 4), 40, ("add", "give", "double", "half"), multipliers=(2, 3)
    )
    question, steps = tell_counting(name, other, item, start, events, _WORKED_WORDING)
    return question, _worked(steps, f"{name} starts with {start} {item}.", events[-1].after)


def _shopping_problem(rng: random.Random) -> tuple[str, str]:
    name = rng.choice(_NAMES)
    (one_a, many_a), (one_b, many_b) = rng.sample(_GOODS, 2)
    price_a, price_b = rng.randint(2, 15), rng.randint(2, 25)
    count_a, count_b = rng.randint(2, 9), rng.randint(1, 5)
    cost_a, cost_b = price_a * count_a, price_b * count_b
    total = cost_a + cost_b
    question = (f"A {one_a} costs ${price_a} and a {one_b} costs ${price_b}. {name} buys {count_a} {many_a} and "
                f"{count_b} {many_b if count_b > 1 else one_b}.")
    steps = [f"The {many_a} cost {count_a} * {price_a} = {cost_a} dollars.",
             f"The {many_b} cost {count_b} * {price_b} = {cost_b} dollars.",
             f"Together that is {cost_a} + {cost_b} = {total} dollars."]
    if rng.random() < 0.5:
        paid = (total // 10 + rng.randint(1, 5)) * 10
        question += f" {name} pays with ${paid}. How much change does {name} get?"
        steps.append(f"The change is {paid} - {total} = {paid - total} dollars.")
        total = paid - total
    else:
        question += f" How much does {name} spend?"
    return question, _worked(steps, "Let's work it out step by step.", total)


def _worked(steps: list[str], opening: str, result: int) -> str:
    lines = [opening] + [f"Step {i}: {step}" for i, step in enumerate(steps, 1)]
    return "\n".join(lines) + f"\nThe answer is {result}."


def _first_docstring_line(lines: list[str]) -> str:
    if not lines or not lines[0].strip().startswith(('"""', "'''", 'r"""')):
        return ""
    text = lines[0].strip().lstrip("r").strip("\"'").strip()
    return text if text.endswith(".") else (text + "." if text else "")


def _without_docstring(function: str) -> str:
    """The function without its docstring (the prompt already says what it does; the answer is the code)."""
    return re.sub(r'(\n[ \t]+)[rR]?("""|\'\'\')[\s\S]*?\2[ \t]*(?=\n)', "", function, count=1)
