"""Run an EDA experiment end to end: stage 1, then per domain regeneration, selection, adaptation and tau.

Every intermediate result lives under `config.output_dir` and is reused by a second run: regenerations resume or are
read back, trained drafts/adapters are reloaded together with their recorded training cost (`train_cost.json`).
Only tau is measured again each time (it is cheap and it is the result).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from peft import PeftModel
from transformers import PreTrainedModel, PreTrainedTokenizerBase, set_seed

from ..data.io import atomic_write_json, load_causal_lm, load_rows, load_tokenizer, save_dataset_jsonl
from ..data.prompts import find_prompt_column, render_prompt, resolve_chat_template, to_messages
from ..data.regenerate import regenerate
from ..data.selection import add_shift_scores, resolve_budget, select_by_shift
from ..fingerprints import dataset_tokens_fingerprint, draft_fingerprint
from ..models import EagleDraftModel
from ..training import EagleTrainer, EagleTrainingConfig, EdaTrainer, EdaTrainingConfig
from ..training.acceptance import greedy_acceptance_length, prompts_from_dataset
from ..tuners import EdaConfig
from .config import DomainConfig, ExperimentConfig
from .report import BudgetPoint, MethodResult, results_table, save_results

logger = logging.getLogger(__name__)


@dataclass
class TrainCost:
    """What one training run cost."""

    trainable_params: int
    samples: int
    steps: int
    train_seconds: float

    @property
    def step_seconds(self) -> float:
        return self.train_seconds / max(1, self.steps)


@dataclass
class ExperimentResults:
    methods: list[MethodResult]
    budgets: list[BudgetPoint]
    files: dict[str, Path]

    def table(self) -> str:
        return results_table(self.methods)


def run_experiment(config: ExperimentConfig, log: Any = print) -> ExperimentResults:
    """Run every method of `config` and write `results.{json,md}` and the plots into `config.output_dir`."""
    config.check_inputs()  # every prompt set, budget and held-out count, before any model is loaded
    return _Experiment(config, log).run()


class _Experiment:
    def __init__(self, config: ExperimentConfig, log: Any) -> None:
        self.config = config
        self.log = log
        self.out = Path(config.output_dir)
        self.tokenizer: PreTrainedTokenizerBase = load_tokenizer(config.tokenizer or config.base_target)
        self.base = self._load_target(config.base_target)

    # ------------------------------------------------------------------ the experiment
    def run(self) -> ExperimentResults:
        cfg = self.config
        set_seed(cfg.seed)
        self.out.mkdir(parents=True, exist_ok=True)
        general = self._regenerate(self.base, cfg.general_prompts, self.out / "stage1" / "regenerated")
        self.draft_dir = self.out / "stage1" / "draft"
        stage1_settings = {**self._settings(cfg.stage1_epochs, cfg.stage1_learning_rate), "target": cfg.base_target}
        stage1_cost = self._train(
            self.draft_dir, general, stage1_settings,
            lambda: EagleTrainer(
                target_model=self.base, train_dataset=general,
                args=self._args(EagleTrainingConfig, self.draft_dir, cfg.stage1_epochs, cfg.stage1_learning_rate),
            ),
        )
        # the shared draft is frozen from here on: fingerprint it once, it keys every adapter run
        self.draft_fingerprint = draft_fingerprint(self._shared_draft(self.base))
        self.log(f"stage 1: shared draft trained on {stage1_cost.samples} samples in {stage1_cost.train_seconds:.1f}s")

        methods: list[MethodResult] = []
        budgets: list[BudgetPoint] = []
        for domain in cfg.domains:
            domain_methods, domain_budgets = self._run_domain(domain, stage1_cost)
            methods += domain_methods
            budgets += domain_budgets
        files = save_results(methods, budgets, self.out)
        return ExperimentResults(methods, budgets, files)

    def _run_domain(self, domain: DomainConfig, stage1_cost: TrainCost) -> tuple[list[MethodResult], list[BudgetPoint]]:
        cfg = self.config
        out = self.out / domain.name
        target = self._load_target(domain.target)
        prompts = load_rows(domain.prompts)
        if len(prompts) <= domain.num_eval_prompts:
            raise ValueError(
                f"domain {domain.name}: {len(prompts)} prompts, but {domain.num_eval_prompts} are held out for tau; "
                "give more prompts or lower num_eval_prompts"
            )
        eval_rows = prompts.select(range(domain.num_eval_prompts))
        pool_rows = prompts.select(range(domain.num_eval_prompts, len(prompts)))
        eval_prompts = prompts_from_dataset(
            self._regenerate(target, eval_rows, out / "eval-regenerated"), domain.num_eval_prompts
        )
        pool = self._regenerate(target, pool_rows, out / "regenerated")
        scored = self._scores(pool, target, out / "scores.jsonl")

        def tau(draft: torch.nn.Module, on: PreTrainedModel) -> float:
            return greedy_acceptance_length(
                draft, on, eval_prompts, num_draft_tokens=cfg.num_draft_tokens, max_new_tokens=cfg.eval_max_new_tokens
            )

        results: list[MethodResult] = []

        def record(method: str, value: float, cost: TrainCost | None = None) -> None:
            row = MethodResult(domain.name, method, value)
            if cost is not None:
                row.trainable_params, row.samples = cost.trainable_params, cost.samples
                row.train_seconds, row.step_seconds = cost.train_seconds, cost.step_seconds
            results.append(row)
            self.log(f"[{domain.name}] {method}: tau {value:.3f}" + (f" ({cost.samples} samples)" if cost else ""))

        if "base_on_base" in cfg.methods:
            record("base_on_base", tau(self._shared_draft(self.base), self.base), stage1_cost)
        if "direct_transfer" in cfg.methods:
            record("direct_transfer", tau(self._shared_draft(target), target))

        # EDA adapters: shift vs random at every budget of the curve (the main budget included)
        main_count = resolve_budget(cfg.budget, len(scored))
        curve: list[BudgetPoint] = []
        for budget in sorted({*cfg.budget_curve, cfg.budget}):
            count = resolve_budget(budget, len(scored))
            for selection in ("shift", "random"):
                if f"eda_{selection}" not in cfg.methods:
                    continue
                subset = select_by_shift(scored, count, method=selection, seed=cfg.seed)
                model, cost = self._adapter(target, subset, out / f"eda-{selection}-{count}")
                value = tau(model, target)
                curve.append(BudgetPoint(domain.name, selection, float(budget), count, value))
                if count == main_count:
                    record(f"eda_{selection}", value, cost)

        if "eda_original" in cfg.methods:
            original = self._original_texts(pool_rows)
            if len(original) >= main_count:
                subset = select_by_shift(original, main_count, method="random", seed=cfg.seed)
                model, cost = self._adapter(target, subset, out / f"eda-original-{main_count}")
                record("eda_original", tau(model, target), cost)
            else:
                self.log(f"[{domain.name}] eda_original skipped: {len(original)} prompts have a reference answer")

        if "full_retrain" in cfg.methods:
            run_dir = out / "full-retrain"
            settings = {**self._settings(cfg.retrain_epochs, cfg.stage1_learning_rate), "target": domain.target}
            cost = self._train(
                run_dir, scored, settings,
                lambda: EagleTrainer(
                    target_model=target, train_dataset=scored,
                    args=self._args(EagleTrainingConfig, run_dir, cfg.retrain_epochs, cfg.stage1_learning_rate),
                ),
            )
            record("full_retrain", tau(EagleDraftModel.from_pretrained(run_dir, target_model=target), target), cost)
        return results, curve

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
        """Representation-shift scores of the pool, computed once and kept beside the data."""
        if path.exists():
            scored = Dataset.from_json(str(path))
            if len(scored) == len(pool):
                return scored
        scored = add_shift_scores(pool, self.base, target, show_progress=True)
        save_dataset_jsonl(scored, path)
        return scored

    def _shared_draft(self, target: PreTrainedModel) -> EagleDraftModel:
        return EagleDraftModel.from_pretrained(self.draft_dir, target_model=target).eval()

    def _adapter(self, target: PreTrainedModel, data: Dataset, run_dir: Path) -> tuple[PeftModel, TrainCost]:
        cfg = self.config
        settings = {
            **self._settings(cfg.adapt_epochs, cfg.adapt_learning_rate), "eda": cfg.eda,
            "target": target.name_or_path, "draft": self.draft_fingerprint,
        }
        cost = self._train(
            run_dir, data, settings,
            lambda: EdaTrainer(
                model=self._shared_draft(target), target_model=target, train_dataset=data,
                peft_config=EdaConfig(**cfg.eda),
                args=self._args(EdaTrainingConfig, run_dir, cfg.adapt_epochs, cfg.adapt_learning_rate),
            ),
        )
        return PeftModel.from_pretrained(self._shared_draft(target), run_dir).eval(), cost

    def _settings(self, epochs: float, lr: float) -> dict[str, Any]:
        cfg = self.config
        return {
            "epochs": epochs, "lr": lr, "batch_size": cfg.train_batch_size, "max_length": cfg.max_length,
            "noise": cfg.feature_noise_std, "layers": cfg.draft_num_layers, "seed": cfg.seed,
        }

    def _args(self, config_cls: type, run_dir: Path, epochs: float, lr: float) -> EagleTrainingConfig:
        cfg = self.config
        return config_cls(
            output_dir=str(run_dir), num_train_epochs=epochs, learning_rate=lr,
            per_device_train_batch_size=cfg.train_batch_size, max_length=cfg.max_length,
            feature_noise_std=cfg.feature_noise_std, draft_num_layers=cfg.draft_num_layers,
            lr_scheduler_type="cosine", warmup_steps=0.05, save_strategy="no", report_to=[], logging_steps=50,
            seed=cfg.seed, disable_tqdm=True, dataloader_pin_memory=torch.cuda.is_available(),
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
        trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
        start = time.perf_counter()
        output = trainer.train()
        seconds = time.perf_counter() - start
        trainer.save_model(str(run_dir))
        cost = TrainCost(trainable, len(data), int(output.global_step), seconds)
        atomic_write_json(cost_file, {**asdict(cost), "key": key})
        return cost

    def _original_texts(self, rows: Dataset) -> Dataset:
        """The pool prompts with their original `reference` answers, tokenized like regenerated rows."""
        if "reference" not in rows.column_names:
            return Dataset.from_dict({"input_ids": [], "loss_mask": []})
        column = find_prompt_column(rows)
        use_template = resolve_chat_template(self.tokenizer, None)
        eos = self.tokenizer.eos_token_id
        input_ids, loss_mask = [], []
        for index, row in enumerate(rows):
            if not row.get("reference"):
                continue
            _, prompt_ids = render_prompt(self.tokenizer, to_messages(row[column], index), use_template)
            answer = self.tokenizer(row["reference"], add_special_tokens=False)["input_ids"]
            answer = answer[: self.config.max_new_tokens]
            answer = answer + ([eos] if eos is not None and len(answer) < self.config.max_new_tokens else [])
            input_ids.append(prompt_ids + answer)
            loss_mask.append([0] * len(prompt_ids) + [1] * len(answer))
        return Dataset.from_dict({"input_ids": input_ids, "loss_mask": loss_mask})
