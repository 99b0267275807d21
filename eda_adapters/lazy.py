"""Lazy attributes for packages (PEP 562): a package lists which module defines each public name, and the module is
imported the first time the name is looked up, so importing the package stays cheap."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any


def lazy_attributes(
    package: str, namespace: dict[str, Any], names: Mapping[str, str], modules: Iterable[str] = ()
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The `__getattr__` and `__dir__` of package `package` (whose globals are `namespace`).

    `names` maps a public name to the module (relative to the package, e.g. `".trainer"`) that defines it; `modules`
    are submodules reachable as attributes without an explicit import. A value is cached in `namespace` once loaded.
    """
    modules = frozenset(modules)

    def __getattr__(name: str) -> Any:
        if name in names:
            value = getattr(importlib.import_module(names[name], package), name)
        elif name in modules:
            value = importlib.import_module(f".{name}", package)
        else:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(names) | modules)

    return __getattr__, __dir__
