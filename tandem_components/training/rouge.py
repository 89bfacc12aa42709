"""Task metrics for SFT evaluation: ROUGE-L (longest common subsequence) and the final number of an answer.

ROUGE-L F1 (Lin, 2004) on lower-cased word tokens (``[a-z0-9]+``, as rouge-score's default tokenizer
without stemming): P = LCS / len(candidate), R = LCS / len(reference), F1 = 2PR / (P + R). Implemented
here (an O(n m) dynamic programme over words, tiny inputs) to avoid a dependency.
"""

from __future__ import annotations

import re

_WORD = re.compile(r"[a-z0-9]+")
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def lcs_length(a: list[str], b: list[str]) -> int:
    """Length of the longest common subsequence of two token lists."""
    if not a or not b:
        return 0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b, start=1):
            cur.append(prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1]))
        prev = cur
    return prev[-1]


def rouge_l(candidate: str, reference: str) -> float:
    """ROUGE-L F1 in [0, 1] of ``candidate`` against ``reference`` (0 if either has no words)."""
    c, r = words(candidate), words(reference)
    lcs = lcs_length(c, r)
    if lcs == 0:
        return 0.0
    p, rec = lcs / len(c), lcs / len(r)
    return 2 * p * rec / (p + rec)


def final_number(text: str) -> str | None:
    """The last number in ``text`` normalised ("1,200" -> "1200", "3.50" -> "3.5", "7.0" -> "7"); None if none."""
    found = _NUMBER.findall(text)
    if not found:
        return None
    s = found[-1].replace(",", "")
    if "." in s:
        s = s.rstrip("0").rstrip(".")
    return s
