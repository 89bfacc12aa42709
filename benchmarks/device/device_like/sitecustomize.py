"""Make this Python import like the lent GPU machine's: only the packages it has, plus the carried wheels.

Put this folder first on PYTHONPATH (tests/test_gpu_check.py does, for benchmarks/device/run_gpu_check.sh
--smoke and every process it starts): importing a module whose distribution is in neither
``device_packages.txt`` nor ``wheels.txt`` then raises ModuleNotFoundError, so a new dependency that the
device lacks fails here, on CPU, instead of after a GPU machine's start-up. An approximation: it goes by
distribution names and uses this machine's versions, whose own dependencies (the closure of the device's
packages) are allowed, since the device's versions bring theirs; the repository's own modules and the
standard library are never blocked.
"""

from __future__ import annotations

import importlib.metadata as md
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _names(path: Path) -> set[str]:
    """Distribution names of a list file: one a line (`name` or `name==version`), `#` comments."""
    lines = (line.split("#")[0].strip() for line in path.read_text().splitlines())
    return {_norm(re.split(r"[=<>!~ ]", line)[0]) for line in lines if line}


def allowed() -> set[str]:
    names = _names(HERE.parent / "device_packages.txt")
    todo = list(names)
    while todo:  # what the device's packages need in this machine's versions (e.g. a newer hub's httpcore2)
        try:
            requires = md.requires(todo.pop()) or []
        except md.PackageNotFoundError:
            continue
        for req in requires:
            if "extra ==" not in req and (name := _norm(re.match(r"[A-Za-z0-9_.-]+", req).group(0))) not in names:
                names.add(name)
                todo.append(name)
    return names | _names(HERE.parent / "wheels.txt") | {"tandem", "pip", "setuptools"}


class _DeviceLike:
    def __init__(self) -> None:
        self.allowed, self.owners = allowed(), md.packages_distributions()

    def find_spec(self, name, path=None, target=None):
        dists = self.owners.get(name.split(".")[0])
        if dists and not any(_norm(d) in self.allowed for d in dists):
            raise ModuleNotFoundError(f"not on the GPU machine and not in benchmarks/device/wheels.txt: {name} "
                                      f"(distribution {', '.join(dists)})", name=name)
        return None  # not ours to decide: the normal finders go on


sys.meta_path.insert(0, _DeviceLike())
