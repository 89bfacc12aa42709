"""The graded-quality known answer at real scale (issue 27, item 4): the quality harness's corpus and stage 1.

The corpus is `make compare-quality`'s, built here from the embedded corpus by ``tools/build_quality_corpus.py``
(books' train text in four disjoint copies with 0 / 25 / 50 / 75% of their documents damaged, dialogue, legal
and math clean, a large ``junk`` source; books' clean val the validation-only target), tokenized with its own
2048-token BPE as the Makefile does. Stage 1 is the data-restricted recipe at its shipped settings with the
harness's overrides (``benchmarks/configs/compare_quality.yaml``: 1000 steps x 8 x 64 on a 100k-token
budget), seeds 0, 1 and 2: about a minute per seed on 2 cores, the suite's longest test.

- **The copies in quality order**: the Spearman ρ of the four copies' weights (trajectory average, what stage
  2 trains on) with their quality is 1 in at least 2 of the 3 seeds. Δ = 0 (``validation_weight=0``) leaves
  every copy at the same weight, a follower of ``target_weights`` (books, no source) stays at α_0, and a
  seeded random Δ orders them by chance (1 in 24 per seed): each fails it (the mutation checks in issue 27's
  closing note).
- **The 75% copy below 1/M**: not met, kept here as a strict expected failure so that the day it holds the
  suite says so. Under books' clean val Δ ranks the 75% copy above every source that is not books (measured:
  benchmarks/RESULTS.md section 11), so a learner that follows Δ gives it more than 1/M.
"""

from __future__ import annotations

import runpy

import pytest
import yaml
from omegaconf import OmegaConf

from tandem_components.mixture.export import read_mixture_export
from tandem_components.mixture.swarm import spearman
from tests.conftest import REPO_ROOT
from tests.recipe_runner import run_in_process_for_fixture

HARNESS = OmegaConf.load(REPO_ROOT / "benchmarks" / "configs" / "compare_quality.yaml")
COPIES = ("books_q0", "books_q25", "books_q50", "books_q75")  # best first
SEEDS = (0, 1, 2)


@pytest.fixture(scope="module")
def learned(tmp_path_factory) -> dict[int, dict[str, float]]:
    """Each seed's exported trajectory average, from the harness's corpus and stage-1 settings."""
    root = tmp_path_factory.mktemp("quality_known_answer")
    tool = runpy.run_path(str(REPO_ROOT / "tools" / "build_quality_corpus.py"))
    mp = pytest.MonkeyPatch()
    mp.chdir(REPO_ROOT)  # the data config's files are relative to the repository
    try:
        assert 0 == tool["main"](["--config", "configs/data/embedded.yaml", "--domain", "books", "--sources",
                                  "dialogue", "legal", "math", "--out", str(root / "corpus"),
                                  "--output-dir", str(root / "shards")])
    finally:
        mp.undo()
    prepare = runpy.run_path(str(REPO_ROOT / "recipes" / "prepare_data.py"))["PrepareDataRecipe"]
    config = OmegaConf.create(yaml.safe_load((root / "corpus.yaml").read_text()))
    config.tokenizer.train.vocab_size = 2048  # as `make compare-quality` prepares it
    prepare(config).run()
    overrides = [*HARNESS.stage1_overrides, f"data.shards={root / 'shards'}", "model.vocab_size=2048",
                 "mixture.learner=tandem"]
    out = {}
    for seed in SEEDS:
        run = root / f"seed{seed}"
        assert 0 == run_in_process_for_fixture("data_restricted", HARNESS.stage1_config, *overrides,
                                               f"seed={seed}", f"output_dir={run}")
        out[seed] = read_mixture_export(run / "mixture.yaml", use="average")[0]
    return out


@pytest.mark.slow
def test_the_graded_copies_end_in_quality_order_in_two_of_three_seeds(learned):
    # the swarm's rank correlation: None (not ordered) when every copy has the same weight, as under Δ = 0
    rhos = {seed: spearman(range(len(COPIES), 0, -1), [alpha[c] for c in COPIES]) for seed, alpha in learned.items()}
    ordered = [seed for seed, rho in rhos.items() if rho is not None and rho == pytest.approx(1.0)]
    assert len(ordered) >= 2, {seed: [round(learned[seed][c], 4) for c in COPIES] for seed in SEEDS}


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="issue 27 item 4, missed: Δ ranks the 75% copy above every source that is "
                                       "not books for a books target (benchmarks/RESULTS.md 11b), and so does the "
                                       "target: that copy at 0.10 scores 2-3% worse on books' val (11f)")
def test_the_75_percent_copy_ends_below_one_over_m_in_two_of_three_seeds(learned):
    below = [seed for seed, alpha in learned.items() if alpha[COPIES[-1]] < 1 / len(alpha)]
    assert len(below) >= 2, {seed: round(alpha[COPIES[-1]], 4) for seed, alpha in learned.items()}
