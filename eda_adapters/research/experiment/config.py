"""Configuration of an EDA experiment: one base target, its fine-tuned targets, and the methods to compare."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any
from ...errors import EdaInputError

#: Written into `output_dir`: the configuration its cached work was made with (see `ExperimentConfig.check_cache`).
CACHE_KEY_FILE = "experiment-config.json"


@dataclass
class DomainConfig:
    """One fine-tuned target and its domain prompts.

    Args:
        name: Short name of the domain (`math`, `code`, ...), used for output folders and the table.
        target: The fine-tuned target (path or Hub id).
        prompts: Domain prompts: a path (JSONL/JSON/parquet/dataset dir) or a list of rows, with a `prompt` column
            (or `messages`) and optionally `reference`, the original human-written answer (needed for the
            "original texts" baseline; rows without it are skipped there).
        num_eval_prompts: The first prompts are held out: tau is measured on them, never trained on.
    """

    name: str
    target: str
    prompts: Any
    num_eval_prompts: int = 16


@dataclass
class ExperimentConfig:
    """Everything an EDA experiment runs; the same fields drive the CPU demo and the real-model recipes.

    Stage 1 trains the shared draft for `base_target` on its own regenerated answers to `general_prompts`. Then, per
    domain: the fine-tuned target regenerates answers to the domain prompts (the pool), every sample is scored by
    representation shift, and adapters / drafts are trained and measured (tau on held-out domain prompts):

    - `base_on_base`, `direct_transfer`: the stage-1 draft with the base / fine-tuned target;
    - `eda_shift`: an EDA adapter (`eda` settings) on the top-`budget` shift samples; `eda_weighted`: same size, drawn
      with weights `shift ** (1 / selection_temperature)`; `eda_cluster`: same size, the top shift within
      `selection_clusters` clusters of the pool, shares in proportion to each cluster's shift; `eda_random`: same size,
      random samples (`eda_adapters.data.selection_strategies`); `eda_original`: same size, random samples of the
      original `reference` answers instead of regenerated ones (in the demo and the SmolLM2 recipe these come from the
      source the fine-tune was trained on, disjoint rows of it, so the row tests that data, not regeneration). When a
      domain's prompts have a `kind` column, tau is also given per held-out kind and each strategy's selection per
      pool kind;
    - `eda_official`: the authors' design: a second shared draft trained jointly with a private expert (stage 1), then
      a stage-2 adapter with `official` settings (fc trained, random private init, length-scaled noise), shift data;
    - `full_finetune`: the whole shared draft fine-tuned (warm start) on the shift data; `lora`: PEFT's LoRA on every
      linear layer of the draft, rank chosen so its trainable parameters match the EDA adapter's, shift data;
    - `full_retrain`: a new draft trained from scratch on the shift data; `full_retrain_converged`: a new draft trained
      on the whole regenerated pool for `retrain_epochs` (its own budget, labelled as such).

    Every trained row except `full_retrain_converged` sees the same number of training tokens: `adapt_epochs` x the
    samples of `budget` x the pool's mean sample length (cut at `max_length`); each row's steps follow from its own
    data's mean length, so longer (shift-selected) samples get fewer steps. `budget_curve` repeats shift vs random
    selection at several budgets (fractions of the pool or counts), each at its own token budget. Every trained row
    runs once per seed in `seeds` (selection, initialisation and data order); its tau pools the seeds and its
    interval is a nested bootstrap over seeds, then prompts.
    tau is measured at T=0 on the held-out prompts with chain drafting (`num_draft_tokens`) and, when `eval_tree`,
    EAGLE-2 tree decoding (`tree_depth`, `tree_top_k`, `tree_total_tokens`), with 95% bootstrap intervals over prompts;
    `eval_method="replay"` computes decoding's steps from each target's greedy answers (shared by all its rows).
    `device="auto"` puts the targets on CUDA when there is one; `dtype` is how they are loaded (`bfloat16` on GPU).
    """

    base_target: str
    general_prompts: Any
    domains: list[DomainConfig]
    output_dir: str
    #: Optional held-out general prompts (never trained on): the shared draft is also measured on them with the base
    #: target, its own setting (row `base_on_base` of domain `general`).
    general_eval_prompts: Any = None
    tokenizer: str | None = None
    #: A shared draft trained elsewhere (a `save_pretrained` folder of the base target's EAGLE-1 draft, e.g.
    #: `recipes/smollm2/shared-draft`): stage 1 is not trained, every row starts from it. `general_prompts` then
    #: only feed the official design's joint stage 1.
    shared_draft: str | None = None
    dtype: str = "float32"
    device: str = "auto"
    seed: int = 0
    #: Seeds of every trained row (its selection, initialisation and data order): one run per seed; `seed` keeps
    #: seeding what is shared (regeneration, stage 1, the top-k data).
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    # regeneration
    max_new_tokens: int = 64
    temperature: float = 0.0
    regenerate_batch_size: int = 16
    # drafts and training
    draft_num_layers: int = 1
    train_batch_size: int = 16
    max_length: int = 256
    stage1_epochs: float = 3.0
    stage1_learning_rate: float = 3e-3
    adapt_epochs: float = 3.0
    adapt_learning_rate: float = 3e-3
    retrain_epochs: float | None = None
    feature_noise_std: float = 0.0
    feature_noise_type: str = "uniform"
    #: Reduced vocabulary of the drafts built from scratch (stage 1, the joint stage 1, full retraining): their own
    #: head over the `draft_vocab_size` most frequent label tokens of their training data (`EagleTrainingConfig`).
    #: `None` keeps the target's head. The warm-started and adapted drafts keep the shared draft's head.
    draft_vocab_size: int | None = None
    #: Train on cached target features (`eda_adapters.extract_features`): stage 1's data and each domain's pool are
    #: run through their target once, instead of at every step of every row. Same samples, several times cheaper
    #: where the target dominates a training step (a real target on CPU); features live under `output_dir`.
    feature_cache: bool = False
    eda: dict[str, Any] = field(default_factory=dict)
    #: The official design's stage 2: EdaConfig fields, plus feature_noise_type / feature_noise_std (also used by its
    #: joint stage 1).
    official: dict[str, Any] = field(
        default_factory=lambda: {
            "modules_to_save": ["fc"], "init_private_weights": "random", "feature_noise_type": "length_scaled",
            "feature_noise_std": 0.2,
        }
    )
    finetune_learning_rate: float | None = None
    # selection
    budget: float = 0.3
    budget_curve: list[float] = field(default_factory=lambda: [0.1, 0.3, 0.5, 1.0])
    #: Option of the `eda_weighted` row's strategy: weights `shift ** (1 / selection_temperature)`.
    selection_temperature: float = 1.0
    #: Option of the `eda_cluster` row's strategy: k-means clusters of the pool (at most its size).
    selection_clusters: int = 8
    # evaluation
    #: "replay" (default): decoding's accepted lengths replayed from each target's greedy answers in batched draft
    #: forwards, identical step for step and an order of magnitude faster; "decode": speculative decoding itself.
    eval_method: str = "replay"
    eval_max_new_tokens: int = 48
    num_draft_tokens: int = 5
    eval_tree: bool = True
    #: tree depth in this library's convention (draft tokens on the longest path; EAGLE's `depth` + 1), see
    #: docs/speculative_decoding.md; 6 is the EAGLE-2 paper's setting (`depth=5` in its code)
    tree_depth: int = 6
    tree_top_k: int = 10
    tree_total_tokens: int = 60
    methods: list[str] = field(
        default_factory=lambda: [
            "base_on_base", "direct_transfer", "full_retrain_converged", "full_retrain", "full_finetune", "lora",
            "eda_shift", "eda_weighted", "eda_cluster", "eda_random", "eda_original", "eda_official",
        ]
    )

    def __post_init__(self) -> None:
        self.domains = [d if isinstance(d, DomainConfig) else DomainConfig(**d) for d in self.domains]
        if not self.domains:
            raise EdaInputError("ExperimentConfig needs at least one domain (a fine-tuned target with its prompts).")
        names = [d.name for d in self.domains]
        if len(set(names)) != len(names):
            raise EdaInputError(f"domain names must be unique, got {names}")
        if self.retrain_epochs is None:
            self.retrain_epochs = self.stage1_epochs
        if self.finetune_learning_rate is None:
            self.finetune_learning_rate = self.adapt_learning_rate
        from .report import METHOD_LABELS

        unknown = set(self.methods) - set(METHOD_LABELS)
        if unknown:
            raise EdaInputError(f"unknown methods {sorted(unknown)}; choose from {list(METHOD_LABELS)}")
        self._check_values()

    def _check_values(self) -> None:
        """Refuse values no run could use, before any work (a bad budget used to fail only after stage 1)."""
        import sys

        from ...data.selection import resolve_budget
        from ...validation import check_positive_numbers
        from .evaluation import EVAL_METHODS

        if self.eval_method not in EVAL_METHODS:
            raise EdaInputError(
                f"ExperimentConfig.eval_method must be one of {list(EVAL_METHODS)}, got {self.eval_method!r}"
            )

        if not self.seeds or len(set(self.seeds)) != len(self.seeds) or not all(
            isinstance(seed, int) and not isinstance(seed, bool) for seed in self.seeds
        ):
            raise EdaInputError(f"ExperimentConfig.seeds must be a non-empty list of distinct integers, got "
                                f"{self.seeds!r}")
        from ...data.selection_strategies import SelectionStrategy

        try:
            SelectionStrategy("cluster", temperature=self.selection_temperature, num_clusters=self.selection_clusters)
        except ValueError as err:
            raise EdaInputError(f"ExperimentConfig.selection_temperature / selection_clusters: {err}") from None
        for name, value in [("budget", self.budget)] + [("budget_curve", b) for b in self.budget_curve]:
            try:
                resolve_budget(value, sys.maxsize)
            except (TypeError, ValueError) as err:
                raise EdaInputError(f"ExperimentConfig.{name}: {err}") from None
        for domain in self.domains:
            if isinstance(domain.num_eval_prompts, bool) or not isinstance(domain.num_eval_prompts, int) or (
                domain.num_eval_prompts < 1
            ):
                raise EdaInputError(
                    f"domain {domain.name}: num_eval_prompts must be an integer >= 1 (the held-out prompts tau is "
                    f"measured on), got {domain.num_eval_prompts!r}"
                )
        positive = ("max_new_tokens", "regenerate_batch_size", "draft_num_layers", "train_batch_size", "max_length",
                    "stage1_epochs", "stage1_learning_rate", "adapt_epochs", "adapt_learning_rate", "retrain_epochs",
                    "eval_max_new_tokens", "num_draft_tokens", "finetune_learning_rate", "tree_depth", "tree_top_k",
                    "tree_total_tokens")
        check_positive_numbers(self, positive)
        if self.draft_vocab_size is not None and (
            isinstance(self.draft_vocab_size, bool) or not isinstance(self.draft_vocab_size, int)
            or self.draft_vocab_size < 1
        ):
            raise EdaInputError(f"ExperimentConfig.draft_vocab_size must be an integer >= 1 or None, "
                                f"got {self.draft_vocab_size!r}")
        self._check_adapter_settings()

    def _check_adapter_settings(self) -> None:
        """`eda` and `official` must build an EdaConfig (`official` also holds the noise keys); checked before work."""
        from ...training.losses import FEATURE_NOISE_TYPES
        from ...tuners import EdaConfig

        noise_keys = ("feature_noise_type", "feature_noise_std")
        for name, settings, extra in (("eda", self.eda, ()), ("official", self.official, noise_keys)):
            if not isinstance(settings, dict):
                raise EdaInputError(f"ExperimentConfig.{name} must be a mapping of EdaConfig fields, got {settings!r}")
            fields = {k: v for k, v in settings.items() if k not in extra}
            if fields.get("init_private_weights") == "copy":
                fields.setdefault("init_private_from", "<the joint stage-1 adapter>")  # filled in by the runner
            try:
                EdaConfig(**fields)
            except (TypeError, ValueError) as err:
                raise EdaInputError(f"ExperimentConfig.{name}: {err}") from None
        noise_type = self.official.get("feature_noise_type", self.feature_noise_type)
        kinds = (("feature_noise_type", self.feature_noise_type), ("official.feature_noise_type", noise_type))
        for where, kind in kinds:
            if kind not in FEATURE_NOISE_TYPES:
                raise EdaInputError(
                    f"ExperimentConfig.{where} must be one of {list(FEATURE_NOISE_TYPES)}, got {kind!r}"
                )

    def check_inputs(self) -> None:
        """Read every prompt set and check it fits the held-out prompts and the budgets; run before any training."""
        from ...data.io import load_rows
        from ...data.selection import resolve_budget
        from ...validation import check_model_dir, check_output_path

        check_output_path(self.output_dir, "output_dir")
        if self.shared_draft is not None:
            check_model_dir(self.shared_draft, "shared_draft", "draft", required=True)
        if len(load_rows(self.general_prompts)) == 0:
            raise EdaInputError("general_prompts is empty: stage 1 needs prompts to train the shared draft on")
        for domain in self.domains:
            count = len(load_rows(domain.prompts))
            pool = count - domain.num_eval_prompts
            if pool < 1:
                raise EdaInputError(
                    f"domain {domain.name}: {count} prompts, but {domain.num_eval_prompts} are held out for tau "
                    "(num_eval_prompts), which leaves none to train on; give more prompts or lower num_eval_prompts"
                )
            for name, value in [("budget", self.budget)] + [("budget_curve", b) for b in self.budget_curve]:
                try:
                    resolve_budget(value, pool)
                except ValueError as err:
                    raise EdaInputError(
                        f"domain {domain.name}: {name} {value!r} does not fit its pool of {pool} prompts ({err})"
                    ) from None

    #: Fields that only change what is measured or which rows run: a rerun may change them over an existing output_dir.
    RERUN_FIELDS = (
        "methods", "eval_method", "eval_max_new_tokens", "num_draft_tokens", "eval_tree", "tree_depth", "tree_top_k",
        "tree_total_tokens", "budget_curve", "output_dir", "general_eval_prompts", "device", "domains", "seeds",
    )

    def cache_key(self) -> dict[str, Any]:
        """What the cached work in `output_dir` depends on: every field but `RERUN_FIELDS`, and per domain its target,
        prompts and held-out count (domains may be added or left out between runs, not changed)."""
        values = json.loads(json.dumps(dataclasses.asdict(self), default=str))
        key = {k: v for k, v in values.items() if k not in self.RERUN_FIELDS}
        key["domains"] = {d["name"]: d for d in values["domains"]}
        return key

    def check_cache(self) -> None:
        """Refuse an `output_dir` made with another configuration (one line naming the changed fields), else record
        this one there. Nothing is read or written in `output_dir` before this check. Domains may be added or left
        out between runs; a domain in both must be unchanged."""
        from ...run_directory import RunDirectory

        run_dir = RunDirectory(
            self.output_dir, "experiment", CACHE_KEY_FILE,
            fix="use another output_dir, or put the old values back to resume it",
        )
        key = self.cache_key()
        recorded = run_dir.recorded_key()
        if recorded is not None:
            common = sorted(set(key["domains"]) & set(recorded.get("domains", {})))
            run_dir.compare({**recorded, "domains": {n: recorded["domains"][n] for n in common}},
                            {**key, "domains": {n: key["domains"][n] for n in common}})
            key["domains"] = {**recorded.get("domains", {}), **key["domains"]}
        run_dir.write_key(key)

    @classmethod
    def from_yaml(cls, path: str | os.PathLike, **overrides: Any) -> ExperimentConfig:
        """Read a YAML file with the same field names (see `recipes/`); keyword overrides win."""
        from ...validation import coerce_config_values, dataclass_hints, read_yaml_mapping

        values = read_yaml_mapping(path, "experiment config")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise EdaInputError(f"{path}: unknown fields {sorted(unknown)}; known fields: {sorted(known)}")
        values = coerce_config_values(values, dataclass_hints(cls), str(path))
        domains = values.get("domains")
        if not isinstance(domains, list) or not all(isinstance(d, dict) for d in domains):
            raise EdaInputError(f"{path}: domains must be a list of mappings (name, target, prompts, num_eval_prompts)")
        domain_fields = dataclass_hints(DomainConfig)
        for index, domain in enumerate(domains):
            unknown = set(domain) - set(domain_fields)
            if unknown:
                raise EdaInputError(f"{path}: domains[{index}] has unknown fields {sorted(unknown)}")
            domains[index] = coerce_config_values(domain, domain_fields, f"{path}: domains[{index}]")
        return cls(**{**values, **overrides})
