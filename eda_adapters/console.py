"""A quiet console for `eda` commands: the stages and their results on screen, everything else in log files.

[`quiet_console`] silences what tells a user nothing (`datasets`' "Generating train split" bars, the Hub's weight
loading bars, transformers' FutureWarnings and info logs, torch's CPU `pin_memory` warning) and makes the trainers show
one progress bar per training with loss and throughput, a one-line summary at the end, and the Trainer's log dicts in
`OUTPUT_DIR/trainer_log.jsonl` (and `report_to`) instead of on the screen. The library's own progress bars (a
regeneration, a scoring pass, a tau measurement) vanish when done, leaving the stage summaries.
`verbose=True` (the CLI's `eda --verbose`) leaves everything as transformers and datasets print it.

Library users who call the API directly get the ecosystem's usual behaviour unless they enter `quiet_console()`.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm
from transformers import TrainerCallback
from transformers.trainer_callback import PrinterCallback, ProgressCallback

TRAINER_LOG = "trainer_log.jsonl"

_quiet = False


def is_quiet() -> bool:
    """Whether a [`quiet_console`] is active."""
    return _quiet


def bar_options(show: bool = True) -> dict[str, bool]:
    """tqdm options of a library progress bar: shown as requested; inside a [`quiet_console`] it vanishes when done
    (`leave=False`), so that the screen keeps each stage's summary line instead of a finished bar per pass."""
    return {"disable": not show, "leave": not _quiet}


@contextmanager
def quiet_console(verbose: bool = False) -> Iterator[None]:
    """Keep the screen to stages, progress bars and results for the duration (see the module docstring)."""
    global _quiet
    if verbose:
        yield
        return
    import datasets
    import huggingface_hub
    import transformers

    datasets_bars = datasets.utils.logging.is_progress_bar_enabled()
    hub_bars = not huggingface_hub.utils.are_progress_bars_disabled()
    transformers_bars = transformers.utils.logging.is_progress_bar_enabled()
    levels = {name: logging.getLogger(name).level for name in ("transformers", "datasets", "accelerate", "peft")}
    was_quiet = _quiet
    datasets.disable_progress_bars()
    huggingface_hub.utils.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    for name in levels:
        logging.getLogger(name).setLevel(logging.ERROR)
    _quiet = True
    try:
        with warnings.catch_warnings():
            for module in ("transformers", "peft", "accelerate", "datasets", "trl"):
                warnings.filterwarnings("ignore", category=FutureWarning, module=module)
                warnings.filterwarnings("ignore", category=DeprecationWarning, module=module)
            warnings.filterwarnings("ignore", message=".*'pin_memory' argument is set as true but no accelerator.*")
            yield
    finally:
        _quiet = was_quiet
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
        if datasets_bars:
            datasets.enable_progress_bars()
        if hub_bars:
            huggingface_hub.utils.enable_progress_bars()
        if transformers_bars:
            transformers.utils.logging.enable_progress_bar()


def quiet_trainer(trainer: Any, description: str) -> None:
    """Inside a [`quiet_console`], swap `trainer`'s printing callbacks for one [`TrainingProgressCallback`]."""
    if not _quiet:
        return
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(TrainingProgressCallback(description))


class TrainingProgressCallback(TrainerCallback):
    """One progress bar per training (loss and tokens/s in its postfix), a one-line summary when it ends, and every
    Trainer log dict appended to `OUTPUT_DIR/trainer_log.jsonl` instead of printed.

    The trainers use it in place of transformers' `ProgressCallback`/`PrinterCallback` inside a [`quiet_console`].
    `args.disable_tqdm` hides the bar and the summary; the log file is always written (by the main process).
    """

    def __init__(self, description: str = "training") -> None:
        self.description = description
        self.bar: Any = None
        self.started = 0.0
        self.last_loss: float | None = None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.started = time.perf_counter()
        if state.is_world_process_zero and not args.disable_tqdm:
            self.bar = tqdm(total=state.max_steps, desc=self.description, unit="step", leave=False, dynamic_ncols=True)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if not state.is_world_process_zero or not logs:
            return
        if "loss" in logs:
            self.last_loss = float(logs["loss"])
        if args.output_dir:
            path = Path(args.output_dir) / TRAINER_LOG
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a") as handle:
                handle.write(json.dumps({"step": state.global_step, **logs}, default=str) + "\n")
        if self.bar is not None:
            self.bar.set_postfix(self._postfix(state), refresh=False)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.bar is None:
            return
        self.bar.close()
        self.bar = None
        seconds = time.perf_counter() - self.started
        parts = [f"{state.global_step} steps in {seconds:.1f}s"]
        parts += [f"{key} {value}" for key, value in self._postfix(state, seconds).items()]
        tqdm.write(f"{self.description}: {', '.join(parts)}")

    def _postfix(self, state: Any, seconds: float | None = None) -> dict[str, str]:
        seconds = time.perf_counter() - self.started if seconds is None else seconds
        postfix = {}
        if self.last_loss is not None:
            postfix["loss"] = f"{self.last_loss:.4g}"
        tokens = int(getattr(state, "num_input_tokens_seen", 0) or 0)  # counted with include_num_input_tokens_seen
        if seconds > 0:
            postfix["tokens/s" if tokens else "steps/s"] = f"{(tokens or state.global_step) / seconds:,.1f}"
        return postfix
