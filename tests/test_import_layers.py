"""The package imports only downward: every intra-package import of every module (top level, inside functions and
under TYPE_CHECKING alike) goes to its own layer or to a layer it is allowed to use. See docs/development.md."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import eda_adapters

PACKAGE_ROOT = Path(eda_adapters.__file__).parent

# Top-level module or subpackage of eda_adapters (for the research side: its module or subpackage) -> its layer.
LAYER_OF = {
    "atomic": "base",
    "errors": "base",
    "fingerprints": "base",
    "compute_dtype": "base",
    "batched_decoding": "base",
    "console": "base",
    "hub": "base",
    "lazy": "base",
    "plotting": "base",
    "run_directory": "base",
    "schemas": "base",
    "models": "models",
    "tuners": "tuners",
    "validation": "validation",
    "data": "data",
    "generation": "generation",
    "training": "training",
    "export": "export",
    "bench": "bench",
    "diagnose": "diagnose",
    "cli": "cli",
    "__main__": "cli",
    "__init__": "package",  # the public API re-exports the runtime (lazily)
    "research.__init__": "research",
    "research.toys": "toys",
    "research.experiment": "experiment",
    "research.demo": "demo",
    "research.domains": "domains",
    "research.shared_draft": "shared draft",
    "research.recipe_runner": "recipe runner",
    "research.bench_fixtures": "research plugins",
    "research.commands": "research plugins",
}
RUNTIME_LAYERS = {"base", "models", "tuners", "validation", "data", "generation", "training", "export", "bench",
                  "diagnose", "cli", "package"}

# Layer -> the layers below it that it may import (besides itself). Runtime, bottom to top: base, then the model and
# the adapter type; in the middle data and decoding (independent of each other), then training (uses both) and
# export; the benchmark and the diagnosis above them; the CLI last. The research side sits on the runtime (never the other way round):
# the toy fixtures, the experiment, the demo, the recipe's domains and its shared draft (what the recipe scripts run,
# with how they run it: the recipe runner), and on top what the CLI finds through entry points
# (eda_adapters/cli/plugins.py).
_BELOW_DATA = {"base", "models", "tuners", "validation"}
_MIDDLE = _BELOW_DATA | {"data", "generation", "training", "export"}
_RUNTIME_LIBRARY = _MIDDLE | {"bench", "diagnose"}
MAY_IMPORT: dict[str, set[str]] = {
    "base": set(),
    "models": {"base"},
    "tuners": {"base", "models"},
    "validation": {"base", "models", "tuners"},
    "data": _BELOW_DATA,
    "generation": {"base", "models", "tuners"},
    "training": _BELOW_DATA | {"data", "generation"},
    "export": _BELOW_DATA,
    "bench": _MIDDLE,
    "diagnose": _MIDDLE,
    "cli": _RUNTIME_LIBRARY,
    "package": _RUNTIME_LIBRARY | {"cli"},
    "research": set(),
    "toys": _MIDDLE,
    "experiment": _MIDDLE | {"toys"},
    "demo": _MIDDLE | {"toys", "experiment"},
    "domains": _MIDDLE | {"demo"},
    "shared draft": _MIDDLE | {"toys", "experiment", "demo", "domains"},
    "recipe runner": {"base"},
    "research plugins": _RUNTIME_LIBRARY | {"toys", "experiment", "demo"},
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts)
    return ".".join(parts)


def _unit(module: str) -> str:
    """`eda_adapters.data.io` -> `data`, `eda_adapters.research.demo.corpus` -> `research.demo`; the package itself
    -> `__init__` (`research.__init__` for the research package)."""
    parts = module.split(".")
    if len(parts) > 1 and parts[1] == "research":
        return "research." + (parts[2] if len(parts) > 2 else "__init__")
    return parts[1] if len(parts) > 1 and parts[1] != "__init__" else "__init__"


def imported_modules(module: str, source: str) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import of eda_adapters code in `source`, the text of `module`."""
    is_package = module.endswith(".__init__")
    package = module.rsplit(".", 1)[0] if not is_package else module[: -len(".__init__")]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                prefix = ".".join(base)
            else:
                prefix = ""
            target = ".".join(p for p in (prefix, node.module or "") if p)
            if not target.startswith("eda_adapters"):
                continue
            if node.module is None or target == "eda_adapters":  # `from . import x` names modules
                found += [(node.lineno, f"{target}.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, target))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "eda_adapters"]
    return found


def upward_imports(module: str, source: str) -> list[str]:
    """The imports of `module` that go to a layer it may not use, as readable lines."""
    own = LAYER_OF[_unit(module)]
    errors = []
    for line, target in imported_modules(module, source):
        unit = _unit(target)
        if unit == _unit(module):
            continue
        layer = LAYER_OF.get(unit)
        if layer != own and layer not in MAY_IMPORT[own]:
            errors.append(f"{module}:{line} imports {target} (layer {layer!r}), but layer {own!r} may only use "
                          f"{sorted(MAY_IMPORT[own]) or 'nothing'}")
    return errors


def _modules() -> list[tuple[str, Path]]:
    return [(_module_name(p), p) for p in sorted(PACKAGE_ROOT.rglob("*.py"))]


def _names_research(node: ast.AST) -> bool:
    """A string constant that is a module name on the research side: an import in disguise (`import_module`)."""
    return (isinstance(node, ast.Constant) and isinstance(node.value, str)
            and re.fullmatch(r"\.*(eda_adapters\.)?research(\.[\w.]+)?", node.value) is not None)


def test_the_runtime_never_imports_the_research_side():
    """No runtime module imports `eda_adapters.research`, nor names it for `importlib`: the research side reaches the
    `eda` command only through entry points (pyproject.toml)."""
    offenders = []
    for name, path in _modules():
        if LAYER_OF[_unit(name)] not in RUNTIME_LAYERS:
            continue
        source = path.read_text()
        offenders += [f"{name}:{line} imports {target}" for line, target in imported_modules(name, source)
                      if target.startswith("eda_adapters.research")]
        offenders += [f"{name}:{node.lineno} names {node.value!r}" for node in ast.walk(ast.parse(source))
                      if _names_research(node)]
    assert not offenders, "\n".join(offenders)
    assert _names_research(ast.Constant("eda_adapters.research.toys"))
    assert not _names_research(ast.Constant("research results"))


def test_the_research_side_reaches_the_cli_through_entry_points():
    from eda_adapters.cli import build_parser
    from eda_adapters.cli.plugins import bench_fixtures, plugin_commands

    assert set(plugin_commands()) == {"demo", "experiment"}
    commands = build_parser()._subparsers._group_actions[0].choices
    assert {"demo", "experiment", "bench", "adapt"} <= set(commands)
    fixtures = bench_fixtures("the test")
    assert fixtures.__name__ == "eda_adapters.research.bench_fixtures"
    assert set(fixtures.PROMPT_KINDS) == {"prose", "code", "math"} and callable(fixtures.build_tiny_setup)


def test_every_module_has_a_layer():
    unplaced = {_unit(name) for name, _ in _modules()} - set(LAYER_OF)
    assert not unplaced, f"place these in LAYER_OF (and docs/development.md): {sorted(unplaced)}"


def test_the_package_imports_only_downward():
    errors = [e for name, path in _modules() for e in upward_imports(name, path.read_text())]
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("eda_adapters.generation.tree", "from ..training import EagleTrainer\n"),
        ("eda_adapters.generation.hook", "def f():\n    from ..training.losses import eagle_loss\n"),
        ("eda_adapters.models.loading", "import eda_adapters.data.io\n"),
        ("eda_adapters.tuners.eda.model", "from ...generation import TreeConfig\n"),
        ("eda_adapters.data.io", "from ..research import toys\n"),
        ("eda_adapters.training.losses", "from eda_adapters.research.experiment import run_experiment\n"),
        ("eda_adapters.research.experiment.runner", "from ..demo import run_demo\n"),
        ("eda_adapters.research.toys", "from .experiment import run_experiment\n"),
        ("eda_adapters.cli.bench", "def f():\n    from ..research.toys import build_tiny_setup\n"),
        ("eda_adapters.bench", "from .research.bench_fixtures import PROMPT_KINDS\n"),
        ("eda_adapters.fingerprints", "from .models import EagleDraftModel\n"),
    ],
)
def test_an_upward_import_is_caught(module, source):
    assert len(upward_imports(module, source)) == 1


