"""One validated schema per kind of input, checked where the input enters the library.

- `tokenized_rows`: regenerated data, selections, scores files (token ids, masks, scores, text), checked over whole
  Arrow columns with `pyarrow.compute`;
- `prompt_items`: prompt files and lists (strings or chat message lists, reported by index);
- `tensors`: token-id tensors handed to the public API (dtype, rank, batch size).

Every check raises a one-line [`EdaInputError`] naming the source, the rows or items at fault (the first few and a
count), the column or argument and the fix.
"""

from .prompt_items import prompt_conversations
from .tokenized_rows import check_tokenized_rows

__all__ = ["check_tokenized_rows", "prompt_conversations"]
