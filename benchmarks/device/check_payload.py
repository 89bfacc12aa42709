"""Does what a lent GPU machine needs fit in what travels there? Prints the sizes; exit 1 if not.

    python benchmarks/device/check_payload.py --carry .whl data/shards/embedded

The device tool copies the working tree (tracked files and untracked files git does not ignore) plus the
ignored paths named in ``carry``, 64 MiB in all (/work/.library/device/README.md, "Limits"); a call over
it is refused after the machine's start-up has already cost device time, so ``make device-wheels`` checks
here first. It also refuses two wheels of one package in ``.whl/``: two versions stop the whole
``pip install --no-deps`` there.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

LIMIT_MIB = 64
MIB = 1 << 20


def tree_bytes(root: Path) -> int:
    """Bytes of the working tree that travels: tracked files plus untracked files git does not ignore."""
    names = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=root,
                           capture_output=True, text=True, check=True).stdout.split("\0")
    return sum((root / n).lstat().st_size for n in names if n and (root / n).exists())


def path_bytes(path: Path) -> int:
    """Bytes of a file, or of every file under a folder."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.lstat().st_size for p in path.rglob("*") if p.is_file() or p.is_symlink())


def duplicate_wheels(folder: Path) -> list[str]:
    """Package names with more than one wheel in ``folder``."""
    seen: dict[str, list[str]] = {}
    for wheel in sorted(folder.glob("*.whl")):
        seen.setdefault(re.sub(r"[-_.]+", "_", wheel.name.split("-")[0]).lower(), []).append(wheel.name)
    return [f"{name}: {', '.join(files)}" for name, files in seen.items() if len(files) > 1]


def check(root: Path, carry: list[str], limit_mib: float = LIMIT_MIB) -> tuple[bool, list[str]]:
    """(fits, report lines): the tree's and each carried path's size against the limit."""
    lines, ok = [], True
    sizes = {"working tree (git ls-files)": tree_bytes(root)}
    for name in carry:
        path = root / name
        if not path.exists():
            lines.append(f"MISSING carried path: {name}")
            ok = False
            continue
        sizes[name] = path_bytes(path)
        if path.is_dir() and (dups := duplicate_wheels(path)):
            lines.append(f"TWO VERSIONS of one package in {name} (pip install stops): " + "; ".join(dups))
            ok = False
    total = sum(sizes.values())
    lines = [f"{size / MIB:8.2f} MiB  {name}" for name, size in sizes.items()] + lines
    fits = total <= limit_mib * MIB
    lines.append(f"{total / MIB:8.2f} MiB  total, limit {limit_mib:g} MiB: " + ("fits" if fits else "TOO LARGE"))
    return ok and fits, lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--carry", nargs="*", default=[], help="ignored paths the run tool's `carry` will name")
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[2])
    parser.add_argument("--limit-mib", type=float, default=LIMIT_MIB)
    args = parser.parse_args()
    ok, lines = check(args.root, args.carry, args.limit_mib)
    print("\n".join(lines))
    if not ok:
        print("check_payload: the device run would not get what it needs; see above", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
