"""matplotlib, loaded on demand: plots are an optional extra of the runtime and a dependency of the research side."""

from __future__ import annotations

from typing import Any

from .errors import MissingExtraError


def pyplot(purpose: str) -> Any:
    """`matplotlib.pyplot` on the file-only Agg backend; [`MissingExtraError`] naming the install when matplotlib is
    missing. `purpose` says what needed it, e.g. `"the shift histogram (--plot)"`."""
    try:
        import matplotlib
    except ImportError as err:
        raise MissingExtraError(
            f"{purpose} needs matplotlib: pip install 'eda_adapters[plot]' (or '[research]')."
        ) from err
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
