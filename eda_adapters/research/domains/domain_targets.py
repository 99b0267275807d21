"""Everything the real-LM experiment needs before `eda experiment`: prompt files and the domain fine-tunes.

`prepare_domain_targets(base, out)` writes, under `out`:

    prompts/general.jsonl, prompts/general-eval.jsonl   stage-1 prompts and held-out general prompts
    prompts/<domain>.jsonl                              the experiment's domain prompts: the held-out ones first,
                                                        then the pool, domain prompts with their original
                                                        `reference` answers mixed with general prompts
    finetune/<domain>.jsonl                             the fine-tune's rows: disjoint from every prompt above
    targets/<domain>/                                   the fine-tuned target (`eda_adapters.research.domains.finetune`)
    finetune-report.json                                per domain: held-out answer loss of base vs fine-tune and a
                                                        few greedy answers of each

Every file is written atomically and reused by the next call; a prompt file that differs from what these settings
build is refused (delete it, or use another `out`), so one folder never mixes two recipes.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections import Counter
from collections.abc import Collection
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from ...atomic import atomic_write_json, atomic_write_jsonl
from ...data.io import load_causal_lm, load_tokenizer, read_jsonl
from ...data.prompt_filter import normalize
from ...data.prompts import render_prompt, resolve_chat_template, to_messages
from ..demo.chat_prompts import general_chat_prompts
from .domain_chats import code_chat_rows, math_chat_rows
from .finetune import FinetuneSettings, answer_loss, finetune_target
from ...errors import EdaInputError

DOMAINS = ("code", "math")


@dataclass
class DomainTargetSizes:
    """How many prompts each part gets (the held-out prompts are the first `eval_prompts` of a domain file)."""

    general_prompts: int = 400
    general_eval_prompts: int = 100
    domain_prompts: int = 300
    eval_prompts: int = 100
    #: General prompts mixed into each domain's pool (other ones per domain, none of stage 1's), as in a real prompt
    #: collection: the fine-tune barely changed there, so selection has something to find (cf. `DemoSize`).
    general_in_pool: int = 100
    finetune_rows: dict[str, int] = field(default_factory=lambda: {"code": 200, "math": 300})
    report_rows: int = 40
    report_examples: int = 3


def prepare_domain_targets(
    base: str,
    out: str | os.PathLike,
    sizes: DomainTargetSizes | None = None,
    finetune: dict[str, FinetuneSettings] | None = None,
    domains: tuple[str, ...] = DOMAINS,
    seed: int = 0,
    log: Callable[[str], Any] = print,
    seen_prompts: Collection[str] = (),
    general_eval: list[str] | None = None,
) -> dict[str, Any]:
    """Write the prompt files, fine-tune `base` once per domain and report how much each fine-tune changed it.

    Returns the report (also in `out/finetune-report.json`). `finetune` maps a domain to its settings (default
    `FinetuneSettings()`).

    For an experiment on a shared draft trained elsewhere, `seen_prompts` are the prompts it was trained on
    (`eda_adapters.research.shared_draft.answers.trained_prompts`; compared as `prompt_filter.normalize` writes them,
    so case, punctuation and spacing do not hide one): no held-out domain prompt is one of them (they
    may still be in a pool or a fine-tune's rows, where a draft having seen the prompt with the base's answer is
    what a real prompt collection gives), and `general_eval` replaces the held-out general prompts, which must then
    come from the shared draft's own held-out set.
    """
    sizes = sizes or DomainTargetSizes()
    out = Path(out)
    unknown = set(domains) - set(DOMAINS)
    if unknown:
        raise EdaInputError(f"unknown domains {sorted(unknown)}; choose from {list(DOMAINS)}")
    seen = {normalize(p) for p in seen_prompts}
    general = general_chat_prompts(seed=seed)
    needed = sizes.general_prompts + sizes.general_eval_prompts
    pool_general = general[needed:]
    needed += sizes.general_in_pool * len(domains)
    if len(general) < needed:
        raise EdaInputError(f"only {len(general)} general prompts exist; ask for at most that many (asked {needed})")
    if general_eval is None:
        general_eval = general[: sizes.general_eval_prompts]
    if seen & {normalize(p) for p in general_eval}:
        raise EdaInputError("some held-out general prompts are among the shared draft's training prompts: pass "
                            "general_eval= prompts it never saw (its own held-out set)")
    _write_once(out / "prompts" / "general-eval.jsonl", [{"prompt": p} for p in general_eval])
    _write_once(out / "prompts" / "general.jsonl",
                [{"prompt": p} for p in general[sizes.general_eval_prompts: sizes.general_eval_prompts
                                                 + sizes.general_prompts]])

    tokenizer = load_tokenizer(base)
    report: dict[str, Any] = {"base": base, "sizes": asdict(sizes), "domains": {}}
    for number, domain in enumerate(domains):
        needed = sizes.domain_prompts + sizes.finetune_rows.get(domain, 0)
        held_out, rest = _split_held_out(_domain_rows(domain, needed, seed, extra=len(seen)), sizes.eval_prompts, seen)
        pool_size = sizes.domain_prompts - sizes.eval_prompts
        pool, tune = rest[:pool_size], rest[pool_size: needed - sizes.eval_prompts]
        if len(held_out) < sizes.eval_prompts or len(pool) < pool_size or len(tune) < 1 or pool_size < 1:
            raise EdaInputError(
                f"domain {domain}: too few rows for {sizes.eval_prompts} held-out prompts no shared draft trained on "
                f"(found {len(held_out)}), a pool of {pool_size} and fine-tune rows; ask for fewer"
            )
        mixed = pool + [
            {"prompt": p, "kind": "general"}
            for p in pool_general[number * sizes.general_in_pool: (number + 1) * sizes.general_in_pool]
        ]
        random.Random(seed).shuffle(mixed)
        _write_once(out / "prompts" / f"{domain}.jsonl", held_out + mixed)
        _write_once(out / "finetune" / f"{domain}.jsonl", tune)
        settings = (finetune or {}).get(domain, FinetuneSettings())
        started = time.perf_counter()
        log(f"[{domain}] fine-tuning {base} on {len(tune)} rows ({settings})")
        target_dir = finetune_target(base, tokenizer, tune, out / "targets" / domain, settings)
        seconds = time.perf_counter() - started
        report["domains"][domain] = _report_domain(
            base, target_dir, tokenizer, held_out, sizes, out / f"finetune-report-{domain}.json"
        )
        parts = {"held_out": held_out, "pool": mixed, "finetune": tune}
        report["domains"][domain]["kinds"] = {
            part: dict(Counter(row.get("kind", "general") for row in rows)) for part, rows in parts.items()
        }
        report["domains"][domain]["shared_draft_trained_on"] = {
            part: sum(normalize(row["prompt"]) in seen for row in rows) for part, rows in parts.items()
        }
        log(f"[{domain}] fine-tune ready in {target_dir} ({seconds:.0f}s this call); held-out answer loss "
            f"{report['domains'][domain]['base_loss']:.3f} (base) -> {report['domains'][domain]['finetune_loss']:.3f}")
    atomic_write_json(out / "finetune-report.json", report)
    return report


def _domain_rows(domain: str, count: int, seed: int, extra: int = 0) -> list[dict[str, str]]:
    """The domain's rows in a fixed order: all of them for code, `count` problems (+ `extra`, at most 500) for math."""
    if domain == "code":
        return code_chat_rows(seed)
    return math_chat_rows(count + min(extra, 500), seed)


