"""Model cards and `push_to_hub` for drafts and EDA adapters.

`PeftModel.push_to_hub` and `PreTrainedModel.push_to_hub` write a generic transformers card; these helpers write one
that says what the repository holds (a draft or an adapter), which draft and target it belongs to and how to load it.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

from huggingface_hub import HfApi, ModelCard, ModelCardData

BASE_TAGS = ["eda_adapters", "eagle", "speculative-decoding", "draft-model"]

_CARD_TEMPLATE = """---
{card_data}
---

# {title}

{summary}

## How to use

```python
{usage}
```
{details}
"""


def _peft_adapter_config(model: Any) -> Any | None:
    configs = getattr(model, "peft_config", None)
    if not configs or not hasattr(model, "active_adapter"):
        return None
    return configs.get(model.active_adapter)


def _draft_config(model: Any) -> Any:
    return _base_draft(model).config


def _base_draft(model: Any) -> Any:
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def build_model_card(model: Any, repo_id: str | None = None, info: dict[str, Any] | None = None) -> ModelCard:
    """A model card for an `EagleDraftModel`, an `Eagle3DraftModel` or a `PeftModel` holding an EDA adapter.

    Args:
        model: The draft, or the PeftModel wrapping it.
        repo_id: Where the card will live (used in the usage snippet).
        info: Extra facts recorded under "Details" (e.g. training data, measured tau).
    """
    draft_config = _draft_config(model)
    draft_class = type(_base_draft(model)).__name__
    eagle3 = draft_config.model_type == "eagle3_draft"
    adapter = _peft_adapter_config(model)
    target = getattr(draft_config, "target_name_or_path", None) or getattr(draft_config, "target_model_type", None)
    repo = repo_id or "path/to/this/repo"
    tags = list(BASE_TAGS)
    if adapter is not None:
        base_draft = adapter.base_model_name_or_path
        tags += ["peft", "eda"]
        card_data = ModelCardData(library_name="peft", base_model=base_draft, tags=tags)
        title = f"EDA adapter for {target or 'a fine-tuned target'}"
        summary = (
            f"A private EDA adapter ({adapter.num_private_experts} expert(s), top-{adapter.num_experts_per_tok}) for "
            f"the shared EAGLE draft `{base_draft or 'unknown'}`, adapting it to the target `{target or 'unknown'}` "
            "for speculative decoding."
        )
        usage = (
            "import eda_adapters  # registers the EDA adapter type with PEFT\n"
            "from peft import PeftModel\n"
            f"draft = eda_adapters.{draft_class}.from_pretrained({base_draft!r}, target_model=target)\n"
            f"draft = PeftModel.from_pretrained(draft, {repo!r})\n"
            "out = target.generate(input_ids, assistant_model=draft)"
        )
    else:
        card_data = ModelCardData(library_name="transformers", tags=tags)
        kind = "EAGLE-3" if eagle3 else "EAGLE"
        borrowed = "embedding is" if eagle3 else "embedding and output head are"
        title = f"{kind} draft for {target or 'a target LLM'}"
        summary = (
            f"A shared {kind} draft ({draft_config.num_hidden_layers} layer(s), hidden size {draft_config.hidden_size}) "
            f"for the target `{target or 'unknown'}`; the target's {borrowed} re-attached at load time. Adapt it to "
            "fine-tuned targets with EDA adapters."
        )
        usage = (
            "import eda_adapters\n"
            f"draft = eda_adapters.{draft_class}.from_pretrained({repo!r}, target_model=target)\n"
            "out = target.generate(input_ids, assistant_model=draft)"
        )
    if target and "/" in str(target) and adapter is None:
        card_data.base_model = str(target)
    rows = {"target": target, **(info or {})}
    details = ""
    if any(v is not None for v in rows.values()):
        details = "\n## Details\n\n| | |\n|---|---|\n" + "".join(
            f"| {k} | {v} |\n" for k, v in rows.items() if v is not None
        )
    text = _CARD_TEMPLATE.format(
        card_data=card_data.to_yaml(), title=title, summary=summary, usage=usage, details=details
    )
    return ModelCard(text)


def push_to_hub(
    model: Any,
    repo_id: str,
    *,
    commit_message: str | None = None,
    private: bool | None = None,
    token: str | bool | None = None,
    revision: str | None = None,
    create_pr: bool = False,
    info: dict[str, Any] | None = None,
) -> Any:
    """Save `model` (a draft or a PeftModel with EDA adapters) to a temporary folder with our model card and upload it.

    Returns the `CommitInfo` of the upload.
    """
    api = HfApi(token=token if isinstance(token, str) else None)
    repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
    with tempfile.TemporaryDirectory() as tmp_dir:
        model.save_pretrained(tmp_dir)
        build_model_card(model, repo_id=repo_id, info=info).save(os.path.join(tmp_dir, "README.md"))
        return api.upload_folder(
            repo_id=repo_id,
            folder_path=tmp_dir,
            commit_message=commit_message or "Upload with eda_adapters",
            revision=revision,
            create_pr=create_pr,
        )
