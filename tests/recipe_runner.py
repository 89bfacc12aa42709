"""Running the real recipe files in tests: as `tune run` does (subprocess), or in-process.

In-process runs call the recipe file's ``recipe_main`` with ``sys.argv`` set exactly as ``tune run``
sets it (``config.parse`` reads it), which skips only the CLI's ~5 s of imports per run.
"""

from __future__ import annotations

import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

#: a tiny model and short evaluation for recipe tests on the embedded corpus (1024-token test BPE)
TINY = [
    "model.vocab_size=1024", "model.embed_dim=64", "model.num_layers=1", "model.num_heads=4",
    "model.num_kv_heads=2", "data.seq_len=64", "data.batch_size=8", "eval.every_n_steps=0",
    "eval.windows_per_domain=4", "lr_scheduler.warmup_steps=5", "log_every_n_steps=5",
]



def sft_tiny(tokenizer) -> list[str]:
    """SFT at test size: a 1-layer model, 64-token rows and short evaluation (seconds per run on a loaded
    CPU), from scratch (the shipped configs start from ``make sft-base``'s weights)."""
    return [
        f"tokenizer.path={tokenizer}", "model.vocab_size=1024", "model.embed_dim=64", "model.num_layers=1",
        "model.num_heads=4", "model.num_kv_heads=2", "model.max_seq_len=128", "data.seq_len=64",
        "data.batch_size=4", "eval.every_n_steps=0", "eval.examples_per_category=4", "eval.batch_size=8",
        "eval.generate_per_category=1", "eval.max_new_tokens=4", "lr_scheduler.warmup_steps=2",
        "log_every_n_steps=5", "pretrained_weights=null",
    ]


def tune_env(launcher=()) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    if launcher and "OMP_NUM_THREADS" not in env:
        env["OMP_NUM_THREADS"] = "1"  # 2 processes on 2 cores: no oversubscription
    return env


def tune_command(recipe: str, config: str | Path, *overrides: str, launcher=()) -> list[str]:
    return [
        sys.executable, "-m", "torchtune._cli.tune", "run", *launcher, f"recipes/{recipe}.py",
        "--config", str(config), *overrides,
    ]


def tune_run(
    recipe: str, config: str | Path, *overrides: str, launcher: list[str] = (), timeout: int = 600
) -> subprocess.CompletedProcess:
    """``tune run [launcher args, e.g. --nproc_per_node 2] recipes/<recipe>.py --config <config> <overrides>``
    from the repo root."""
    return subprocess.run(
        tune_command(recipe, config, *overrides, launcher=launcher), cwd=REPO_ROOT, env=tune_env(launcher),
        capture_output=True, text=True, timeout=timeout,
    )


def pretrain_recipe(config: str | Path, shards, out, *overrides: str):
    """The real pretraining recipe object on ``shards`` at test size (``TINY``), set up: ``tune run`` minus
    the CLI, for tests that look inside it (its loaders, its optimizers) before or after ``train()``."""
    from omegaconf import OmegaConf

    recipe_cls = runpy.run_path(str(REPO_ROOT / "recipes" / "pretrain.py"))["PretrainRecipe"]
    cfg = OmegaConf.merge(
        OmegaConf.load(REPO_ROOT / config),
        OmegaConf.from_dotlist([*TINY, f"data.shards={shards}", f"output_dir={out}", *overrides]),
    )
    recipe = recipe_cls(cfg)
    recipe.setup()
    return recipe


def run_in_process(recipe: str, config: str | Path, *overrides: str, monkeypatch) -> int:
    """Run a recipe file's ``recipe_main`` in this process, with ``sys.argv`` as ``tune run`` sets it.

    Returns the exit status (torchtune's ``config.parse`` ends with ``sys.exit``): 0 on success.
    """
    # named as `tune run` names it (the module recipes.<recipe>): data_restricted and sft import their base
    # recipe relative to that package
    main = runpy.run_path(str(REPO_ROOT / "recipes" / f"{recipe}.py"), run_name=f"recipes.{recipe}")["recipe_main"]
    monkeypatch.setattr(sys, "argv", [f"recipes/{recipe}.py", "--config", str(config), *overrides])
    monkeypatch.chdir(REPO_ROOT)
    try:
        main()
    except SystemExit as e:
        return 0 if e.code is None else int(e.code)
    return 0


def run_in_process_for_fixture(recipe: str, config: str | Path, *overrides: str) -> int:
    """``run_in_process`` for a module- or session-scoped fixture, which has no ``monkeypatch`` of its own."""
    mp = pytest.MonkeyPatch()
    try:
        return run_in_process(recipe, config, *overrides, monkeypatch=mp)
    finally:
        mp.undo()