def _split_held_out(rows: list[dict[str, str]], count: int, seen: set[str]) -> tuple[list, list]:
    """The first `count` rows whose prompt is not in `seen`, and every other row, both in their order."""
    held_out: list[dict[str, str]] = []
    rest: list[dict[str, str]] = []
    for row in rows:
        (held_out if len(held_out) < count and normalize(row["prompt"]) not in seen else rest).append(row)
    return held_out, rest


def _report_domain(
    base: str, target_dir: Path, tokenizer: Any, held_out: list[dict[str, str]], sizes: DomainTargetSizes, path: Path
) -> dict[str, Any]:
    """Held-out answer loss of base and fine-tune on the domain's held-out references, and a few greedy answers."""
    made = json.loads((target_dir / "finetune.json").read_text())
    key = {"target": {field: made[field] for field in ("base", "data", "settings")}, "rows": sizes.report_rows,
           "examples": sizes.report_examples}  # a fine-tune made again with other settings is reported again
    if path.exists():
        saved = json.loads(path.read_text())
        if saved.get("key") == key:
            return saved["report"]
    rows = held_out[: sizes.report_rows]
    examples = [row["prompt"] for row in rows[: sizes.report_examples]]
    report: dict[str, Any] = {"held_out_rows": len(rows), "examples": [{"prompt": p} for p in examples]}
    for name, source in (("base", base), ("finetune", str(target_dir))):
        model = load_causal_lm(source, dtype="float32")
        report[f"{name}_loss"] = answer_loss(model, tokenizer, rows)
        for example, answer in zip(report["examples"], _greedy_answers(model, tokenizer, examples)):
            example[name] = answer
    atomic_write_json(path, {"key": key, "report": report})
    return report


@torch.no_grad()
def _greedy_answers(model: Any, tokenizer: Any, prompts: list[str], max_new_tokens: int = 96) -> list[str]:
    use_template = resolve_chat_template(tokenizer, None)
    answers = []
    for index, prompt in enumerate(prompts):
        _, ids = render_prompt(tokenizer, to_messages(prompt, index), use_template)
        output = model.generate(torch.tensor([ids]), max_new_tokens=max_new_tokens, do_sample=False)
        answers.append(tokenizer.decode(output[0, len(ids):], skip_special_tokens=True))
    return answers


def _write_once(path: Path, rows: list[dict[str, str]]) -> None:
    """Write `rows` as JSON lines, or check that the file there holds exactly them."""
    if path.exists():
        if read_jsonl(path) != rows:
            raise EdaInputError(f"{path} differs from what these recipe settings build; delete it or use another "
                                "output folder (nothing was overwritten)")
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_jsonl(path, rows)
