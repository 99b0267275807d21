"""One validated schema per kind of input, checked where the input enters the library.

- `tokenized_rows`: regenerated data, selections, scores files (token ids, masks, scores, text), checked over whole
  Arrow columns with `pyarrow.compute`;
- `prompt_items`: prompt files and lists (strings or chat message lists, reported by index);
- `tensors`: token-id tensors handed to the public API (dtype, rank, batch size);
- `config_ranges`: the ranges of config fields, declared on the fields and checked by `check_ranges`;
- `feature_index`: the `index.json` of a cached-features directory.

Every check raises a one-line [`EdaInputError`] naming the source, the rows or items at fault (the first few and a
count), the column or argument and the fix.
"""

from typing import TYPE_CHECKING

from ..lazy import lazy_attributes

if TYPE_CHECKING:
    from .config_ranges import check_ranges
    from .feature_index import check_feature_index
    from .prompt_items import prompt_conversations
    from .tensors import features_tensor, mask_tensor, token_ids_tensor
    from .tokenized_rows import check_tokenized_rows

# imported on first access: the draft models read `schemas.tensors` and must not load pyarrow with it
_LAZY_NAMES = {
    "check_feature_index": ".feature_index",
    "check_ranges": ".config_ranges",
    "check_tokenized_rows": ".tokenized_rows",
    "prompt_conversations": ".prompt_items",
    "features_tensor": ".tensors",
    "mask_tensor": ".tensors",
    "token_ids_tensor": ".tensors",
}
__getattr__, __dir__ = lazy_attributes(__name__, globals(), _LAZY_NAMES)
__all__ = sorted(_LAZY_NAMES)
