"""tools/build_sft_data.py's pure parts: Debian description parsing and the hash-decided splits."""

from __future__ import annotations

import sys

from tests.conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "tools"))
import build_sft_data as b  # noqa: E402


def test_parse_translations():
    text = (
        "Package: foo\nDescription-md5: 0\nDescription-en: tool to frob widgets\n First paragraph\n line two.\n"
        " .\n Second paragraph.\n\nPackage: bar\nDescription-en: only a summary\n"
    )
    got = b.parse_translations(text)
    assert got[0] == ("foo", "tool to frob widgets", "First paragraph\nline two.\n\nSecond paragraph.")
    assert got[1] == ("bar", "only a summary", "")


def test_split_is_deterministic_disjoint_and_order_free():
    pairs = [(f"question {i}", f"answer {i}") for i in range(50)] + [("question 3", "duplicate prompt")]
    sizes = {"train": 30, "val": 5, "test": 5}
    a = b.split_category(pairs, sizes)
    assert a == b.split_category(list(reversed(pairs[:50])), sizes)  # input order does not matter
    assert {k: len(v) for k, v in a.items()} == {"test": 5, "val": 5, "train": 30}
    prompts = [r["prompt"] for rows in a.values() for r in rows]
    assert len(prompts) == len(set(prompts))
    assert a == b.split_category(pairs, sizes)
