"""benchmarks/move_weight.py: one domain's weight moved in a learned mixture, the difference out of named others in
proportion, everything else as learned; the variant is an export stage 2 reads like the original."""

from __future__ import annotations

import runpy

import pytest

from tandem_components.mixture.export import read_mixture_export, write_mixture_export
from tests.conftest import REPO_ROOT

TOOL = runpy.run_path(str(REPO_ROOT / "benchmarks" / "move_weight.py"))
DOMAINS = ["a_q0", "a_q75", "b", "c", "junk"]
AVERAGE = [0.3, 0.2, 0.1, 0.15, 0.25]


@pytest.fixture()
def export(tmp_path):
    return write_mixture_export(tmp_path / "mixture.yaml", DOMAINS, [0.2] * 5, AVERAGE, "tandem", {"seed": 3})


def test_the_difference_comes_out_of_the_others_in_proportion_and_nothing_else_moves(export, tmp_path):
    out = tmp_path / "variant.yaml"
    assert TOOL["main"](["--export", str(export), "--out", str(out), "--domain", "a_q75", "--to", "0.05",
                         "--others", "b", "c"]) == 0
    weights, doc = read_mixture_export(out)
    assert weights["a_q75"] == pytest.approx(0.05)
    assert weights["b"] == pytest.approx(0.1 + 0.15 * 0.1 / 0.25) and weights["c"] == pytest.approx(0.15 + 0.15 * 0.15 / 0.25)
    assert (weights["a_q0"], weights["junk"]) == (0.3, 0.25) and sum(weights.values()) == pytest.approx(1.0)
    assert read_mixture_export(out, "last")[0] == weights  # stage 2 reads either
    assert doc["provenance"] == {"seed": 3} and doc["method"] == "tandem"


def test_without_a_domain_the_average_is_written_unchanged(export, tmp_path):
    out = tmp_path / "base.yaml"
    assert TOOL["main"](["--export", str(export), "--out", str(out)]) == 0
    assert read_mixture_export(out)[0] == dict(zip(DOMAINS, AVERAGE)) == read_mixture_export(out, "last")[0]


@pytest.mark.parametrize("args, flag", [(["--domain", "d", "--to", "0.1", "--others", "b"], "--domain"),
                                        (["--domain", "b", "--to", "0.1", "--others", "b"], "--others"),
                                        (["--domain", "b", "--to", "1.5", "--others", "c"], "--to"),
                                        (["--domain", "b", "--to", "0.9", "--others", "c"], "--to 0.9"),
                                        (["--domain", "b", "--others", "c"], "--to")])
def test_bad_input_is_a_one_line_error_and_writes_nothing(export, tmp_path, capsys, args, flag):
    out = tmp_path / "variant.yaml"
    assert TOOL["main"](["--export", str(export), "--out", str(out), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("move_weight: error:") and flag in err and not out.exists()
