"""Regeneration: the fine-tuned target answers the domain prompts itself, so the draft learns what it must predict.

Output: a directory (see `eda_adapters.data.runs` for its resumable layout) whose `data.jsonl` holds one row per
prompt, in prompt order, with the columns

    index               int        row of the prompt in the input dataset
    prompt              str        the exact text the target saw (chat template applied, generation prompt included)
    messages            list       the conversation: the prompt's turns + {"role": "assistant", "content": response}
    response            str        the decoded response (special tokens skipped)
    input_ids           list[int]  prompt tokens + response tokens, unpadded (the response ends with EOS if one came)
    loss_mask           list[int]  0 on prompt tokens, 1 on response tokens (same length as input_ids)
    num_prompt_tokens   int
    num_response_tokens int
    finish_reason       str        "eos" or "length"

Read it back with `load_regenerated(dir)` or `datasets.Dataset.from_json(f"{dir}/data.jsonl")`.
"""

from __future__ import annotations

import copy
import os
from dataclasses import asdict, dataclass
from typing import Any

import torch
from datasets import Dataset
from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase

from ..batched_decoding import contiguous_head_input
from ..fingerprints import json_fingerprint, tokenizer_fingerprint
from ..validation import check_causal_lm
from .features import stack_layers
from .io import (
    DATA_FILE, DatasetLike, atomic_write_jsonl, describe_source, load_causal_lm, load_rows, load_tokenizer, read_jsonl,
)
from .prompts import find_prompt_column, render_prompt, resolve_chat_template
from ..schemas.prompt_items import prompt_conversations
from .runs import ChunkedRun, process_state
from .signature import IDENTITY_KEYS, target_signature
from ..errors import EdaInputError
from ..schemas.config_ranges import COUNT, FRACTION, NON_NEGATIVE, NON_NEGATIVE_INT, check_ranges, ranged

BACKENDS = ("transformers", "vllm")
FORMAT = "eda-regenerated/1"


@dataclass
class DecodingSettings:
    """How the target decodes. `temperature == 0` means greedy; `seed` makes sampling repeatable (per batch)."""

    max_new_tokens: int = ranged(256, COUNT)
    temperature: float = ranged(0.0, NON_NEGATIVE)
    top_p: float = ranged(1.0, FRACTION)
    seed: int = ranged(0, NON_NEGATIVE_INT)

    def __post_init__(self) -> None:
        check_ranges(self)


