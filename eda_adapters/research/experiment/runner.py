"""Run an EDA experiment end to end: stage 1, then per domain regeneration, selection, adaptation and tau.

Every intermediate result lives under `config.output_dir` and is reused by a second run: regenerations resume or are
read back, trained drafts/adapters are reloaded together with their recorded training cost (`train_cost.json`).
Only tau is measured again each time (it is cheap and it is the result).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import os
import shutil
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from torch.utils.data import Subset
from peft import LoraConfig, PeftModel
from transformers import PreTrainedModel, PreTrainedTokenizerBase, set_seed

from ...data import CachedFeatureDataset, extract_features
from ...data.io import atomic_write_json, load_causal_lm, load_rows, load_tokenizer, save_dataset_jsonl
from ...data.prompts import tokenize_answers
from ...data.regenerate import regenerate
from ...data.selection import EMBEDDING_COLUMN, add_shift_scores, resolve_budget, select_by_shift
from ...data.selection_strategies import SelectionStrategy
from ...fingerprints import dataset_tokens_fingerprint, draft_fingerprint, target_fingerprint
from ...models import EagleDraftModel
from ...generation import TreeConfig
from ...generation.replay import GreedyReference, greedy_references
from ...training import EagleTrainer, EagleTrainingConfig, EdaTrainer, EdaTrainingConfig
from ...training.acceptance import prompts_from_dataset
from ...training.joint import STAGE1_ADAPTER_DIR
from ...tuners import EdaConfig
from .config import DomainConfig, ExperimentConfig
from .evaluation import (
    LORA_TARGET_MODULES,
    TauMeasurement,
    count_parameters,
    forward_parameters,
    load_measurements,
    lora_rank_matching,
    measure_tau,
    measurement_key,
    save_measurements,
    summarize_seeds,
    tau_by_kind,
    training_flops,
)
from .report import SELECTION_ROWS, BudgetPoint, MethodResult, results_table, save_results
from ...errors import EdaInputError

logger = logging.getLogger(__name__)


@dataclass
class TrainCost:
    """What one training run cost."""

    trainable_params: int
    samples: int
    steps: int
    train_seconds: float
    tokens: int = 0
    flops: float = 0.0


@dataclass
class ExperimentResults:
    methods: list[MethodResult]
    budgets: list[BudgetPoint]
    files: dict[str, Path]

    def table(self) -> str:
        return results_table(self.methods)


#: every line of the run, details included, in OUTPUT_DIR
LOG_FILE = "experiment.log"


def run_experiment(config: ExperimentConfig, log: Any = print, verbose: bool = False) -> ExperimentResults:
    """Run every method of `config` and write `results.{json,md}` and the plots into `config.output_dir`.

    `log` receives one line per finished stage (and any warning); every line, each method's tau and each training
    included, also goes to `OUTPUT_DIR/experiment.log`. `verbose=True` sends every line to `log` as well.
    """
    config.check_inputs()  # every prompt set, budget and held-out count, before any model is loaded
    config.check_cache()  # an output_dir made with another configuration is refused, never mixed
    return _Experiment(config, log, verbose).run()


class _Experiment:
    def __init__(self, config: ExperimentConfig, log: Any, verbose: bool = False) -> None:
        self.config = config
        self.started = time.perf_counter()
        self._console = log
        self._verbose = verbose
        #: wall seconds of each stage in this process (a stage reused from the cache costs ~0 here)
        self.stage_seconds: dict[str, float] = {}
        #: cached target features of this domain: (features, row -> index, the target they belong to)
        self._feature_sets: list[tuple[CachedFeatureDataset, dict[bytes, int], PreTrainedModel]] = []
        self.out = Path(config.output_dir)
        self.tokenizer: PreTrainedTokenizerBase = load_tokenizer(config.tokenizer or config.base_target)
        self.base = self._load_target(config.base_target)
        self._reference_cache: dict[tuple[int, int], tuple[Any, Any, list[GreedyReference]]] = {}
        #: domain -> {"pool": share of each prompt kind in the pool, strategy: share in its main-budget selection}
        self.selected_kinds: dict[str, dict[str, dict[str, float]]] = {}

    def log(self, message: str, detail: bool = False) -> None:
        """Write `message` to `experiment.log`, and to the console unless it is a `detail` of a stage."""
        line = f"[{_clock(time.perf_counter() - self.started)}] {message}"
        self.out.mkdir(parents=True, exist_ok=True)
        with (self.out / LOG_FILE).open("a") as handle:
            handle.write(line + "\n")
        if not detail or self._verbose:
            self._console(line)

    # ------------------------------------------------------------------ the experiment
    def run(self) -> ExperimentResults:
        cfg = self.config
        set_seed(cfg.seed)
        self.out.mkdir(parents=True, exist_ok=True)
        self.draft_fingerprint = None
        self._fingerprints: dict[Path, str | None] = {}
        if cfg.shared_draft is None or "eda_official" in cfg.methods:  # stage 1 data: ours, or the joint draft's
            with self._stage("stage 1: regenerate the general prompts with the base target"):
                self.general = self._regenerate(self.base, cfg.general_prompts, self.out / "stage1" / "regenerated")
            self._cache_features(self.base, self.general, self.out / "stage1" / "features", "stage 1")
        if cfg.shared_draft is not None:
            self.draft_dir = Path(cfg.shared_draft)
            stage1_cost = self._given_draft()
        else:
            self.draft_dir = self.out / "stage1" / "draft"
            with self._stage("stage 1: train the shared draft"):
                stage1_cost = self._full(
                    self.draft_dir, self.base, cfg.base_target, self.general,
                    self._steps(len(self.general), cfg.stage1_epochs), cfg.stage1_learning_rate, seed=cfg.seed,
                )
        # the shared draft is frozen from here on: fingerprint it once, it keys every adapter run
        self.draft_fingerprint = draft_fingerprint(self._shared_draft(self.base))
        self.log(f"stage 1: shared draft trained on {stage1_cost.samples} samples in {stage1_cost.train_seconds:.1f}s",
                 detail=True)
        methods: list[MethodResult] = []
        if cfg.general_eval_prompts is not None and "base_on_base" in cfg.methods:
            with self._stage("stage 1: tau of the shared draft on held-out general prompts"):
                held = self._regenerate(self.base, cfg.general_eval_prompts, self.out / "stage1" / "eval-regenerated")
                prompts = prompts_from_dataset(held, len(held))
                chain, tree = self._measure(self._shared_draft(self.base), self.base, prompts)
                methods.append(self._row("general", "base_on_base", chain, tree, stage1_cost, "stage 1"))
        if "eda_official" in cfg.methods:
            with self._stage("stage 1 of the official design (joint)"):
                self._joint_draft()

        budgets: list[BudgetPoint] = []
        for domain in cfg.domains:
            start = time.perf_counter()
            domain_methods, domain_budgets = self._run_domain(domain, stage1_cost)
            self.log(f"[{domain.name}] {len(domain_methods)} methods trained and measured: done in "
                     f"{time.perf_counter() - start:.1f}s")
            methods += domain_methods
            budgets += domain_budgets
        files = save_results(methods, budgets, self.out, self._run_record(), selected_kinds=self.selected_kinds)
        return ExperimentResults(methods, budgets, files)

    def _run_record(self) -> dict[str, Any]:
        """What `results.json` says about the run: its configuration, the machine, versions and wall time."""
        import platform
        from importlib.metadata import version

        import peft
        import transformers

        return {
            "config": json.loads(json.dumps(dataclasses.asdict(self.config), default=str)),
            "wall_seconds": round(time.perf_counter() - self.started, 1),
            "stage_seconds": {name: round(seconds, 1) for name, seconds in self.stage_seconds.items()},
            "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                        "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                        "device": str(self.base.device)},
            "versions": {"eda_adapters": version("eda_adapters"), "torch": torch.__version__,
                         "transformers": transformers.__version__, "peft": peft.__version__},
        }

    def _run_domain(self, domain: DomainConfig, stage1_cost: TrainCost) -> tuple[list[MethodResult], list[BudgetPoint]]:
        cfg = self.config
        out = self.out / domain.name
        self._reference_cache.clear()  # greedy answers of the previous domain's targets: not needed again
        self._feature_sets.clear()
        target = self._load_target(domain.target)
        prompts = load_rows(domain.prompts)
        if len(prompts) <= domain.num_eval_prompts:
            raise EdaInputError(
                f"domain {domain.name}: {len(prompts)} prompts, but {domain.num_eval_prompts} are held out for tau; "
                "give more prompts or lower num_eval_prompts"
            )
        # the first prompts are held out: never trained on, never scored for selection
        kinds = [str(k) for k in prompts["kind"]] if "kind" in prompts.column_names else []
        eval_kinds = kinds[: domain.num_eval_prompts]
        pool_kinds = kinds[domain.num_eval_prompts:]  # a regenerated row's `index` is its row in pool_rows
        eval_rows = prompts.select(range(domain.num_eval_prompts))
        pool_rows = prompts.select(range(domain.num_eval_prompts, len(prompts)))
        with self._stage(f"[{domain.name}] regenerate held-out and pool prompts with the fine-tuned target"):
            eval_prompts = prompts_from_dataset(
                self._regenerate(target, eval_rows, out / "eval-regenerated"), domain.num_eval_prompts
            )
            pool = self._regenerate(target, pool_rows, out / "regenerated")
        with self._stage(f"[{domain.name}] representation-shift scores"):
            scored = self._scores(pool, target, out / "scores.jsonl")
        self._cache_features(target, scored, out / "features", domain.name)
        measure = functools.partial(self._measure, prompts=eval_prompts)
        results: list[MethodResult] = []

        def by_kind(chains: list[TauMeasurement]) -> dict[str, list[float]]:
            """Chain tau per held-out prompt kind, `[tau, low, high]`, when the prompts have a `kind`."""
            if not eval_kinds:
                return {}
            return {kind: [round(m.tau, 4), round(m.ci95[0], 4), round(m.ci95[1], 4)]
                    for kind, m in tau_by_kind(chains, eval_kinds).items()}

        def record(method: str, draft: torch.nn.Module, on: PreTrainedModel, cost: TrainCost | None = None,
                   budget: str = "equal tokens") -> tuple[TauMeasurement, TauMeasurement | None]:
            chain, tree = measure(draft, on)
            results.append(self._row(domain.name, method, chain, tree, cost, budget, by_kind=by_kind([chain])))
            return chain, tree

        if "base_on_base" in cfg.methods:
            record("base_on_base", self._shared_draft(self.base), self.base, stage1_cost, budget="stage 1")
        if "direct_transfer" in cfg.methods:
            record("direct_transfer", self._shared_draft(target), target)

        # Every trained row sees the same number of training tokens: the main budget's samples, at the pool's mean
        # length, `adapt_epochs` times; a row's steps follow from its own data's mean length (shift-selected samples
        # are longer than random ones, so they get fewer steps). Each trained row runs once per seed in `seeds`.
        main_count = resolve_budget(cfg.budget, len(scored))
        token_budget = cfg.adapt_epochs * main_count * self._mean_tokens(scored)

        def over_seeds(train: Any) -> tuple[TauMeasurement, TauMeasurement | None, list[TauMeasurement], TrainCost]:
            """Train once per seed (`train(seed) -> (model, cost)`) and measure each: the pooled measurements with
            nested intervals (seeds, then prompts), each seed's chain measurement, and the mean cost of one run."""
            runs = [train(seed) for seed in cfg.seeds]
            measured = [measure(model, target) for model, _ in runs]
            chain = summarize_seeds([c for c, _ in measured])
            tree = summarize_seeds([t for _, t in measured]) if measured[0][1] is not None else None
            costs = [cost for _, cost in runs]
            mean = TrainCost(costs[0].trainable_params, costs[0].samples,
                             round(sum(c.steps for c in costs) / len(costs)),
                             sum(c.train_seconds for c in costs) / len(costs),
                             round(sum(c.tokens for c in costs) / len(costs)), sum(c.flops for c in costs) / len(costs))
            return chain, tree, [c for c, _ in measured], mean

        def seeded(method: str, train: Any, budget: str = "equal tokens") -> tuple[TauMeasurement, Any]:
            chain, tree, chains, cost = over_seeds(train)
            results.append(self._row(domain.name, method, chain, tree, cost, budget,
                                     per_seed=[round(c.tau, 4) for c in chains], by_kind=by_kind(chains)))
            return chain, tree

        @functools.cache  # each seed's selection is trained on, and its prompt kinds counted: selected once
        def selected(strategy: str, count: int, seed: int) -> Dataset:
            chosen = SelectionStrategy(strategy, temperature=cfg.selection_temperature,
                                       num_clusters=min(cfg.selection_clusters, len(scored)), seed=seed)
            return select_by_shift(scored, count, strategy=chosen)

        shift_data = selected("topk", main_count, cfg.seed)  # the data of the LoRA and full-draft rows
        shift_steps = self._steps_for_tokens(shift_data, token_budget)

        # EDA adapters, one row per selection strategy, at every budget of the curve (each at its own token budget)
        curve: list[BudgetPoint] = []
        for budget in sorted({*cfg.budget_curve, cfg.budget}):
            count = resolve_budget(budget, len(scored))
            tokens = cfg.adapt_epochs * count * self._mean_tokens(scored)
            for row, strategy in SELECTION_ROWS.items():
                if row not in cfg.methods:
                    continue
                name = row.removeprefix("eda_")

                # the whole pool is the same data whatever the strategy: one run per seed serves every row
                folder = "all" if count == len(scored) else name

                def adapter(seed: int, folder: str = folder, strategy: str = strategy, count: int = count,
                            tokens: float = tokens):
                    subset = selected(strategy, count, seed)
                    return self._adapter(target, subset, out / f"eda-{folder}-{count}-s{seed}",
                                         self._steps_for_tokens(subset, tokens), seed=seed)

                if count == main_count:
                    chain, tree = seeded(row, adapter)
                    if pool_kinds:
                        picked = selected(strategy, count, cfg.seed)["index"]
                        self.selected_kinds.setdefault(domain.name, {"pool": _shares(pool_kinds)})[name] = _shares(
                            [pool_kinds[i] for i in picked])
                else:
                    chain, tree, _, _ = over_seeds(adapter)
                    self.log(f"[{domain.name}] {row} at budget {budget:g} ({count} samples): {_taus(chain, tree)}",
                             detail=True)  # the budget curve shows it
                curve.append(BudgetPoint(domain.name, name, float(budget), count, chain.tau, chain.ci95,
                                         tree.tau if tree else None))

        if "eda_original" in cfg.methods:
            original = self._original_texts(pool_rows)
            if len(original) >= main_count:
                def original_adapter(seed: int):
                    subset = select_by_shift(original, main_count, strategy="random", seed=seed)
                    return self._adapter(target, subset, out / f"eda-original-{main_count}-s{seed}",
                                         self._steps_for_tokens(subset, token_budget), seed=seed)

                seeded("eda_original", original_adapter)
            else:
                self.log(f"[{domain.name}] eda_original skipped: {len(original)} prompts have a reference answer")

        if "eda_official" in cfg.methods:
            official = dict(cfg.official)
            noise = {k: official.pop(k) for k in ("feature_noise_type", "feature_noise_std") if k in official}
            seeded("eda_official", lambda seed: self._adapter(
                target, shift_data, out / f"eda-official-{main_count}-s{seed}", shift_steps,
                eda={**cfg.eda, **official}, draft_dir=self._joint_draft(), noise=noise, seed=seed,
            ))

        if "lora" in cfg.methods:
            seeded("lora", lambda seed: self._lora(target, shift_data, out / f"lora-{main_count}-s{seed}", shift_steps,
                                                   seed=seed))

        def whole_draft(name: str, data: Dataset, steps: int, lr: float, warm: bool = False):
            def train(seed: int):
                run_dir = out / f"{name}-s{seed}"
                cost = self._full(run_dir, target, domain.target, data, steps, lr, warm=warm, seed=seed)
                return EagleDraftModel.from_pretrained(run_dir, target_model=target), cost
            return train

        if "full_finetune" in cfg.methods:
            seeded("full_finetune", whole_draft(f"full-finetune-{main_count}", shift_data, shift_steps,
                                                cfg.finetune_learning_rate, warm=True))
        if "full_retrain" in cfg.methods:
            seeded("full_retrain", whole_draft(f"full-retrain-{main_count}", shift_data, shift_steps,
                                               cfg.stage1_learning_rate))
        if "full_retrain_converged" in cfg.methods:
            seeded("full_retrain_converged",
                   whole_draft("full-retrain", scored, self._steps(len(scored), cfg.retrain_epochs),
                               cfg.stage1_learning_rate),
                   budget=f"own ({cfg.retrain_epochs:g} epochs over the whole pool)")
        return results, curve

    # ------------------------------------------------------------------ measuring
    def _given_draft(self) -> TrainCost:
        """`shared_draft`, trained elsewhere: checked against the base target; its training cost is not known here
        (the row says `stage 1`, its samples and steps 0)."""
        draft = self._shared_draft(self.base)
        mismatch = draft.check_target(self.base)
        if mismatch:
            raise EdaInputError(f"ExperimentConfig.shared_draft: {mismatch.split(':')[0]}; pass a draft of the base "
                                "target")
        self.log(f"stage 1: the given shared draft {self.draft_dir}", detail=True)
        return TrainCost(count_parameters(draft, trainable_only=True), 0, 0, 0.0)

    def _row(
        self, domain: str, method: str, chain: TauMeasurement, tree: TauMeasurement | None, cost: TrainCost | None,
        budget: str, per_seed: list[float] | None = None, by_kind: dict[str, list[float]] | None = None,
    ) -> MethodResult:
        """One results row (logged as it is made); `per_seed`: each training seed's chain tau; `by_kind`: chain tau
        and interval per held-out prompt kind."""
        row = MethodResult(
            domain, method, chain.tau, chain.ci95, tree.tau if tree else None, tree.ci95 if tree else None,
            chain.acceptance_by_position, tree.acceptance_by_position if tree else [], chain.num_prompts,
            budget=budget, seeds=list(self.config.seeds) if per_seed else [], tau_chain_per_seed=per_seed or [],
            tau_chain_by_kind=by_kind or {},
        )
        if cost is not None:
            row.trainable_params, row.samples, row.steps = cost.trainable_params, cost.samples, cost.steps
            row.train_tokens, row.train_seconds, row.train_flops = cost.tokens, cost.train_seconds, cost.flops
        self.log(
            f"[{domain}] {method}: {_taus(chain, tree)}"
            + (f" ({cost.samples} samples, {cost.tokens} tokens)" if cost else ""),
            detail=True,  # the results table shows it
        )
        return row

    def _measure(
        self, draft: torch.nn.Module, target: PreTrainedModel, prompts: list[torch.LongTensor]
    ) -> tuple[TauMeasurement, TauMeasurement | None]:
        """tau with chain drafting and (when `eval_tree`) EAGLE-2 tree decoding, T=0, on the held-out prompts.

        Kept under `output_dir/measurements/`, keyed by the draft's weights, the target, the prompts and the settings:
        an experiment resumed after an interruption replays only the rows it had not measured yet."""
        cfg = self.config
        common = dict(max_new_tokens=cfg.eval_max_new_tokens, seed=cfg.seed, method=cfg.eval_method)
        shape = TreeConfig(depth=cfg.tree_depth, top_k=cfg.tree_top_k, total_tokens=cfg.tree_total_tokens)
        settings = {**common, "num_draft_tokens": cfg.num_draft_tokens,
                    "tree": asdict(shape) if cfg.eval_tree else None}
        key = measurement_key(draft, target_fingerprint(target), prompts, settings)  # 64 values a tensor: cheap
        path = self.out / "measurements" / f"{key}.json"
        saved = load_measurements(path)
        if saved is not None:
            return saved
        if cfg.eval_method == "replay":
            common["references"] = self._references(target, prompts)
        chain = measure_tau(draft, target, prompts, num_draft_tokens=cfg.num_draft_tokens, **common)
        tree = measure_tau(draft, target, prompts, tree=shape, **common) if cfg.eval_tree else None
        save_measurements(path, chain, tree)
        return chain, tree

    def _references(self, target: PreTrainedModel, prompts: list[torch.LongTensor]) -> list[GreedyReference]:
        """The target's greedy answers to the held-out prompts, computed once per target and prompt set."""
        key = (id(target), id(prompts))
        if key not in self._reference_cache:  # the entry holds target and prompts, so their ids stay theirs
            refs = greedy_references(target, prompts, self.config.eval_max_new_tokens, show_progress=True)
            self._reference_cache[key] = (target, prompts, refs)
        return self._reference_cache[key][2]

    def _mean_tokens(self, data: Dataset) -> float:
        """Mean tokens a training sample of `data` contributes (cut at `max_length`)."""
        cap = self.config.max_length
        return sum(min(len(ids), cap) for ids in data["input_ids"]) / max(1, len(data))

    def _steps_for_tokens(self, data: Dataset, tokens: float) -> int:
        """Optimizer steps that show about `tokens` training tokens from `data` (batches of its mean length)."""
        per_step = self.config.train_batch_size * max(1.0, self._mean_tokens(data))
        return max(1, math.ceil(tokens / per_step))

    def _steps(self, samples: int, epochs: float | None = None) -> int:
        """Optimizer steps of `epochs` (default `adapt_epochs`) over `samples` samples."""
        epochs = self.config.adapt_epochs if epochs is None else epochs
        return max(1, math.ceil(epochs * math.ceil(samples / self.config.train_batch_size)))

    # ------------------------------------------------------------------ pieces
    def _load_target(self, name_or_path: str) -> PreTrainedModel:
        device = self.config.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        model = load_causal_lm(name_or_path, dtype=self.config.dtype, device=device)
        model.requires_grad_(False)
        return model.eval()

    def _regenerate(self, target: PreTrainedModel, prompts: Any, run_dir: Path) -> Dataset:
        cfg = self.config
        return regenerate(
            target, self.tokenizer, prompts, run_dir, max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
            seed=cfg.seed, batch_size=cfg.regenerate_batch_size,
        )

    def _scores(self, pool: Dataset, target: PreTrainedModel, path: Path) -> Dataset:
        """Representation-shift scores (and the base embeddings `cluster` reads) of the pool, computed once and kept
        beside the data; scores saved before embeddings existed are computed again."""
        if path.exists():
            scored = Dataset.from_json(str(path))
            if len(scored) == len(pool) and EMBEDDING_COLUMN in scored.column_names:
                return scored
        scored = add_shift_scores(pool, self.base, target, show_progress=True)
        save_dataset_jsonl(scored, path)
        return scored

    def _shared_draft(self, target: PreTrainedModel, draft_dir: Path | None = None) -> EagleDraftModel:
        return EagleDraftModel.from_pretrained(draft_dir or self.draft_dir, target_model=target).eval()

    def _fingerprint(self, draft_dir: Path | None) -> str | None:
        """Fingerprint of a frozen shared draft, computed once per directory (it keys every adapter run on it)."""
        if draft_dir is None or draft_dir == self.draft_dir:
            return self.draft_fingerprint
        if draft_dir not in self._fingerprints:
            self._fingerprints[draft_dir] = draft_fingerprint(self._shared_draft(self.base, draft_dir))
        return self._fingerprints[draft_dir]

    def _joint_draft(self) -> Path:
        """The official design's stage 1 (trained once): a shared draft trained jointly with a private expert."""
        cfg = self.config
        run_dir = self.out / "stage1" / "joint-draft"
        noise = {k: cfg.official[k] for k in ("feature_noise_type", "feature_noise_std") if k in cfg.official}
        steps = self._steps(len(self.general), cfg.stage1_epochs)
        settings = {
            **self._settings(steps, cfg.stage1_learning_rate, cfg.seed, noise), "joint": cfg.eda,
            "target": cfg.base_target,
        }
        if cfg.draft_vocab_size is not None:
            settings["draft_vocab_size"] = cfg.draft_vocab_size
        private = {k: v for k, v in cfg.eda.items() if k not in ("modules_to_save", "init_private_weights",
                                                                  "init_private_from")}
        cost = self._train(
            run_dir, self.general, settings,
            lambda: EagleTrainer(
                target_model=self.base, train_dataset=self._training_data(self.general, self.base),
                peft_config=EdaConfig(**private, init_private_weights="random"),
                args=self._args(EagleTrainingConfig, run_dir, steps, cfg.stage1_learning_rate, cfg.seed, noise,
                                draft_vocab_size=cfg.draft_vocab_size),
            ),
        )
        self.log(f"stage 1 (official design, joint): trained in {cost.train_seconds:.1f}s", detail=True)
        return run_dir

    def _adapter(
        self, target: PreTrainedModel, data: Dataset, run_dir: Path, steps: int, eda: dict[str, Any] | None = None,
        draft_dir: Path | None = None, noise: dict[str, Any] | None = None, seed: int = 0,
    ) -> tuple[PeftModel, TrainCost]:
        """An EDA adapter (`eda` settings, default the config's) of the shared draft at `draft_dir`."""
        cfg = self.config
        eda = cfg.eda if eda is None else eda
        if eda.get("init_private_weights") == "copy" and not eda.get("init_private_from"):
            eda = {**eda, "init_private_from": str((draft_dir or self.draft_dir) / STAGE1_ADAPTER_DIR)}
        settings = {
            **self._settings(steps, cfg.adapt_learning_rate, seed, noise), "eda": eda, "target": target.name_or_path,
            "draft": self._fingerprint(draft_dir),
        }
        cost = self._train(
            run_dir, data, settings,
            lambda: EdaTrainer(
                model=self._shared_draft(target, draft_dir), target_model=target,
                train_dataset=self._training_data(data, target),
                peft_config=EdaConfig(**eda),
                args=self._args(EdaTrainingConfig, run_dir, steps, cfg.adapt_learning_rate, seed, noise),
            ),
        )
        return PeftModel.from_pretrained(self._shared_draft(target, draft_dir), run_dir).eval(), cost

    def _lora(self, target: PreTrainedModel, data: Dataset, run_dir: Path, steps: int, seed: int = 0
              ) -> tuple[PeftModel, TrainCost]:
        """PEFT's LoRA on every linear layer of the shared draft, rank matched to the EDA adapter's parameters."""
        cfg = self.config
        shape = {k: v for k, v in cfg.eda.items() if k not in ("init_private_weights", "init_private_from")}
        rank = lora_rank_matching(self._shared_draft(target), EdaConfig(**shape))
        lora = dict(r=rank, lora_alpha=2 * rank, target_modules=LORA_TARGET_MODULES, lora_dropout=0.0)
        settings = {**self._settings(steps, cfg.adapt_learning_rate, seed), "lora": lora, "target": target.name_or_path,
                    "draft": self.draft_fingerprint}
        cost = self._train(
            run_dir, data, settings,
            lambda: EdaTrainer(
                model=self._shared_draft(target), target_model=target, train_dataset=self._training_data(data, target),
                peft_config=LoraConfig(**lora),
                args=self._args(EdaTrainingConfig, run_dir, steps, cfg.adapt_learning_rate, seed),
            ),
        )
        return PeftModel.from_pretrained(self._shared_draft(target), run_dir).eval(), cost

    def _full(
        self, run_dir: Path, target: PreTrainedModel, target_name: str, data: Dataset, steps: int, lr: float,
        warm: bool = False, seed: int = 0,
    ) -> TrainCost:
        """A whole draft for `target`: from scratch, or warm-started from the shared draft (`warm`)."""
        warm_from = self.draft_fingerprint if warm else None
        vocab = None if warm else self.config.draft_vocab_size
        settings = {**self._settings(steps, lr, seed), "target": target_name, "warm": warm_from}
        if vocab is not None:  # only in the key when set: runs cached before this field existed stay valid
            settings["draft_vocab_size"] = vocab
        return self._train(
            run_dir, data, settings,
            lambda: EagleTrainer(
                model=self._shared_draft(target) if warm else None, target_model=target,
                train_dataset=self._training_data(data, target),
                args=self._args(EagleTrainingConfig, run_dir, steps, lr, seed, draft_vocab_size=vocab),
            ),
        )

    def _settings(self, steps: int, lr: float, seed: int, noise: dict[str, Any] | None = None) -> dict[str, Any]:
        cfg = self.config
        return {
            "steps": steps, "lr": lr, "batch_size": cfg.train_batch_size, "max_length": cfg.max_length,
            "noise": self._noise(noise), "layers": cfg.draft_num_layers, "seed": seed,
        }

    def _noise(self, noise: dict[str, Any] | None) -> dict[str, Any]:
        cfg = self.config
        return {"feature_noise_type": cfg.feature_noise_type, "feature_noise_std": cfg.feature_noise_std,
                **(noise or {})}

    def _args(
        self, config_cls: type, run_dir: Path, steps: int, lr: float, seed: int, noise: dict[str, Any] | None = None,
        **extra: Any,
    ) -> EagleTrainingConfig:
        cfg = self.config
        return config_cls(**extra,
            output_dir=str(run_dir), max_steps=steps, learning_rate=lr,
            per_device_train_batch_size=cfg.train_batch_size, max_length=cfg.max_length,
            draft_num_layers=cfg.draft_num_layers, **self._noise(noise),
            lr_scheduler_type="cosine", warmup_steps=0.05, save_strategy="no", report_to=[], logging_steps=50,
            seed=seed, disable_tqdm=True, dataloader_pin_memory=torch.cuda.is_available(),
            include_num_input_tokens_seen="non_padding",
        )

    def _train(self, run_dir: Path, data: Dataset, settings: dict[str, Any], make_trainer: Any) -> TrainCost:
        """Train and save into `run_dir`, or reuse a finished run there with the same data and settings.

        `train_cost.json` is written last and records what the run was (data fingerprint + settings): a run dir
        left by other data or settings is trained again rather than silently reused.
        """
        cost_file = run_dir / "train_cost.json"
        key = {"data": dataset_tokens_fingerprint(data), **settings}
        if cost_file.exists():
            saved = json.loads(cost_file.read_text())
            if saved.pop("key", None) == json.loads(json.dumps(key)):
                return TrainCost(**saved)
            self.log(f"{run_dir}: data or settings changed since it was trained; training again")
        if run_dir.exists():  # the experiment's own stale or unfinished run: trainers refuse to train over it
            shutil.rmtree(run_dir)
        trainer = make_trainer()
        trainable = count_parameters(trainer.model, trainable_only=True)
        start = time.perf_counter()
        output = trainer.train()
        seconds = time.perf_counter() - start
        self.stage_seconds[f"train {run_dir.relative_to(self.out)}"] = seconds
        self.log(f"trained {run_dir.relative_to(self.out)}: {output.global_step} steps, "
                 f"{int(trainer.state.num_input_tokens_seen)} tokens in {seconds:.1f}s", detail=True)
        trainer.save_model(str(run_dir))
        tokens = int(trainer.state.num_input_tokens_seen)
        flops = training_flops(
            tokens, forward_parameters(trainer.target_model), forward_parameters(trainer.model), trainable
        )
        cost = TrainCost(trainable, len(data), int(output.global_step), seconds, tokens, flops)
        atomic_write_json(cost_file, {**asdict(cost), "key": key})
        return cost

    # ------------------------------------------------------------------ cached features
    def _cache_features(self, target: PreTrainedModel, data: Dataset, path: Path, what: str) -> None:
        """With `feature_cache`, run `target` once over `data` (resumable, under `path`) for every row trained on it."""
        if not self.config.feature_cache:
            return
        with self._stage(f"[{what}] cache the target's features of {len(data)} samples"):
            cached = extract_features(target, data, path, batch_size=self.config.train_batch_size)
        index = {_row_key(ids): i for i, ids in enumerate(data["input_ids"])}
        self._feature_sets.append((cached, index, target))

    def _training_data(self, data: Dataset, target: PreTrainedModel) -> Any:
        """`data`'s cached features when every row of it was cached for `target`, else `data` (online features)."""
        for cached, index, owner in self._feature_sets:
            if owner is not target:
                continue
            rows = [index.get(_row_key(ids)) for ids in data["input_ids"]]
            if None not in rows:
                return Subset(cached, rows)
        return data

    @contextmanager
    def _stage(self, name: str) -> Iterator[None]:
        """Log a stage's start and wall time, and record the time for `results.json`."""
        self.log(f"{name} ...")
        start = time.perf_counter()
        yield
        seconds = time.perf_counter() - start
        self.stage_seconds[name] = self.stage_seconds.get(name, 0.0) + seconds
        self.log(f"{name}: done in {seconds:.1f}s")

    def _original_texts(self, rows: Dataset) -> Dataset:
        """The pool prompts with their original `reference` answers, tokenized like regenerated rows."""
        return tokenize_answers(self.tokenizer, rows, self.config.max_new_tokens)


def _shares(kinds: list[str]) -> dict[str, float]:
    """The share of each kind in `kinds` (4 decimals), most frequent first."""
    counts = Counter(kinds)
    return {kind: round(n / len(kinds), 4) for kind, n in counts.most_common()}


def _taus(chain: TauMeasurement, tree: TauMeasurement | None) -> str:
    """`tau chain 1.710 [1.69, 1.74], tree 2.477 [2.43, 2.52]`, as the log writes a measured row."""
    text = f"tau chain {chain.tau:.3f} [{chain.ci95[0]:.2f}, {chain.ci95[1]:.2f}]"
    return text + (f", tree {tree.tau:.3f} [{tree.ci95[0]:.2f}, {tree.ci95[1]:.2f}]" if tree else "")


def _row_key(input_ids: list[int]) -> bytes:
    return torch.tensor(input_ids, dtype=torch.int64).numpy().tobytes()


def _clock(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    return f"{minutes // 60:d}:{minutes % 60:02d}:{seconds:02d}"
