"""The data stages of the shared-draft recipe: the prompt file, then the target's answers part by part.

Both write their results into the recipe's committed data folder (`data_dir`) as soon as they exist, and treat what
is there as done: a new machine reuses every answer an earlier run paid for. Unfinished work lives in `work_dir`
(the cache) and resumes from there.

    data_dir/prompts.jsonl.gz      {"source", "messages"} per training prompt, in answering order
    data_dir/prompts.json          the settings and the counts per source (kept, dropped as near a held-out prompt)
    data_dir/answers-NNN.jsonl.gz  part NNN: {"index", "input_ids", "num_prompt_tokens", "finish_reason"}
    data_dir/answers.json          the decoding settings and the target fingerprint the answers were made with
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from datasets import Dataset
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ...atomic import atomic_write_json
from ...data import regenerate
from ...data.prompt_filter import PromptFilter
from ...data.self_prompting import self_prompts
from ...errors import EdaInputError
from ...fingerprints import target_fingerprint
from .chunks import ChunkBudget, ChunkLog, check_recorded, read_jsonl_gz, write_jsonl_gz
from .prompt_mix import EMBEDDED_SOURCES, HeldOutGuard, PromptMix, embedded_prompts, held_out_prompts, last_user_turn

PROMPTS_FILE = "prompts.jsonl.gz"
ANSWERS_INFO = "answers.json"


@dataclass(frozen=True)
class AnswerSettings:
    """How the target answers the training prompts (greedy, as it will be served)."""

    max_new_tokens: int = 256
    batch_size: int = 32
    part_size: int = 512
    self_prompt_batch_size: int = 32
    max_prompt_tokens: int = 64
    self_prompt_step: int = 500


def build_prompts(target: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, data_dir: Path, work_dir: Path,
                  mix: PromptMix, settings: AnswerSettings, budget: ChunkBudget, log: ChunkLog,
                  prompt_filter: PromptFilter | None = None) -> bool:
    """Write `data_dir/prompts.jsonl.gz` once every source is complete; returns whether it exists now.

    Self-written prompts grow by `settings.self_prompt_step` per call of `self_prompts` (a run asked for more keeps
    its first prompts), so an invocation stops between steps when the next one would overrun the budget."""
    if (data_dir / PROMPTS_FILE).exists():
        recorded = json.loads((data_dir / "prompts.json").read_text())
        check_recorded(recorded["mix"], asdict(mix), f"{data_dir / PROMPTS_FILE}",
                       "pass the sizes it records, or use another --data-dir")
        return True
    run_dir = work_dir / "self-prompts"
    have, per_prompt = 0, log.last_rate("self-prompts", "prompts", default=1.0)
    written: list[list[dict[str, str]]] = []
    while have < mix.self_written:
        step = min(settings.self_prompt_step, mix.self_written - have)
        if not budget.allows(per_prompt * step):
            return False
        started = time.perf_counter()
        written = self_prompts(target, tokenizer, run_dir, have + step, seed=0,
                               max_prompt_tokens=settings.max_prompt_tokens,
                               batch_size=settings.self_prompt_batch_size, prompt_filter=prompt_filter)["messages"]
        seconds = time.perf_counter() - started
        new = len(written) - have
        if new > 0 and seconds > 5:  # a step already on disk costs nothing and says nothing about the rate
            per_prompt = seconds / new
            log.record("self-prompts", seconds, prompts=new, total=len(written))
        have = len(written)
    held_out = [row["prompt"] for row in held_out_prompts()]
    guard = HeldOutGuard(held_out, mix.held_out_threshold)
    rows = [{"source": r["source"], "messages": [{"role": "user", "content": r["prompt"]}]}
            for r in embedded_prompts(mix) if guard.keep(r["source"], r["prompt"])]
    rows += [{"source": "self", "messages": m} for m in written
             if guard.keep("self", last_user_turn(m))]
    kept: dict[str, int] = {}
    for row in rows:
        kept[row["source"]] = kept.get(row["source"], 0) + 1
    write_jsonl_gz(data_dir / PROMPTS_FILE, rows)
    atomic_write_json(data_dir / "prompts.json", {
        "mix": asdict(mix), "settings": asdict(settings), "sources": [*EMBEDDED_SOURCES, "self"],
        "kept": kept, "dropped_near_held_out": dict(guard.dropped), "held_out_prompts": len(held_out),
    })
    return True


def trained_prompts(data_dir: str | Path) -> list[str]:
    """The user turn of every prompt a shared draft built in `data_dir` was trained on (for held-out checks)."""
    path = Path(data_dir) / PROMPTS_FILE
    if not path.exists():
        raise EdaInputError(f"{path} does not exist: pass the data folder of a shared draft built by "
                            "recipes/smollm2/shared_draft.py (it holds prompts.jsonl.gz)")
    return [last_user_turn(row["messages"]) for row in read_jsonl_gz(path)]


def answer_parts(target: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, data_dir: Path, work_dir: Path,
                 settings: AnswerSettings, budget: ChunkBudget, log: ChunkLog) -> bool:
    """Answer the prompt file part by part into `data_dir/answers-NNN.jsonl.gz`; returns whether all are done."""
    prompts = read_jsonl_gz(data_dir / PROMPTS_FILE)
    info = {"target_fingerprint": target_fingerprint(target), "dtype": str(target.dtype).replace("torch.", ""),
            "max_new_tokens": settings.max_new_tokens, "temperature": 0.0, "batch_size": settings.batch_size,
            "part_size": settings.part_size}
    info_path = data_dir / ANSWERS_INFO
    if info_path.exists():
        check_recorded(json.loads(info_path.read_text()),
                       {k: info[k] for k in ("target_fingerprint", "max_new_tokens", "part_size")},
                       f"the answers in {data_dir}", "use another --data-dir, or delete its answers-*.jsonl.gz and "
                       "answers.json to make them again")
    else:
        atomic_write_json(info_path, info)
    num_parts = math.ceil(len(prompts) / settings.part_size)
    per_part = log.last_rate("answers", "prompts", default=1.0) * settings.part_size
    for part in range(num_parts):
        path = data_dir / f"answers-{part:03d}.jsonl.gz"
        if path.exists():
            continue
        if not budget.allows(per_part):
            return False
        first = part * settings.part_size
        conversations = [row["messages"] for row in prompts[first:first + settings.part_size]]
        started = time.perf_counter()
        answered = regenerate(target, tokenizer, [{"messages": m} for m in conversations],
                              work_dir / "answers" / f"part-{part:03d}", max_new_tokens=settings.max_new_tokens,
                              batch_size=settings.batch_size)
        per_part = time.perf_counter() - started
        write_jsonl_gz(path, [
            {"index": first + row["index"], "input_ids": row["input_ids"],
             "num_prompt_tokens": row["num_prompt_tokens"], "finish_reason": row["finish_reason"]}
            for row in answered
        ])
        tokens = sum(answered["num_response_tokens"])
        log.record("answers", per_part, part=part, prompts=len(answered), answer_tokens=tokens,
                   tokens_per_second=round(tokens / per_part, 1))
    return True


def load_answers(data_dir: Path) -> Dataset:
    """Every committed answer part as one training dataset (`input_ids`, `loss_mask` on the answer tokens)."""
    rows: list[dict[str, Any]] = []
    for path in sorted(data_dir.glob("answers-*.jsonl.gz")):
        rows.extend(read_jsonl_gz(path))
    if not rows:
        raise EdaInputError(f"no answers in {data_dir}: run the recipe's data stages first")
    rows.sort(key=lambda row: row["index"])
    return Dataset.from_dict({
        "input_ids": [row["input_ids"] for row in rows],
        "loss_mask": [[0] * row["num_prompt_tokens"] + [1] * (len(row["input_ids"]) - row["num_prompt_tokens"])
                      for row in rows],
    })
