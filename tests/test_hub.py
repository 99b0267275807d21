"""push_to_hub of drafts and EDA adapters, with only the Hub's network edge replaced."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from huggingface_hub import HfApi
from peft import PeftModel, get_peft_model

import eda_adapters
from eda_adapters import EagleDraftModel, EdaConfig


@pytest.fixture
def fake_hub(monkeypatch, tmp_path):
    """Replace the two network calls at class level; uploads land in a local folder per repo."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    uploads: dict[str, Path] = {}

    def create_repo(self, repo_id, **kwargs):
        return SimpleNamespace(repo_id=repo_id)

    def upload_folder(self, *, repo_id, folder_path, **kwargs):
        dest = tmp_path / "hub" / repo_id
        shutil.copytree(folder_path, dest)  # copy now: the caller deletes its temp dir
        uploads[repo_id] = dest
        return SimpleNamespace(commit_message=kwargs.get("commit_message"))

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    return uploads


def _front_matter(readme: Path) -> dict:
    text = readme.read_text()
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def test_push_adapter_writes_adapter_files_and_card(fake_hub, tmp_path, llama_target):
    draft_dir = tmp_path / "shared-draft"
    EagleDraftModel.from_target(llama_target).save_pretrained(draft_dir)
    draft = EagleDraftModel.from_pretrained(draft_dir, target_model=llama_target)
    model = get_peft_model(draft, EdaConfig(init_private_weights="random"))

    eda_adapters.push_to_hub(model, "me/tiny-math-eda", info={"measured tau": 2.5})
    repo = fake_hub["me/tiny-math-eda"]
    assert {"adapter_model.safetensors", "adapter_config.json", "README.md"} <= {p.name for p in repo.iterdir()}
    meta = _front_matter(repo / "README.md")
    assert meta["library_name"] == "peft"
    assert meta["base_model"] == str(draft_dir)
    assert {"eda_adapters", "eagle", "eda"} <= set(meta["tags"])
    card = (repo / "README.md").read_text()
    assert "PeftModel.from_pretrained" in card and "| measured tau | 2.5 |" in card

    # what was uploaded loads back to the same adapter
    reloaded = PeftModel.from_pretrained(EagleDraftModel.from_pretrained(draft_dir, target_model=llama_target), repo)
    ids = torch.randint(0, 97, (1, 6))
    feats = torch.randn(1, 6, 32)
    torch.testing.assert_close(
        reloaded(input_ids=ids, hidden_states=feats).logits, model(input_ids=ids, hidden_states=feats).logits
    )


def test_draft_push_to_hub_uses_our_card(fake_hub, llama_target):
    draft = EagleDraftModel.from_target(llama_target)
    draft.push_to_hub("me/tiny-draft")
    repo = fake_hub["me/tiny-draft"]
    assert (repo / "model.safetensors").exists() and (repo / "config.json").exists()
    meta = _front_matter(repo / "README.md")
    assert meta["library_name"] == "transformers" and "eda_adapters" in meta["tags"]
    assert "EagleDraftModel.from_pretrained('me/tiny-draft'" in (repo / "README.md").read_text()


def test_eagle3_draft_push_to_hub_names_its_class(fake_hub):
    from conftest import make_target

    target = make_target("llama", num_hidden_layers=8)
    draft = eda_adapters.Eagle3DraftModel.from_target(target)
    draft.push_to_hub("me/tiny-draft3")
    readme = (fake_hub["me/tiny-draft3"] / "README.md").read_text()
    assert "Eagle3DraftModel.from_pretrained('me/tiny-draft3'" in readme and "EAGLE-3 draft" in readme
    loaded = eda_adapters.Eagle3DraftModel.from_pretrained(fake_hub["me/tiny-draft3"], target_model=target)
    assert torch.equal(loaded.lm_head.weight, draft.lm_head.weight)
