"""Self-prompting: the target writes its own user turns, so a draft can be adapted without any prompt dataset.

A chat model given only its chat template's opening of a user turn, and sampled from there, writes a plausible user
turn. Sampled at temperature 1, the turns are varied and mostly sensible (SmolLM2-135M-Instruct writes e.g. "What's
the best way to prepare before a marathon?"). `self_prompts` samples candidates in batches, keeps the ones that pass
a quality filter and are not (near) duplicates of a kept one (`eda_adapters.data.prompt_filter`), and writes the
first `num_prompts` kept conversations, in candidate order, to a prompt dataset that `regenerate` answers as it
answers any other. With `num_turns > 1` the target also answers each turn (greedily) and writes the next user turn
after it, so the conversations are multi-turn.

Output: a run directory (the resumable, sharded layout of `eda_adapters.data.runs`) holding

    data.jsonl    one row per kept conversation: {"messages": [user, assistant, ..., user], "candidate": int}
    stats.json    candidates sampled, kept, and rejected by reason

Runs are reproducible: candidate batches are seeded with `seed + index of their first candidate`, so the same
settings, batch size and process count give the same prompts. The number of prompts is not part of the run's key:
asking an existing run for more prompts samples more candidates and keeps the first ones unchanged.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict
from typing import Any

from datasets import Dataset
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..errors import EdaInputError
from ..fingerprints import tokenizer_fingerprint
from ..validation import check_causal_lm
from .io import DATA_FILE, atomic_write_json, atomic_write_jsonl, load_causal_lm, load_tokenizer, read_jsonl
from .prompt_filter import DuplicateIndex, PromptFilter
from .regenerate import DecodingSettings, TransformersGenerator
from .runs import ChunkedRun, process_state
from .signature import IDENTITY_KEYS, target_signature

FORMAT = "eda-self-prompts/1"
STATS_FILE = "stats.json"
_SENTINEL = "\u2063EDA-USER-TURN\u2063"  # invisible separator: no template rewrites it, no user writes it


def user_turn_opening(
    tokenizer: PreTrainedTokenizerBase, history: list[dict[str, str]] | None = None
) -> tuple[str, str]:
    """The chat template's text before and after a user turn's content, following `history`.

    The template is rendered with a sentinel user message; what comes before the sentinel is the prompt to sample
    a user turn from (system prompt and earlier turns included), what follows closes the turn (e.g. `<|im_end|>`).
    """
    if not getattr(tokenizer, "chat_template", None):
        raise EdaInputError(
            "the tokenizer has no chat template, so the target cannot be asked to write a user turn: self-prompting "
            "needs a chat model; give prompts instead (--prompts)"
        )
    messages = list(history or []) + [{"role": "user", "content": _SENTINEL}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
    if text.count(_SENTINEL) != 1:
        raise EdaInputError("the chat template does not copy the user's text verbatim; self-prompting cannot use it")
    before, after = text.split(_SENTINEL)
    return before, after


def _turn_end_ids(tokenizer: PreTrainedTokenizerBase) -> tuple[int, ...]:
    """The token that closes a user turn, when the template closes it with one special token (e.g. `<|im_end|>`)."""
    _, after = user_turn_opening(tokenizer)
    ids = tokenizer(after, add_special_tokens=False)["input_ids"]
    special = set(tokenizer.all_special_ids)
    return (int(ids[0]),) if ids and ids[0] in special else ()


def self_prompts(
    target: PreTrainedModel | str,
    tokenizer: PreTrainedTokenizerBase | str | None,
    output_dir: str | os.PathLike,
    num_prompts: int,
    *,
    seed: int = 0,
    temperature: float = 1.0,
    top_p: float = 0.95,
    max_prompt_tokens: int = 128,
    num_turns: int = 1,
    answer_max_new_tokens: int = 256,
    prompt_filter: PromptFilter | None = None,
    near_duplicate_threshold: float = 0.7,
    batch_size: int = 16,
    max_candidates: int | None = None,
    show_progress: bool = True,
) -> Dataset:
    """Have the chat `target` write `num_prompts` distinct user prompts (conversations) and save them to
    `output_dir` (see the module docstring); returns them as a `Dataset` with a `messages` column.

    Args:
        target: The (fine-tuned) chat target, loaded or a path / Hub id.
        tokenizer: Its tokenizer, with a chat template (a path, or `None` to load it from the target's path).
        output_dir: Run directory; re-running resumes it, a directory holding a run with other settings is refused.
        num_prompts: Conversations to keep.
        seed, temperature, top_p: Sampling of the user turns.
        max_prompt_tokens: Cap per user turn; a turn the target has not closed by then is rejected.
        num_turns: User turns per conversation; between them the target answers greedily
            (`answer_max_new_tokens`), and the conversation ends with a user turn for `regenerate` to answer.
        prompt_filter: Quality rules (`PromptFilter()` by default), applied to every user turn.
        near_duplicate_threshold: Word-3-gram Jaccard similarity above which a conversation counts as a repeat.
        batch_size: Candidates per `generate` call (and per chunk of the run).
        max_candidates: Give up (with an error) after sampling this many; default `20 * num_prompts`.
    """
    if num_prompts < 1:
        raise EdaInputError(f"num_prompts must be >= 1, got {num_prompts}")
    if num_turns < 1:
        raise EdaInputError(f"num_turns must be >= 1, got {num_turns}")
    if batch_size < 1:
        raise EdaInputError(f"batch_size must be >= 1, got {batch_size}")
    prompt_filter = prompt_filter or PromptFilter()
    max_candidates = max_candidates or 20 * num_prompts
    sampling = DecodingSettings(max_prompt_tokens, temperature, top_p, seed)
    if temperature == 0:
        raise EdaInputError("self-prompting needs temperature > 0: greedy sampling writes the same prompt every time")
    answering = DecodingSettings(answer_max_new_tokens)
    DuplicateIndex(near_duplicate_threshold)  # validates the threshold before any work
    state = process_state()

    target_path = target if isinstance(target, (str, os.PathLike)) else None
    if tokenizer is None or isinstance(tokenizer, (str, os.PathLike)):
        source = tokenizer or target_path or getattr(getattr(target, "config", None), "_name_or_path", None)
        if not source:
            raise EdaInputError("pass the target's tokenizer (or a path to it): the target has no path to load it from")
        tokenizer = load_tokenizer(str(source))
    stop_ids = _turn_end_ids(tokenizer)  # refuses a tokenizer without a chat template before loading the target
    if target_path is not None:
        target = load_causal_lm(str(target_path), dtype="machine", device=state.device)
    check_causal_lm(target, "the target")
    target.eval()

    signature = target_signature(target)
    run = ChunkedRun(
        output_dir,
        kind="self-prompts",
        config={
            "format": FORMAT,
            "target": {key: signature[key] for key in IDENTITY_KEYS},
            "tokenizer": tokenizer_fingerprint(tokenizer),
            "sampling": asdict(sampling),
            "num_turns": num_turns,
            "answer_max_new_tokens": answer_max_new_tokens if num_turns > 1 else None,
            "filter": asdict(prompt_filter),
        },
        state=state,
    )
    run.open(DATA_FILE)
    writer = _ConversationWriter(target, tokenizer, sampling, answering, stop_ids, num_turns, prompt_filter)

    def write_chunk(indices: list[int]) -> str:
        rows = writer(indices)
        name = f"chunk-{indices[0]:09d}.jsonl"
        atomic_write_jsonl(run.chunk_path(name), rows)
        return name

    num_candidates = min(max_candidates, _round_up(math.ceil(num_prompts * 1.25), batch_size))
    while True:
        run.execute(num_candidates, batch_size, write_chunk, lambda chunks: None,
                    desc="self-prompting", unit="candidate", show_progress=show_progress)
        # every process reads the same chunks and reaches the same decision, so no broadcast is needed
        kept, stats = _select(run, num_candidates, num_prompts, near_duplicate_threshold)
        if len(kept) >= num_prompts or num_candidates >= max_candidates:
            break
        rate = max(len(kept) / num_candidates, 0.05)
        wanted = math.ceil((num_prompts - len(kept)) / rate * 1.2)
        num_candidates = min(max_candidates, _round_up(num_candidates + wanted, batch_size))
    if len(kept) < num_prompts:
        raise EdaInputError(
            f"only {len(kept)} of {num_prompts} prompts passed the filter and duplicate removal after "
            f"{num_candidates} candidates (rejected: {stats['rejected']}); raise max_candidates, the temperature or "
            f"max_prompt_tokens, or relax the filter. Re-running the same command resumes the run"
        )
    rows = kept[:num_prompts]
    if state.is_main_process:
        atomic_write_jsonl(run.final_path, rows)
        atomic_write_json(run.dir / STATS_FILE, {**stats, "num_prompts": num_prompts})
    state.wait_for_everyone()
    return Dataset.from_list(rows)


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


class _ConversationWriter:
    """Samples the conversations of a batch of candidates: user turn, greedy answer, user turn, ..."""

    def __init__(
        self,
        target: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        sampling: DecodingSettings,
        answering: DecodingSettings,
        stop_ids: tuple[int, ...],
        num_turns: int,
        prompt_filter: PromptFilter,
    ):
        self.tokenizer = tokenizer
        self.sample = TransformersGenerator(target, tokenizer, sampling, extra_stop_ids=stop_ids)
        self.answer = TransformersGenerator(target, tokenizer, answering) if num_turns > 1 else None
        self.num_turns = num_turns
        self.filter = prompt_filter

    def _ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def __call__(self, indices: list[int]) -> list[dict[str, Any]]:
        conversations: dict[int, list[dict[str, str]]] = {i: [] for i in indices}
        rejected: dict[int, str] = {}
        sampled = dict.fromkeys(indices, 0)
        for turn in range(self.num_turns):
            alive = [i for i in indices if i not in rejected]
            if not alive:
                break
            openings = [self._ids(user_turn_opening(self.tokenizer, conversations[i])[0]) for i in alive]
            # one seed per (first candidate, turn): distinct for every batch and turn of the run
            for i, (tokens, finish) in zip(alive, self.sample(openings, first_index=indices[0] * self.num_turns + turn)):
                sampled[i] += len(tokens)
                text = self.tokenizer.decode(tokens, skip_special_tokens=True).strip()
                reason = self.filter.reject_reason(text, finished=finish == "eos")
                if reason is not None:
                    rejected[i] = reason
                conversations[i].append({"role": "user", "content": text})
            alive = [i for i in alive if i not in rejected]
            if self.answer is None or turn == self.num_turns - 1 or not alive:
                continue
            prompts = [self._ids(self.tokenizer.apply_chat_template(
                conversations[i], tokenize=False, add_generation_prompt=True)) for i in alive]
            for i, (tokens, _) in zip(alive, self.answer(prompts, first_index=0)):
                sampled[i] += len(tokens)
                text = self.tokenizer.decode(tokens, skip_special_tokens=True).strip()
                conversations[i].append({"role": "assistant", "content": text})
        return [{"candidate": i, "messages": conversations[i], "rejected": rejected.get(i), "sampled_tokens": sampled[i]}
                for i in indices]


def _select(
    run: ChunkedRun, num_candidates: int, num_prompts: int, threshold: float
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The kept conversations of the first `num_candidates` candidates, in candidate order, and the run's counts."""
    candidates: list[dict[str, Any]] = []
    for name, indices in run.completed_chunks(num_candidates).items():
        wanted = set(indices)
        candidates.extend(row for row in read_jsonl(run.chunk_path(name)) if row["candidate"] in wanted)
    candidates.sort(key=lambda row: row["candidate"])
    duplicates = DuplicateIndex(threshold)
    kept: list[dict[str, Any]] = []
    rejected: dict[str, int] = {}
    for row in candidates:
        reason = row["rejected"]
        if reason is None:
            users = "\n".join(turn["content"] for turn in row["messages"] if turn["role"] == "user")
            reason = duplicates.add(users)
        if reason is None:
            kept.append({"messages": row["messages"], "candidate": row["candidate"]})
        else:
            rejected[reason] = rejected.get(reason, 0) + 1
    stats = {"candidates": len(candidates), "kept": len(kept), "rejected": dict(sorted(rejected.items())),
             # tokens the target generated for the candidates, user turns and answers (throughput bookkeeping)
             "sampled_tokens": sum(row.get("sampled_tokens", 0) for row in candidates)}
    return kept, stats


def load_self_prompts(output_dir: str | os.PathLike) -> Dataset:
    """The prompts of a finished self-prompt run directory."""
    path = os.path.join(output_dir, DATA_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{str(output_dir)!r} holds no finished self-prompt run ({DATA_FILE} is missing)")
    return Dataset.from_list(read_jsonl(path))


__all__ = ["load_self_prompts", "self_prompts", "user_turn_opening"]
