"""ROUGE-L (LCS) and final-number extraction used by the SFT recipe's task metrics."""

from __future__ import annotations

import math

from tandem_components.training.rouge import final_number, lcs_length, rouge_l


def test_lcs_and_rouge_l():
    assert lcs_length(["a", "b", "c", "d"], ["a", "c", "d", "e"]) == 3
    assert rouge_l("the cat sat on the mat", "the cat sat on the mat") == 1.0
    assert rouge_l("", "anything") == 0.0 and rouge_l("x y", "a b") == 0.0
    # candidate "police killed the gunman", reference "police kill the gunman": LCS 3, P = R = 3/4
    assert math.isclose(rouge_l("police killed the gunman", "police kill the gunman"), 0.75)
    # P = 2/2, R = 2/4 -> F1 = 2/3; case and punctuation are ignored
    assert math.isclose(rouge_l("The Cat!", "the cat sat down"), 2 / 3)


def test_final_number():
    assert final_number("48 + 64 = 112\nThe answer is 112.") == "112"
    assert final_number("It costs $1,200.50 in total") == "1200.5"
    assert final_number("7.0") == "7" and final_number("-3 degrees") == "-3"
    assert final_number("no digits here") is None
