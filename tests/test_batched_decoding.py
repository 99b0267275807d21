"""The contiguous-head workaround of batched generate: same tokens, and the hook does not outlive its block."""

from __future__ import annotations

import pytest
import torch
from conftest import make_target

from eda_adapters.batched_decoding import contiguous_head_input


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_head_hook_changes_no_token_and_is_removed(dtype):
    target = make_target("llama").to(dtype)
    ids = torch.tensor([[0, 0, 5, 6, 7], [8, 9, 10, 11, 12]])
    mask = (ids != 0).long()
    kwargs = dict(attention_mask=mask, max_new_tokens=6, do_sample=False, pad_token_id=0)
    plain = target.generate(ids, **kwargs)
    seen = []
    head = target.get_output_embeddings()
    record = lambda module, args: seen.append(args[0].is_contiguous())  # noqa: E731
    probe = head.register_forward_pre_hook(record)
    target.generate(ids, **kwargs)
    probe.remove()
    assert not all(seen)  # the prefill hands the head a strided view of the last position
    seen.clear()
    with contiguous_head_input(target):
        probe = head.register_forward_pre_hook(record)  # runs after the workaround's hook
        fast = target.generate(ids, **kwargs)
        probe.remove()
    assert torch.equal(plain, fast)
    assert seen and all(seen)
    assert not head._forward_pre_hooks
    with pytest.raises(RuntimeError), contiguous_head_input(target):
        raise RuntimeError("boom")
    assert not head._forward_pre_hooks
