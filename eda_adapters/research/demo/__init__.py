"""The embedded default: a CPU miniature of the whole EDA pipeline (`eda demo`).

It trains a tiny base LM on general offline text and fine-tunes it for code and math (what users download from the
Hub in real life), writes the domain prompt sets, and then runs exactly the experiment a real-model recipe runs
(`eda_adapters.research.experiment.run_experiment`): only model names, prompt sets and sizes differ.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ...data.io import atomic_write_text
from ..experiment import ExperimentConfig, ExperimentResults, run_experiment
from .corpus import code_corpus, general_corpus, math_corpus, window_prompt_rows
from .targets import TinyLMSpec, build_targets
from ...errors import EdaInputError


@dataclass
class DemoSize:
    """How big the miniature is. `DemoSize.quick()` fits in a few minutes on 2 CPU cores."""

    #: The targets. Both demo sizes use the same small LM (hidden 64, 2 layers): a 1-layer EAGLE draft reaches chain
    #: tau 3.4 on it after 16 stage-1 epochs, while on a hidden-128, 3-layer target the same recipe stayed at 1.6
    #: (docs/results.md, "Why this target size").
    lm: TinyLMSpec = field(default_factory=lambda: TinyLMSpec(base_steps=600, finetune_steps=300))
    #: General prompts (several per documentation paragraph, see `window_prompt_rows`) for stage 1.
    general_prompts: int = 2000
    #: Held-out general prompts (other paragraphs) on which the shared draft is measured with the base target.
    general_eval_prompts: int = 100
    domain_prompts: int = 300
    num_eval_prompts: int = 100
    max_new_tokens: int = 64
    eval_max_new_tokens: int = 64
    stage1_epochs: float = 16.0
    adapt_epochs: float = 10.0
    budget: float = 0.3
    budget_curve: tuple[float, ...] = (0.1, 0.3, 0.5, 1.0)
    #: Training seeds of every trained row (`ExperimentConfig.seeds`: the demo's seed, the next ones).
    num_seeds: int = 3
    #: Share of general prompts mixed into each domain's training pool (after the held-out domain eval prompts),
    #: as in a real prompt collection: most of it is not worth training on (the fine-tune replays general text and
    #: barely moved there), so a random budget is mostly wasted and selection has something to find.
    general_share_of_pool: float = 0.7

    def __post_init__(self) -> None:
        if not 0 <= self.general_share_of_pool < 1:
            raise EdaInputError(f"general_share_of_pool must be in [0, 1), got {self.general_share_of_pool}")

    @classmethod
    def quick(cls) -> DemoSize:
        return cls(
            lm=TinyLMSpec(base_steps=600, finetune_steps=300),
            general_prompts=2000,
            general_eval_prompts=40,
            domain_prompts=200,
            num_eval_prompts=40,
            max_new_tokens=48,
            eval_max_new_tokens=48,
            stage1_epochs=12.0,
            adapt_epochs=10.0,
            budget_curve=(0.1, 0.3, 1.0),
            num_seeds=1,
        )


def build_demo(
    cache_dir: str | os.PathLike, size: DemoSize | None = None, seed: int = 0, log: Any = print
) -> ExperimentConfig:
    """Train (or reuse) the tiny targets and write the prompt sets under `cache_dir`; return the experiment config."""
    size = size or DemoSize()
    cache_dir = Path(cache_dir)
    general, code, math = general_corpus(seed), code_corpus(seed), math_corpus(seed=seed)
    log(f"targets: tiny Llama LMs (hidden {size.lm.hidden_size}, {size.lm.num_hidden_layers} layers) in {cache_dir}")
    paths = build_targets(cache_dir / "targets", general.train, {"code": code.train, "math": math.train}, size.lm, seed)

    prompt_dir = cache_dir / "prompts"
    prompt_dir.mkdir(parents=True, exist_ok=True)
    # general prompts by paragraph, so held-out, stage-1 and pool prompts never share a paragraph
    held_general, stage1_general, spare_general = [], [], []
    for paragraph in general.train:
        rows = window_prompt_rows([paragraph])
        if len(held_general) < size.general_eval_prompts:
            held_general += rows
        elif len(stage1_general) < size.general_prompts:
            stage1_general += rows
        else:
            spare_general += rows  # never seen in stage 1: the general part of each domain's pool
    files = {
        "general": stage1_general[: size.general_prompts],
        "general-eval": held_general[: size.general_eval_prompts],
    }
    for corpus in (code, math):
        domain_rows = corpus.prompt_rows(size.domain_prompts)
        eval_rows, pool = domain_rows[: size.num_eval_prompts], domain_rows[size.num_eval_prompts :]
        num_general = round(len(pool) * size.general_share_of_pool / (1 - size.general_share_of_pool))
        if num_general > len(spare_general):
            raise EdaInputError(
                f"not enough general prompts to mix {num_general} into the {corpus.name} pool (only "
                f"{len(spare_general)} are left after stage 1): lower domain_prompts, general_prompts or "
                "general_share_of_pool"
            )
        mixed = pool + random.Random(seed).sample(spare_general, num_general)
        random.Random(seed).shuffle(mixed)
        files[corpus.name] = eval_rows + mixed
    for name, rows in files.items():
        atomic_write_text(prompt_dir / f"{name}.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    return ExperimentConfig(
        base_target=str(paths["base"]),
        tokenizer=str(paths["tokenizer"]),
        general_prompts=str(prompt_dir / "general.jsonl"),
        general_eval_prompts=str(prompt_dir / "general-eval.jsonl"),
        domains=[
            {"name": name, "target": str(paths[name]), "prompts": str(prompt_dir / f"{name}.jsonl"),
             "num_eval_prompts": size.num_eval_prompts}
            for name in ("code", "math")
        ],
        output_dir=str(cache_dir / "experiment"),
        seed=seed,
        seeds=[seed + i for i in range(size.num_seeds)],
        max_new_tokens=size.max_new_tokens,
        eval_max_new_tokens=size.eval_max_new_tokens,
        stage1_epochs=size.stage1_epochs,
        adapt_epochs=size.adapt_epochs,
        budget=size.budget,
        budget_curve=list(size.budget_curve),
        max_length=size.lm.seq_len * 2,
    )


def run_demo(
    cache_dir: str | os.PathLike = "eda_cache/demo", quick: bool = False, seed: int = 0, log: Any = print,
    verbose: bool = False, **overrides: Any,
) -> ExperimentResults:
    """The whole miniature: targets, stage 1, and every method per domain; results table and plots in the cache.
    `log` gets one line per stage; `verbose=True` also each training and each method's tau (see `run_experiment`)."""
    size = DemoSize.quick() if quick else DemoSize()
    cache_dir = Path(cache_dir) / ("quick" if quick else "default")
    config = build_demo(cache_dir, size, seed, log)
    if overrides:
        config = replace(config, **overrides)
    return run_experiment(config, log=log, verbose=verbose)


__all__ = ["DemoSize", "build_demo", "run_demo"]