def load_regenerated(output_dir: str | os.PathLike) -> Dataset:
    """The regenerated dataset of a finished run directory."""
    path = os.path.join(output_dir, DATA_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{str(output_dir)!r} holds no finished regeneration ({DATA_FILE} is missing)")
    return Dataset.from_json(path)


def _eos_ids(target: PreTrainedModel | None, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    ids = set()
    candidates = [tokenizer.eos_token_id]
    if target is not None and target.generation_config is not None:
        candidates.append(target.generation_config.eos_token_id)
    for value in candidates:
        if value is None:
            continue
        ids.update(value if isinstance(value, (list, tuple)) else [value])
    return sorted(int(i) for i in ids)


def regenerate(
    target: PreTrainedModel | str,
    tokenizer: PreTrainedTokenizerBase | str | None,
    prompts: DatasetLike,
    output_dir: str | os.PathLike,
    *,
    max_new_tokens: int = 256,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int = 0,
    batch_size: int = 32,
    prompt_column: str | None = None,
    use_chat_template: bool | None = None,
    backend: str = "transformers",
    sort_by_length: bool = True,
    capture_features: bool = False,
    feature_layers: list[int] | tuple[int, ...] | None = None,
    feature_dtype: torch.dtype | str | None = None,
    show_progress: bool = True,
) -> Dataset:
    """Have `target` answer every prompt and write the results to `output_dir` (see the module docstring).

    Args:
        target: The fine-tuned target, loaded or a path/Hub id (loaded with `AutoModelForCausalLM` on this process's
            device). The vLLM backend needs a path/Hub id.
        tokenizer: Its tokenizer (a path/id or `None` to load it from `target`'s path).
        prompts: A `datasets.Dataset`, a list of strings or dicts, or a path (see `load_rows`). Prompts are strings
            (column `prompt`) or conversations (`messages` with role/content, `conversations` ShareGPT from/value).
        output_dir: Run directory. Re-running on an unfinished run resumes it; a directory holding another run
            (other prompts, target, tokenizer or decoding settings) is refused.
        max_new_tokens, temperature, top_p, seed: Decoding; `temperature=0` is greedy. Sampling is seeded per batch
            (`seed + index of the batch's first prompt`), so it is repeatable for the same batch size and process count.
        batch_size: Prompts per `generate` call (left padded); one chunk of output per batch.
        prompt_column: The prompt column if not `prompt`, `messages` or `conversations`.
        use_chat_template: `None` uses the tokenizer's chat template when it has one.
        backend: `"transformers"` (default) or `"vllm"` (needs `pip install vllm`; one process and one engine with
            vLLM's default settings, which batches internally: pass a large `batch_size`, e.g. 512).
        sort_by_length: Batch prompts of similar length together (less padding). Rows are written in prompt order
            either way; with sampling, batch composition decides the per-batch seeds.
        capture_features: Keep the target's hidden states of every prompt and answer token as it computes them while
            generating, in `output_dir/features` (an `eda-features` directory: `CachedFeatureDataset`, or the path
            given to a trainer), so training needs no second pass over the target. Transformers backend only.
        feature_layers: The `hidden_states` entries kept (see `feature_layers`; default: the last, EAGLE-1's).
        feature_dtype: How the features are stored (default: the target's dtype).

    Under `accelerate launch` / several processes, each process answers its share of the prompts and the main process
    merges them; every process returns the full dataset.
    """
    if backend not in BACKENDS:
        raise EdaInputError(f"unknown backend {backend!r}; choose one of {BACKENDS}")
    if batch_size < 1:
        raise EdaInputError(f"batch_size must be >= 1, got {batch_size}")
    decoding = DecodingSettings(max_new_tokens, temperature, top_p, seed)
    state = process_state()
    if capture_features and backend != "transformers":
        raise EdaInputError("capture_features needs backend='transformers' (vLLM does not return hidden states); "
                            "extract the features afterwards with `eda features`")
    if backend == "vllm":
        _require_vllm()
        if state.num_processes > 1:
            raise EdaInputError(
                "backend='vllm' runs one engine for the whole job: launch a single process, or use "
                "backend='transformers' with accelerate launch to shard across processes"
            )

    target_path = target if isinstance(target, (str, os.PathLike)) else None
    if tokenizer is None or isinstance(tokenizer, (str, os.PathLike)):
        source = tokenizer or target_path or getattr(getattr(target, "config", None), "_name_or_path", None)
        if not source:
            raise EdaInputError("pass the target's tokenizer (or a path to it): the target has no path to load it from")
        tokenizer = load_tokenizer(str(source))
    if backend == "transformers" and target_path is not None:
        target = load_causal_lm(str(target_path), dtype="machine", device=state.device)
    if backend == "transformers":
        check_causal_lm(target, "the target")  # a masked LM would "generate" without a word
        target.eval()
        if len(tokenizer) > target.config.get_text_config().vocab_size:
            raise EdaInputError(
                f"the tokenizer has {len(tokenizer)} tokens but the target's vocabulary has "
                f"{target.config.get_text_config().vocab_size}: pass the target's own tokenizer"
            )

    dataset = load_rows(prompts)
    column = find_prompt_column(dataset, prompt_column)
    chat = resolve_chat_template(tokenizer, use_chat_template)
    conversations = prompt_conversations(dataset[column], describe_source(prompts, "prompts"))
    rendered = [render_prompt(tokenizer, messages, chat) for messages in conversations]

    prompts_digest = json_fingerprint(conversations)
    # the weights identify a loaded target (a copy at another path is the same target); vLLM gets a path or Hub id
    if backend == "transformers":
        signature = target_signature(target)
        target_id = {key: signature[key] for key in IDENTITY_KEYS}
    else:
        target_id = {"name_or_path": str(target_path or target)}
    features = None
    if capture_features:
        from .feature_cache import FeatureCapture

        features = FeatureCapture(target, output_dir, feature_layers, feature_dtype)
    run = ChunkedRun(
        output_dir,
        kind="regeneration",
        config={
            "format": FORMAT,
            "prompts": {"num_prompts": len(conversations), "fingerprint": prompts_digest, "chat_template": chat},
            "target": target_id,
            "tokenizer": tokenizer_fingerprint(tokenizer),
            "decoding": asdict(decoding),
            "backend": backend,
            **({"features": features.settings} if features is not None else {}),
        },
        state=state,
    )
    run.open(DATA_FILE)
    if run.final_path.is_file():
        return load_regenerated(output_dir)

    if backend == "vllm":
        generate_fn = _VllmGenerator(str(target_path or target), tokenizer, decoding)
    else:
        generate_fn = TransformersGenerator(target, tokenizer, decoding)

    def write_chunk(batch: list[int]) -> str:
        name = f"chunk-{batch[0]:09d}.jsonl"
        prompt_ids = [rendered[i][1] for i in batch]
        if features is None:
            outputs = [(*output, None) for output in generate_fn(prompt_ids, first_index=batch[0])]
        else:
            outputs = generate_fn.generate(prompt_ids, first_index=batch[0], capture_layers=features.layers)
            features.write_shard(
                name,
                {i: (rendered[i][1] + tokens, [0] * len(rendered[i][1]) + [1] * len(tokens), hidden)
                 for i, (tokens, _, hidden) in zip(batch, outputs)},
            )
        rows = []
        for i, (response_ids, finish_reason, _) in zip(batch, outputs):
            text, prompt_ids = rendered[i]
            response = tokenizer.decode(response_ids, skip_special_tokens=True)
            rows.append(
                {
                    "index": i,
                    "prompt": text,
                    "messages": conversations[i] + [{"role": "assistant", "content": response}],
                    "response": response,
                    "input_ids": prompt_ids + response_ids,
                    "loss_mask": [0] * len(prompt_ids) + [1] * len(response_ids),
                    "num_prompt_tokens": len(prompt_ids),
                    "num_response_tokens": len(response_ids),
                    "finish_reason": finish_reason,
                }
            )
        atomic_write_jsonl(run.chunk_path(name), rows)
        return name

    def merge(chunks: dict[str, list[int]]) -> None:
        merged = []
        for name, indices in chunks.items():
            wanted = set(indices)
            merged.extend(row for row in read_jsonl(run.chunk_path(name)) if row["index"] in wanted)
        merged.sort(key=lambda row: row["index"])
        if features is not None:  # before data.jsonl: a finished run always has its features
            features.write_index(chunks, merged)
        atomic_write_jsonl(run.final_path, merged)

    run.execute(
        len(conversations), batch_size, write_chunk, merge,
        sort_key=(lambda i: (len(rendered[i][1]), i)) if sort_by_length else None,
        desc="regenerating", unit="prompt", show_progress=show_progress,
    )
    return load_regenerated(output_dir)


class TransformersGenerator:
    """Left-padded batched `generate` with a run's decoding settings; each answer is cut after its first stop token
    (the target's EOS tokens and `extra_stop_ids`). Called with token-id prompts, returns `(tokens, finish_reason)`."""

    def __init__(
        self,
        target: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        decoding: DecodingSettings,
        extra_stop_ids: tuple[int, ...] = (),
    ):
        self.target = target
        self.eos_ids = sorted(set(_eos_ids(target, tokenizer)) | set(extra_stop_ids))
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (self.eos_ids or [None])[0]
        if pad_id is None:
            raise EdaInputError("the tokenizer has neither a pad nor an EOS token; set tokenizer.pad_token")
        self.pad_id = int(pad_id)
        self.decoding = decoding
        greedy = decoding.temperature == 0
        self.generation_config = GenerationConfig(
            max_new_tokens=decoding.max_new_tokens,
            do_sample=not greedy,
            temperature=None if greedy else decoding.temperature,
            top_p=None if greedy else decoding.top_p,
            top_k=None,
            pad_token_id=self.pad_id,
            eos_token_id=self.eos_ids or None,
        )
        self.capturing_config = copy.deepcopy(self.generation_config)
        self.capturing_config.update(output_hidden_states=True, return_dict_in_generate=True)

    def __call__(self, prompt_ids: list[list[int]], first_index: int) -> list[tuple[list[int], str]]:
        return [(tokens, reason) for tokens, reason, _ in self.generate(prompt_ids, first_index)]

    @torch.no_grad()
    def generate(
        self, prompt_ids: list[list[int]], first_index: int, capture_layers: list[int] | None = None
    ) -> list[tuple[list[int], str, torch.Tensor | None]]:
        """`(answer tokens, finish reason, features)` per prompt. With `capture_layers` (entries of the target's
        `hidden_states`, see `feature_layers`), `features` are those the target computed for prompt and answer while
        it generated, `[len(prompt) + len(answer), len(capture_layers) * hidden]` on the CPU; otherwise `None`."""
        width = max(len(ids) for ids in prompt_ids)
        device = self.target.device
        input_ids = torch.full((len(prompt_ids), width), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros_like(input_ids)
        for row, ids in enumerate(prompt_ids):
            input_ids[row, width - len(ids) :] = torch.tensor(ids)
            attention_mask[row, width - len(ids) :] = 1
        input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
        capture = capture_layers is not None
        # seed this batch's sampling without disturbing the caller's random state
        cuda = [device.index or 0] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda), contiguous_head_input(self.target):
            torch.manual_seed(self.decoding.seed + first_index)
            out = self.target.generate(
                input_ids=input_ids, attention_mask=attention_mask,
                generation_config=self.capturing_config if capture else self.generation_config,
            )
        sequences = out.sequences if capture else out
        features = _captured_features(self.target, out, attention_mask, capture_layers) if capture else None
        results = []
        for row, tokens in enumerate(sequences[:, width:].tolist()):
            answer, reason = _cut_at_eos(tokens, self.eos_ids)
            kept = None
            if features is not None:
                kept = features[row, width - len(prompt_ids[row]) : width + len(answer)].cpu()
            results.append((answer, reason, kept))
        return results


def _captured_features(
    target: PreTrainedModel, out: Any, attention_mask: torch.Tensor, layers: list[int]
) -> torch.Tensor:
    """The kept layers at every position of `out.sequences` (left-padded prompt, then the answers), from what
    `generate(output_hidden_states=True)` computed: the prompt in step 0, one token per later step. The last token was
    sampled but never read, so one more cached step reads it."""
    width = attention_mask.shape[1]
    new = out.sequences.shape[1] - width
    steps = [stack_layers(step, layers) for step in out.hidden_states]
    mask = torch.cat([attention_mask, attention_mask.new_ones(attention_mask.shape[0], new)], dim=1)
    last = target(
        input_ids=out.sequences[:, -1:],
        attention_mask=mask,
        position_ids=(mask.long().cumsum(-1) - 1).clamp(min=0)[:, -1:],
        past_key_values=out.past_key_values,
        cache_position=torch.arange(width + new - 1, width + new, device=mask.device),
        output_hidden_states=True,
        use_cache=True,
        logits_to_keep=1,
    )
    return torch.cat(steps + [stack_layers(last.hidden_states, layers)], dim=1)


def _cut_at_eos(tokens: list[int], eos_ids: list[int]) -> tuple[list[int], str]:
    """Keep the response up to and including its first EOS (what follows is padding)."""
    for position, token in enumerate(tokens):
        if token in eos_ids:
            return tokens[: position + 1], "eos"
    return tokens, "length"


def _require_vllm() -> Any:
    try:
        import vllm
    except ImportError as err:
        raise ImportError(
            "backend='vllm' needs vLLM, which is not installed: `pip install vllm` (GPU machines), or use "
            "backend='transformers'"
        ) from err
    return vllm


class _VllmGenerator:
    """vLLM offline inference over token ids (import-guarded): one engine for the whole job, in the single process
    `regenerate` allows with this backend, with vLLM's default engine settings (one GPU); it batches internally."""

    def __init__(self, model: str, tokenizer: PreTrainedTokenizerBase, decoding: DecodingSettings):
        vllm = _require_vllm()
        self.vllm = vllm
        self.llm = vllm.LLM(model=model, tokenizer=tokenizer.name_or_path or model, seed=decoding.seed)
        self.eos_ids = _eos_ids(None, tokenizer)
        self.decoding = decoding

    def __call__(self, prompt_ids: list[list[int]], first_index: int) -> list[tuple[list[int], str]]:
        params = self.vllm.SamplingParams(
            max_tokens=self.decoding.max_new_tokens,
            temperature=self.decoding.temperature,
            top_p=self.decoding.top_p,
            seed=self.decoding.seed + first_index,
        )
        prompts = [{"prompt_token_ids": ids} for ids in prompt_ids]
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        results = []
        for output in outputs:
            completion = output.outputs[0]
            tokens = list(completion.token_ids)
            results.append((tokens, "eos" if completion.finish_reason == "stop" else "length"))
        return results
