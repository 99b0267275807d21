"""Domain fine-tunes of a real target: supervised fine-tuning on chat answers, cached, resumable and atomic.

This is how the real-LM experiment (`recipes/smollm2/`) makes the fine-tuned targets EDA adapts to: the base model,
its last `train_last_layers` decoder layers and final norm trained with TRL's `SFTTrainer` on `{"prompt",
"reference"}` chat rows (its completion-only loss: on the answer only), everything else frozen. Training only the
top of the network keeps a CPU fine-tune affordable (the backward pass stops there) and is still a full fine-tune of
those layers; `train_last_layers=None` trains every layer (the embedding stays frozen: it is tied to the output head
in the small Llama-family models).

`output_dir` receives a plain transformers folder (safetensors) plus `finetune.json`, which records what made it.
Unfinished work lives in `<output_dir>.partial` (Trainer checkpoints) and is resumed by the next call with the same
settings; a finished or unfinished fine-tune made with other settings or data is refused, never overwritten.
"""

from __future__ import annotations

import math
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from transformers.trainer_utils import get_last_checkpoint
from trl import SFTConfig, SFTTrainer
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

from ...atomic import atomic_directory, atomic_write_json
from ...console import quiet_trainer
from ...data.io import load_causal_lm, load_rows
from ...data.prompts import tokenize_answers
from ...fingerprints import dataset_tokens_fingerprint
from ...run_directory import RunDirectory
from ...validation import check_positive_numbers
from ...errors import EdaInputError

KEY_FILE = "finetune.json"
#: What makes two fine-tunes the same (the finished one's key also records its loss and step count).
KEY_FIELDS = ("base", "data", "settings")
_FIX = "delete it or use another output folder"


@dataclass
class FinetuneSettings:
    """How a domain fine-tune is trained.

    Args:
        epochs: Passes over the rows.
        learning_rate: Peak learning rate (linear warm-up over 5% of the steps, cosine decay).
        batch_size: Rows per optimizer step.
        max_answer_tokens: Answers are cut to this many tokens.
        train_last_layers: How many of the last decoder layers train (with the final norm); `None` trains all.
        seed: Seed of the data order.
    """

    epochs: float = 2.0
    learning_rate: float = 1e-4
    batch_size: int = 8
    max_answer_tokens: int = 160
    train_last_layers: int | None = 8
    seed: int = 0

    def __post_init__(self) -> None:
        check_positive_numbers(self, ("epochs", "learning_rate", "batch_size", "max_answer_tokens"))
        if self.train_last_layers is not None and (
            isinstance(self.train_last_layers, bool) or not isinstance(self.train_last_layers, int)
            or self.train_last_layers < 1
        ):
            raise EdaInputError(f"FinetuneSettings.train_last_layers must be an integer >= 1 or None, "
                                f"got {self.train_last_layers!r}")


