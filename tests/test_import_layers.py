"""Imports in tandem_components only run downward: no package imports one above it, or one beside it.

The layers follow the data path (tandem_components/__init__.py, CONTRIBUTING.md "Where things are").
Every import counts, those inside functions included: a late import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import tandem_components

PACKAGE = Path(tandem_components.__file__).resolve().parent

#: bottom to top. A unit (a package, or a module at the top of tandem_components) may import its own
#: modules and the units of LOWER layers only, never one of its own layer or above.
LAYERS: list[set[str]] = [
    {"errors", "atomic", "torchtune_api"},          # used by every layer
    {"data", "models", "distributed"},               # data and models never import training or mixture
    {"mixture", "training"},
    {"estimators"},                                  # Δ needs the twins and the per-domain losses
    {"config_validation", "verdict", "cli"},         # commands over everything
]
LAYER_OF = {unit: i for i, layer in enumerate(LAYERS) for unit in layer}
#: tandem_components/__init__.py imports no unit, so that `import tandem_components.errors` stays light
TOP_INIT_LAYER = -1
#: what sits above tandem_components altogether: it never imports these
OUTSIDE = {"recipes", "tandem_recipes", "tests", "benchmarks", "tools"}


def unit_of(relative: Path) -> str:
    """The unit of a file given relative to tandem_components/: its package, or its module name."""
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


def imported_modules(source: str, module: str, is_package: bool) -> list[tuple[int, str]]:
    """(line, absolute dotted name) of every import in ``source``, relative imports resolved against
    ``module`` (the importing module's dotted name)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join(anchor + ([base] if base else []))
            if base == "tandem_components":  # `from tandem_components import data`: the names are the units
                found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, base))
    return found


def violations(files: dict[str, str]) -> list[str]:
    """Every downward-rule break in ``files`` ({path relative to tandem_components/: source})."""
    out = []
    for rel, source in files.items():
        path = Path(rel)
        unit = unit_of(path)
        layer = TOP_INIT_LAYER if rel == "__init__.py" else LAYER_OF.get(unit)
        if layer is None:
            out.append(f"{rel}: unit {unit!r} is in no layer of LAYERS (add it where it belongs)")
            continue
        is_package = path.name == "__init__.py"
        parts = ["tandem_components", *path.with_suffix("").parts]
        module = ".".join(parts[:-1] if is_package else parts)
        for line, name in imported_modules(source, module, is_package):
            top, _, rest = name.partition(".")
            if top in OUTSIDE:
                out.append(f"{rel}:{line}: imports {name} (tandem_components never imports {top})")
            if top != "tandem_components" or not rest:
                continue
            target = rest.split(".")[0]
            if target == unit or target == "__version__":
                continue
            if target not in LAYER_OF:
                continue  # a name imported from the top-level package, not a unit
            if LAYER_OF[target] >= layer:
                where = "beside" if LAYER_OF[target] == layer else "above"
                out.append(f"{rel}:{line}: {unit} imports {name}, which is {where} it")
    return out


def package_sources() -> dict[str, str]:
    return {
        str(p.relative_to(PACKAGE)): p.read_text(encoding="utf-8")
        for p in sorted(PACKAGE.rglob("*.py"))
        if "__pycache__" not in p.parts
    }


def test_imports_only_run_down():
    assert violations(package_sources()) == []


def test_every_unit_is_in_a_layer():
    units = {unit_of(Path(rel)) for rel in package_sources() if rel != "__init__.py"}
    assert units == set(LAYER_OF)


def test_a_violation_is_caught():
    """The checker itself: an upward, a sideways, a function-level, a relative and an outside import."""
    bad = {
        "data/shards.py": "from tandem_components.training.twins import build_twins\n",
        "models/builders.py": "def f():\n    import tandem_components.mixture.state\n",
        "mixture/state.py": "from ..training import domain_loss\n",
        "training/twins.py": "from tandem_components import estimators\n",
        "errors.py": "from recipes.pretrain import PretrainRecipe\n",
        "data/__init__.py": "from . import loader\nfrom tandem_components.errors import TandemError\n",
        "__init__.py": "from tandem_components.errors import TandemError\n",
    }
    found = violations(bad)
    assert [v.split(":")[0] for v in found] == [
        "data/shards.py", "models/builders.py", "mixture/state.py", "training/twins.py", "errors.py", "__init__.py",
    ]