def test_downward_and_sibling_imports_pass():
    assert upward_imports("eda_adapters.training.acceptance", "from ..generation.stats import track_acceptance\n") == []
    assert upward_imports("eda_adapters.generation.tree", "from ..models.eagle import EagleDraftModel\n") == []
    assert upward_imports("eda_adapters.data.io", "from .prompts import render_prompt\nimport json\n") == []
    assert upward_imports("eda_adapters.tuners.eda.model", "from ...fingerprints import draft_fingerprint\n") == []


HEAVY = (
    "datasets", "matplotlib", "transformers.trainer", "eda_adapters.data", "eda_adapters.training.eagle_trainer",
    "eda_adapters.research.toys", "eda_adapters.research.experiment", "eda_adapters.research.demo",
)


def test_import_and_cli_parser_load_nothing_heavy():
    """`import eda_adapters` and building the `eda` parser (all `--help` texts) leave trainers, datasets, plotting,
    the toy fixtures and the demo unloaded; the first access to a lazy name loads it."""
    import subprocess
    import sys

    code = (
        "import sys, eda_adapters\n"
        "from eda_adapters.cli import build_parser\n"
        "build_parser()\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
        "eda_adapters.EagleTrainer, eda_adapters.regenerate\n"
        "print('eda_adapters.training.eagle_trainer' in sys.modules and 'eda_adapters.data' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[0] == "[]", f"loaded at import / parser build: {out[0]}"
    assert out[1] == "True"


def test_every_public_name_resolves():
    for name in eda_adapters.__all__:
        assert getattr(eda_adapters, name) is not None
    assert set(eda_adapters.__all__) <= set(dir(eda_adapters))
    with pytest.raises(AttributeError, match="no attribute 'not_a_name'"):
        eda_adapters.not_a_name  # noqa: B018


def test_every_core_dependency_is_imported_by_the_runtime():
    """A package in `[project] dependencies` is imported somewhere in the runtime (not only on the research side)."""
    import tomllib

    pyproject = tomllib.loads((PACKAGE_ROOT.parent / "pyproject.toml").read_text())
    imported = set()
    for path in PACKAGE_ROOT.rglob("*.py"):
        if "research" in path.relative_to(PACKAGE_ROOT).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    import_names = {"huggingface-hub": "huggingface_hub", "pyyaml": "yaml"}
    for requirement in pyproject["project"]["dependencies"]:
        name = re.match(r"[A-Za-z0-9_.-]+", requirement).group(0).lower()
        assert import_names.get(name, name.replace("-", "_")) in imported, f"{name} is a dependency nobody imports"
