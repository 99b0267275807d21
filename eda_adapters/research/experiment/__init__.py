"""The EDA experiment: the paper's comparison (direct transfer, EDA with shift/random selection, original texts,
full retraining) on any base target and its fine-tunes, with a results table and plots."""

from .config import DomainConfig, ExperimentConfig
from .report import BudgetPoint, MethodResult, budget_table, results_table, save_results
from .runner import ExperimentResults, TrainCost, run_experiment

__all__ = [
    "BudgetPoint",
    "DomainConfig",
    "ExperimentConfig",
    "ExperimentResults",
    "MethodResult",
    "TrainCost",
    "budget_table",
    "results_table",
    "run_experiment",
    "save_results",
]