def finetune_target(
    base: str | os.PathLike,
    tokenizer: PreTrainedTokenizerBase,
    rows: Any,
    output_dir: str | os.PathLike,
    settings: FinetuneSettings | None = None,
    show_progress: bool = True,
) -> Path:
    """Fine-tune `base` (a path `load_causal_lm` reads) on `rows` and save it to `output_dir`; returns that path.

    A finished fine-tune with the same base, data and settings is returned as it is; an interrupted one resumes from
    its last checkpoint. Raises a one-line `ValueError` when `output_dir` (or its unfinished `.partial`) was made
    from other settings or data.
    """
    settings = settings or FinetuneSettings()
    rows = load_rows(rows)
    if len(rows) == 0:
        raise EdaInputError("the fine-tune rows are empty: give prompts with `reference` answers")
    if "reference" not in rows.column_names:
        raise EdaInputError(f"the fine-tune rows need a `reference` column (the answer to train on); "
                            f"they have {rows.column_names}")
    data = tokenize_answers(tokenizer, rows, settings.max_answer_tokens)
    key = {"base": str(base), "data": dataset_tokens_fingerprint(data), "settings": asdict(settings)}
    out = Path(output_dir)
    work = out.with_name(out.name + ".partial")
    if RunDirectory(out, "fine-tune", KEY_FILE, _FIX).check(key, KEY_FIELDS):
        return out
    RunDirectory(work, "unfinished fine-tune", KEY_FILE, _FIX).claim(key, KEY_FIELDS)

    model = load_causal_lm(str(base), dtype="float32")
    trainable = _unfreeze(model, settings.train_last_layers)
    steps_per_epoch = math.ceil(len(data) / settings.batch_size)
    args = SFTConfig(
        output_dir=str(work), num_train_epochs=settings.epochs, learning_rate=settings.learning_rate,
        per_device_train_batch_size=settings.batch_size, lr_scheduler_type="cosine", warmup_steps=0.05,
        weight_decay=0.0, logging_steps=max(1, steps_per_epoch // 4), save_strategy="steps",
        save_steps=max(1, steps_per_epoch // 2), save_total_limit=1, save_only_model=False, report_to=[],
        seed=settings.seed, disable_tqdm=not show_progress,
        # the loss on the answer only; the rows are tokenized already (answers cut to max_answer_tokens), so
        # nothing is truncated again; float32 and no checkpointing: TRL's defaults assume a bf16 GPU
        completion_only_loss=True, max_length=None, bf16=False, gradient_checkpointing=False,
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=_completion_rows(data), processing_class=tokenizer)
    quiet_trainer(trainer, f"fine-tune {Path(out).name}")
    result = trainer.train(resume_from_checkpoint=get_last_checkpoint(str(work)))
    model.eval()
    with atomic_directory(out) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        atomic_write_json(tmp / KEY_FILE, {**key, "trainable_params": trainable, "train_loss": result.training_loss,
                                           "steps": result.global_step})
    shutil.rmtree(work, ignore_errors=True)
    return out


@torch.no_grad()
def answer_loss(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, rows: Any, max_answer_tokens: int = 160,
    batch_size: int = 8,
) -> float:
    """Mean cross-entropy (nats per answer token) of `model` on the `reference` answers of `rows`."""
    data = tokenize_answers(tokenizer, load_rows(rows), max_answer_tokens)
    collate = DataCollatorForLanguageModeling(pad_token_id=_pad_id(tokenizer))
    total, count = 0.0, 0
    for start in range(0, len(data), batch_size):
        batch = collate([_labelled(data[i]) for i in range(start, min(start + batch_size, len(data)))])
        batch = {k: v.to(model.device) for k, v in batch.items()}
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
        labels = batch["labels"][:, 1:]
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1), ignore_index=-100, reduction="sum"
        )
        total += loss.item()
        count += int((labels != -100).sum())
    if count == 0:
        raise EdaInputError("no answer tokens to measure the loss on")
    return total / count


def _unfreeze(model: PreTrainedModel, last_layers: int | None) -> int:
    """Freeze everything, then let the last `last_layers` decoder layers and the final norm train."""
    model.requires_grad_(False)
    layers = model.get_decoder().layers
    if last_layers is not None and last_layers > len(layers):
        raise EdaInputError(f"train_last_layers={last_layers}, but the model has {len(layers)} decoder layers")
    for layer in layers[-(last_layers or len(layers)):]:
        layer.requires_grad_(True)
    norm = getattr(model.get_decoder(), "norm", None)
    if norm is not None:
        norm.requires_grad_(True)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _pad_id(tokenizer: PreTrainedTokenizerBase) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def _completion_rows(data: Dataset) -> Dataset:
    """Tokenized answer rows (`input_ids`, `loss_mask`) in TRL's pre-tokenized prompt-completion form: the answer
    tokens are the `completion_mask`, which `SFTTrainer(completion_only_loss=True)` turns into the labels."""
    return data.rename_column("loss_mask", "completion_mask")


def _labelled(row: dict[str, list[int]]) -> dict[str, list[int]]:
    """One answer row with the labels `SFTTrainer` trains on (-100 outside the answer), for `answer_loss`."""
    labels = [token if keep else -100 for token, keep in zip(row["input_ids"], row["loss_mask"])]
    return {"input_ids": row["input_ids"], "labels": labels}
