"""Features captured while the target generates: the same samples and (to float rounding) the same hidden states as a
teacher-forced pass over the finished sequence, kept layers recorded, other settings and other layers refused."""

from __future__ import annotations

import pytest
import torch
from conftest import make_target
from test_data_common import PROMPTS, fresh_process_state, make_tokenizer  # noqa: F401

from eda_adapters import CachedFeatureDataset, EdaInputError, RunMismatchError
from eda_adapters.cli import main
from eda_adapters.data import regenerate
from eda_adapters.data.feature_cache import feature_layers
from eda_adapters.data.features import stack_layers
from eda_adapters.training import EagleTrainer, EagleTrainingConfig
from eda_adapters.training.draft_trainer import resolve_dataset

GEN = dict(max_new_tokens=8, batch_size=3, show_progress=False)


def target_stopping_early(family: str, tok) -> torch.nn.Module:
    """A tiny target whose EOS is a token it emits early for the first prompt, so a batch holds answers that end at
    EOS beside answers cut at max_new_tokens (the two ways a captured sequence can end)."""
    target = make_target(family)
    ids = tok.apply_chat_template([{"role": "user", "content": PROMPTS[0]}], add_generation_prompt=True,
                                  tokenize=True, return_dict=False)
    out = target.generate(torch.tensor([ids]), max_new_tokens=3, do_sample=False, pad_token_id=0)
    target.generation_config.eos_token_id = [tok.eos_token_id, int(out[0, -1])]
    return target


def teacher_forced(target, input_ids: list[int], layers: list[int]) -> torch.Tensor:
    with torch.no_grad():
        out = target(torch.tensor([input_ids]), output_hidden_states=True)
    return stack_layers(out.hidden_states, layers)[0]


@pytest.mark.parametrize("family", ["llama", "qwen2"])
@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_captured_features_equal_a_teacher_forced_pass(family, temperature, tmp_path):
    tok = make_tokenizer()
    target = target_stopping_early(family, tok)
    rows = regenerate(target, tok, PROMPTS[:7], tmp_path / "run", capture_features=True, temperature=temperature,
                      **GEN)
    if temperature == 0.0:
        assert {"eos", "length"} <= set(rows["finish_reason"])
    cached = CachedFeatureDataset(tmp_path / "run" / "features", target=target)
    assert len(cached) == len(rows) and cached.index["source"] == "generation"
    assert cached.layers == [target.config.num_hidden_layers]
    for i, row in enumerate(rows):
        sample = cached[i]
        assert sample["input_ids"].tolist() == row["input_ids"]
        assert sample["loss_mask"].tolist() == row["loss_mask"]
        expected = teacher_forced(target, row["input_ids"], cached.layers)
        assert sample["hidden_states"].shape == expected.shape
        torch.testing.assert_close(sample["hidden_states"], expected, atol=1e-4, rtol=1e-4)
    # the trainers take the directory as it is
    assert isinstance(resolve_dataset(str(tmp_path / "run" / "features"), target, "training set"),
                      CachedFeatureDataset)


def test_chosen_layers_are_kept_and_other_drafts_refused(tmp_path):
    tok = make_tokenizer()
    target = make_target("llama")
    rows = regenerate(target, tok, PROMPTS[:4], tmp_path / "run", capture_features=True, feature_layers=[1, -1],
                      **GEN)
    path = tmp_path / "run" / "features"
    layers = feature_layers(target, [1, -1])
    cached = CachedFeatureDataset(path, target=target, layers=layers)
    assert cached.layers == [1, target.config.num_hidden_layers]
    expected = teacher_forced(target, rows[2]["input_ids"], layers)
    assert expected.shape[-1] == 2 * target.config.hidden_size
    torch.testing.assert_close(cached[2]["hidden_states"], expected, atol=1e-4, rtol=1e-4)
    # an EAGLE-1 draft reads the last layer alone: the trainer serves it those columns of the same shards
    trainer = EagleTrainer(target_model=target, train_dataset=str(path),
                           args=EagleTrainingConfig(output_dir=str(tmp_path / "train"), use_cpu=True, report_to=[]))
    served = trainer.train_dataset
    assert served.layers == [target.config.num_hidden_layers] and served.stored_layers == layers
    hidden = target.config.hidden_size
    torch.testing.assert_close(served[2]["hidden_states"], cached[2]["hidden_states"][:, hidden:])
    # any order of a subset; a layer that is not stored is refused in one line naming what to do
    swapped = CachedFeatureDataset(path, target=target, layers=list(reversed(layers)))
    torch.testing.assert_close(swapped[1]["hidden_states"], cached[1]["hidden_states"].roll(hidden, dims=-1))
    with pytest.raises(EdaInputError, match=r"hold the target's hidden_states \[1, 2\], but this draft reads \[0, 2\]"):
        CachedFeatureDataset(path, target=target, layers=[0, -1])
    with pytest.raises(EdaInputError, match="out of range"):
        feature_layers(target, [7])


def test_a_resume_with_other_capture_settings_is_refused(tmp_path):
    tok = make_tokenizer()
    target = make_target("qwen2")
    regenerate(target, tok, PROMPTS[:2], tmp_path / "run", capture_features=True, **GEN)
    with pytest.raises(RunMismatchError, match="features"):
        regenerate(target, tok, PROMPTS[:2], tmp_path / "run", **GEN)
    with pytest.raises(RunMismatchError, match="features.layers"):
        regenerate(target, tok, PROMPTS[:2], tmp_path / "run", capture_features=True, feature_layers=[0], **GEN)
    with pytest.raises(EdaInputError, match="backend='transformers'"):
        regenerate("some/model", tok, PROMPTS[:2], tmp_path / "x", backend="vllm", capture_features=True, **GEN)


def test_cli_asks_for_capture_before_layers(tmp_path, capsys):
    code = main(["regenerate", "--target", str(tmp_path), "--prompts", "p.jsonl", "--output-dir", str(tmp_path / "o"),
                 "--feature-layers", "1"])
    assert code != 0
    assert "add --capture-features" in capsys.readouterr().err
