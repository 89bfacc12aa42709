"""``tandem ls`` and ``tandem cp``: the recipes and configs shipped with tandem, to copy into a project.

    tandem ls                                   # every recipe and its configs
    tandem cp pretrain my_recipes               # pretrain.py and its configs, into my_recipes/
    tandem cp pretrain/tiny_stage1 my.yaml      # one config
    tune run my_recipes/pretrain.py --config my_recipes/tiny_stage1.yaml

As ``tune ls`` / ``tune cp`` do for torchtune's recipes. A recipe that extends another (``data_restricted``
and ``sft`` extend ``pretrain``: a relative import of their base) is copied with that base, so the copy
runs on its own. Recipes and configs come from the installed wheel (the ``tandem_recipes`` package, its
configs inside it) or, in a clone, from ``recipes/`` and ``configs/`` at the repository root.

A bad name or an existing file is one line and exit status 2, and nothing is written.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import shutil
import sys
from pathlib import Path

from tandem_components.errors import EXIT_USER_ERROR, TandemError

#: recipes whose configs are not in ``configs/<recipe name>/``
CONFIG_FOLDERS = {"prepare_data": "data"}


def locate() -> tuple[Path, Path]:
    """(recipes folder, configs folder): the clone this package sits in, else the installed wheel's."""
    repo = Path(__file__).resolve().parents[1]
    if (repo / "pyproject.toml").is_file() and (repo / "recipes" / "__init__.py").is_file():
        return repo / "recipes", repo / "configs"
    spec = importlib.util.find_spec("tandem_recipes")
    if spec is None or not spec.submodule_search_locations:
        raise TandemError("tandem_recipes: not installed (the tandem wheel ships it); reinstall tandem")
    recipes = Path(next(iter(spec.submodule_search_locations)))
    return recipes, recipes / "configs"


def recipes() -> list[str]:
    folder, _ = locate()
    return sorted(p.stem for p in folder.glob("*.py") if not p.name.startswith("_"))


def configs(recipe: str) -> list[str]:
    """Config names of ``recipe``, ``<folder>/<stem>`` (its folder under configs/)."""
    _, folder = locate()
    sub = CONFIG_FOLDERS.get(recipe, recipe)
    return sorted(f"{sub}/{p.stem}" for p in (folder / sub).glob("*.yaml"))


def bases(recipe: str) -> list[str]:
    """The recipes ``recipe`` extends, read from its relative imports (``from .pretrain import ...``),
    recursively: what a copy needs beside it."""
    folder, _ = locate()
    tree = ast.parse((folder / f"{recipe}.py").read_text(encoding="utf-8"))
    direct = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level == 1 and n.module}
    found = []
    for base in sorted(direct):
        for name in [*bases(base), base]:
            if name not in found:
                found.append(name)
    return found


def list_recipes() -> str:
    lines = [f"{'RECIPE':<18}CONFIG"]
    for recipe in recipes():
        names = configs(recipe) or ["-"]
        extends = bases(recipe)
        lines.append(f"{recipe:<18}{names[0]}" + (f"    (extends {', '.join(extends)})" if extends else ""))
        lines += [f"{'':<18}{name}" for name in names[1:]]
    return "\n".join(lines)


def _copy_plan(name: str, dest: Path) -> list[tuple[Path, Path]]:
    """(source, destination) of every file ``tandem cp name dest`` writes."""
    recipe_folder, config_folder = locate()
    if name in recipes():
        if dest.exists() and not dest.is_dir():
            raise TandemError(f"{dest}: expected a folder for the recipe {name!r} and its configs")
        plan = [(recipe_folder / f"{r}.py", dest / f"{r}.py") for r in [*bases(name), name]]
        return plan + [(config_folder / f"{c}.yaml", dest / f"{c.split('/')[-1]}.yaml") for c in configs(name)]
    every_config = [c for r in recipes() for c in configs(r)]
    if name.removesuffix(".yaml") in every_config:
        source = config_folder / f"{name.removesuffix('.yaml')}.yaml"
        return [(source, dest / source.name if dest.is_dir() else dest)]
    raise TandemError(f"{name}: no such recipe or config (tandem ls lists them)")


def copy(name: str, dest: Path, force: bool = False) -> list[Path]:
    """Copy a recipe (with its base and configs) into the folder ``dest``, or one config to ``dest``
    (a file, or a folder to copy it into). Returns the files written."""
    plan = _copy_plan(name, dest)
    existing = [str(target) for _, target in plan if target.exists()]
    if existing and not force:
        raise TandemError(f"{existing[0]}: already exists (--force overwrites)")
    for source, target in plan:
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    return [target for _, target in plan]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tandem", description="tandem's recipes and configs, to copy and run")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("ls", help="list the recipes and their configs")
    cp = commands.add_parser("cp", help="copy a recipe (with its configs) into a folder, or one config to a file")
    cp.add_argument("name", help="a recipe (e.g. pretrain) or a config (e.g. pretrain/tiny_stage1)")
    cp.add_argument("dest", type=Path, help="a folder for a recipe; a file or folder for a config")
    cp.add_argument("--force", action="store_true", help="overwrite files that exist")
    return parser


def run_hint(recipe: str, dest: Path, config: Path | None) -> str:
    """The ``tune run`` line for a copied recipe. ``tune run`` imports a recipe given by path as a module
    (``my_recipes/pretrain.py`` -> ``my_recipes.pretrain``, from the current folder), so the path must be
    relative and below the current folder."""
    config_name = config.name if config else "<config>.yaml"
    if dest.is_absolute() or ".." in dest.parts:
        return f"cd {dest.resolve().parent} && tune run {dest.resolve().name}/{recipe}.py --config {dest.resolve().name}/{config_name}"
    note = ""
    if dest.parts and dest.parts[0] == "recipes":  # torchtune's wheel ships a package named recipes
        note = "  (a folder named recipes is shadowed by torchtune's own recipes package: rename it)"
    return f"tune run {dest / f'{recipe}.py'} --config {dest / config_name}{note}"


def main(argv: list[str] | None = None) -> int:
    """The ``tandem`` console script. Returns the exit status: 0, or 2 with one line on a bad name."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "ls":
            print(list_recipes())
            return 0
        written = copy(args.name, args.dest, force=args.force)
    except TandemError as e:
        print(f"tandem: error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    print("\n".join(f"copied {path}" for path in written))
    if args.name in recipes():
        yamls = [p for p in written if p.suffix == ".yaml"]
        config = next((p for p in yamls if p.name.startswith("tiny")), yamls[0] if yamls else None)
        print("run it: " + run_hint(args.name, args.dest, config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
