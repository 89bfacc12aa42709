"""benchmarks/device/check_payload.py: what travels to a lent GPU machine (the git working tree plus the
carried, git-ignored paths) is summed as the device tool counts it and held to its 64 MiB; two wheels of one
package in the carried folder are refused (two versions stop the --no-deps install there)."""

from __future__ import annotations

import subprocess
import sys

from benchmarks.device.check_payload import MIB, check
from tests.recipe_runner import REPO_ROOT


def _repo(tmp_path):
    """A git repository: 1 MiB tracked, 1 MiB untracked (travels), 3 MiB ignored (travels only if carried)."""
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / ".gitignore").write_text(".whl/\nbig/\n")
    (tmp_path / "tracked.bin").write_bytes(b"t" * MIB)
    subprocess.run(["git", "add", "tracked.bin", ".gitignore"], cwd=tmp_path, check=True)
    (tmp_path / "untracked.bin").write_bytes(b"u" * MIB)
    (tmp_path / "big").mkdir()
    (tmp_path / "big" / "skipped.bin").write_bytes(b"b" * 3 * MIB)
    (tmp_path / ".whl").mkdir()
    (tmp_path / ".whl" / "a-1.0-py3-none-any.whl").write_bytes(b"w" * MIB)
    return tmp_path


def test_tree_and_carried_paths_are_summed_against_the_limit(tmp_path):
    root = _repo(tmp_path)
    ignore_bytes = len(".whl/\nbig/\n")
    ok, lines = check(root, [".whl"], limit_mib=3.01)  # 1 tracked + 1 untracked + 1 carried; big/ not carried
    assert ok, lines
    assert lines[-1].startswith(f"{(3 * MIB + ignore_bytes) / MIB:8.2f} MiB  total") and lines[-1].endswith("fits")
    ok, lines = check(root, [".whl", "big"], limit_mib=3.01)  # carrying big/ adds its 3 MiB: over the limit
    assert not ok and lines[-1].endswith("TOO LARGE")
    ok, lines = check(root, [".whl", "missing"], limit_mib=64)
    assert not ok and "MISSING carried path: missing" in lines


def test_two_versions_of_one_wheel_are_refused(tmp_path):
    root = _repo(tmp_path)
    (root / ".whl" / "A-2.0-py3-none-any.whl").write_bytes(b"w")
    ok, lines = check(root, [".whl"], limit_mib=64)
    assert not ok and any(line.startswith("TWO VERSIONS") for line in lines)


def test_command_line_exits_1_when_too_large(tmp_path):
    root = _repo(tmp_path)
    cmd = [sys.executable, "benchmarks/device/check_payload.py", "--root", str(root), "--carry", ".whl", "big"]
    assert subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True).returncode == 0
    proc = subprocess.run([*cmd, "--limit-mib", "4"], cwd=REPO_ROOT, capture_output=True, text=True)
    assert proc.returncode == 1 and "TOO LARGE" in proc.stdout
